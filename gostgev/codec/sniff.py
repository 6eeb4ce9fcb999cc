"""First-bytes protocol detection for sniffing (GOST's ``sniffing.Sniff``).

``detect(data)`` returns ``"tls"``, ``"http"``, ``"relay"`` (a GOST relay
request: version byte 0x01, which the tunnel entrypoint serves), ``""``
(something else, to be forwarded raw), or ``None`` while the bytes seen so
far still fit more than one answer.  It decides within a few bytes; the full parsers in
:mod:`gostgev.codec.tls` and :mod:`gostgev.codec.http` run afterwards.

GOST also labels Redis (first byte ``*+-:$``) and SSH (``SSH-2``); both go
down the raw path anyway, so they are not told apart here.
"""

from gostgev.codec.http import looks_like_http
from gostgev.codec.tls import looks_like_tls

__all__ = ["detect", "TLS", "HTTP", "RELAY", "RAW"]

TLS, HTTP, RELAY, RAW = "tls", "http", "relay", ""
_RELAY_VERSION = 0x01


def detect(data):
    if data[:1] == bytes((_RELAY_VERSION,)):
        return RELAY
    tls = looks_like_tls(data)
    if tls:
        return TLS
    http = looks_like_http(data)
    if http:
        return HTTP
    if tls is None or http is None:
        return None
    return RAW
