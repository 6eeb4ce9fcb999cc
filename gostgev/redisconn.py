"""Redis clients (redis-py) that cooperate with gevent without monkey-patching.

gostgev never monkey-patches the standard library, so redis-py's own
connections would block the whole process on every command.  Here its
connection class opens a gevent socket instead; redis-py's protocol code,
its pool and its reply parsing stay as they are.  Two more things make it
safe to use from greenlets:

* no retries with ``time.sleep`` back-off (that would block the hub): a
  command fails at once, and the caller decides when to try again;
* short timeouts: a Redis that is gone costs a caller at most
  ``socket_timeout`` seconds, never a hang.
"""

import socket as _stdsocket

import redis
from gevent import socket, ssl
from redis.backoff import NoBackoff
from redis.retry import Retry

from gostgev.addr import parse_addr

__all__ = ["RedisError", "client"]

#: what a failed command raises (connection refused, timeout, a server error...)
RedisError = (redis.RedisError, OSError)

#: seconds to connect, and to wait for one reply
CONNECT_TIMEOUT = 0.5
COMMAND_TIMEOUT = 1.0


class _GeventConnection(redis.Connection):
    """redis-py's connection on a gevent socket (TLS through gevent's ssl when asked)."""

    def __init__(self, *args, tls_context=None, tls_server_name=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._tls_context = tls_context
        self._tls_server_name = tls_server_name

    def _connect(self):
        sock = socket.create_connection((self.host, self.port), timeout=self.socket_connect_timeout)
        try:
            sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
            if self._tls_context is not None:
                sock = self._tls_context.wrap_socket(sock, server_hostname=self._tls_server_name or self.host)
            sock.settimeout(self.socket_timeout)
        except BaseException:
            sock.close()
            raise
        return sock


def _tls_context(tls):
    # gevent's SSLContext: ssl.create_default_context() would make the standard
    # library's, whose handshake blocks the hub.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls.ca_file:
        context.load_verify_locations(tls.ca_file)
    else:
        context.load_default_certs()
    if not tls.secure and not tls.ca_file:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.cert_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    return context


def client(config, timeout=COMMAND_TIMEOUT):
    """A ``redis.Redis`` for a :class:`gostgev.config.model.RedisConfig`."""
    addr = parse_addr(config.addr, default_port=6379)
    extra = {}
    if config.tls is not None:
        extra = {"tls_context": _tls_context(config.tls), "tls_server_name": config.tls.server_name}
    pool = redis.ConnectionPool(
        connection_class=_GeventConnection, host=addr.host or "127.0.0.1", port=addr.port, db=config.db,
        username=config.username or None, password=config.password or None,
        socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0), decode_responses=True, max_connections=256, **extra)
    return redis.Redis(connection_pool=pool)
