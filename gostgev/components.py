"""Everything a configuration can name, and loading a configuration with it.

:mod:`gostgev.config` parses and checks a document but imports no
implementation: the registries of handlers, listeners, connectors and
dialers, and the TLS file check, come from here.
"""

from gostgev import udp  # noqa: F401  (registers the udp and rudp listeners and handler)
from gostgev.config import load as _load
from gostgev.connector import CONNECTORS
from gostgev.dialer import DIALERS
from gostgev.handler import HANDLERS
from gostgev.listener import LISTENERS
from gostgev.netio.tlscontext import check_files

__all__ = ["COMPONENTS", "build_config", "load_file"]

COMPONENTS = _load.Components(handlers=HANDLERS, listeners=LISTENERS, connectors=CONNECTORS, dialers=DIALERS,
                              check_tls=check_files)


def build_config(raw, warnings, base_dir="."):
    """A raw document (a dict) -> Config, with every component gostgev has."""
    return _load.build_config(raw, warnings, COMPONENTS, base_dir=base_dir)


def load_file(path, warnings):
    """A YAML or JSON file -> Config, with every component gostgev has."""
    return _load.load_file(path, warnings, COMPONENTS)
