"""Running in the background: double fork, pid file.

Done before the first service starts, so no listener or greenlet crosses
the fork; ``gevent.reinit()`` then gives the child a fresh event loop.
"""

import errno
import os
import sys

import gevent

__all__ = ["daemonize", "PidFile", "PidFileError"]


class PidFileError(Exception):
    """Another live process owns the pid file, or it cannot be written."""


def daemonize():
    """Detach from the terminal; returns, in the grandchild only, ``ready(status, message)``.

    The original process waits until the daemon calls ``ready``: it then
    exits with that status and prints the message, so ``gostgev --daemon``
    fails visibly (and init scripts see it) when a port is taken or the
    config cannot start, instead of exiting 0 before anything happened.
    """
    read_end, write_end = os.pipe()
    if os.fork():
        os.close(write_end)
        _wait_for_daemon(read_end)
    os.close(read_end)
    os.setsid()
    if os.fork():
        os._exit(0)
    os.umask(0o022)
    os.chdir("/")   # do not keep a mount busy; config paths are already absolute
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if devnull > 2:
        os.close(devnull)
    gevent.reinit()

    def ready(status, message=""):
        try:
            os.write(write_end, b"%d %s" % (status, message.encode("utf-8", "replace")[:4000]))
            os.close(write_end)
        except OSError:
            pass

    return ready


def _wait_for_daemon(read_end):
    report = b""
    while True:
        chunk = os.read(read_end, 4096)
        if not chunk:
            break
        report += chunk
    status, _, message = report.decode("utf-8", "replace").partition(" ")
    if not status:
        print("gostgev: the daemon exited before it was ready", file=sys.stderr)
        os._exit(1)
    if message:
        print("gostgev: %s" % message, file=sys.stderr)
    os._exit(int(status))


class PidFile:
    def __init__(self, path):
        self.path = path

    def check(self):
        """Refuse if the file names another live gostgev."""
        try:
            with open(self.path) as fh:
                old = int(fh.read().strip() or 0)
        except (OSError, ValueError):
            old = 0
        if old and old != os.getpid() and _alive(old) and _is_gostgev(old):
            raise PidFileError("%s: gostgev already running as pid %d" % (self.path, old))

    def create(self):
        """Write our pid (atomically)."""
        self.check()
        try:
            tmp = "%s.%d" % (self.path, os.getpid())
            with open(tmp, "w") as fh:
                fh.write("%d\n" % os.getpid())
            os.replace(tmp, self.path)   # readers never see a half-written file
        except OSError as exc:
            raise PidFileError("%s: %s" % (self.path, exc.strerror)) from None

    def remove(self):
        try:
            with open(self.path) as fh:
                if int(fh.read().strip() or 0) != os.getpid():
                    return
            os.unlink(self.path)
        except (OSError, ValueError):
            pass


def _is_gostgev(pid):
    """Whether ``pid`` runs gostgev: a stale file may name a reused pid."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as fh:
            return b"gostgev" in fh.read()
    except OSError:
        return True   # cannot tell (no /proc): be safe, assume it is

def _alive(pid):
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True
