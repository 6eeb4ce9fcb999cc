"""Prometheus metrics under GOST v3's names, so GOST dashboards keep working.

Names, labels and buckets follow go-gost/x ``metrics/metrics.go`` and
``metrics/prom.go``; every series carries ``host`` (this machine's name)::

    gost_services{host}                                        gauge
    gost_service_requests_total{host,service,client}           counter
    gost_service_requests_in_flight{host,service,client}       gauge
    gost_service_request_duration_seconds{host,service}        histogram
    gost_service_transfer_input_bytes_total{host,service,client}
    gost_service_transfer_output_bytes_total{host,service,client}
    gost_service_handler_errors_total{host,service,client}     counter
    gost_chain_errors_total{host,chain,node}                   counter
    gost_chain_node_connect_duration_seconds{host,chain,node}  histogram

``client`` is the client IP in current GOST (older releases had no such
label); callers may pass it or leave it empty, which keeps cardinality low.
gostgev adds ``gostgev_tunnel_connections``, ``gostgev_tunnel_streams_total``
(both ``{host,service,tunnel}``) and ``gostgev_tunnel_reconnects_total{host,service}``.

Hot paths call the module functions, which cost one global check while
metrics are off (``current is None``, the default); ``enable()`` turns them on.
"""

import base64
import binascii
import time

from gevent.socket import gethostname
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    make_wsgi_app,
)

from gostgev.adminserver import AdminServer

__all__ = ["Metrics", "MetricsServer", "AdminServer", "basic_auth_user", "WWW_AUTHENTICATE",
           "enable", "disable", "current", "services", "request_started", "request_finished", "transfer",
           "chain_error", "node_connect", "tunnel_connections", "tunnel_stream", "tunnel_reconnect"]

#: buckets of gost_service_request_duration_seconds, as in GOST
REQUEST_BUCKETS = (.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 15, 30, 60)
#: buckets of gost_chain_node_connect_duration_seconds, as in GOST
CONNECT_BUCKETS = (.01, .05, .1, .25, .5, 1, 1.5, 2, 5, 10, 15, 30, 60)

#: the live Metrics, or None while metrics are off
current = None


class Metrics:
    """One registry holding every gostgev series; tests may build several."""

    def __init__(self, hostname=None):
        self.host = hostname if hostname is not None else gethostname()
        self.registry = reg = CollectorRegistry()
        # GOST registers the process collector too (metrics/process_standard.go).
        ProcessCollector(registry=reg)
        svc = ["host", "service", "client"]
        self.services = Gauge("gost_services", "Current number of services", ["host"], registry=reg)
        self.requests = Counter("gost_service_requests_total", "Total number of requests", svc, registry=reg)
        self.in_flight = Gauge("gost_service_requests_in_flight", "Current in-flight requests", svc, registry=reg)
        self.duration = Histogram("gost_service_request_duration_seconds", "Distribution of request latencies",
                                  ["host", "service"], buckets=REQUEST_BUCKETS, registry=reg)
        self.bytes_in = Counter("gost_service_transfer_input_bytes_total",
                                "Total service input data transfer size in bytes", svc, registry=reg)
        self.bytes_out = Counter("gost_service_transfer_output_bytes_total",
                                 "Total service output data transfer size in bytes", svc, registry=reg)
        self.handler_errors = Counter("gost_service_handler_errors_total", "Total service handler errors",
                                      svc, registry=reg)
        self.chain_errors = Counter("gost_chain_errors_total", "Total chain errors",
                                    ["host", "chain", "node"], registry=reg)
        self.node_connect = Histogram("gost_chain_node_connect_duration_seconds",
                                      "Distribution of chain node connect latencies", ["host", "chain", "node"],
                                      buckets=CONNECT_BUCKETS, registry=reg)
        tun = ["host", "service", "tunnel"]
        self.tunnel_connections = Gauge("gostgev_tunnel_connections", "Current client connections of a tunnel",
                                        tun, registry=reg)
        self.tunnel_streams = Counter("gostgev_tunnel_streams_total", "Total streams opened through a tunnel",
                                      tun, registry=reg)
        self.tunnel_reconnects = Counter("gostgev_tunnel_reconnects_total",
                                         "Total reconnections of a tunnel client", ["host", "service"], registry=reg)
        # gost_service_requests_total counts connections, as GOST does; this counts
        # the HTTP requests routed one by one on them.
        self.http_requests = Counter("gostgev_http_requests_total", "Total HTTP requests routed, by status class",
                                     ["host", "service", "code"], registry=reg)
        self.services.labels(self.host).set(0)


def enable(hostname=None):
    """Start collecting into a fresh registry; returns it (also ``current``)."""
    global current
    # The Go client GOST uses exports no *_created series; neither do we.
    disable_created_metrics()
    current = Metrics(hostname)
    return current


def disable():
    global current
    current = None


def services(count):
    if current is not None:
        current.services.labels(current.host).set(count)


def request_started(service, client=""):
    """Count a request and mark it in flight; pass the token to request_finished()."""
    m = current
    if m is None:
        return None
    m.requests.labels(m.host, service, client).inc()
    m.in_flight.labels(m.host, service, client).inc()
    return (m, service, client, time.monotonic())


def request_finished(token, error=False):
    if token is None:
        return
    # The token keeps its own Metrics, so a disable() in between stays consistent.
    m, service, client, started = token
    m.in_flight.labels(m.host, service, client).dec()
    m.duration.labels(m.host, service).observe(time.monotonic() - started)
    if error:
        m.handler_errors.labels(m.host, service, client).inc()


def http_request(service, status):
    """Count one HTTP request routed on its own, by status class (2xx, 5xx...)."""
    m = current
    if m is not None:
        m.http_requests.labels(m.host, service, "%dxx" % (status // 100)).inc()


def transfer(service, bytes_in, bytes_out, client=""):
    m = current
    if m is not None:
        if bytes_in:
            m.bytes_in.labels(m.host, service, client).inc(bytes_in)
        if bytes_out:
            m.bytes_out.labels(m.host, service, client).inc(bytes_out)


def chain_error(chain, node):
    if current is not None:
        current.chain_errors.labels(current.host, chain or "", node or "").inc()


def node_connect(chain, node, seconds):
    if current is not None:
        current.node_connect.labels(current.host, chain or "", node or "").observe(seconds)


def _tunnel_label(tunnel):
    # A TunnelID's bare UUID: the "$" of private rules is not part of its identity.
    return getattr(tunnel, "text", None) or str(tunnel)


def tunnel_connections(service, tunnel, count):
    if current is not None:
        current.tunnel_connections.labels(current.host, service, _tunnel_label(tunnel)).set(count)


def tunnel_stream(service, tunnel):
    if current is not None:
        current.tunnel_streams.labels(current.host, service, _tunnel_label(tunnel)).inc()


def tunnel_reconnect(service):
    if current is not None:
        current.tunnel_reconnects.labels(current.host, service).inc()


# -- HTTP servers ---------------------------------------------------------------

def basic_auth_user(environ, auther):
    """The User for the request's ``Authorization: Basic`` header, or None."""
    scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, sep, password = decoded.partition(":")
    return auther.check(username, password) if sep else None


#: sent with every 401, so clients know to retry with Basic credentials
WWW_AUTHENTICATE = ("WWW-Authenticate", 'Basic realm="gostgev"')


class MetricsServer(AdminServer):
    """Serves the text exposition format at ``path``; 404 elsewhere.

    With an ``auther`` every request needs valid Basic credentials (401
    otherwise).  The metrics come from ``current`` at request time, so
    ``enable()`` may run before or after the server starts.
    """

    name = "metrics"

    def __init__(self, addr, path="/metrics", auther=None):
        self.path = path or "/metrics"
        self.auther = auther
        self._scrape = (None, None)   # (Metrics, its prometheus WSGI app)
        super().__init__(addr, self._app)

    def _app(self, environ, start_response):
        if self.auther is not None and basic_auth_user(environ, self.auther) is None:
            status, headers, body = "401 Unauthorized", [WWW_AUTHENTICATE], b"unauthorized\n"
        elif environ.get("PATH_INFO", "") != self.path:
            status, headers, body = "404 Not Found", [("Content-Type", "text/plain")], b"not found\n"
        elif current is None:
            status, headers, body = "503 Service Unavailable", [("Content-Type", "text/plain")], b"metrics off\n"
        else:
            m, app = self._scrape
            if m is not current:   # enable() made a new registry
                m, app = self._scrape = current, make_wsgi_app(current.registry)
            return app(environ, start_response)
        start_response(status, headers)
        return [body]
