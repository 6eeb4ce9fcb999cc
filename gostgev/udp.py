"""UDP services: ``udp`` (a port that forwards datagrams) and ``rudp`` (UDP through a tunnel).

* The ``udp`` listener reads datagrams on a bound socket and keeps one
  *association* per client address: a connection-like object whose
  ``recv`` gives that client's next datagram and whose ``sendall`` sends
  one back.  An association ends after ``ttl`` seconds without a datagram;
  at most ``backlog`` live at once (a datagram from a new client beyond
  that is dropped, and said once a second).
* The ``rudp`` listener with a chain binds through it for network ``udp``
  (GOST's FUDP flag and Network feature): the server opens a stream per
  public UDP association, and datagrams travel framed on it
  (:mod:`gostgev.codec.udpframe`).
* The ``udp``/``rudp`` handler relays an association, datagram for
  datagram: to a node over a UDP socket of its own, or through a chain
  (a tunnel visitor: CONNECT with network ``udp``), framed.  A tunnel
  stream from ``rudp`` is deframed to the node the same way.
"""

from dataclasses import dataclass

import gevent
import gevent.queue
from gevent import socket

from gostgev.addr import format_address, parse_addr
from gostgev.codec.udpframe import MAX_DATAGRAM, Deframer, encode
from gostgev.connection import DONE, failed
from gostgev.errors import ProtocolError
from gostgev.handler.base import HANDLERS, Handler
from gostgev.limits import RateLimitedLog
from gostgev.listener import LISTENERS, Listener, RtcpListener
from gostgev.metrics import OFF
from gostgev.settings import DURATION, INT, setting

__all__ = ["UdpListener", "RudpListener", "UdpHandler", "Association"]

#: GOST's udp listener defaults: an association's idle time and the most that live at once
DEFAULT_TTL = 5.0
DEFAULT_BACKLOG = 128


class Association:
    """One client of a UDP port, as a connection: ``recv`` its next datagram, ``sendall`` one back."""

    def __init__(self, listener, peer, ttl):
        self.listener = listener
        self.peer = peer
        self.ttl = ttl
        self.queue = gevent.queue.Queue(maxsize=256)   # a client that floods loses datagrams, not memory
        self.closed = False

    def recv_datagram(self):
        """The next datagram (an empty one is a datagram too); None after ``ttl`` seconds without
        one, or once closed."""
        if self.closed:
            return None
        try:
            return self.queue.get(timeout=self.ttl)
        except gevent.queue.Empty:
            return None

    def sendall(self, datagram):
        if not self.closed:
            self.listener.sock.sendto(datagram, self.peer)

    send = sendall

    def getpeername(self):
        return self.peer

    def shutdown(self, _how):
        self.close()

    def close(self):
        if not self.closed:
            self.closed = True
            self.listener.forget(self)
            if not self.queue.full():
                self.queue.put_nowait(None)     # wakes a reader: the association is over


@dataclass(frozen=True, slots=True)
class UdpListenerOptions:
    ttl: float = setting("ttl", DURATION, DEFAULT_TTL, "an association ends after this long without a datagram")
    backlog: int = setting("backlog", INT, DEFAULT_BACKLOG, "associations (client addresses) alive at once",
                           minimum=1, maximum=65536)


@LISTENERS.register("udp")
class UdpListener(Listener):
    options_class = UdpListenerOptions
    takes_proxy_header = False
    upgrade = None

    def __init__(self, service_config, log, addr=None, reuse_port=False, metrics=OFF):
        super().__init__(service_config, log, addr, reuse_port, metrics)
        options = service_config.listener.options or UdpListenerOptions()
        self.ttl, self.backlog = options.ttl, options.backlog
        self.sock = None
        self.associations = {}
        self.warn = RateLimitedLog(log)
        self._loop = None
        self._pool = gevent.pool.Group()

    def bind(self, inherit=None):
        if self.sock is None:
            host = self.addr.host or "0.0.0.0"
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.bind((host, self.addr.port))
            except BaseException:
                sock.close()
                raise
            self.sock = sock

    def listening(self):
        return {}

    @property
    def address(self):
        return self.sock.getsockname()[:2] if self.sock is not None else None

    def start(self, accepted):
        self.bind()
        self.log.info("listening on %s (udp)", format_address(self.address))
        self._loop = gevent.spawn(self._read, accepted)

    def _read(self, accepted):
        while True:
            try:
                data, peer = self.sock.recvfrom(MAX_DATAGRAM)
            except OSError:
                return
            association = self.associations.get(peer)
            if association is None:
                if len(self.associations) >= self.backlog:
                    self.warn.warning("backlog", "%d UDP associations alive (backlog): datagram from %s dropped",
                                      len(self.associations), format_address(peer))
                    continue
                association = self.associations[peer] = Association(self, peer, self.ttl)
                self._pool.spawn(self._serve, association, accepted)
            if not association.queue.full():
                association.queue.put_nowait(data)

    def _serve(self, association, accepted):
        try:
            accepted(association, association.peer, {})
        finally:
            association.close()

    def forget(self, association):
        if self.associations.get(association.peer) is association:
            del self.associations[association.peer]

    def close(self):
        if self._loop is not None:
            self._loop.kill(block=False)
        if self.sock is not None:
            self.sock.close()

    def stop(self, timeout=None):
        self.close()
        for association in list(self.associations.values()):
            association.close()
        self._pool.join(timeout=timeout)
        self._pool.kill(block=True, timeout=1)


@LISTENERS.register("rudp")
class RudpListener(RtcpListener):
    """``rtcp``'s tunnel client, bound for network ``udp``: each stream is one public UDP association."""

    network = "udp"

    def __init__(self, service_config, log, reuse_port=False, metrics=OFF):
        if service_config.listener.chain is None:
            raise ValueError("rudp: only through a chain (a tunnel client) is supported")
        super().__init__(service_config, log, reuse_port=reuse_port, metrics=metrics)


@HANDLERS.register("udp", "rudp")
class UdpHandler(Handler):
    """Relays a UDP association, datagram for datagram, to a forwarder node or through a chain."""

    accepts_chain = True

    def __init__(self, service_config, log, metrics=OFF):
        super().__init__(service_config, log, metrics)
        from gostgev.forwarder import Forwarder

        forwarder = service_config.forwarder
        self.forwarder = Forwarder(forwarder) if forwarder is not None and forwarder.nodes else None
        self.chain = None
        if service_config.handler.chain is not None:
            from gostgev.chain import Chain

            self.chain = Chain(service_config.handler.chain, metrics=metrics)

    def handle(self, conn):
        target = conn.target
        nodes = self.forwarder.route(None, None, None, client_ip=conn.address[0]) if self.forwarder else [None]
        node = nodes[0] if nodes else None
        where = node.config.addr if node is not None and node.config.addr else target
        if not where:
            conn.log.warning("no node for this UDP association")
            return failed("no node")
        framed_in = self.config.listener.type == "rudp"    # a tunnel stream: framed datagrams
        try:
            if self.chain is not None:
                upstream = self.chain.dial(where, network="udp", src=conn.peer)
                return self._relay(conn, conn.sock, framed_in, upstream, True, where)
            addr = parse_addr(where)
            upstream = socket.socket(socket.AF_INET6 if ":" in addr.host else socket.AF_INET, socket.SOCK_DGRAM)
            upstream.connect((addr.host, addr.port))
        except (OSError, ProtocolError, ValueError) as exc:
            conn.log.warning("UDP to %s failed: %s", where, exc)
            return failed(str(exc))
        return self._relay(conn, conn.sock, framed_in, upstream, False, where)

    def _relay(self, conn, client, client_framed, upstream, upstream_framed, where):
        counts = [0, 0]

        def pump(src, src_framed, dst, dst_framed, index):
            read = _reader(src, src_framed)
            try:
                while True:
                    datagrams = read()
                    if datagrams is None:
                        return
                    for datagram in datagrams:
                        if dst_framed:
                            dst.sendall(encode(datagram))
                        else:
                            dst.send(datagram)   # sendall would send nothing for an empty datagram
                        counts[index] += len(datagram)
            except (OSError, ProtocolError):
                return

        # The answers' side ends with the client's: its association's ttl, or its stream's end.
        back = gevent.spawn(pump, upstream, upstream_framed, client, client_framed, 1)
        try:
            pump(client, client_framed, upstream, upstream_framed, 0)
        finally:
            back.kill(block=True, timeout=1)
            upstream.close()
        conn.log.info("udp association closed", fields={"node": where, "inputBytes": counts[0],
                                                         "outputBytes": counts[1]})
        return DONE


def _reader(src, framed):
    """``read()`` -> the next datagrams from ``src``, or None at its end.

    A stream's datagrams are framed and it ends with its EOF; an
    association ends after its ttl; a UDP socket has no end (its relay is
    stopped from the other side), and an empty datagram is a datagram.
    """
    if framed:
        deframer = Deframer()

        def read():
            data = src.recv(MAX_DATAGRAM + 2)
            return deframer.feed(data) if data else None
    elif isinstance(src, Association):
        def read():
            datagram = src.recv_datagram()
            return None if datagram is None else [datagram]
    else:
        def read():
            return [src.recv(MAX_DATAGRAM)]
    return read
