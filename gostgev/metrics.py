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
(both ``{host,service,tunnel}``), ``gostgev_tunnel_reconnects_total{host,service}``
and ``gostgev_http_requests_total{host,service,code}``.

Nothing here is process-wide: the process builds one :class:`Metrics` when
the configuration asks for metrics and hands it to every service through
their :class:`gostgev.service.ServiceContext`, and to the
:class:`MetricsServer`.  Without metrics, services hold :data:`OFF`, whose
methods do nothing.
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

__all__ = ["Metrics", "NoMetrics", "OFF", "MetricsServer", "AdminServer", "basic_auth_user", "WWW_AUTHENTICATE"]

#: buckets of gost_service_request_duration_seconds, as in GOST
REQUEST_BUCKETS = (.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 15, 30, 60)
#: buckets of gost_chain_node_connect_duration_seconds, as in GOST
CONNECT_BUCKETS = (.01, .05, .1, .25, .5, 1, 1.5, 2, 5, 10, 15, 30, 60)


class NoMetrics:
    """What services record into while metrics are off: nothing, at the cost of one call."""

    def services(self, count):
        pass

    def request_started(self, service, client=""):
        return None

    def request_finished(self, token, error=False):
        pass

    def http_request(self, service, status):
        pass

    def transfer(self, service, bytes_in, bytes_out, client=""):
        pass

    def chain_error(self, chain, node):
        pass

    def node_connect(self, chain, node, seconds):
        pass

    def tunnel_connections(self, service, tunnel, count):
        pass

    def tunnel_stream(self, service, tunnel):
        pass

    def tunnel_reconnect(self, service):
        pass

    def cluster_forward(self, service, node):
        pass

    def rate_limited(self, service):
        pass

    def limiter_wait(self, service, direction, seconds):
        pass


#: the metrics of a process that collects none
OFF = NoMetrics()


def _tunnel_label(tunnel):
    # A TunnelID's bare UUID: the "$" of private rules is not part of its identity.
    return getattr(tunnel, "text", None) or str(tunnel)


class Metrics(NoMetrics):
    """One registry holding every gostgev series; tests may build several."""

    def __init__(self, hostname=None):
        # The Go client GOST uses exports no *_created series; neither do we.
        disable_created_metrics()
        self.host = host = hostname if hostname is not None else gethostname()
        self.registry = reg = CollectorRegistry()
        # GOST registers the process collector too (metrics/process_standard.go).
        ProcessCollector(registry=reg)
        svc = ["host", "service", "client"]
        self._services = Gauge("gost_services", "Current number of services", ["host"], registry=reg)
        self._requests = Counter("gost_service_requests_total", "Total number of requests", svc, registry=reg)
        self._in_flight = Gauge("gost_service_requests_in_flight", "Current in-flight requests", svc, registry=reg)
        self._duration = Histogram("gost_service_request_duration_seconds", "Distribution of request latencies",
                                   ["host", "service"], buckets=REQUEST_BUCKETS, registry=reg)
        self._bytes_in = Counter("gost_service_transfer_input_bytes_total",
                                 "Total service input data transfer size in bytes", svc, registry=reg)
        self._bytes_out = Counter("gost_service_transfer_output_bytes_total",
                                  "Total service output data transfer size in bytes", svc, registry=reg)
        self._handler_errors = Counter("gost_service_handler_errors_total", "Total service handler errors",
                                       svc, registry=reg)
        self._chain_errors = Counter("gost_chain_errors_total", "Total chain errors",
                                     ["host", "chain", "node"], registry=reg)
        self._node_connect = Histogram("gost_chain_node_connect_duration_seconds",
                                       "Distribution of chain node connect latencies", ["host", "chain", "node"],
                                       buckets=CONNECT_BUCKETS, registry=reg)
        tun = ["host", "service", "tunnel"]
        self._tunnel_connections = Gauge("gostgev_tunnel_connections", "Current client connections of a tunnel",
                                         tun, registry=reg)
        self._tunnel_streams = Counter("gostgev_tunnel_streams_total", "Total streams opened through a tunnel",
                                       tun, registry=reg)
        self._tunnel_reconnects = Counter("gostgev_tunnel_reconnects_total",
                                          "Total reconnections of a tunnel client", ["host", "service"], registry=reg)
        # gost_service_requests_total counts connections, as GOST does; this counts
        # the HTTP requests routed one by one on them.
        self._cluster_forwards = Counter("gostgev_cluster_forwards_total",
                                         "Total visitors and HTTP requests sent to another node of the cluster",
                                         ["host", "service", "node"], registry=reg)
        self._rate_limited = Counter("gostgev_rlimiter_refused_total",
                                     "Total connections refused for coming faster than the service's rlimiter allows",
                                     ["host", "service"], registry=reg)
        self._limiter_waits = Counter("gostgev_limiter_wait_seconds_total",
                                      "Seconds connections waited for their bandwidth limiter, by direction",
                                      ["host", "service", "direction"], registry=reg)
        self._http_requests = Counter("gostgev_http_requests_total", "Total HTTP requests routed, by status class",
                                      ["host", "service", "code"], registry=reg)
        self._services.labels(host).set(0)

    def services(self, count):
        self._services.labels(self.host).set(count)

    def request_started(self, service, client=""):
        """Count a request and mark it in flight; pass the token to request_finished()."""
        self._requests.labels(self.host, service, client).inc()
        self._in_flight.labels(self.host, service, client).inc()
        return (service, client, time.monotonic())

    def request_finished(self, token, error=False):
        service, client, started = token
        self._in_flight.labels(self.host, service, client).dec()
        self._duration.labels(self.host, service).observe(time.monotonic() - started)
        if error:
            self._handler_errors.labels(self.host, service, client).inc()

    def http_request(self, service, status):
        """Count one HTTP request routed on its own, by status class (2xx, 5xx...)."""
        self._http_requests.labels(self.host, service, "%dxx" % (status // 100)).inc()

    def transfer(self, service, bytes_in, bytes_out, client=""):
        if bytes_in:
            self._bytes_in.labels(self.host, service, client).inc(bytes_in)
        if bytes_out:
            self._bytes_out.labels(self.host, service, client).inc(bytes_out)

    def chain_error(self, chain, node):
        self._chain_errors.labels(self.host, chain or "", node or "").inc()

    def node_connect(self, chain, node, seconds):
        self._node_connect.labels(self.host, chain or "", node or "").observe(seconds)

    def tunnel_connections(self, service, tunnel, count):
        self._tunnel_connections.labels(self.host, service, _tunnel_label(tunnel)).set(count)

    def tunnel_stream(self, service, tunnel):
        self._tunnel_streams.labels(self.host, service, _tunnel_label(tunnel)).inc()

    def tunnel_reconnect(self, service):
        self._tunnel_reconnects.labels(self.host, service).inc()

    def cluster_forward(self, service, node):
        self._cluster_forwards.labels(self.host, service, node).inc()

    def rate_limited(self, service):
        self._rate_limited.labels(self.host, service).inc()

    def limiter_wait(self, service, direction, seconds):
        self._limiter_waits.labels(self.host, service, direction).inc(seconds)


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
    otherwise).  ``metrics`` is the process's :class:`Metrics`; without one
    (metrics off) the endpoint answers 503.
    """

    name = "metrics"

    def __init__(self, addr, path="/metrics", auther=None, metrics=None):
        self.path = path or "/metrics"
        self.auther = auther
        self.metrics = metrics
        self._scrape = make_wsgi_app(metrics.registry) if metrics is not None else None
        super().__init__(addr, self._app)

    def _app(self, environ, start_response):
        if self.auther is not None and basic_auth_user(environ, self.auther) is None:
            status, headers, body = "401 Unauthorized", [WWW_AUTHENTICATE], b"unauthorized\n"
        elif environ.get("PATH_INFO", "") != self.path:
            status, headers, body = "404 Not Found", [("Content-Type", "text/plain")], b"not found\n"
        elif self._scrape is None:
            status, headers, body = "503 Service Unavailable", [("Content-Type", "text/plain")], b"metrics off\n"
        else:
            return self._scrape(environ, start_response)
        start_response(status, headers)
        return [body]
