"""GOST's command-line URLs (``-L`` services, ``-F`` chain nodes) as raw config.

The URLs become the same raw dictionaries a YAML file would hold, and then go
through the same loader, so both front ends build one model::

    -L [handler[+listener]://][user:pass@][host]:port[/target,target...][?key=value&...]
    -F [connector[+dialer]://][user:pass@]host:port[,host:port...][?key=value&...]

Examples::

    -L "tcp://:8080/10.0.0.1:80,10.0.0.2:80?sniffing=true"
        service-0 on :8080, handler tcp, listener tcp, nodes target-0 and
        target-1, and ``sniffing: "true"`` in handler, listener and service
        metadata (GOST copies un-prefixed keys into all three).
    -L "file://127.0.0.1:8000?dir=/srv/www"
        handler file; "file" is no listener name, so the listener is tcp.

Every ``-F`` adds one hop to the chain ``chain-0``, which every ``-L``
service then uses.  ``ValueError`` on a malformed URL.
"""

from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["service_from_url", "hop_from_url", "apply_cli"]

# Listener types GOST knows; a one-word scheme names the listener too only
# when the word is one of these (``tunnel://`` = handler tunnel, listener tcp).
_GOST_LISTENERS = frozenset(
    "tcp udp tls mtls ws mws wss mwss http2 h2 h2c grpc quic kcp ssh sshd rtcp rudp tun tap "
    "dns red redir redirect redu unix runix serial obfs-http ohttp obfs-tls otls icmp ftcp pht "
    "phts http3 h3 wt dtls mtcp".split())
# Listeners whose handler must be the listener type when targets are given.
_FORWARD_LISTENERS = frozenset("tcp udp rtcp rudp tun tap dns unix runix serial".split())
_SELECTOR_KEYS = {"strategy": "strategy", "maxfails": "maxFails", "max_fails": "maxFails",
                  "failtimeout": "failTimeout", "fail_timeout": "failTimeout"}
_SERVICE_ONLY_KEYS = frozenset(("proxyprotocol", "interface", "so_mark", "netns"))
_LISTENER_TLS_KEYS = {"certfile": "certFile", "keyfile": "keyFile", "cafile": "caFile"}
_DIALER_TLS_KEYS = {**_LISTENER_TLS_KEYS, "secure": "secure", "servername": "serverName"}


def _split(url, what):
    if "://" not in url:
        url = "auto://" + url
    parts = urlsplit(url)
    if not parts.netloc:
        raise ValueError("%s URL %r has no address" % (what, url))
    user = password = None
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        user, password = unquote(user), unquote(password)
    scheme = parts.scheme.lower()
    first, _, second = scheme.partition("+")
    query = parse_qsl(parts.query, keep_blank_values=True)
    return first, second, user, password, netloc, parts.path, query


def service_from_url(url, index):
    """One ``-L`` URL -> one raw service dict named ``service-<index>``."""
    handler, listener, user, password, netloc, path, query = _split(url, "service")
    if not listener:
        listener = handler if handler in _GOST_LISTENERS else "tcp"
    if "-" in netloc.rpartition(":")[2]:
        raise ValueError("port ranges are not supported: %r" % netloc)
    service = {"name": "service-%d" % index, "addr": netloc,
               "handler": {"type": handler, "metadata": {}},
               "listener": {"type": listener, "metadata": {}}, "metadata": {}}
    if user is not None:
        service["handler"]["auth"] = {"username": user, "password": password}
    targets = [t for t in path.lstrip("/").split(",") if t]
    if targets:
        if listener in _FORWARD_LISTENERS:
            service["handler"]["type"] = listener
        elif handler != "relay":
            service["handler"]["type"] = "forward"
        service["forwarder"] = {"nodes": [{"name": "target-%d" % i, "addr": t} for i, t in enumerate(targets)]}
    selector = {}
    for key, value in query:
        lower = key.lower()
        if lower in _SELECTOR_KEYS:
            selector[_SELECTOR_KEYS[lower]] = value
        elif lower == "retries":
            service["handler"]["retries"] = value
        elif lower in _LISTENER_TLS_KEYS:
            service["listener"].setdefault("tls", {})[_LISTENER_TLS_KEYS[lower]] = value
        elif lower in _SERVICE_ONLY_KEYS:
            service["metadata"][key] = value
        else:
            name, scopes = _scoped(key, ("handler", "listener", "service"))
            for scope in scopes:
                (service if scope == "service" else service[scope])["metadata"][name] = value
    if selector:
        # GOST's command-line defaults differ from the YAML ones (30s, not 10s).
        full = {"strategy": "round", "maxFails": 1, "failTimeout": "30s", **selector}
        service.setdefault("forwarder", {"nodes": []})["selector"] = full
    return service


def hop_from_url(url, index):
    """One ``-F`` URL -> one raw hop dict named ``hop-<index>``."""
    connector, dialer, user, password, netloc, _path, query = _split(url, "node")
    connector = connector if connector != "auto" else "http"
    dialer = dialer or "tcp"
    nodes = []
    for i, addr in enumerate(a for a in netloc.split(",") if a):
        node = {"name": "node-%d" % i, "addr": addr,
                "connector": {"type": connector, "metadata": {}},
                "dialer": {"type": dialer, "metadata": {}}, "metadata": {}}
        if user is not None:
            node["connector"]["auth"] = {"username": user, "password": password}
        nodes.append(node)
    hop = {"name": "hop-%d" % index, "nodes": nodes, "metadata": {}}
    for key, value in query:
        if key.lower() in _DIALER_TLS_KEYS:
            for node in nodes:
                node["dialer"].setdefault("tls", {})[_DIALER_TLS_KEYS[key.lower()]] = value
            continue
        name, scopes = _scoped(key, ("hop", "node", "connector", "dialer"))
        if "hop" in scopes:
            hop["metadata"][name] = value
        for node in nodes:
            for scope in scopes:
                if scope != "hop":
                    (node if scope == "node" else node[scope])["metadata"][name] = value
    return hop


def _scoped(key, scopes):
    """``handler.x`` -> ``("x", ["handler"])``; plain ``x`` goes to every scope."""
    scope, dot, rest = key.partition(".")
    if dot and scope.lower() in scopes:
        return rest, [scope.lower()]
    return key, list(scopes)


def apply_cli(raw, service_urls, node_urls):
    """Append ``-L``/``-F`` URLs to a raw config (from a file, or empty)."""
    raw = dict(raw or {})
    if not service_urls and not node_urls:
        return raw      # the file's own shape, to be checked (and named) by the loader
    services = raw.get("services") or []
    if not isinstance(services, list):
        raise ValueError("services: expected a list to add -L services to")
    services = list(services)
    for url in service_urls or ():
        services.append(service_from_url(url, len(services)))
    if node_urls:
        hops = [hop_from_url(url, i) for i, url in enumerate(node_urls)]
        chains = raw.get("chains") or []
        if not isinstance(chains, list):
            raise ValueError("chains: expected a list to add the -F chain to")
        raw["chains"] = list(chains) + [{"name": "chain-0", "hops": hops}]
        for service in services[len(services) - len(service_urls or ()):]:
            where = "listener" if service["listener"]["type"] in ("rtcp", "rudp", "runix") else "handler"
            service[where]["chain"] = "chain-0"
    if services:
        raw["services"] = services
    return raw
