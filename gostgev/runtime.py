"""The running process: its services, and reloading them without dropping traffic.

``reload()`` reads the configuration again and applies the difference:

* a new service starts; a removed one stops accepting at once, and its live
  connections get the grace period to finish;
* a service whose listener is unchanged (address, type, TLS, chain) is
  *reconfigured in place*: the listening socket, every open connection and
  every registered tunnel connection stay, and new connections see the new
  nodes, ingress rules, limits and options;
* a service whose listener changed is replaced (the old one drains).

A configuration that does not load is refused with a log line and the old
one keeps serving.  Rules added through the API live until the next reload.
"""

import logging

import gevent
from gevent.lock import Semaphore

from gostgev import metrics
from gostgev.errors import ConfigError
from gostgev.service import Service, ServiceError

__all__ = ["Runtime", "ApiView"]

log = logging.getLogger("gostgev")


class Runtime:
    def __init__(self, load, grace, on_reload=None):
        self.load = load            #: callable(warnings) -> Config; raises ConfigError
        self.grace = grace
        self.on_reload = on_reload  #: callable(config) after a reload applied, e.g. new log settings
        self.config = None
        self.services = {}
        self._lock = Semaphore()    # one reload at a time (SIGHUP and the API may race)
        self._warnings = []         # of the last reload: a quiet one repeats only new ones

    def start(self, config):
        started = {}
        try:
            for svc_config in config.services:
                service = Service(svc_config)
                service.start()
                started[svc_config.name] = service
        except ServiceError:
            self._stop_all(started.values(), 0)
            raise
        self.config = config
        self.services = started
        metrics.services(len(started))

    def reload(self, quiet=False):
        """Apply the configuration as it is now on disk; ``(ok, message)``.

        ``quiet`` (the periodic reload): a reload that changes nothing is
        logged at debug level only.
        """
        with self._lock:
            warnings = []
            try:
                new = self.load(warnings)
            except ConfigError as exc:
                log.error("reload refused, still serving the previous configuration: %s", exc)
                return False, str(exc)
            if not quiet or warnings != self._warnings:
                for warning in warnings:
                    log.warning("%s", warning)
            self._warnings = warnings
            changes = self._apply(new)
            if self.on_reload is not None:
                self.on_reload(new)
            message = "reloaded: %s" % (", ".join(changes) or "nothing changed")
            log.log(logging.DEBUG if quiet and not changes else logging.INFO, "%s", message)
            return True, message

    def _apply(self, new):
        old = self.services
        current, changes = {}, []
        for name in set(old) - {s.name for s in new.services}:
            self._retire(old[name])
            changes.append("-" + name)
        for svc_config in new.services:
            service = old.get(svc_config.name)
            if service is not None and service.config == svc_config:
                current[svc_config.name] = service
                continue
            if service is not None and service.can_reconfigure(svc_config):
                service.reconfigure(svc_config)
                current[svc_config.name] = service
                changes.append("~" + svc_config.name)
                continue
            if service is not None:
                self._retire(service)   # frees the address before the new one binds it
            replacement = Service(svc_config)
            try:
                replacement.start()
            except ServiceError as exc:
                log.error("reload: %s", exc)
                changes.append("!" + svc_config.name)
                continue
            current[svc_config.name] = replacement
            changes.append(("*" if service is not None else "+") + svc_config.name)
        self.services = current
        self.config = new
        metrics.services(len(current))
        return changes

    def _retire(self, service):
        service.close()
        gevent.spawn(service.stop, self.grace)

    def stop(self, grace=None):
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
        return [{"name": s.config.name, "addr": str(s.config.addr), "handler": s.config.handler.type,
                 "listener": s.config.listener.type} for s in self.services.values()]

    def tunnels(self):
        return [{"service": name, "tunnel": tunnel.id.text,
                 "connections": [c.describe() for c in tunnel.connectors if not c.closed]}
                for name, handler in self._tunnel_handlers() for tunnel in handler.registry.tunnels()]

    def ingresses(self):
        """Live Ingress objects by name: the API changes them in place."""
        found = {}
        for _, handler in self._tunnel_handlers():
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

    def ingresses(self):
        return self.runtime.ingresses()

    def reload(self):
        return self.runtime.reload()
