"""The typed configuration model: what a GOST v3 file means, checked once.

The YAML file and the ``-L``/``-F`` command line both end up here; nothing
after loading looks at raw dictionaries again.  Durations are float seconds.
"""

from dataclasses import dataclass, field

from gostgev.addr import Addr
from gostgev.config.section import Metadata, unknown_key

__all__ = [
    "LogConfig", "SelectorConfig", "NodeConfig", "ForwarderConfig", "HandlerConfig",
    "ListenerConfig", "ServiceConfig", "Config", "STRATEGIES", "AuthConfig",
    "ConnectorConfig", "DialerConfig", "ChainNodeConfig", "HopConfig", "ChainConfig", "IngressConfig",
    "LoadContext", "TLSConfig", "AdminConfig", "RedisConfig", "HTTPSourceConfig", "SourcesConfig",
    "AutherConfig", "SDConfig",
]

#: selector strategies and their GOST aliases
STRATEGIES = {"round": "round", "rr": "round", "random": "rand", "rand": "rand",
              "fifo": "fifo", "ha": "fifo", "hash": "hash"}

@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"
    format: str = "text"      #: text | json
    output: str = "stderr"    #: stderr | stdout | none | a file path


@dataclass(frozen=True, slots=True)
class SelectorConfig:
    strategy: str = "round"   #: round | rand | fifo | hash
    max_fails: int = 1        #: failed dials before a node is skipped
    fail_timeout: float = 10.0  #: seconds a failed node stays skipped


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """One forwarding target (``forwarder.nodes[i]``)."""

    name: str
    addr: str                 #: "" = dial the sniffed host itself (GOST's "empty node")
    host: str | None = None   #: host pattern: "a.example.com" or ".example.com"; None = any host
    protocol: str | None = None   #: only for this sniffed protocol ("http", "tls")
    path: str | None = None   #: only for HTTP requests whose path starts with this
    weight: int = 1           #: for the rand strategy
    backup: bool = False      #: used only when no primary node of the same tier is healthy
    max_fails: int | None = None      #: per-node override of the selector's
    fail_timeout: float | None = None
    proxy_protocol: int | None = None  #: send a PROXY v1/v2 header to this node (overrides the handler)
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ForwarderConfig:
    nodes: tuple
    selector: SelectorConfig = SelectorConfig()
    hop: str | None = None    #: name of the top-level hop the nodes came from


@dataclass(frozen=True, slots=True)
class AuthConfig:
    username: str
    password: str


@dataclass(frozen=True, slots=True)
class ConnectorConfig:
    type: str                 #: tunnel | relay
    metadata: Metadata
    options: object = None    #: the connector's typed options, parsed at load time
    auth: AuthConfig | None = None


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """GOST's ``tls`` block, on a listener (server side) or a dialer (client side)."""

    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None      #: listener: require client certs from this CA; dialer: verify against it
    server_name: str | None = None  #: dialer: SNI and the name to verify (default: the node's host)
    secure: bool = False            #: dialer: verify the chain and the host name


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """A ``redis`` block: where a live source or the service discovery keeps its data."""

    addr: str                       #: host:port (port 6379 when omitted)
    db: int = 0
    username: str = ""
    password: str = ""
    key: str = ""                   #: the key (or key prefix) the data lives under
    type: str = "set"               #: ingress and auther sources: "set" or "hash"
    tls: TLSConfig | None = None    #: talk TLS to Redis


@dataclass(frozen=True, slots=True)
class SDConfig:
    """An ``sds`` entry: where the nodes of a tunnel-server cluster register their tunnels."""

    name: str
    redis: RedisConfig | None = None    #: built in: records in Redis
    plugin_addr: str = ""               #: GOST's HTTP plugin: its URL
    plugin_timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class HTTPSourceConfig:
    """An ``http`` source: a GET whose 200 answer is the body in the file format."""

    url: str                        #: http:// or https://
    timeout: float = 10.0           #: seconds for the whole request


@dataclass(frozen=True, slots=True)
class SourcesConfig:
    """Where a named ingress or auther reads more entries while the process runs.

    Precedence for equal keys (host names, user names): http > redis > file
    > the inline entries.  ``reload`` 0 reads them once, at start and at
    each reload of the configuration.
    """

    file: str | None = None         #: absolute path of a file in the file format
    redis: RedisConfig | None = None
    http: HTTPSourceConfig | None = None
    reload: float = 0.0             #: seconds between two reads; 0 = no periodic read


@dataclass(frozen=True, slots=True)
class AutherConfig:
    """A named auther: its inline users and, when it has live sources, its live table."""

    name: str
    users: tuple                    #: gostgev.auth.User values: inline (and a static users file)
    sources: SourcesConfig | None = None
    #: gostgev.auth.LiveUsers the handlers naming this auther check against (None without sources)
    live: object = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class DialerConfig:
    type: str                 #: tcp | tls | ws | wss
    metadata: Metadata
    options: object = None    #: the dialer's typed options, parsed at load time
    tls: TLSConfig | None = None


@dataclass(frozen=True, slots=True)
class ChainNodeConfig:
    """A node of a chain hop: a server reached with a dialer, spoken to with a connector."""

    name: str
    addr: str
    connector: ConnectorConfig
    dialer: DialerConfig
    metadata: Metadata
    max_fails: int | None = None      #: per-node override of the hop selector's
    fail_timeout: float | None = None


@dataclass(frozen=True, slots=True)
class HopConfig:
    name: str
    nodes: tuple
    selector: SelectorConfig = SelectorConfig()


@dataclass(frozen=True, slots=True)
class ChainConfig:
    name: str
    hops: tuple


@dataclass(frozen=True, slots=True)
class IngressConfig:
    name: str
    rules: tuple              #: gostgev.ingress.Rule values, in file order
    shared: bool = True       #: False: a handler's inline rules, not one of ``ingresses``
    sources: SourcesConfig | None = None   #: live sources (file, redis, http), read by the runtime


@dataclass(frozen=True, slots=True)
class HandlerConfig:
    type: str
    metadata: Metadata
    options: object           #: the handler's own typed options, parsed at load time
    auther: object = None     #: gostgev.auth.Auther from auth/auther/authers, or None
    chain: ChainConfig | None = None


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    type: str
    metadata: Metadata
    chain: ChainConfig | None = None
    tls: TLSConfig | None = None    #: for tls/wss listeners; falls back to the top-level ``tls``
    options: object = None          #: the listener's typed options, parsed at load time


@dataclass(frozen=True, slots=True)
class LoadContext:
    """What a handler's ``parse_options`` may look at besides its metadata."""

    base_dir: str
    ingresses: dict           #: name -> IngressConfig
    auther: object = None     #: gostgev.auth.Auther or None
    warn: object = None       #: callable(message) that records a load warning
    sds: dict = field(default_factory=dict)   #: name -> SDConfig

    def unknown(self, path, key, known):
        """Warn about a key that nothing reads in a nested map, with the closest ``known`` key."""
        if self.warn is not None:
            self.warn(unknown_key(path, key, known))


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    name: str
    addr: Addr
    handler: HandlerConfig
    listener: ListenerConfig
    forwarder: ForwarderConfig | None
    metadata: Metadata
    admission: object = None  #: gostgev.limits.Admission or None
    climits: tuple = ()       #: GOST climiter limit strings, checked at load time
    rlimits: tuple = ()       #: GOST rlimiter limit strings (new connections a second), checked at load time
    limits: tuple = ()        #: GOST limiter limit strings (bytes a second in and out), checked at load time
    proxy_protocol: int = 0   #: metadata proxyProtocol: accept PROXY headers (v1 and v2) when > 0


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """The ``metrics`` or ``api`` section: an HTTP endpoint of the process itself."""

    addr: Addr
    path: str = ""            #: metrics: the path (default /metrics); api: the path prefix
    auther: object = None     #: gostgev.auth.Auther from auth/auther, or None
    access_log: bool = False


@dataclass(frozen=True, slots=True)
class Config:
    services: tuple
    log: LogConfig = LogConfig()
    metrics: AdminConfig | None = None
    api: AdminConfig | None = None
    chains: tuple = ()
    ingresses: tuple = ()
    authers: tuple = ()       #: AutherConfig values
    #: directory of the config file; relative paths in the config start here
    base_dir: str = "."
    #: the document this was built from (GOST's shape), for the web API's GET /config and its edits
    raw: dict = field(default=None, compare=False, repr=False)
