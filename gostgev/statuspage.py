"""A live status page at the web API's address: ``GET /`` or ``/ui``, fed by ``GET /ui/data``.

One HTML document with its style and script inline (no external assets,
so it works offline and behind the API's auth).  Every 2 seconds the page
fetches the JSON and redraws: services and their listeners; tunnels with
each connection's client, start, weight, streams and bytes; ingress rules;
the latest warnings and errors; and, as sparklines drawn from the last two
minutes of samples, streams opened and bytes moved a second.
"""

import collections
import logging
import time

__all__ = ["RecentErrors", "StatusPageRoutes", "UI_ROUTES", "PAGE"]

#: (path pattern, {method: method name}) for the API server's route table
UI_ROUTES = [
    (r"", {"GET": "get_ui"}),
    (r"/ui", {"GET": "get_ui"}),
    (r"/ui/data", {"GET": "get_ui_data"}),
]

#: warnings and errors the page shows
RECENT = 50


class RecentErrors(logging.Handler):
    """The last ``RECENT`` warnings and errors of the ``gostgev`` loggers."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = collections.deque(maxlen=RECENT)

    def emit(self, record):
        try:
            self.records.append({"time": record.created, "level": record.levelname.lower(),
                                 "message": record.getMessage()[:300]})
        except Exception:   # a bad format string must not break logging
            pass


class StatusPageRoutes:
    """``get_ui`` and ``get_ui_data`` for :class:`gostgev.api.ApiServer` (``self.runtime``, ``self.recent``)."""

    def get_ui(self, environ, **_):
        from gostgev.gostapi import RawBody

        return 200, RawBody(PAGE.encode(), "text/html; charset=utf-8")

    def get_ui_data(self, environ):
        tunnels = list(self.runtime.tunnels())
        streams = sum(c["streams"] + c["openStreams"] for t in tunnels for c in t["connections"])
        moved = sum(c["bytesIn"] + c["bytesOut"] for t in tunnels for c in t["connections"])
        ingresses = self.runtime.ingresses()
        return 200, {
            "time": time.time(),
            "services": list(self.runtime.services()),
            "tunnels": tunnels,
            "ingresses": [{"name": name, "rules": [{"hostname": r.hostname, "endpoint": str(r.endpoint)}
                                                   for r in ingresses[name].rules]} for name in sorted(ingresses)],
            "errors": list(self.recent.records)[::-1],
            "totals": {"streams": streams, "bytes": moved},
        }


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gostgev status</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d232b}
header{background:#1d232b;color:#fff;padding:10px 20px;display:flex;gap:24px;align-items:center}
header h1{font-size:18px;margin:0}header .meta{opacity:.7;font-size:12px}
main{padding:16px 20px;display:grid;gap:16px;grid-template-columns:repeat(auto-fit,minmax(420px,1fr))}
section{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:12px 14px}
h2{font-size:14px;margin:0 0 8px;text-transform:uppercase;letter-spacing:.04em;color:#4a5563}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:3px 8px 3px 0;border-bottom:1px solid #eef0f3;
font-size:13px}th{color:#6b7684;font-weight:600}code{font-size:12px}
.spark{display:flex;gap:24px}.spark div{flex:1}
.spark svg{width:100%;height:48px;background:#fafbfc;border:1px solid #eef0f3}
.value{font-size:20px;font-weight:600}.empty{color:#8a94a3;font-style:italic}
.error{color:#b42318}.warning{color:#a15c07}
</style></head><body>
<header><h1>gostgev</h1><span class="meta" id="updated">connecting...</span></header>
<main>
<section style="grid-column:1/-1"><h2>Traffic</h2><div class="spark">
<div><div>streams a second <span class="value" id="streams-rate">0</span></div><svg id="streams-spark"
 viewBox="0 0 120 40" preserveAspectRatio="none"><polyline fill="none" stroke="#2563eb" stroke-width="1.5"/></svg></div>
<div><div>bytes a second <span class="value" id="bytes-rate">0</span></div><svg id="bytes-spark"
 viewBox="0 0 120 40" preserveAspectRatio="none"><polyline fill="none" stroke="#059669" stroke-width="1.5"/></svg></div>
</div></section>
<section><h2>Services</h2><table id="services"></table></section>
<section><h2>Tunnels</h2><table id="tunnels"></table></section>
<section><h2>Ingress rules</h2><table id="ingresses"></table></section>
<section><h2>Recent warnings and errors</h2><table id="errors"></table></section>
</main>
<script>
"use strict";
const samples = [];
const ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"};
function esc(s) { return String(s).replace(/[&<>"]/g, c => ENTITIES[c]); }
function bytes(n) { const u = ["B", "KiB", "MiB", "GiB"]; let i = 0; while (n >= 1024 && i < 3) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i]; }
function table(id, head, rows, empty) {
  const el = document.getElementById(id);
  if (!rows.length) { el.innerHTML = '<tr><td class="empty">' + empty + '</td></tr>'; return; }
  el.innerHTML = "<tr>" + head.map(h => "<th>" + h + "</th>").join("") + "</tr>" +
    rows.map(r => "<tr>" + r.map(c => "<td>" + c + "</td>").join("") + "</tr>").join("");
}
function spark(id, values) {
  const max = Math.max(1, ...values);
  const pts = values.map((v, i) => (i * 120 / Math.max(1, values.length - 1)).toFixed(1) + "," +
    (38 - v / max * 36).toFixed(1)).join(" ");
  document.querySelector("#" + id + " polyline").setAttribute("points", pts);
}
function draw(d) {
  samples.push(d); while (samples.length > 61) samples.shift();
  const rates = k => samples.slice(1).map((s, i) => Math.max(0, (s.totals[k] - samples[i].totals[k]) /
    Math.max(0.001, s.time - samples[i].time)));
  const sr = rates("streams"), br = rates("bytes");
  spark("streams-spark", sr.length ? sr : [0]); spark("bytes-spark", br.length ? br : [0]);
  document.getElementById("streams-rate").textContent = (sr[sr.length - 1] || 0).toFixed(1);
  document.getElementById("bytes-rate").textContent = bytes(Math.round(br[br.length - 1] || 0));
  table("services", ["name", "listens on", "handler", "listener"],
    d.services.map(s => [esc(s.name), "<code>" + esc(s.listening || s.addr) + "</code>", esc(s.handler),
      esc(s.listener)]),
    "no services");
  const conns = [];
  for (const t of d.tunnels) for (const c of t.connections)
    conns.push(['<code class="tunnel-id">' + esc(t.tunnel) + "</code>", "<code>" + esc(c.remote) + "</code>",
      new Date(c.since * 1000).toLocaleTimeString(), esc(c.weight), esc(c.openStreams) + " / " + esc(c.streams),
      bytes(c.bytesIn) + " / " + bytes(c.bytesOut)]);
  table("tunnels", ["tunnel", "client", "since", "weight", "streams open / all", "bytes in / out"], conns,
    "no tunnel connections");
  const rules = [];
  for (const g of d.ingresses) for (const r of g.rules)
    rules.push([esc(g.name), "<code>" + esc(r.hostname) + "</code>", "<code>" + esc(r.endpoint) + "</code>"]);
  table("ingresses", ["ingress", "host", "tunnel"], rules, "no rules");
  table("errors", ["time", "", "message"], d.errors.slice(0, 15).map(e => [
    new Date(e.time * 1000).toLocaleTimeString(),
    '<span class="' + esc(e.level) + '">' + esc(e.level) + "</span>", esc(e.message)]), "none");
  document.getElementById("updated").textContent = "updated " + new Date(d.time * 1000).toLocaleTimeString();
}
async function refresh() {
  try {
    const r = await fetch(location.pathname.replace(/\\/?(ui)?\\/?$/, "") + "/ui/data", {credentials: "same-origin"});
    if (r.ok) draw(await r.json()); else document.getElementById("updated").textContent = "error " + r.status;
  } catch (e) { document.getElementById("updated").textContent = "unreachable"; }
}
refresh(); setInterval(refresh, 2000);
</script></body></html>
"""
