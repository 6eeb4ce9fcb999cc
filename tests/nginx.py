"""A real nginx for end-to-end tests: a foreground process on a free loopback port.

Use the ``nginx`` fixture (``from tests.nginx import nginx_fixture`` in the test module)::

    proxy = nginx(http="upstream gost { server 127.0.0.1:%d; keepalive 4; }" % port,
                  server="location / { proxy_pass http://gost; }")
    proxy.port          # where it listens, on 127.0.0.1

``http`` goes in the ``http {}`` block, ``server`` in the one ``server {}``
block, whose ``listen`` the fixture writes.  Everything nginx writes (pid,
logs, temp files) stays in the test's tmp dir, and it works as root and as a
normal user.  Without an nginx binary the test is skipped: CI installs it.
"""

import os
import shutil
import signal
import subprocess

import pytest
from gevent import socket

from tests.conftest import wait_until
from tests.procs import pick_ports

__all__ = ["Nginx", "nginx_binary", "nginx_fixture"]

LOCALHOST = "127.0.0.1"

# Debian installs nginx in /usr/sbin, which a normal user's PATH may lack.
_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")

_CONFIG = """\
worker_processes 1;
pid {dir}/nginx.pid;
lock_file {dir}/nginx.lock;
error_log {dir}/error.log info;
{user}
events {{
    worker_connections 256;
}}

http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;

{http}

    server {{
        listen {host}:{port};
{server}
    }}
}}
"""


def nginx_binary():
    """Path of the nginx executable, or None."""
    found = shutil.which("nginx")
    if found:
        return found
    for directory in _SBIN_DIRS:
        path = os.path.join(directory, "nginx")
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def _user_line():
    """As root, workers would drop to ``nobody``, who cannot enter a 0700 tmp dir: keep our user."""
    if os.geteuid() != 0:
        return ""   # "user" only makes sense for a root master; nginx would warn
    import grp
    import pwd

    return "user %s %s;" % (pwd.getpwuid(os.geteuid()).pw_name, grp.getgrgid(os.getegid()).gr_name)


def _indent(text, spaces):
    return "\n".join((" " * spaces + line) if line.strip() else "" for line in text.strip("\n").splitlines())


class Nginx:
    """One nginx master (and one worker) configured from ``http`` and ``server`` snippets."""

    def __init__(self, binary, directory, http="", server=""):
        self.binary = binary
        self.dir = str(directory)
        self.http = http
        self.server = server
        self.port = None
        self.proc = None
        self.conf = os.path.join(self.dir, "nginx.conf")
        self._output = None

    def start(self, timeout=10.0, attempts=3):
        """Start on a free port and wait until it accepts connections; retry if the port was taken.

        nginx cannot listen on port 0 and say which port it got, so the port
        is picked first, and taken again if something else bound it meanwhile.
        """
        os.makedirs(self.dir, exist_ok=True)
        for _ in range(attempts):
            (self.port,) = pick_ports(1)
            with open(self.conf, "w", encoding="utf-8") as fh:
                fh.write(_CONFIG.format(dir=self.dir, user=_user_line(), host=LOCALHOST, port=self.port,
                                        http=_indent(self.http, 4), server=_indent(self.server, 8)))
            self._output = open(os.path.join(self.dir, "nginx.out"), "ab")
            self.proc = subprocess.Popen(
                [self.binary, "-p", self.dir + "/", "-c", self.conf, "-e", os.path.join(self.dir, "error.log"),
                 "-g", "daemon off;"],
                stdin=subprocess.DEVNULL, stdout=self._output, stderr=subprocess.STDOUT)
            if self._wait_listening(timeout):
                return self
            in_use = "Address already in use" in self.log()
            self.stop()
            if not in_use:
                break
        raise RuntimeError("nginx did not start:\n" + self.log())

    def _accepts(self):
        try:
            with socket.create_connection((LOCALHOST, self.port), timeout=1):
                return True
        except OSError:
            return False

    def _wait_listening(self, timeout):
        """Until nginx accepts connections (True) or exits (False), within ``timeout``."""
        wait_until(lambda: self.proc.poll() is not None or self._accepts(), timeout)
        return self.proc.poll() is None and self._accepts()

    def log(self, limit=4000):
        """The tail of what nginx wrote to its error log and its output."""
        text = ""
        for name in ("nginx.out", "error.log"):
            try:
                with open(os.path.join(self.dir, name), encoding="utf-8", errors="replace") as fh:
                    text += "--- %s\n%s" % (name, fh.read()[-limit:])
            except OSError:
                pass
        return text

    def stop(self, timeout=5.0):
        """Fast shutdown (SIGTERM); killed if it is still there after ``timeout``; always reaped."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            if not wait_until(lambda: proc.poll() is not None, timeout):
                proc.kill()
            proc.wait(timeout=timeout)
        if self._output is not None:
            self._output.close()
            self._output = None


@pytest.fixture(name="nginx")
def nginx_fixture(tmp_path):
    """Start nginx instances from config snippets; all are stopped after the test."""
    binary = nginx_binary()
    if binary is None:
        pytest.skip("nginx binary not found (CI installs Debian's nginx package)")
    started = []

    def start(http="", server=""):
        proxy = Nginx(binary, tmp_path / ("nginx-%d" % len(started)), http=http, server=server)
        started.append(proxy)
        return proxy.start()

    yield start
    for proxy in reversed(started):
        proxy.stop()
