"""Reading a text file named in a config: regular files of bounded size only.

A path pointing at /dev/zero, a FIFO or a huge file must give an error, not
a process that reads forever or blocks at start-up or reload.
"""

import os
import stat

__all__ = ["MAX_TEXT_FILE", "read_text"]

#: more than any config or users file needs
MAX_TEXT_FILE = 16 << 20


def read_text(path, limit=MAX_TEXT_FILE):
    """The file's text; OSError if it cannot be read, ValueError if it is not a
    regular file, is larger than ``limit`` or is not UTF-8."""
    with open(path, "rb", opener=_nonblocking) as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ValueError("larger than %d MiB" % (limit >> 20))
    return data.decode("utf-8")


def _nonblocking(path, flags):
    # Opening a FIFO for reading blocks until a writer appears; with
    # O_NONBLOCK it returns at once and fstat tells what it is.
    return os.open(path, flags | os.O_NONBLOCK)
