"""etc/grafana-dashboard.json queries only metrics that gostgev exports."""

import json
import re

from prometheus_client import generate_latest

from gostgev.metrics import Metrics
from tests import ROOT

_NAME = re.compile(r"\b(gost(?:gev)?_[a-z_]+)\b")


def exported_names():
    """Every sample name of a registry in which each series has been recorded once."""
    metrics = Metrics(hostname="test")
    metrics.services(1)
    metrics.request_finished(metrics.request_started("svc"), error=True)
    metrics.http_request("svc", 200)
    metrics.transfer("svc", 1, 1)
    metrics.chain_error("chain", "node")
    metrics.node_connect("chain", "node", 0.1)
    metrics.tunnel_connections("svc", "t", 1)
    metrics.tunnel_stream("svc", "t")
    metrics.tunnel_reconnect("svc")
    metrics.cluster_forward("svc", "node")
    metrics.rate_limited("svc")
    metrics.limiter_wait("svc", "in", 0.5)
    text = generate_latest(metrics.registry).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_every_metric_the_dashboard_queries_exists():
    dashboard = json.loads((ROOT / "etc" / "grafana-dashboard.json").read_text())
    queried = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            queried |= set(_NAME.findall(target["expr"]))
    queried |= set(_NAME.findall(json.dumps(dashboard["templating"])))
    assert len(queried) >= 12
    missing = queried - exported_names()
    assert not missing, "the dashboard queries metrics gostgev does not export: %s" % sorted(missing)


def test_each_panel_has_a_place_and_a_query():
    dashboard = json.loads((ROOT / "etc" / "grafana-dashboard.json").read_text())
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in dashboard["panels"]:
        assert panel["targets"] and {"x", "y", "w", "h"} <= set(panel["gridPos"])
