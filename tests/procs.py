"""Helpers for tests that run gostgev (or nginx) as a separate process.

Ports: a process that can bind port 0 does, and says which port it got;
gostgev logs ``listening on HOST:PORT`` at info level for every service,
entrypoint and admin server, and :func:`listening` reads those lines.
Where a port has to be known before the process starts (one service of a
config dials another, ``--workers`` share a port, a restarted server must
come back on the same one), :func:`pick_ports` gives ports that were free
a moment ago, and :func:`retry_on_port_taken` starts again on new ones if
something else took one in between.  Waits poll with
:func:`tests.conftest.wait_until`, which yields to gevent: servers running
in the test process keep serving meanwhile.
"""

import re
import socket
import subprocess
import sys

from tests import ROOT
from tests.conftest import wait_until

__all__ = ["PortTaken", "fetch", "gostgev_process", "listening", "wait_listening",
           "wait_started", "pick_ports", "retry_on_port_taken"]

#: ``... info listening on 127.0.0.1:8080 service=proxy ...``, ``... info api listening on ...``
_LISTENING = re.compile(r" info (?:(api|metrics) )?listening on (\S+):(\d+)(.*)$")
_FIELD = re.compile(r" (service|entrypoint)=(\S+)")


class PortTaken(Exception):
    """A port picked for a process was bound by something else before the process could."""


def fetch(port, host="x", timeout=3):
    """One GET / with ``Connection: close``; the whole response, or b"" if the connection failed."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host.encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return data
    except OSError:
        return b""


# -- gostgev processes and the ports they report ----------------------------------------

def gostgev_process(args, log_path, cwd=ROOT, **popen):
    """``python -m gostgev ARGS`` with its log (stderr) in ``log_path``, which is started afresh."""
    with open(log_path, "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "gostgev", *map(str, args)], cwd=cwd,
                                stdout=subprocess.DEVNULL, stderr=log, **popen)


def listening(text):
    """``{name: port}`` from a gostgev log's ``listening on`` lines (text format, info level).

    A service is named by its name, a tunnel entrypoint ``"<service> entrypoint"``
    and the admin servers ``"api"`` and ``"metrics"``; for a name logged
    more than once (a restart, a reload), the last line counts.
    """
    ports = {}
    for line in text.splitlines():
        match = _LISTENING.search(line)
        if not match:
            continue
        admin, _host, port, rest = match.groups()
        fields = dict(_FIELD.findall(rest))
        if admin:
            ports[admin] = int(port)
        elif "service" in fields:
            ports[fields["service"] + (" entrypoint" if "entrypoint" in fields else "")] = int(port)
    return ports


def _read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except FileNotFoundError:
        return ""


def port_taken(text):
    """Whether a log says a bind failed because the address was in use."""
    return "address already in use" in text.lower()


def wait_started(proc, log_path, timeout=15):
    """Until ``proc`` logs that it started; PortTaken if it exited because a port was taken,
    AssertionError (with the log) if it exited otherwise or did not start within ``timeout``."""
    wait_until(lambda: " started with " in _read(log_path) or proc.poll() is not None, timeout)
    text = _read(log_path)
    if " started with " in text:
        return text
    if proc.poll() is not None and port_taken(text):
        raise PortTaken(text)
    raise AssertionError("gostgev did not start (exit status %s):\n%s" % (proc.poll(), text[-4000:]))


def wait_listening(proc, log_path, names, timeout=15):
    """``{name: port}`` for ``names`` (see :func:`listening`) once ``proc`` has started."""
    ports = listening(wait_started(proc, log_path, timeout))
    missing = [name for name in names if name not in ports]
    assert not missing, "no listening line for %s in:\n%s" % (missing, _read(log_path)[-4000:])
    return {name: ports[name] for name in names}


# -- ports that must be known before a process starts -----------------------------------------

def pick_ports(count):
    """``count`` distinct loopback ports that were free a moment ago.

    Something else may bind one before the process that is given it does,
    so use them only where the start is retried on new ones when that
    happens (:func:`retry_on_port_taken`).
    """
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def retry_on_port_taken(start, count, attempts=3):
    """``start(ports)`` with ``count`` picked ports; while it raises PortTaken, again with new
    ones, at most ``attempts`` times in all.  Whatever ``start`` returns."""
    for attempt in range(attempts):
        try:
            return start(pick_ports(count))
        except PortTaken:
            if attempt == attempts - 1:
                raise
    raise AssertionError("attempts must be at least 1")
