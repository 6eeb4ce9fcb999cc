"""gostgev: a gevent reimplementation of GOST v3's reverse proxy and tunnels."""

__version__ = "0.1.0"
