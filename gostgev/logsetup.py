"""Logging: text or JSON lines with structured fields.

Code logs through :class:`FieldsLogger`, which carries per-service and
per-connection fields (``service``, ``remote``, ``host``...).  The text format
appends them as ``key=value``; the JSON format uses them as top-level keys,
named as GOST names them where GOST has a name (``service``, ``handler``,
``remote``, ``local``, ``inputBytes``, ``outputBytes``, ``duration``).
"""

import json
import logging
import sys
import time

from gostgev.levels import LOG_LEVELS

__all__ = ["FieldsLogger", "get_logger", "setup_logging", "reopen_logs"]


class FieldsLogger(logging.LoggerAdapter):
    """A logger with bound fields; ``bind()`` adds more."""

    def process(self, msg, kwargs):
        fields = self.extra
        more = kwargs.pop("fields", None)
        if more:
            fields = {**fields, **more}
        kwargs["extra"] = {"fields": fields}
        return msg, kwargs

    def bind(self, **fields):
        return FieldsLogger(self.logger, {**self.extra, **fields})


def get_logger(name, **fields):
    return FieldsLogger(logging.getLogger(name), fields)


def _timestamp(record):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + ".%03dZ" % record.msecs


class TextFormatter(logging.Formatter):
    def format(self, record):
        line = "%s %s %s" % (_timestamp(record), record.levelname.lower(), record.getMessage())
        fields = getattr(record, "fields", None)
        if fields:
            line += " " + " ".join("%s=%s" % (k, _text_value(v)) for k, v in fields.items() if v is not None)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _text_value(value):
    text = str(value)
    if not text or any(c.isspace() or c in '"=' for c in text):
        return json.dumps(text)
    return text


class JsonFormatter(logging.Formatter):
    def format(self, record):
        entry = {"time": _timestamp(record), "level": record.levelname.lower(), "msg": record.getMessage()}
        fields = getattr(record, "fields", None)
        if fields:
            entry.update((k, v) for k, v in fields.items() if v is not None)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(level="info", fmt="text", output="stderr"):
    """Configure the root logger; replaces any handler set up before."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    if output == "none":
        handler = logging.NullHandler()
    elif output == "stdout":
        handler = logging.StreamHandler(sys.stdout)
    elif output == "stderr":
        handler = logging.StreamHandler(sys.stderr)
    else:
        handler = logging.FileHandler(output, encoding="utf-8")
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(LOG_LEVELS.get(level, "INFO"))


def reopen_logs():
    """Reopen log files (SIGUSR1), so logrotate can move them away."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.acquire()
            try:
                handler.close()   # the next record opens the file again, by name
            finally:
                handler.release()
    logging.getLogger("gostgev").info("log files reopened")
