"""Running in the background: double fork, pid file.

Done before the first service starts, so no listener or greenlet crosses
the fork; ``gevent.reinit()`` then gives the child a fresh event loop.
"""

import errno
import os

import gevent

__all__ = ["daemonize", "PidFile", "PidFileError"]


class PidFileError(Exception):
    """Another live process owns the pid file, or it cannot be written."""


def daemonize():
    """Detach from the terminal; returns in the grandchild only."""
    if os.fork():
        os._exit(0)
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


class PidFile:
    def __init__(self, path):
        self.path = path

    def create(self):
        """Write our pid; refuse if the file names another live process."""
        try:
            with open(self.path) as fh:
                old = int(fh.read().strip() or 0)
        except (OSError, ValueError):
            old = 0
        if old and old != os.getpid() and _alive(old):
            raise PidFileError("%s: gostgev already running as pid %d" % (self.path, old))
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


def _alive(pid):
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True
