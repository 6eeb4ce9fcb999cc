"""The ``file`` handler: a small static HTTP file server (GOST's ``file``).

It exists so that a config can carry its own backends: the demo in
``etc/gost.yaml`` and the tests route real traffic to it.  GET and HEAD
only, keep-alive, ``index.html`` or a plain listing for directories.
Every resolved path must stay inside the root, after symlinks.
"""

import html
import mimetypes
import os
import posixpath
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

import gevent

from gostgev.codec.http import parse_request_head, simple_response
from gostgev.connection import DONE, failed
from gostgev.handler.base import HANDLERS, Handler
from gostgev.netio.close import close_gently
from gostgev.netio.peek import PeerClosed, read_head
from gostgev.settings import REQUIRED, setting

__all__ = ["FileHandler"]

#: seconds an idle keep-alive connection may wait for its next request
KEEPALIVE_TIMEOUT = 30.0
#: bytes per read from the file while sending it
FILE_CHUNK = 256 * 1024


def _root(md, spec, context, got):
    """The absolute, symlink-free path of the directory named by ``file.dir``."""
    directory = md.str(*spec.keys)
    if not directory:
        raise ValueError("%s: required (the directory to serve)" % spec.key)
    root = os.path.realpath(os.path.join(context.base_dir, directory))
    if not os.path.isdir(root):
        raise ValueError("%s: %r is not a directory" % (spec.key, directory))
    return root


@dataclass(frozen=True, slots=True)
class FileOptions:
    root: str = setting("file.dir", "path", REQUIRED,
                        "the directory to serve, relative to the config file's directory", aliases=("dir",),
                        parse=_root)


@HANDLERS.register("file")
class FileHandler(Handler):
    options_class = FileOptions

    def handle(self, conn):
        sock, log = conn.sock, conn.log
        data = b""
        while True:
            try:
                with gevent.Timeout(KEEPALIVE_TIMEOUT, PeerClosed):
                    head, data = read_head(sock, parse_request_head, data, trigger=b"\n")
            except PeerClosed:
                return DONE
            except (ValueError, OSError) as exc:
                log.debug("bad request: %s", exc)
                close_gently(sock, simple_response(400, "bad request"))
                return failed("bad request: %s" % exc)
            data = data[head.length:]
            if _has_body(head):
                close_gently(sock, simple_response(413, "request bodies are not accepted"))
                return failed("a request with a body")
            keep_alive = _keep_alive(head)
            status = self._respond(sock, head, keep_alive)
            log.debug("%s %s %d", head.method, head.target, status)
            if not keep_alive:
                return DONE

    def _respond(self, sock, head, keep_alive):
        if head.method not in ("GET", "HEAD"):
            sock.sendall(simple_response(405, "method not allowed", keep_alive=keep_alive))
            return 405
        url_path = urlsplit(head.target).path or "/"
        path = self._resolve(url_path)
        if path is None:
            sock.sendall(simple_response(404, "not found", keep_alive=keep_alive))
            return 404
        if os.path.isdir(path):
            if not url_path.endswith("/"):
                return _send(sock, 301, b"", "text/plain", keep_alive, head,
                             extra="Location: %s/\r\n" % quote(url_path))
            index = os.path.join(path, "index.html")
            if not os.path.isfile(index):
                return _send(sock, 200, _listing(path, url_path), "text/html; charset=utf-8", keep_alive, head)
            path = index
        try:
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                ctype = mimetypes.guess_type(path)[0] or "application/octet-stream"
                sock.sendall(_head(200, ctype, size, keep_alive))
                if head.method == "GET":
                    while chunk := fh.read(FILE_CHUNK):
                        sock.sendall(chunk)
        except OSError:
            sock.sendall(simple_response(404, "not found", keep_alive=keep_alive))
            return 404
        return 200

    def _resolve(self, url_path):
        """Map a URL path to a file inside the root, or None."""
        clean = posixpath.normpath("/" + unquote(url_path))
        if "\x00" in clean:
            return None
        path = os.path.realpath(os.path.join(self.options.root, clean.lstrip("/")))
        if path != self.options.root and not path.startswith(self.options.root + os.sep):
            return None
        return path if os.path.exists(path) else None


def _has_body(head):
    length = head.header("content-length")
    return head.header("transfer-encoding") is not None or (length is not None and length.strip() != "0")


def _keep_alive(head):
    connection = (head.header("connection") or "").lower()
    if head.version == "HTTP/1.1":
        return "close" not in connection
    return "keep-alive" in connection


def _head(status, ctype, length, keep_alive, extra=""):
    from http import HTTPStatus

    return ("HTTP/1.1 %d %s\r\nServer: gostgev\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
            "Connection: %s\r\n%s\r\n" % (status, HTTPStatus(status).phrase, ctype, length,
                                          "keep-alive" if keep_alive else "close", extra)).encode("latin-1")


def _send(sock, status, body, ctype, keep_alive, head, extra=""):
    sock.sendall(_head(status, ctype, len(body), keep_alive, extra) + (body if head.method == "GET" else b""))
    return status


def _listing(path, url_path):
    names = sorted(os.listdir(path))
    items = "".join('<li><a href="%s">%s</a></li>\n' % (
        quote(name + ("/" if os.path.isdir(os.path.join(path, name)) else "")), html.escape(name))
        for name in names)
    title = html.escape(url_path)
    return ("<!DOCTYPE html>\n<title>%s</title>\n<h1>%s</h1>\n<ul>\n%s</ul>\n" % (title, title, items)).encode()
