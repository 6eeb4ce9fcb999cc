"""Tunnel servers spread over ``--workers`` processes.

Every worker accepts on the tunnel port and on the entrypoints (SO_REUSEPORT),
so a tunnel client's connection lands in one worker and a visitor for that
tunnel in any.  Workers tell each other which tunnels they hold.  A worker
with no live connection for a request's tunnel passes the accepted socket
itself (SCM_RIGHTS), with the bytes it already read, to a worker that has
one; from then on that worker serves the connection as if it had accepted it.
A tunnel connection in the same worker is always preferred: handing off
costs one datagram each way through the kernel, and nothing after that.

Transport: one AF_UNIX datagram socket per worker, bound in the abstract
namespace before the fork.  Each process keeps only its own socket open, so
a worker that died refuses datagrams (ECONNREFUSED) instead of collecting
them unread.  It sends through one socket connected to each sibling: only a
connected datagram socket reports, by becoming writable, that the peer's
queue has room again (Linux queues only net.unix.max_dgram_qlen datagrams,
10 by default).  A message is one JSON line, then raw bytes; a hand-off
carries exactly one descriptor.
"""

import array
import json
import logging
import os
import socket as _stdsocket
import time
import uuid

import gevent
from gevent import socket
from gevent.lock import Semaphore

__all__ = ["Member", "create"]

log = logging.getLogger(__name__)

#: a hand-off carries a sniffed head (at most 64 KiB of ClientHello) and a header
MAX_MESSAGE = 256 * 1024
#: seconds a message may wait for room in a sibling's queue before that
#: sibling counts as stuck
SEND_TIMEOUT = 5.0


def create(count):
    """One member per worker, made before forking; each process keeps one (:meth:`Member.start`)."""
    tag = "gostgev-%d-%s" % (os.getpid(), uuid.uuid4().hex[:12])
    addresses = ["\0%s-%d" % (tag, i) for i in range(count)]
    members = []
    for index, address in enumerate(addresses):
        sock = _stdsocket.socket(_stdsocket.AF_UNIX, _stdsocket.SOCK_DGRAM)
        sock.bind(address)
        sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_SNDBUF, MAX_MESSAGE * 2)
        members.append(Member(index, addresses, sock))
    return members


class Member:
    """This process's view of its siblings: what they hold, and how to reach them."""

    def __init__(self, index, addresses, sock):
        self.index = index
        self.addresses = addresses
        self._raw = sock
        self.sock = None
        self._held = {}         # service name -> {worker index -> set of tunnel keys}
        self._receivers = {}    # service name -> callback(conn, header, data)
        self._turn = 0
        self._reader = None
        self._peers = {}        # sibling index -> (socket connected to it, its send lock)

    def start(self, others=()):
        """Serve this member in this process; close the sockets of ``others`` (theirs, not ours)."""
        for other in others:
            if other is not self:
                other._raw.close()
        self.sock = socket.socket(_stdsocket.AF_UNIX, _stdsocket.SOCK_DGRAM, fileno=self._raw.detach())
        for index, address in enumerate(self.addresses):
            if index != self.index:
                peer = socket.socket(_stdsocket.AF_UNIX, _stdsocket.SOCK_DGRAM)
                peer.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_SNDBUF, MAX_MESSAGE * 2)
                peer.connect(address)
                # one sender at a time: a gevent socket takes one waiter per event
                self._peers[index] = (peer, Semaphore())
        self._reader = gevent.spawn(self._receive)
        return self

    def close(self):
        if self._reader is not None:
            self._reader.kill(block=False)
        if self.sock is not None:
            self.sock.close()
        for peer, _ in self._peers.values():
            peer.close()

    # -- what the tunnel handler calls -------------------------------------------------

    def serve(self, service, receive):
        """Hand-offs for ``service`` go to ``receive(conn, header, data)``, in a greenlet of their own."""
        self._receivers[service] = receive

    def announce(self, service, keys):
        """Tell every sibling the tunnel keys ``service`` holds live connections for, here."""
        self._broadcast({"op": "held", "service": service, "tunnels": sorted(k.hex() for k in keys)})

    def owners(self, service, key):
        """Sibling indexes holding ``key``, rotated so consecutive calls start at different ones."""
        found = [i for i, keys in self._held.get(service, {}).items() if key.hex() in keys]
        if not found:
            return []
        self._turn += 1
        start = self._turn % len(found)
        return found[start:] + found[:start]

    def hand_off(self, index, conn, header, data):
        """Pass ``conn`` and ``data`` to sibling ``index``; False if it cannot be reached."""
        message = self._encode(dict(header, op="conn"), data)
        fds = array.array("i", [conn.fileno()])
        return self._send(index, message, [(_stdsocket.SOL_SOCKET, _stdsocket.SCM_RIGHTS, fds)])

    # -- wire --------------------------------------------------------------------------

    def _encode(self, header, data=b""):
        header["from"] = self.index
        return json.dumps(header, separators=(",", ":")).encode() + b"\n" + data

    def _broadcast(self, header):
        message = self._encode(header)
        for index in list(self._peers):
            self._send(index, message)

    def _send(self, index, message, ancdata=()):
        """One datagram to sibling ``index``; False (and the sibling forgotten) if it cannot take it."""
        if index not in self._peers:
            return False
        peer, lock = self._peers[index]
        deadline = time.monotonic() + SEND_TIMEOUT
        try:
            with lock:
                # gevent's sendmsg waits for room once, then reports 0 if
                # another sender's datagram took it: try again.
                while not peer.sendmsg([message], ancdata):
                    if time.monotonic() > deadline:
                        raise TimeoutError("its queue stayed full for %gs" % SEND_TIMEOUT)
        except OSError as exc:
            log.warning("worker %d unreachable, forgetting its tunnels: %s", index, exc.strerror or exc)
            self._forget(index)
            return False
        return True

    def _forget(self, index):
        for held in self._held.values():
            held.pop(index, None)

    def _receive(self):
        space = _stdsocket.CMSG_SPACE(array.array("i").itemsize * 4)
        while True:
            try:
                message, ancdata, flags, _ = self.sock.recvmsg(MAX_MESSAGE, space)
            except OSError as exc:
                log.error("worker channel: %s", exc.strerror or exc)
                gevent.sleep(1)   # do not spin if the socket itself is broken
                continue
            fds = _descriptors(ancdata)
            try:
                self._dispatch(message, fds, flags)
            except Exception:
                log.exception("worker channel: bad message")
            finally:
                for fd in fds:
                    _close_fd(fd)

    def _dispatch(self, message, fds, flags):
        head, _, data = message.partition(b"\n")
        header = json.loads(head)
        op, sender = header.get("op"), header.get("from")
        if op == "held":
            self._held.setdefault(header["service"], {})[sender] = set(header["tunnels"])
        elif op == "conn":
            receive = self._receivers.get(header.get("service"))
            if flags & (_stdsocket.MSG_TRUNC | _stdsocket.MSG_CTRUNC) or len(fds) != 1 or receive is None:
                log.warning("worker channel: hand-off from worker %s dropped", sender)
                return
            conn = socket.socket(fileno=os.dup(fds[0]))
            log.debug("hand-off from worker %s", sender)
            gevent.spawn(_serve, receive, conn, header, data)


def _serve(receive, conn, header, data):
    try:
        receive(conn, header, data)
    finally:
        conn.close()


def _descriptors(ancdata):
    fds = array.array("i")
    for level, kind, payload in ancdata:
        if level == _stdsocket.SOL_SOCKET and kind == _stdsocket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    return list(fds)


def _close_fd(fd):
    try:
        os.close(fd)
    except OSError:
        pass
