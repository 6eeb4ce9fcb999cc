"""Log lines: text with key=value fields, or JSON with GOST's field names."""

import json
import logging

from gostgev.logsetup import JsonFormatter, TextFormatter, get_logger


def capture(formatter):
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    handler = Keep()
    handler.setFormatter(formatter)
    logger = logging.getLogger("gostgev.test-%s" % type(formatter).__name__)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    log = get_logger(logger.name, service="proxy").bind(remote="127.0.0.1:5")
    log.info("connection closed", fields={"inputBytes": 10, "host": None, "error": "a b"})
    return records[0]


def test_json_lines_carry_fields_at_top_level():
    entry = json.loads(capture(JsonFormatter()))
    assert entry["msg"] == "connection closed" and entry["level"] == "info"
    assert entry["service"] == "proxy" and entry["remote"] == "127.0.0.1:5" and entry["inputBytes"] == 10
    assert "host" not in entry and entry["time"].endswith("Z")


def test_text_lines_quote_values_with_spaces():
    line = capture(TextFormatter())
    assert line.endswith('connection closed service=proxy remote=127.0.0.1:5 inputBytes=10 error="a b"')
