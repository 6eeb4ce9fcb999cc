"""The running process: its services, and reloading them without dropping traffic.

``reload()`` reads the configuration again and applies the difference:

* a new service starts; a removed one stops accepting at once, and its live
  connections get the grace period to finish;
* a service whose listener is unchanged (address, type, TLS, chain) is
  *reconfigured in place*: the listening socket, every open connection and
  every registered tunnel connection stay, and new connections see the new
  nodes, ingress rules, limits and options;
* a service whose listener changed is replaced (the old one drains); on
  the same address the replacement takes over the listening socket.

A reload is all or nothing, as nginx and HAProxy promise: a configuration
that does not load, a socket that cannot be bound, or any other failure
while the new services are built refuses the whole reload with one log
line, and every running service, connection and tunnel registration stays
as it was.

Every service that names an ingress routes with the same live object
(:class:`gostgev.ingress.IngressStore`).  Rules added or deleted through the
API stay until a reload changes that ingress in the file.

Ingresses and authers with live sources (``file`` + ``reload``, ``redis``,
``http``) are read by :class:`gostgev.sources.Sources`: once before the
services of a configuration serve (start or reload; a source that is down
is logged and skipped), then every ``reload`` period.  A reload replaces
every refresher (a source it did not change starts from what it read
last); a refused reload leaves the running ones alone; :meth:`stop` stops
them.
"""

import logging

import gevent
from gevent.lock import Semaphore

from gostgev.accept import dup_socket, listen_key
from gostgev.addr import format_address
from gostgev.components import build_config
from gostgev.errors import ConfigError
from gostgev.service import Service, ServiceContext, ServiceError
from gostgev.sources import Sources

__all__ = ["Runtime", "ApiView", "ReloadRefused"]

log = logging.getLogger("gostgev")


class ReloadRefused(Exception):
    """The new configuration could not be put in place; nothing was changed."""


class Runtime:
    def __init__(self, load, grace, on_reload=None, context=None):
        self.load = load            #: callable(warnings) -> Config; raises ConfigError
        self.grace = grace
        self.on_reload = on_reload  #: callable(config) after a reload applied, e.g. new log settings
        self.config = None
        self.services = {}
        #: what every service of this process shares (ingresses, the worker cluster)
        self.context = context if context is not None else ServiceContext()
        self._lock = Semaphore()    # one reload at a time (SIGHUP and the API may race)
        self._warnings = []         # of the last reload: a quiet one repeats only new ones
        self.sources = Sources()    #: the refreshers of live ingress and auther sources
        self.config_path = None     #: the file POST /config saves to (None: the config came from flags)

    def start(self, config):
        try:
            self._apply(config)
        except ReloadRefused as exc:
            raise ServiceError(str(exc)) from None

    def reload(self, quiet=False):
        """Apply the configuration as it is now on disk; ``(ok, message)``.

        ``quiet`` (the periodic reload): a reload that changes nothing is
        logged at debug level only.  A refused reload changes nothing and is
        logged as one line, whatever refused it.
        """
        with self._lock:
            warnings = []
            try:
                new = self.load(warnings)
                if not quiet or warnings != self._warnings:
                    for warning in warnings:
                        log.warning("%s", warning)
                self._warnings = warnings
                changes = self._apply(new)
            except (ConfigError, ReloadRefused) as exc:
                log.error("reload refused, still serving the previous configuration: %s", exc)
                return False, str(exc)
            except Exception as exc:   # a bug must not take the running services with it
                log.error("reload refused, still serving the previous configuration: internal error: %r", exc)
                log.debug("reload failure", exc_info=True)
                return False, "internal error: %r" % exc
            if self.on_reload is not None:
                try:
                    self.on_reload(new)
                except Exception as exc:
                    log.error("reload: applying the new settings failed: %r", exc)
            message = "reloaded: %s" % (", ".join(changes) or "nothing changed")
            log.log(logging.DEBUG if quiet and not changes else logging.INFO, "%s", message)
            return True, message

    def apply_raw(self, raw):
        """Put the configuration document ``raw`` (GOST's shape) in place, atomically, as a
        reload does; ``ConfigError`` if it is invalid, ``ReloadRefused`` if it cannot be
        put in place (nothing changed either way).  The list of changes."""
        with self._lock:
            warnings = []
            new = build_config(raw, warnings, base_dir=self.config.base_dir)
            for warning in warnings:
                log.warning("%s", warning)
            changes = self._apply(new)
            if self.on_reload is not None:
                self.on_reload(new)
            log.info("configuration changed through the API: %s", ", ".join(changes) or "nothing changed")
            return changes

    def _apply(self, new):
        """Put ``new`` in place, all of it or nothing; the list of changes.

        First every new or replaced service is built and bound, and every
        service reconfigured in place prepares what it adds.  A replacement
        on the same address takes over its predecessor's listening socket,
        so there is no moment without a listener and no race for the port.
        Only when all of that worked is anything retired or switched;
        otherwise what was built is dropped and :class:`ReloadRefused`
        says why.
        """
        old = self.services
        wanted = {s.name for s in new.services}
        removed = [old[name] for name in old if name not in wanted]
        kept, prepared, built, changes = {}, [], [], []
        replaced = []
        for svc_config in new.services:
            service = old.get(svc_config.name)
            if service is not None and service.config == svc_config:
                kept[svc_config.name] = service
            elif service is not None and service.can_reconfigure(svc_config):
                prepared.append((service, svc_config))
            else:
                built.append((service, svc_config))
                if service is not None:
                    replaced.append(service)
        offered = {}
        for service in removed + replaced:
            offered.update(service.listening())

        def inherit(addr):
            sock = offered.pop(listen_key(addr), None)   # port 0 (key None): never offered
            return dup_socket(sock) if sock is not None else None

        sources = self.sources.prepare(new)     # read once, before anything serves with them
        ingresses = self.context.ingresses
        ingresses.stage()
        changes_ready, services_ready = [], []
        try:
            for service, svc_config in prepared:
                changes_ready.append((service, service.prepare(svc_config, inherit)))
            for service, svc_config in built:
                replacement = Service(svc_config, self.context)
                replacement.bind(inherit)
                services_ready.append((service, replacement))
        except Exception as exc:
            for _, change in changes_ready:
                change.abort()
            for _, replacement in services_ready:
                replacement.close()
            ingresses.abort()
            sources.abort()
            if isinstance(exc, ServiceError):
                raise ReloadRefused(str(exc)) from None
            raise
        # Nothing below depends on the configuration being good.
        ingresses.commit(new.ingresses)
        self.context.authers.commit(new.authers)
        sources.commit(ingresses, self.context.authers)
        current = dict(kept)
        for service in removed:
            self._retire(service)
            changes.append("-" + service.config.name)
        for service, change in changes_ready:
            change.commit()
            current[service.config.name] = service
            changes.append("~" + service.config.name)
        for service, replacement in services_ready:
            if service is not None:
                self._retire(service)
            replacement.serve()
            current[replacement.config.name] = replacement
            changes.append(("*" if service is not None else "+") + replacement.config.name)
        self.services = {s.name: current[s.name] for s in new.services}
        self.config = new
        self.context.metrics.services(len(current))
        return changes

    def _retire(self, service):
        service.close()
        gevent.spawn(service.stop, self.grace)

    def stop(self, grace=None):
        self.sources.stop()
        self._stop_all(list(self.services.values()), self.grace if grace is None else grace)

    @staticmethod
    def _stop_all(services, grace):
        # Close every listener first so no service accepts while another drains.
        for service in services:
            service.close()
        gevent.joinall([gevent.spawn(service.stop, grace) for service in services])

    # -- what the API shows ------------------------------------------------------------

    def _tunnel_handlers(self):
        return [(name, s.handler) for name, s in self.services.items() if hasattr(s.handler, "registry")]

    def services_info(self):
        """Each service: ``addr`` as configured, ``listening`` as bound (a config may ask for port 0)."""
        return [{"name": s.config.name, "addr": str(s.config.addr),
                 "listening": format_address(s.address) if s.address else None, "handler": s.config.handler.type,
                 "listener": s.config.listener.type} for s in self.services.values()]

    def tunnels(self):
        return [{"service": name, "tunnel": tunnel.id.text,
                 "connections": [c.describe() for c in tunnel.connectors if not c.closed]}
                for name, handler in self._tunnel_handlers() for tunnel in handler.registry.tunnels()]

    def cluster(self):
        """What each tunnel service sharing its tunnels (``sd``) knows of its cluster."""
        return [{"service": name, **handler.router.discovery.cluster()}
                for name, handler in self._tunnel_handlers() if handler.router.discovery is not None]

    def ingresses(self):
        """Live Ingress objects by name: the API changes them in place."""
        found = dict(self.context.ingresses.items())
        for _, handler in self._tunnel_handlers():   # and inline rules, each a handler's own
            for ingress in handler.ingresses:
                found.setdefault(ingress.name, ingress)
        return found


class ApiView:
    """What the web API sees of the runtime (its ``services()`` means the listing)."""

    def __init__(self, runtime):
        self.runtime = runtime

    def services(self):
        return self.runtime.services_info()

    def tunnels(self):
        return self.runtime.tunnels()

    def cluster(self):
        return self.runtime.cluster()

    def ingresses(self):
        return self.runtime.ingresses()

    def reload(self):
        return self.runtime.reload()

    def raw(self):
        """The running configuration document (GOST's shape)."""
        return self.runtime.config.raw if self.runtime.config is not None else None

    def config_path(self):
        return self.runtime.config_path

    def apply_raw(self, raw):
        return self.runtime.apply_raw(raw)
