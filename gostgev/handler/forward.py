"""The ``tcp`` (alias ``forward``) handler: port forwarding and reverse proxy.

Flow of one connection::

    handle()
    ├── sniffing off ─────────────────────────────┐
    └── sniffing on: sniff() within sniffing.timeout
        ├── TLS  ClientHello -> host = SNI         │
        ├── HTTP request head -> host = Host       ├── forwarder.route(host, protocol, path)
        ├── other bytes -> host unknown            │   ├── no node: HTTP 502 / close
        └── timeout, EOF, malformed: close (400)  ─┘   └── dial nodes in order
                                                           ├── all failed: HTTP 503 / close
                                                           └── replay sniffed bytes, pipe()

Routing is decided once per connection, like an SNI proxy or HAProxy in TCP
mode: later requests on a kept-alive HTTP connection go to the same node.
"""

import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from gostgev.addr import parse_addr, split_host_port
from gostgev.codec.http import simple_response
from gostgev.codec.sniff import HTTP, TLS
from gostgev.dialer import DEFAULT_DIAL_TIMEOUT, dial_tcp
from gostgev.forwarder import Forwarder
from gostgev.handler import HANDLERS, Handler
from gostgev.netio.close import close_gently
from gostgev.netio.peek import MalformedHead, PeerClosed, SniffTimeout, sniff
from gostgev.netio.pipe import pipe

__all__ = ["ForwardHandler", "ForwardOptions"]

#: default for ``sniffing.timeout``; GOST has none, which lets a silent client
#: hold a connection forever
DEFAULT_SNIFF_TIMEOUT = 10.0

#: default port by sniffed protocol, for node addresses written without one
_DEFAULT_PORTS = {HTTP: 80, TLS: 443}


@dataclass(frozen=True, slots=True)
class ForwardOptions:
    sniffing: bool = False                       #: route by HTTP Host / TLS SNI
    sniffing_timeout: float = DEFAULT_SNIFF_TIMEOUT  #: deadline for the whole head
    idle_timeout: float = 0.0                    #: close after this long without traffic; 0 = never
    dial_timeout: float = DEFAULT_DIAL_TIMEOUT   #: TCP connect timeout per node


@HANDLERS.register("tcp", "forward")
class ForwardHandler(Handler):
    needs_forwarder = True

    @classmethod
    def parse_options(cls, md, base_dir):
        sniff_timeout = md.duration("sniffing.timeout", default=DEFAULT_SNIFF_TIMEOUT)
        return ForwardOptions(
            sniffing=md.bool("sniffing"),
            # 0 means "none" in GOST; we never allow an unbounded sniff.
            sniffing_timeout=sniff_timeout or DEFAULT_SNIFF_TIMEOUT,
            idle_timeout=md.duration("idletimeout"),
            dial_timeout=md.duration("dialtimeout", default=DEFAULT_DIAL_TIMEOUT) or DEFAULT_DIAL_TIMEOUT,
        )

    def __init__(self, service_config, log):
        super().__init__(service_config, log)
        self.forwarder = Forwarder(service_config.forwarder)

    def handle(self, sock, address):
        started = time.monotonic()
        log = self.log.bind(remote="%s:%d" % address[:2])
        sniffed = None
        if self.options.sniffing:
            sniffed = self._sniff(sock, log)
            if sniffed is None:
                return
        protocol = sniffed.protocol if sniffed else None
        host = sniffed.host if sniffed else None
        path = _request_path(sniffed.head.target) if protocol == HTTP else None
        log = log.bind(host=host, protocol=protocol or None)

        nodes = self.forwarder.route(host, protocol, path, client_ip=address[0])
        if not nodes:
            self._refuse(sock, protocol, 502, "no route for host %s" % (host or "(none)"), log)
            return
        upstream, node = self._dial(nodes, sniffed, log)
        if upstream is None:
            self._refuse(sock, protocol, 503, "no node reachable for host %s" % (host or "(none)"), log)
            return
        log = log.bind(node=node.name)
        data = sniffed.data if sniffed else b""
        up = down = 0
        error = None
        try:
            if data:
                upstream.sendall(data)
            up, down = pipe(sock, upstream, self.options.idle_timeout)
        except OSError as exc:
            error = exc.strerror or str(exc)
        finally:
            upstream.close()
        log.info("%s closed", "connection" if error is None else "connection failed",
                 fields={"inputBytes": len(data) + up, "outputBytes": down,
                         "duration": "%.3fs" % (time.monotonic() - started), "error": error})

    def _sniff(self, sock, log):
        try:
            return sniff(sock, self.options.sniffing_timeout)
        except SniffTimeout:
            log.info("no complete request head within %gs, closing", self.options.sniffing_timeout)
        except PeerClosed:
            log.debug("client closed before sending a request head")
        except MalformedHead as exc:
            log.warning("%s", exc)
            # An HTTP client is told why; a TLS client cannot read plain text.
            if exc.protocol == HTTP:
                close_gently(sock, simple_response(400, "gostgev: bad request"))
        except OSError as exc:
            log.debug("client error while sniffing: %s", exc)
        return None

    def _dial(self, nodes, sniffed, log):
        for node in nodes:
            target = _target(node, sniffed)
            if target is None:
                continue
            try:
                upstream = dial_tcp(target[0], target[1], self.options.dial_timeout)
            except OSError as exc:
                node.mark_failed()
                log.warning("dial %s (%s:%d) failed: %s", node.name, target[0], target[1], exc.strerror or exc)
                continue
            node.mark_ok()
            return upstream, node
        return None, None

    def _refuse(self, sock, protocol, status, message, log):
        log.warning("%s", message)
        if protocol == HTTP:
            close_gently(sock, simple_response(status, "gostgev: " + message))


def _request_path(target):
    """The path of an origin-form (``/a``) or absolute-form (``http://h/a``) target."""
    if target.startswith("/"):
        return target
    return urlsplit(target).path or "/"


def _target(node, sniffed):
    """``(host, port)`` to dial for ``node``, or None if it cannot serve this."""
    protocol = sniffed.protocol if sniffed else None
    default_port = _DEFAULT_PORTS.get(protocol)
    if node.config.addr:
        addr = parse_addr(node.config.addr, default_port=0)
        port = addr.port or default_port
        return (addr.host, port) if port else None
    # An empty node address dials the sniffed host itself (SNI-proxy style).
    if sniffed is None or not sniffed.host or default_port is None:
        return None
    if protocol == HTTP:
        _, port_text = split_host_port(sniffed.head.header("host") or "")
        if port_text.isdigit():
            default_port = int(port_text)
    return sniffed.host, default_port
