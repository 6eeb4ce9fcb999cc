"""A small JSON web API: inspect services and tunnels, edit ingress rules, reload.

Routes, under an optional ``pathPrefix``::

    GET    /services                       {"services": [{name, addr, handler, listener}]}
    GET    /tunnels                        {"tunnels": [{service, tunnel, connections: [...]}]}
    GET    /cluster                        {"cluster": [{service, node, address, nodes: {node: count},
                                                         tunnels: {tunnel: [{id, name, node, network, address}]}}]}
    GET    /ingresses                      {"ingresses": [{name, rules: [{hostname, endpoint}]}]}
    GET    /ingresses/<name>               {name, rules}
    GET    /ingresses/<name>/rules         {"rules": [...]}
    POST   /ingresses/<name>/rules         {hostname, endpoint} -> 201 (200 if it replaced a rule)
    DELETE /ingresses/<name>/rules/<host>  -> 204
    POST   /config/reload                  {"ok": true, "message"} | 500 {"ok": false, "error"}
    GET|POST /config, POST /config/<section>, PUT|DELETE /config/<section>/<name>
                                           GOST's configuration routes (gostgev.gostapi)
    GET    /  or  /ui                      the live status page; GET /ui/data: what it shows (gostgev.statuspage)

Ingress and rule shapes are GOST's ``IngressConfig``; ``POST /config/reload``
is GOST's route (GOST has no bare ``/reload``).  Errors are ``{"error": "..."}``.
Rules added here change the live Ingress at once but live in memory only.
They are a layer on top of the configured rules: a rule set here wins over
the inline rules and every live source (file, redis, http), and a host name
deleted here stays deleted, across source refreshes and reloads that leave
that ingress's configuration alone, until it is set here again or a reload
changes the ingress (then the configuration is all there is again).

Security.  Without an ``auther`` the server only binds loopback addresses;
``start()`` raises ValueError for anything else, because this API can
redirect a tunnel's public traffic.  Browsers are kept out too: a request that
changes state and carries ``Origin`` is refused (cross-site requests always
carry it, curl and scripts do not), and without auth the ``Host`` header must
name a loopback host, which defeats DNS rebinding.
"""

import ipaddress
import json
import logging
import re
import time

from gostgev.addr import format_address, host_without_port
from gostgev.gostapi import CONFIG_ROUTES, GostConfigRoutes, GostError, RawBody
from gostgev.ingress import Rule, parse_endpoint, parse_rule_host
from gostgev.logsetup import get_logger
from gostgev.metrics import WWW_AUTHENTICATE, AdminServer, basic_auth_user
from gostgev.statuspage import UI_ROUTES, RecentErrors, StatusPageRoutes

__all__ = ["ApiServer", "MAX_BODY"]

#: largest request body read; a rule is well under 1 KiB
MAX_BODY = 64 * 1024

_REASONS = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
            403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 413: "Content Too Large",
            500: "Internal Server Error"}

_NAME = "(?P<name>[^/]+)"
#: (path pattern, {method: ApiServer method name})
ROUTES = [(re.compile(pattern + r"\Z"), methods) for pattern, methods in [
    (r"/services", {"GET": "get_services"}),
    (r"/tunnels", {"GET": "get_tunnels"}),
    (r"/cluster", {"GET": "get_cluster"}),
    (r"/ingresses", {"GET": "get_ingresses"}),
    (r"/ingresses/" + _NAME, {"GET": "get_ingress"}),
    (r"/ingresses/" + _NAME + "/rules", {"GET": "get_rules", "POST": "add_rule"}),
    (r"/ingresses/" + _NAME + "/rules/(?P<hostname>[^/]+)", {"DELETE": "delete_rule"}),
    (r"/config/reload", {"POST": "reload"}),
    *CONFIG_ROUTES,                 # GOST's configuration routes (gostgev.gostapi)
    *UI_ROUTES,                     # the status page (gostgev.statuspage)
]]


class HttpError(Exception):
    def __init__(self, status, message, headers=()):
        super().__init__(message)
        self.status = status
        self.headers = list(headers)


def is_loopback(host):
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def rule_json(rule):
    return {"hostname": rule.hostname, "endpoint": str(rule.endpoint)}


def ingress_json(ingress):
    return {"name": ingress.name, "rules": [rule_json(r) for r in ingress.rules]}


def read_json(environ):
    """The request body as a JSON object; HttpError 400/413 otherwise."""
    length = environ.get("CONTENT_LENGTH") or ""
    stream = environ["wsgi.input"]
    # Without a length (chunked), read one byte past the cap to detect excess.
    data = stream.read(int(length)) if length else stream.read(MAX_BODY + 1)
    if len(data) > MAX_BODY:
        raise HttpError(413, "request body over %d bytes" % MAX_BODY)
    try:
        body = json.loads(data)
    except ValueError:
        raise HttpError(400, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise HttpError(400, "request body must be a JSON object")
    return body


class ApiServer(StatusPageRoutes, GostConfigRoutes, AdminServer):
    name = "api"
    #: the server refuses a larger body before reading it
    max_body = MAX_BODY

    def __init__(self, runtime, addr, path_prefix="", auther=None, access_log=False):
        self.runtime = runtime
        self.auther = auther
        self.prefix = "/" + path_prefix.strip("/") if path_prefix.strip("/") else ""
        self.bind_host = addr[0]
        self.access = get_logger("gostgev.api", kind="api") if access_log else None
        self.recent = RecentErrors()    #: the warnings and errors the status page shows
        super().__init__(addr, self._app)

    read_json = staticmethod(read_json)

    def start(self):
        if self.auther is None and not is_loopback(self.bind_host):
            raise ValueError("api: auth is required when listening on %s" % format_address(self.address))
        super().start()
        logging.getLogger("gostgev").addHandler(self.recent)

    def stop(self, timeout=1):
        logging.getLogger("gostgev").removeHandler(self.recent)
        super().stop(timeout)

    def error_response(self, status, message):
        """The server's own refusals (bad request, body too large) in this API's JSON error shape."""
        return [("Content-Type", "application/json")], json.dumps({"error": message}).encode() + b"\n"

    # -- WSGI ---------------------------------------------------------------------

    def _app(self, environ, start_response):
        started = time.monotonic()
        headers = [("Content-Type", "application/json")]
        try:
            status, payload = self._dispatch(environ)
        except HttpError as exc:
            status, payload = exc.status, {"error": str(exc)}
            headers += exc.headers
        except GostError as exc:
            status, payload = exc.status, {"code": exc.code, "msg": exc.msg}
        except Exception:
            self.log.exception("api: %s %s failed", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            status, payload = 500, {"error": "internal error"}
        if isinstance(payload, RawBody):
            headers, body = [("Content-Type", payload.content_type)], payload.data
        else:
            body = b"" if payload is None else json.dumps(payload, default=str).encode() + b"\n"
        start_response("%d %s" % (status, _REASONS[status]), headers)
        if self.access is not None:
            self.access.info("%s %s %d", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"), status,
                             fields={"code": status, "client": environ.get("REMOTE_ADDR"),
                                     "duration": "%.3fms" % ((time.monotonic() - started) * 1000)})
        return [body]

    def _dispatch(self, environ):
        method = environ["REQUEST_METHOD"]
        if method not in ("GET", "HEAD") and environ.get("HTTP_ORIGIN"):
            raise HttpError(403, "cross-origin requests are refused")
        if self.auther is None:
            host = host_without_port(environ.get("HTTP_HOST", "localhost"))
            if not is_loopback(host):
                raise HttpError(403, "without auth only loopback host names are served")
        elif basic_auth_user(environ, self.auther) is None:
            raise HttpError(401, "unauthorized", [WWW_AUTHENTICATE])
        length = environ.get("CONTENT_LENGTH") or "0"
        if not length.isdigit():
            raise HttpError(400, "invalid Content-Length")
        if int(length) > MAX_BODY:
            raise HttpError(413, "request body over %d bytes" % MAX_BODY)
        # PATH_INFO is latin-1 by WSGI convention; URLs carry UTF-8.
        path = environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8", "replace")
        if not path.startswith(self.prefix + "/"):
            raise HttpError(404, "no such route")
        path = path[len(self.prefix):].rstrip("/")
        for pattern, methods in ROUTES:
            match = pattern.match(path)
            if match:
                if method not in methods:
                    raise HttpError(405, "method not allowed", [("Allow", ", ".join(methods))])
                return getattr(self, methods[method])(environ, **match.groupdict())
        raise HttpError(404, "no such route")

    # -- routes -------------------------------------------------------------------

    def get_services(self, environ):
        return 200, {"services": list(self.runtime.services())}

    def get_tunnels(self, environ):
        return 200, {"tunnels": list(self.runtime.tunnels())}

    def get_cluster(self, environ):
        """Every tunnel connection of the cluster, by node, as each tunnel service's discovery sees it."""
        return 200, {"cluster": list(self.runtime.cluster())}

    def get_ingresses(self, environ):
        ingresses = self.runtime.ingresses()
        return 200, {"ingresses": [ingress_json(ingresses[name]) for name in sorted(ingresses)]}

    def _ingress(self, name):
        ingress = self.runtime.ingresses().get(name)
        if ingress is None:
            raise HttpError(404, "no ingress %r" % name)
        return ingress

    def get_ingress(self, environ, name):
        return 200, ingress_json(self._ingress(name))

    def get_rules(self, environ, name):
        return 200, {"rules": ingress_json(self._ingress(name))["rules"]}

    def add_rule(self, environ, name):
        ingress = self._ingress(name)
        body = read_json(environ)
        hostname, endpoint = body.get("hostname"), body.get("endpoint")
        if not isinstance(hostname, str) or not isinstance(endpoint, str):
            raise HttpError(400, "hostname and endpoint are required strings")
        try:
            rule = Rule(parse_rule_host(hostname), parse_endpoint(endpoint))
        except ValueError as exc:
            raise HttpError(400, str(exc)) from None
        replaced = any(r.hostname == rule.hostname for r in ingress.rules)
        ingress.set_rule(rule)
        self.log.info("api: ingress %s: %s -> %s", name, rule.hostname, rule.endpoint)
        return (200 if replaced else 201), rule_json(rule)

    def delete_rule(self, environ, name, hostname):
        ingress = self._ingress(name)
        try:
            removed = ingress.remove_rule(hostname)
        except ValueError as exc:
            raise HttpError(400, str(exc)) from None
        if removed is None:
            raise HttpError(404, "no rule for %r in ingress %r" % (hostname, name))
        self.log.info("api: ingress %s: removed %s", name, removed.hostname)
        return 204, None

    def reload(self, environ):
        try:
            ok, message = self.runtime.reload()
        except Exception as exc:
            self.log.exception("api: reload failed")
            ok, message = False, str(exc) or type(exc).__name__
        if ok:
            return 200, {"ok": True, "message": message}
        return 500, {"ok": False, "error": message}
