"""GOST's log level names, mapped onto Python's (GOST's "trace" is our debug).

Its own module: the config loader checks ``log.level`` against it and the
logging setup applies it, and neither should import the other.
"""

__all__ = ["LOG_LEVELS"]

LOG_LEVELS = {"trace": "DEBUG", "debug": "DEBUG", "info": "INFO", "warn": "WARNING",
              "warning": "WARNING", "error": "ERROR", "fatal": "CRITICAL"}
