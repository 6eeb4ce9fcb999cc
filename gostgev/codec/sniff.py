"""First-bytes protocol detection for sniffing (GOST's ``sniffing.Sniff``).

``detect(data)`` returns ``"tls"``, ``"http"``, ``""`` (something else, to be
forwarded raw), or ``None`` while the bytes seen so far still fit more than
one answer.  It decides within a few bytes; the full parsers in
:mod:`gostgev.codec.tls` and :mod:`gostgev.codec.http` run afterwards.

GOST also labels Redis (first byte ``*+-:$``) and SSH (``SSH-2``); both go
down the raw path anyway, so they are not told apart here.
"""

from gostgev.codec.http import looks_like_http
from gostgev.codec.tls import looks_like_tls

__all__ = ["detect", "TLS", "HTTP", "RAW"]

TLS, HTTP, RAW = "tls", "http", ""


def detect(data):
    tls = looks_like_tls(data)
    if tls:
        return TLS
    http = looks_like_http(data)
    if http:
        return HTTP
    if tls is None or http is None:
        return None
    return RAW
