"""Addresses as GOST writes them: ``host:port``, ``[v6]:port``, ``:port``.

Pure functions; no DNS.  ``ValueError`` on anything malformed.
"""

from dataclasses import dataclass

__all__ = ["Addr", "parse_addr", "split_host_port", "normalize_host", "host_without_port"]


@dataclass(frozen=True, slots=True)
class Addr:
    """A host (may be empty: "every interface") and a port."""

    host: str
    port: int

    def __str__(self):
        if ":" in self.host:
            return "[%s]:%d" % (self.host, self.port)
        return "%s:%d" % (self.host, self.port)


def split_host_port(text):
    """Split ``host:port`` into ``(host, port_text)``; the port may be empty.

    A bare IPv6 literal (several colons, no brackets) is taken as a host with
    no port, as Go does for values like ``::1`` in host headers.
    """
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError("missing ']' in address %r" % text)
        host, rest = text[1:end], text[end + 1:]
        if rest and not rest.startswith(":"):
            raise ValueError("junk after ']' in address %r" % text)
        return host, rest[1:]
    if text.count(":") > 1:
        return text, ""
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, ""
    return host, port


def parse_port(text, *, allow_zero=True):
    if not text.isdigit():
        raise ValueError("invalid port %r" % text)
    port = int(text)
    if port > 65535 or (port == 0 and not allow_zero):
        raise ValueError("port %d out of range" % port)
    return port


def parse_addr(text, *, default_port=None):
    """Parse a listen or dial address.

    ``:8080`` means every interface.  Without a port, ``default_port`` is used
    if given, else it is an error.
    """
    if not isinstance(text, str) or not text:
        raise ValueError("empty address")
    host, port = split_host_port(text.strip())
    if not port:
        if default_port is None:
            raise ValueError("missing port in address %r" % text)
        return Addr(host, default_port)
    return Addr(host, parse_port(port))


def normalize_host(host):
    """Fold a host name for comparison: lower case, no trailing dot."""
    host = host.strip().lower()
    if host.endswith("."):
        host = host[:-1]
    return host


def host_without_port(text):
    """``example.com:8080`` -> ``example.com``; ``[::1]:80`` -> ``::1``."""
    try:
        host, _ = split_host_port(text)
    except ValueError:
        return text
    return host


def address_tuple(text):
    """``host:port`` as a relay header writes it -> ``(host, port)``; a port that is no number is 0."""
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port) if port.isdigit() else 0


def format_address(address):
    """``(host, port, ...)`` -> ``host:port``, with brackets around an IPv6 host."""
    host, port = address[:2]
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)
