"""gostgev: a gevent reimplementation of GOST v3's reverse proxy and tunnels."""

__version__ = "0.1.0"

__all__ = ["__version__", "run", "Tunnel"]


def __getattr__(name):
    # The library API (gostgev.embed) is imported on first use: the command line does not need it.
    if name in ("run", "Tunnel", "Running"):
        from gostgev import embed

        return getattr(embed, name)
    raise AttributeError("module 'gostgev' has no attribute %r" % name)
