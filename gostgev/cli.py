"""``gostgev`` command line: load the config, start the services, wait.

Exit status: 0 after a clean stop, 1 when a service cannot start, 2 for a
bad command line or config (one line on stderr naming the key path).
Every option can also come from a ``GOSTGEV_<OPTION>`` environment variable
(``GOSTGEV_CONFIG``, ``GOSTGEV_LOG_LEVEL``...); list options take the
``[a, b]`` form there.  GOST's own spellings work too: ``-C FILE``,
``-api ADDR``, ``-metrics ADDR``, ``-R PERIOD``, ``-DD``, and ``-flag=value``.
"""

import dataclasses
import gc
import json
import logging
import os
import signal
import sys
import time

import configargparse
import gevent
import gevent.event
import yaml

from gostgev import __version__, cluster
from gostgev.addr import format_address
from gostgev.api import ApiServer
from gostgev.components import build_config
from gostgev.config.dump import to_raw
from gostgev.config.load import read_file
from gostgev.config.spec import apply_cli
from gostgev.config.values import parse_duration
from gostgev.daemon import PidFile, PidFileError, daemonize
from gostgev.errors import ConfigError
from gostgev.levels import LOG_LEVELS
from gostgev.logsetup import reopen_logs, setup_logging
from gostgev.metrics import OFF as metrics_off
from gostgev.metrics import Metrics, MetricsServer
from gostgev.runtime import ApiView, Runtime
from gostgev.service import ServiceContext, ServiceError

__all__ = ["main"]

log = logging.getLogger("gostgev")

#: seconds live connections get to finish after SIGTERM/SIGINT
DEFAULT_GRACE = 10.0


def _period(text):
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise configargparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise configargparse.ArgumentTypeError("must be positive, got %r" % text)
    return seconds


def build_parser():
    parser = configargparse.ArgParser(
        prog="gostgev", auto_env_var_prefix="GOSTGEV_",
        description="GOST v3 compatible reverse proxy and tunnel server on gevent.")
    parser.add_argument("-c", "-C", "--config", metavar="FILE",
                        help="GOST v3 YAML or JSON config file")
    parser.add_argument("-L", "--service", action="append", default=[], metavar="URL",
                        help="add a service, GOST style: tcp://:8080/10.0.0.1:80?sniffing=true")
    parser.add_argument("-F", "--node", action="append", default=[], metavar="URL",
                        help="add a hop to chain-0, GOST style: tunnel://host:8443?tunnel.id=UUID")
    parser.add_argument("-D", "--debug", action="count", default=0,
                        help="debug logging (same as --log-level debug; GOST's -DD, trace, is the same here)")
    parser.add_argument("--log-level", choices=sorted(LOG_LEVELS), help="overrides log.level")
    parser.add_argument("--log-format", choices=("text", "json"), help="overrides log.format")
    parser.add_argument("--log-file", metavar="PATH", help="overrides log.output")
    parser.add_argument("-O", "--output", choices=("yaml", "json"), dest="output_format",
                        help="print the resolved config in this format and exit")
    parser.add_argument("--grace", type=float, default=DEFAULT_GRACE, metavar="SECONDS",
                        help="on SIGTERM/SIGINT, wait this long for live connections (default %(default)s)")
    parser.add_argument("--metrics", "-metrics", metavar="ADDR",
                        help="serve Prometheus metrics here (overrides metrics.addr)")
    parser.add_argument("--api", "-api", metavar="ADDR", help="serve the web API here (overrides api.addr)")
    parser.add_argument("-R", "--reload-period", type=_period, metavar="PERIOD",
                        help="reload the configuration this often, e.g. 30s (as SIGHUP does; an unchanged "
                             "configuration changes nothing)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="run N processes sharing the listening ports (SO_REUSEPORT); tunnel servers run "
                             "in every one and hand visitors to the one holding their tunnel; relay handlers, "
                             "metrics and the API run in the first only (default 1)")
    parser.add_argument("--daemon", action="store_true", help="detach and run in the background")
    parser.add_argument("--pidfile", metavar="PATH", help="write the process id here (removed on exit)")
    parser.add_argument("-V", "--version", action="version", version="gostgev " + __version__)
    return parser


def load(args, warnings):
    """Build the config from the file and the -L/-F URLs; raises ConfigError."""
    raw = read_file(args.config) if args.config else {}
    if not isinstance(raw, dict):
        raise ConfigError(args.config, "the top level must be a mapping")
    try:
        raw = apply_cli(raw, args.service, args.node)
    except ValueError as exc:
        raise ConfigError("command line", str(exc)) from None
    base_dir = os.path.dirname(args.config) if args.config else args.start_dir
    for flag, section in ((args.metrics, "metrics"), (args.api, "api")):
        if flag:
            raw[section] = {**(raw.get(section) or {}), "addr": flag}
    config = build_config(raw, warnings, base_dir=base_dir)
    if not config.services:
        raise ConfigError("services", "no services configured (give -c FILE or -L URL)")
    return config


def main(argv=None):
    args = build_parser().parse_args(argv)
    # Absolute paths, so a reload after --daemon's chdir("/") still finds them.
    args.start_dir = os.getcwd()
    for name in ("config", "log_file", "pidfile"):
        if getattr(args, name):
            setattr(args, name, os.path.abspath(getattr(args, name)))
    warnings = []
    try:
        config = load(args, warnings)
    except ConfigError as exc:
        print("gostgev: %s" % exc, file=sys.stderr)
        return 2
    if args.output_format:
        # The pre-start check of the unit and the init script shows these.
        for warning in warnings:
            print("gostgev: warning: %s" % warning, file=sys.stderr)
        raw = to_raw(config)
        if args.output_format == "json":
            print(json.dumps(raw, indent=2))
        else:
            print(yaml.safe_dump(raw, sort_keys=False), end="")
        return 0

    try:
        apply_logging(config, args)
    except OSError as exc:
        print("gostgev: log.output: %s" % exc, file=sys.stderr)
        return 2
    for warning in warnings:
        log.warning(warning)
    pidfile = PidFile(args.pidfile) if args.pidfile else None
    try:
        if pidfile is not None:
            pidfile.check()          # before binding anything: is another gostgev running?
    except PidFileError as exc:
        print("gostgev: %s" % exc, file=sys.stderr)
        return 1
    ready = daemonize() if args.daemon else _print_failure
    # Forked workers run inside start_workers and exit there.
    children, member = start_workers(args) if args.workers > 1 else ([], None)
    try:
        return run(config, args, pidfile, ready, children=children, member=member)
    finally:
        if pidfile is not None:
            pidfile.remove()


#: handlers that must run in exactly one process: the ports a relay client
#: binds live in that process's memory
SINGLE_PROCESS_HANDLERS = ("relay",)


def start_workers(args):
    """Fork ``args.workers - 1`` more processes; ``(their pids, this process's cluster member)``.

    Every service but relay handlers runs in every process, on ports shared
    with SO_REUSEPORT.  Tunnel servers run everywhere too: a worker without a
    connection for a visitor's tunnel passes the visitor to one that has one
    (:mod:`gostgev.cluster`).  Relay handlers, metrics and the API run in the
    first process only.  Signals sent to the first process are passed on.
    """
    members = cluster.create(args.workers)
    children = []
    for worker in range(1, args.workers):
        pid = os.fork()
        if pid == 0:
            gevent.reinit()
            os._exit(run_worker(args, worker, members[worker].start(members)))
        children.append(pid)
    return children, members[0].start(members)


def _shared(config):
    return dataclasses.replace(config, services=tuple(
        s for s in config.services if s.handler.type not in SINGLE_PROCESS_HANDLERS), metrics=None, api=None)


def run_worker(args, worker, member):
    try:
        config = _shared(load(args, []))
    except ConfigError as exc:
        log.error("worker %d: %s", worker, exc)
        return 2
    return run(config, args, worker=worker, member=member)


def _print_failure(status, message=""):
    """Foreground stand-in for the daemon's readiness report: errors are already logged."""


def apply_logging(config, args):
    """Log settings from the config, with the command line winning."""
    level = "debug" if args.debug else (args.log_level or config.log.level)
    setup_logging(level, args.log_format or config.log.format, args.log_file or config.log.output)


def run(config, args, pidfile=None, ready=_print_failure, children=(), worker=0, member=None):
    def reload_config(warnings):
        # Paths in args are absolute or relative to where we started (we may be in / now).
        new = load(args, warnings)
        return _shared(new) if worker else new

    def tell_workers(signum):
        for pid in children:
            try:
                os.kill(pid, signum)
            except OSError:
                pass

    def reloaded(new_config):
        try:
            apply_logging(new_config, args)
        except OSError as exc:
            log.error("reload: log.output: %s", exc)

    # Metrics are collected where they are served: in the first process only.
    runtime = Runtime(reload_config, args.grace, on_reload=reloaded, context=ServiceContext(
        cluster=member, reuse_port=member is not None,
        metrics=Metrics() if config.metrics is not None else metrics_off))
    runtime.config_path = args.config or None   # where the API's POST /config saves
    stopping = gevent.event.Event()

    def reload_periodically(period):
        # Every process keeps its own period; workers are not sent SIGHUP for it.
        while not stopping.wait(period):
            try:
                runtime.reload(quiet=True)
            except Exception:   # a bug in one reload must not end the periodic ones
                log.exception("periodic reload failed; the running configuration stays")

    # Signal handlers only schedule work; it runs in greenlets of its own.
    # They are installed before anything starts: a signal's default action
    # (terminate) must never hit a process that already announced itself.
    def on_stop(signum):
        log.info("received %s, stopping", signal.Signals(signum).name)
        tell_workers(signal.SIGTERM)
        stopping.set()

    def on_reload():
        tell_workers(signal.SIGHUP)
        if runtime.config is None:
            log.warning("received SIGHUP while starting; ignored")
            return
        log.info("received SIGHUP, reloading %s", args.config or "the command line")
        gevent.spawn(runtime.reload)

    def on_reopen():
        tell_workers(signal.SIGUSR1)
        gevent.spawn(reopen_logs)

    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, on_stop, signum)
    gevent.signal_handler(signal.SIGHUP, on_reload)
    gevent.signal_handler(signal.SIGUSR1, on_reopen)
    admin = []
    try:
        admin = start_admin(config, runtime) if not worker else []
        runtime.start(config)
        if pidfile is not None:
            pidfile.create()     # only now: whoever reads it finds a process that is serving
    except (ServiceError, OSError, ValueError, PidFileError) as exc:
        log.error("%s", exc)
        for server in admin:
            server.stop()
        tell_workers(signal.SIGTERM)
        _reap(children, args.grace)
        ready(1, str(exc))
        return 1
    log.info("gostgev %s started with %d service(s)%s", __version__, len(runtime.services),
             " (worker %d)" % worker if worker else (" and %d more workers" % len(children) if children else ""))
    ready(0)
    _settle_gc()
    if args.reload_period:
        gevent.spawn(reload_periodically, args.reload_period)
    stopping.wait()
    runtime.stop()
    for server in admin:
        server.stop()
    _reap(children, args.grace)
    log.info("stopped")
    return 0


def _settle_gc():
    """Keep the cyclic garbage collector off the connection path.

    Everything loaded so far (modules, the configuration, the services) is
    moved out of the collector's sight (``gc.freeze``), so that full
    collections no longer walk it; and the youngest generation is collected
    after 20,000 new objects instead of 700, so that a burst of connections,
    which each make and drop a few hundred objects with no cycles, does not
    trigger a collection every few connections.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20000, 20, 20)


def _reap(children, grace):
    """Wait for the workers to exit (they drain too), then make sure they have."""
    deadline = time.monotonic() + grace + 5
    pending = set(children)
    while pending and time.monotonic() < deadline:
        for pid in list(pending):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                pending.discard(pid)
        if pending:
            gevent.sleep(0.05)
    for pid in pending:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except OSError:
            pass


def start_admin(config, runtime):
    """The metrics and API endpoints; they live as long as the process, across reloads."""
    servers = []
    try:
        if config.metrics is not None:
            server = MetricsServer((config.metrics.addr.host, config.metrics.addr.port), config.metrics.path,
                                   config.metrics.auther, metrics=runtime.context.metrics)
            _start_admin(server, "metrics.addr", config.metrics.addr)
            servers.append(server)
            log.info("metrics on http://%s%s", format_address(server.address), config.metrics.path)
        if config.api is not None:
            server = ApiServer(ApiView(runtime), (config.api.addr.host, config.api.addr.port), config.api.path,
                               config.api.auther, access_log=config.api.access_log)
            _start_admin(server, "api.addr", config.api.addr)
            servers.append(server)
            log.info("web API on http://%s%s", format_address(server.address), config.api.path or "/")
    except ServiceError:
        for server in servers:
            server.stop()
        raise
    return servers


def _start_admin(server, key, addr):
    """Start an admin endpoint; a busy or forbidden port names the key it came from."""
    try:
        server.start()
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ServiceError("%s %s: %s" % (key, addr, reason[:1].lower() + reason[1:])) from None


if __name__ == "__main__":
    sys.exit(main())
