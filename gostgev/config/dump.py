"""The typed model back to GOST-shaped data, for ``-O yaml|json``.

What is printed is what gostgev will run: defaults filled in, host patterns
normalised, keys in GOST's spelling.  Credentials are not printed: authers
and auth blocks show as ``<hidden>``, and admissions, limiters, TLS files,
metrics and the API are left out, so the output is for reading, and loads
again only where it does not need them.
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
    if svc.handler.chain is not None:
        out["handler"]["chain"] = svc.handler.chain.name
    if svc.listener.chain is not None:
        out["listener"]["chain"] = svc.listener.chain.name
    if svc.handler.auther is not None:
        out["handler"]["auth"] = "<hidden>"
    return out


def _chain(chain):
    hops = []
    for hop in chain.hops:
        nodes = []
        for node in hop.nodes:
            connector = {"type": node.connector.type}
            if node.connector.metadata.as_dict():
                connector["metadata"] = node.connector.metadata.as_dict()
            if node.connector.auth is not None:
                connector["auth"] = "<hidden>"
            dialer = {"type": node.dialer.type}
            if node.dialer.metadata.as_dict():
                dialer["metadata"] = node.dialer.metadata.as_dict()
            nodes.append({"name": node.name, "addr": node.addr, "connector": connector, "dialer": dialer})
        sel = hop.selector
        hops.append({"name": hop.name, "selector": {"strategy": sel.strategy, "maxFails": sel.max_fails,
                                                    "failTimeout": _duration(sel.fail_timeout)},
                     "nodes": nodes})
    return {"name": chain.name, "hops": hops}


def _ingress(ingress):
    out = {"name": ingress.name,
           "rules": [{"hostname": rule.hostname, "endpoint": str(rule.endpoint)} for rule in ingress.rules]}
    sources = ingress.sources
    if sources is not None:
        if sources.reload:
            out["reload"] = _duration(sources.reload)
        if sources.file:
            out["file"] = {"path": sources.file}
        if sources.redis is not None:
            redis = sources.redis
            out["redis"] = {"addr": redis.addr, "db": redis.db, "key": redis.key, "type": redis.type}
            if redis.password:
                out["redis"]["password"] = "<hidden>"
        if sources.http is not None:
            out["http"] = {"url": sources.http.url, "timeout": _duration(sources.http.timeout)}
    return out


def _admin(admin, path_key):
    out = {"addr": str(admin.addr), path_key: admin.path}
    if admin.auther is not None:
        out["auth"] = "<hidden>"
    if admin.access_log:
        out["accessLog"] = True
    return out


def to_raw(config):
    raw = {"services": [_service(s) for s in config.services]}
    if config.chains:
        raw["chains"] = [_chain(c) for c in config.chains]
    if config.ingresses:
        raw["ingresses"] = [_ingress(i) for i in config.ingresses]
    if config.metrics is not None:
        raw["metrics"] = _admin(config.metrics, "path")
    if config.api is not None:
        raw["api"] = _admin(config.api, "pathPrefix")
    raw["log"] = {"level": config.log.level, "format": config.log.format, "output": config.log.output}
    return raw
