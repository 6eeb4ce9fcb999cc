"""One client's HTTP/1.x connection, routed request by request.

The forwarder (``tcp`` with sniffing) and the tunnel entrypoint both serve
plain HTTP this way.  Bytes pass through unchanged; the trackers of
:mod:`gostgev.codec.h1` only say where each message starts and ends::

    client ──recv──▶ RequestTracker ──Request──▶ route(head) ─┬─ same route: send on the open upstream
                                                              ├─ new route: wait until the open upstream
                                                              │  has answered everything, then open (or
                                                              │  take from the pool) the new one
                                                              └─ refused: wait likewise, answer 502/503
    upstream ──recv──▶ ResponseTracker ──▶ client  (END counts a response off)

Responses therefore reach the client in request order, and pipelined
requests to one route keep flowing without waiting.  A 101 (or a 2xx to
CONNECT) turns the connection into a plain pipe.

Two engines run this: :class:`_CallbackSession`, where the client is a
plain socket or a mux stream and every route opens plain sockets or mux
streams (the forwarder without a chain, the tunnel client, the
entrypoints): bytes move in event-loop callbacks, and the greenlet wakes
only for what has to wait.  :class:`_Session` serves the rest (a TLS or
WebSocket client, a chain) with a greenlet per upstream.

The package:

* :mod:`.routes`: what a caller hands :func:`serve_http`: :class:`Route`,
  :class:`Refused`, the :class:`UpstreamPool` routes draw connections
  from, and :func:`request_reporter` for ``on_request``.
* :mod:`.forwarding`: the headers a proxy adds (:class:`Forwarding`) and
  the loop guard.
* :mod:`.session`: what both engines share: the client's requests,
  routed one by one, and the session's end.
* :mod:`.upstream`: an open upstream connection, and what both engines do
  with what it answers.
* :mod:`.replay`: a request sent again when the mux session under its
  stream stalls.
* :mod:`.greenlets`: the engine with a greenlet per upstream (:class:`_Session`).
* :mod:`.callbacks` and :mod:`.callback_upstreams`: the engine of
  event-loop callbacks (:class:`_CallbackSession`), its client side and
  its upstream side.
"""

from gevent.socket import socket as GeventSocket

from gostgev.handler.http1.callbacks import _CallbackSession
from gostgev.handler.http1.forwarding import FORWARDED_STYLES, Forwarding, forwarded_style
from gostgev.handler.http1.greenlets import _Session, send_all
from gostgev.handler.http1.replay import REPLAY_LIMIT, SAFE_METHODS
from gostgev.handler.http1.routes import Refused, Route, UpstreamPool, WouldBlock, may_block, request_reporter
from gostgev.netio.mux import MuxStream
from gostgev.netio.peek import unwrap_prefix
from gostgev.netio.socketops import watch_idle

__all__ = ["Refused", "Route", "WouldBlock", "may_block", "serve_http", "UpstreamPool", "Forwarding",
           "forwarded_style", "request_reporter", "send_all", "FORWARDED_STYLES", "SAFE_METHODS", "REPLAY_LIMIT"]


def serve_http(client, client_ip, data, route_for, log, on_request=None, idle_timeout=None, forwarding=None,
               plain=False, head_timeout=None, head=None):
    """Serve ``client`` until it closes; ``data`` holds bytes already read from it.

    ``route_for(head, current_key)`` returns a :class:`Route` (the current
    one, when it still fits, keeps the open connection) or raises :class:`Refused`.
    ``on_request(fields)`` is called with each answered request's log fields.
    ``forwarding`` (a :class:`Forwarding`) adds headers to every request.
    ``plain``: every route opens plain TCP sockets or mux streams, so that,
    with a plain client socket too, the bytes can move in event-loop callbacks.
    ``head_timeout``: there, a request head begun must be complete within
    this many seconds, or the connection is closed (a client that trickles
    a head holds nothing for long).  ``head``: the request head at the
    start of ``data``, when a sniffer parsed it already.
    Returns ``(bytes in, bytes out)``.
    """
    if plain:
        client, ahead = unwrap_prefix(client)
        data += ahead
    kind = _CallbackSession if plain and type(client) in (GeventSocket, MuxStream) else _Session
    session = kind(client, client_ip, route_for, log, on_request)
    session.head_timeout = head_timeout
    session.forwarding = forwarding or None
    session.known_head = head
    activity, watchdog = watch_idle(idle_timeout, client, client)
    session.activity = activity
    try:
        return session.run(data)
    finally:
        if watchdog is not None:
            watchdog.close()
