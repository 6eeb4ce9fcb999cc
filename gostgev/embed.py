"""gostgev inside another Python program: a whole configuration, or one tunnel client.

::

    import gostgev

    with gostgev.Tunnel(server="tunnel.example.com:8443", tunnel_id="4d21094e-...",
                        forward={"app.example.com": "127.0.0.1:8000"}, tls=True) as tunnel:
        tunnel.wait_connected(10)
        ...                                   # the program's own work

    running = gostgev.run({"services": [...]})   # GOST's config shape, as a dict
    running.wait_ready(5)
    ...
    running.stop()

gevent stays inside: the services run in a thread of their own, on a gevent
hub of their own, and nothing is monkey-patched, so a program built on
plain threads, Flask or asyncio keeps its own blocking calls as they are.
A thread rather than a subprocess: a mistake in the configuration raises
``ConfigError`` in the caller, a port that cannot be had raises from
``wait_ready``, the bound addresses are known at once, and nothing outlives
the program.  The services share the interpreter's GIL with the program: a
proxy that carries heavy traffic belongs in its own process
(``gostgev -c``), which is the same code.
"""

import threading
import time

import gevent
import gevent.event

from gostgev.components import build_config
from gostgev.runtime import Runtime
from gostgev.service import ServiceError

__all__ = ["Running", "Tunnel", "run"]

#: seconds live connections get to finish when a configuration stops
DEFAULT_GRACE = 5.0


class Running:
    """A configuration served in a background thread; see :func:`run`."""

    def __init__(self, config, base_dir=".", grace=DEFAULT_GRACE):
        warnings = []
        self.config = build_config(config, warnings, base_dir=base_dir)   # ConfigError here, in the caller
        self.warnings = warnings    #: what the configuration got warned about (unknown keys...)
        self.grace = grace
        self._ready = threading.Event()
        self._done = threading.Event()
        self._error = None
        self._wake = None           # the hub's async watcher: the one thing other threads may touch
        self._runtime = None
        self._thread = threading.Thread(target=self._main, name="gostgev", daemon=True)
        self._thread.start()

    def _main(self):
        hub = gevent.get_hub()      # this thread's own
        stop = gevent.event.Event()
        wake = hub.loop.async_()
        wake.start(stop.set)
        runtime = Runtime(lambda _warnings: self.config, self.grace)
        try:
            try:
                runtime.start(self.config)
            except (ServiceError, OSError, ValueError) as exc:
                self._error = exc
                return
            self._runtime = runtime
            self._wake = wake
            self._ready.set()
            stop.wait()
            runtime.stop()
        finally:
            self._wake = None
            wake.close()
            self._ready.set()
            self._done.set()
            hub.destroy(destroy_loop=True)

    def wait_ready(self, timeout=None):
        """True once every service listens; False after ``timeout`` seconds; the start's error
        (``ServiceError``: a port in use, a bad certificate...) if it failed."""
        if not self._ready.wait(timeout):
            return False
        if self._error is not None:
            raise self._error
        return not self._done.is_set()

    @property
    def addresses(self):
        """``{service name: (host, port)}`` as bound (a config may ask for port 0)."""
        runtime = self._runtime
        if runtime is None:
            return {}
        return {name: service.address for name, service in runtime.services.items()}

    @property
    def entrypoints(self):
        """``{service name: [(host, port), ...]}``: the bound entrypoints of tunnel servers."""
        runtime = self._runtime
        if runtime is None:
            return {}
        return {name: [entrypoint.address for entrypoint in service.handler.entrypoints]
                for name, service in runtime.services.items() if hasattr(service.handler, "entrypoints")}

    def stop(self, timeout=None):
        """Stop serving (live connections get ``grace`` seconds) and wait up to ``timeout`` for it."""
        wake = self._wake
        if wake is not None:
            wake.send()             # thread-safe: wakes the hub, which stops the services
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def __enter__(self):
        if not self.wait_ready(30):
            self.stop(1)
            raise ServiceError("gostgev did not start within 30s")
        return self

    def __exit__(self, *exc):
        self.stop(self.grace + 5)


def run(config, base_dir=".", grace=DEFAULT_GRACE):
    """Serve ``config`` (GOST's configuration, as a dict) in a background thread.

    Returns a :class:`Running`: ``wait_ready()``, ``addresses``, ``stop()``;
    it is also a context manager.  ``ConfigError`` (naming the key) if the
    configuration is wrong.
    """
    return Running(config, base_dir, grace)


class Tunnel(Running):
    """A tunnel client: ``forward`` maps public host names to local ``host:port`` addresses.

    ``server`` is the tunnel server's ``host:port``; ``tunnel_id`` the UUID
    its ingress routes those hosts to; ``tls`` dials the server with TLS
    (``secure`` verifies it, against ``ca_file`` if given); ``username`` and
    ``password`` authenticate; ``connections`` tunnel connections are kept.
    """

    def __init__(self, server, tunnel_id, forward, tls=False, secure=False, ca_file=None, username=None,
                 password=None, connections=1, grace=DEFAULT_GRACE):
        connector = {"type": "tunnel", "metadata": {"tunnel.id": str(tunnel_id),
                                                    "tunnel.connections": int(connections)}}
        if username is not None:
            connector["auth"] = {"username": username, "password": password or ""}
        dialer = {"type": "tls" if tls else "tcp"}
        if tls and (secure or ca_file):
            dialer["tls"] = {"secure": bool(secure), **({"caFile": ca_file} if ca_file else {})}
        config = {
            "services": [{"name": "tunnel", "addr": ":0",
                          "handler": {"type": "rtcp", "metadata": {"sniffing": True}},
                          "listener": {"type": "rtcp", "chain": "tunnel-server"},
                          "forwarder": {"nodes": [{"name": host, "addr": addr, "host": host}
                                                  for host, addr in dict(forward).items()]}}],
            "chains": [{"name": "tunnel-server", "hops": [{"name": "hop-0", "nodes": [
                {"name": "server", "addr": server, "connector": connector, "dialer": dialer}]}]}],
        }
        super().__init__(config, grace=grace)

    @property
    def connected(self):
        """Whether a tunnel connection to the server is up now."""
        runtime = self._runtime
        service = runtime.services.get("tunnel") if runtime is not None else None
        return service is not None and service.listener.bound is not None

    def wait_connected(self, timeout=None):
        """True once a tunnel connection is up; False after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self.wait_ready(timeout):
            return False
        pause = threading.Event()   # never set: a sleep in the caller's thread, not in gevent's
        while not self.connected:
            if self._done.is_set() or (deadline is not None and time.monotonic() >= deadline):
                return False
            pause.wait(0.05)
        return True
