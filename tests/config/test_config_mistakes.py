"""Every config mistake a user makes gets one line that names it; GOST's own flags work.

Each test runs the ``gostgev`` command in a subprocess, as a user does, and
reads what it prints.
"""

import signal
import socket
import subprocess
import sys

import pytest

from tests import ROOT
from tests.conftest import wait_until
from tests.procs import fetch, gostgev_process, wait_listening

UUID = "4d21094e-b74c-4916-86c1-d9fa36ea677b"


def gostgev(*args, timeout=20):
    return subprocess.run([sys.executable, "-m", "gostgev", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def write(tmp_path, text, name="gost.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


FORWARD = """services:
- name: a
  addr: 127.0.0.1:0
  handler:
    type: tcp
    metadata:
      {metadata}
  forwarder:
    nodes: [{{name: n, addr: 127.0.0.1:1}}]
"""

TUNNEL_CLIENT = """services:
- name: c
  addr: :0
  handler: {{type: rtcp}}
  listener: {{type: rtcp, chain: chain-0}}
  forwarder: {{nodes: [{{name: web, addr: 127.0.0.1:1}}]}}
chains:
- name: chain-0
  hops:
  - name: hop-0
    nodes:
    - name: node-0
      addr: 127.0.0.1:{port}
      connector: {{type: tunnel, metadata: {{tunnel.id: {uuid}, {extra}}}}}
      dialer: {{type: tcp}}
"""


def warnings_of(result):
    return [line for line in result.stderr.splitlines() if "warning" in line]


def test_a_typo_in_metadata_is_named_with_the_key_it_meant(tmp_path):
    conf = write(tmp_path, FORWARD.format(metadata="sniffng: true"))
    result = gostgev("-c", conf, "-O", "yaml")
    assert result.returncode == 0, result.stderr
    assert warnings_of(result) == [
        'gostgev: warning: services[0].handler.metadata.sniffng: unknown key (did you mean "sniffing"?)']


@pytest.mark.parametrize("where, text, expected", [
    ("listener", "listener: {type: ws, metadata: {pth: /t}}",
     'services[0].listener.metadata.pth: unknown key (did you mean "path"?)'),
    ("service", "metadata: {proxyProtocl: 1}",
     'services[0].metadata.proxyProtocl: unknown key (did you mean "proxyProtocol"?)'),
    ("node", "forwarder: {nodes: [{name: n, addr: '127.0.0.1:1', metadata: {wieght: 2}}]}",
     'services[0].forwarder.nodes[0].metadata.wieght: unknown key (did you mean "weight"?)'),
    ("selector", "forwarder: {selector: {maxfail: 2}, nodes: [{name: n, addr: '127.0.0.1:1'}]}",
     'services[0].forwarder.selector.maxfail: unknown key (did you mean "maxFails"?)'),
])
def test_typos_are_named_in_every_metadata_and_section(tmp_path, where, text, expected):
    body = "services:\n- name: a\n  addr: 127.0.0.1:0\n  handler: {type: tcp}\n  %s\n" % text
    if where != "node" and where != "selector":
        body += "  forwarder: {nodes: [{name: n, addr: '127.0.0.1:1'}]}\n"
    result = gostgev("-c", write(tmp_path, body), "-O", "json")
    assert result.returncode == 0, result.stderr
    assert warnings_of(result) == ["gostgev: warning: " + expected]


def test_typos_in_chain_metadata_are_named(tmp_path):
    conf = write(tmp_path, TUNNEL_CLIENT.format(port=1, uuid=UUID, extra="tunnel.wieght: 3"))
    result = gostgev("-c", conf, "-O", "yaml")
    assert warnings_of(result) == [
        "gostgev: warning: chains[0].hops[0].nodes[0].connector.metadata.tunnel.wieght: "
        'unknown key (did you mean "tunnel.weight"?)']


@pytest.mark.parametrize("text, expected", [
    ("services:\n- name: a\n  addr: 127.0.0.1:0\n  handlr:\n    type: tcp\n",
     'gostgev: services[0].handlr: unknown key (did you mean "handler"?)'),
    ("services:\n- name: a\n  adr: 127.0.0.1:0\n  handler: {type: file, metadata: {dir: .}}\n",
     'gostgev: services[0].adr: unknown key (did you mean "addr"?)'),
    ("sevices:\n- name: a\n  addr: 127.0.0.1:0\n  handler: {type: tcp}\n",
     'gostgev: sevices: unknown key (did you mean "services"?)'),
    ("services: {name: a}\n", "gostgev: services: expected a list, got a mapping"),
    ("services:\n- name: a\n  addr: 127.0.0.1:0\n  handler: {tpye: tcp}\n",
     'gostgev: services[0].handler.tpye: unknown key (did you mean "type"?)'),
])
def test_a_misspelled_required_key_names_what_was_found(tmp_path, text, expected):
    result = gostgev("-c", write(tmp_path, text))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [expected]


@pytest.mark.parametrize("flags", [["-O", "yaml"], []])
def test_an_out_of_range_connector_value_is_refused_at_load(tmp_path, flags):
    # tunnel.weight used to pass -O and then crash the start with a traceback.
    conf = write(tmp_path, TUNNEL_CLIENT.format(port=1, uuid=UUID, extra="tunnel.weight: 300"))
    result = gostgev("-c", conf, *flags)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "gostgev: chains[0].hops[0].nodes[0].connector.metadata.tunnel.weight: must be at most 255, got 300"]


@pytest.mark.parametrize("extra, expected", [
    ("mux.version: 3", "chains[0].hops[0].nodes[0].connector.metadata: mux.version: must be 1 or 2, got 3"),
    ("mux.keepaliveInterval: soon", "connector.metadata.mux.keepaliveInterval: invalid duration 'soon'"),
])
def test_bad_mux_values_on_a_connector_are_refused_at_load(tmp_path, extra, expected):
    conf = write(tmp_path, TUNNEL_CLIENT.format(port=1, uuid=UUID, extra=extra))
    result = gostgev("-c", conf, "-O", "yaml")
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and expected in result.stderr, result.stderr


def test_a_bad_tunnel_id_is_refused_at_load(tmp_path):
    conf = write(tmp_path, TUNNEL_CLIENT.format(port=1, uuid="not-a-uuid", extra="x: 1"))
    result = gostgev("-c", conf, "-O", "yaml")
    assert result.returncode == 2
    assert result.stderr.startswith("gostgev: chains[0].hops[0].nodes[0].connector.metadata: tunnel.id: ")


def test_gost_command_lines_give_no_false_warnings():
    # -F copies every query key into hop, node, connector and dialer metadata,
    # -L into handler, listener and service metadata: a key one of them reads is no mistake.
    cases = [
        ["-L", "rtcp://:0/192.168.1.1:80?sniffing=true",
         "-F", "tunnel+tls://user:pass@127.0.0.1:8443?tunnel.id=%s&tunnel.weight=1" % UUID],
        ["-L", "tcp://:2222/ssh.local", "-F", "tunnel+ws://127.0.0.1:8443,127.0.0.2:8443?tunnel.id=%s&path=/t" % UUID],
        ["-L", "tunnel://:8443?entrypoint=:8000&tunnel=srv-0.local:%s&mux.version=2" % UUID],
        ["-L", "relay://:8420?bind=true"],
        ["-L", "tcp://:8000?sniffing=true&idleTimeout=1m", "-F", "tunnel://127.0.0.1:8443?tunnel.id=%s" % UUID],
    ]
    for argv in cases:
        result = gostgev(*argv, "-O", "yaml")
        assert result.returncode == 0, (argv, result.stderr)
        assert result.stderr == "", (argv, result.stderr)


def test_a_typo_on_the_command_line_is_warned_once():
    result = gostgev("-L", "tcp://:8000/127.0.0.1:80?sniffng=true",
                     "-F", "tunnel://127.0.0.1:8443?tunnel.id=%s&tunnel.wieght=2" % UUID, "-O", "yaml")
    assert result.returncode == 0, result.stderr
    assert sorted(warnings_of(result)) == [
        'gostgev: warning: chains[0].hops[0].metadata.tunnel.wieght: unknown key (did you mean "tunnel.weight"?)',
        'gostgev: warning: services[0].handler.metadata.sniffng: unknown key (did you mean "sniffing"?)',
    ]


def test_climiters_are_not_reported_as_unsupported(tmp_path):
    conf = write(tmp_path, FORWARD.format(metadata="sniffing: true")
                 + "  climiter: c0\nclimiters:\n- name: c0\n  limits: ['$ 10']\n")
    result = gostgev("-c", conf, "-O", "yaml")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize("flag, key", [("-metrics", "metrics.addr"), ("--api", "api.addr")])
def test_a_busy_admin_port_names_its_key(tmp_path, flag, key):
    conf = write(tmp_path, FORWARD.format(metadata="sniffing: true"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = gostgev("-c", conf, flag, "127.0.0.1:%d" % port)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if " error " in line]
    assert len(errors) == 1, result.stderr
    assert errors[0].endswith("%s 127.0.0.1:%d: address already in use" % (key, port))
    assert "Traceback" not in result.stderr


def test_gost_flag_spellings_are_accepted(tmp_path):
    conf = write(tmp_path, FORWARD.format(metadata="sniffing: true"))
    api, metrics = 18080, 9000      # -O prints the config and binds nothing
    result = gostgev("-C", conf, "-api", "127.0.0.1:%d" % api, "-metrics=127.0.0.1:%d" % metrics,
                     "-R", "30s", "-DD", "-O", "json")
    assert result.returncode == 0, result.stderr
    assert '"addr": "127.0.0.1:%d"' % api in result.stdout
    assert '"addr": "127.0.0.1:%d"' % metrics in result.stdout


@pytest.mark.parametrize("period", ["0s", "soon"])
def test_a_bad_reload_period_is_a_usage_error(period):
    result = gostgev("-L", "tcp://:8000/127.0.0.1:80", "-R", period)
    assert result.returncode == 2
    assert "-R/--reload-period" in result.stderr


def test_periodic_reload_applies_a_changed_file_and_is_quiet_otherwise(tmp_path, processes):
    for site in "ab":
        (tmp_path / site).mkdir()
        (tmp_path / site / "index.html").write_text("site %s\n" % site)
    text = "services:\n- name: web\n  addr: 127.0.0.1:0\n  handler: {type: file, metadata: {dir: %s}}\n"
    conf = write(tmp_path, text % "a")
    log = tmp_path / "log"
    proc = gostgev_process(["-C", conf, "-R", "100ms", "-D"], log)
    processes.append(proc)
    port = wait_listening(proc, log, ["web"])["web"]     # kept by the reload: the service changes in place
    assert wait_until(lambda: b"site a" in fetch(port), 15)
    # Periods with nothing changed are logged at debug level only.
    assert wait_until(lambda: log.read_text().count("debug reloaded: nothing changed") >= 3, 10), log.read_text()
    write(tmp_path, text % "b")
    assert wait_until(lambda: b"site b" in fetch(port), 10), log.read_text()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    reloads = [line for line in log.read_text().splitlines() if " info reloaded" in line]
    assert len(reloads) == 1 and reloads[0].endswith("reloaded: ~web"), log.read_text()


@pytest.mark.parametrize("where", ["listener", "dialer"])
def test_a_bad_certificate_file_is_refused_at_load(tmp_path, where):
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    if where == "listener":
        text = ("services:\n- name: s\n  addr: 127.0.0.1:0\n  handler: {type: tunnel}\n"
                "  listener: {type: tls, tls: {certFile: bad.pem, keyFile: bad.pem}}\n")
        expected = "gostgev: services[0].listener.tls: certFile %s holds no PEM certificate"
    else:
        text = TUNNEL_CLIENT.format(port=1, uuid=UUID, extra="x: 1").replace(
            "dialer: {type: tcp}", "dialer: {type: tls, tls: {caFile: bad.pem, secure: true}}")
        expected = "gostgev: chains[0].hops[0].nodes[0].dialer.tls: caFile %s holds no PEM certificate"
    result = gostgev("-c", write(tmp_path, text))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [expected % (tmp_path / "bad.pem")]


def test_a_typo_in_an_entrypoint_item_is_named(tmp_path):
    text = ("services:\n- name: s\n  addr: 127.0.0.1:0\n  handler:\n    type: tunnel\n    metadata:\n"
            "      entrypoints: [{addr: '127.0.0.1:0', ingres: ingress-0}]\n"
            "ingresses: [{name: ingress-0, rules: []}]\n")
    result = gostgev("-c", write(tmp_path, text), "-O", "yaml")
    assert result.returncode == 0, result.stderr
    assert warnings_of(result) == ['gostgev: warning: services[0].handler.metadata.entrypoints[0].ingres: '
                                   'unknown key (did you mean "ingress"?)']


@pytest.mark.parametrize("section, ref, good, bad, word", [
    ("rlimiters", "rlimiter", "['$ 100', '$$ 2.5', '10.0.0.0/8 50']", "['$$ fast']", "fast"),
    ("limiters", "limiter", "['$ 100MB 100MB', '$$ 10MB', '10.0.0.0/8 512KB 1MB']", "['$$ 10 furlongs']",
     "furlongs"),
])
def test_limiters_load_and_their_mistakes_name_the_key(tmp_path, section, ref, good, bad, word):
    def conf(limits, name="l0"):
        return write(tmp_path, FORWARD.format(metadata="sniffing: true")
                     + "  %s: %s\n%s:\n- name: l0\n  limits: %s\n" % (ref, name, section, limits))

    result = gostgev("-c", conf(good), "-O", "yaml")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    result = gostgev("-c", conf(bad), "-O", "yaml")
    assert result.returncode == 2 and "%s[0].limits" % section in result.stderr and word in result.stderr
    result = gostgev("-c", conf(good, name="nope"), "-O", "yaml")
    assert result.returncode == 2 and "services[0].%s" % ref in result.stderr
