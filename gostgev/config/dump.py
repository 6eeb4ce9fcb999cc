"""The typed model back to GOST-shaped data, for ``-O yaml|json``.

What is printed is what gostgev will run: defaults filled in, host patterns
normalised, keys in GOST's spelling.
"""

__all__ = ["to_raw"]


def _duration(seconds):
    return "%gs" % seconds


def _node(node):
    out = {"name": node.name, "addr": node.addr}
    filt = {k: v for k, v in (("host", node.host), ("protocol", node.protocol), ("path", node.path)) if v}
    if filt:
        out["filter"] = filt
    if node.metadata:
        out["metadata"] = dict(node.metadata)
    return out


def _service(svc):
    out = {"name": svc.name, "addr": str(svc.addr),
           "handler": {"type": svc.handler.type}, "listener": {"type": svc.listener.type}}
    if svc.handler.metadata.as_dict():
        out["handler"]["metadata"] = svc.handler.metadata.as_dict()
    if svc.listener.metadata.as_dict():
        out["listener"]["metadata"] = svc.listener.metadata.as_dict()
    if svc.forwarder is not None:
        sel = svc.forwarder.selector
        out["forwarder"] = {
            "selector": {"strategy": sel.strategy, "maxFails": sel.max_fails,
                         "failTimeout": _duration(sel.fail_timeout)},
            "nodes": [_node(n) for n in svc.forwarder.nodes],
        }
    if svc.metadata.as_dict():
        out["metadata"] = svc.metadata.as_dict()
    return out


def to_raw(config):
    return {
        "services": [_service(s) for s in config.services],
        "log": {"level": config.log.level, "format": config.log.format, "output": config.log.output},
    }
