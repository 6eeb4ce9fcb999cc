"""The fuzzing seed corpus (tests/data/fuzz/<target>/), built from the test suite's own vectors.

    python3 -m tests.fuzz_seeds [OUT_DIR]      # from the source tree; OUT_DIR defaults to tests/data/fuzz

Each target's directory is replaced with the seeds made here: real inputs
from the codec tests' vectors and the shipped configs, damaged copies of
some, and the regression inputs in ``REGRESSIONS``.  The targets themselves
are in scripts/fuzz_targets.py; ``tests/test_fuzz_corpus.py`` replays the
committed corpus through them on every test run.
"""

import json
import pathlib
import re
import sys

from fuzz_targets import TARGETS, WS_KEY

from tests import DATA, ROOT

CORPUS = DATA / "fuzz"


def main(argv):
    return make_corpus(pathlib.Path(argv[1]) if len(argv) > 1 else CORPUS)


def make_corpus(out):
    """Write every target's seeds into ``out/<target>/``, replacing what was there."""
    seeds = corpus_seeds()
    assert set(seeds) == set(TARGETS), set(seeds) ^ set(TARGETS)
    total = 0
    for name, files in sorted(seeds.items()):
        directory = out / name
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.iterdir():
            if old.is_file():
                old.unlink()
        for file_name, data in files.items():
            (directory / file_name).write_bytes(data)
            total += len(data)
        print("%-18s %3d seeds" % (name, len(files)))
    print("%d bytes in %s" % (total, out))
    return 0


def corpus_seeds():
    """{target: {file name: bytes}}, built from the test suite's own real vectors."""
    seeds = {
        "http-request": _http_seeds(),
        "tls-client-hello": _tls_seeds(),
        "sniff": _sniff_seeds(),
        "mux-frames": _mux_seeds(),
        "ws-frames": _ws_frames_seeds(),
        "ws-handshake": _ws_handshake_seeds(),
        "proxy-header": _proxy_seeds(),
        "url": _url_seeds(),
        "config-yaml": _config_seeds(),
        **_relay_seeds(),
    }
    for name, regressions in REGRESSIONS.items():
        seeds[name].update(("regression-" + key, data) for key, data in regressions.items())
    return seeds


# Inputs that once broke a target, kept so they keep being replayed.
REGRESSIONS = {
    "config-yaml": {
        "not-utf8": b"services:\n- name: \xff\xfe\n",
        "invalid-date": b"services: []\nlog: {level: 2001-13-01}\n",
        "deep-nesting": b"x: " + b"[" * 600 + b"\n",
        "unprintable-int": b"services:\n- {name: a, addr: ':1', handler: {type: relay}, admission: 0x"
                           + b"f" * 3700 + b"}\n",
    },
}


def _damaged(seeds, keep=4):
    """Truncated and bit-flipped copies of the first ``keep`` seeds."""
    out = {}
    for name, data in list(seeds.items())[:keep]:
        if len(data) > 1:
            out["trunc-" + name] = data[:len(data) // 2]
            flipped = bytearray(data)
            flipped[len(data) * 2 // 3] ^= 0x5A
            out["flip-" + name] = bytes(flipped)
    return out


def _http_seeds():
    from tests.codec.test_http import INVALID, VALID, load_http
    seeds = {"valid-" + p.stem: load_http(p) for p in VALID}
    seeds.update({"invalid-" + p.stem: load_http(p) for p in INVALID})
    seeds["h2-preface"] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    seeds["connect"] = b"CONNECT srv-0.local:443 HTTP/1.1\r\nHost: srv-0.local:443\r\n\r\n"
    seeds.update(_damaged({k: v for k, v in seeds.items() if k.startswith("valid-")}))
    return seeds


def _tls_seeds():
    from tests.codec.test_tls import FIXTURES, load_fixture
    seeds = {name: load_fixture(name)[0] for name in FIXTURES}
    seeds.update(_damaged(seeds))
    hello = seeds["sni-example-com"]
    seeds["bad-record-length"] = hello[:3] + b"\xff\xff" + hello[5:]
    return seeds


def _sniff_seeds():
    return {
        "tls": bytes.fromhex("160301020001") + b"\0" * 4,
        "http": b"GET / HTTP/1.1\r\n",
        "http-webdav": b"PROPPATCH /x HTTP/1.1\r\n",
        "h2": b"PRI * HTTP/2.0\r\n",
        "relay": bytes.fromhex("0101001202000f030b6578616d706c652e636f6d0050"),
        "ssh": b"SSH-2.0-OpenSSH_9.6\r\n",
        "redis": b"*1\r\n$4\r\nPING\r\n",
        "partial-method": b"PROPPAT",
        "sslv3": bytes.fromhex("16030000"),
    }


def _relay_seeds():
    messages = json.loads((DATA / "relay" / "vectors.json").read_text())["messages"]
    out = {}
    for kind in ("request", "response"):
        seeds = {m["name"]: bytes.fromhex(m["hex"]) for m in messages if m["kind"] == kind}
        seeds.update(_damaged(seeds))
        first = next(iter(seeds.values()))
        seeds["with-payload"] = first + b"GET / HTTP/1.1\r\n\r\n"
        seeds["fealen-too-short"] = first[:2] + (len(first) - 6).to_bytes(2, "big") + first[4:]
        seeds["bad-version"] = b"\x02" + first[1:]
        out["relay-" + kind] = seeds
    return out


def _mux_seeds():
    from gostgev.codec import mux
    from tests.codec.test_mux_frames import APPENDIX, SPEC_10_5, unhex

    def wire(vectors):
        return b"".join(unhex(hexed) for hexed, _ in vectors)

    v1, v2 = 0, 1  # options byte: bit 0 set means smux v2
    stream = wire(SPEC_10_5 + APPENDIX)
    v1_stream = b"".join(mux.encode_frame(1, cmd, 7, payload) for cmd, payload in (
        (mux.CMD_SYN, b""), (mux.CMD_PSH, b"ping"), (mux.CMD_NOP, b""), (mux.CMD_FIN, b"")))
    seeds = {
        "v2-capture-whole": bytes((v2, 97)) + stream,
        "v2-capture-bytewise": bytes((v2, 0)) + stream,
        "v2-capture-chunks": bytes((v2, 13)) + stream,
        "v1-frames": bytes((v1, 5)) + v1_stream,
        "v2-big-psh": bytes((v2, 40)) + mux.encode_data(2, 9, bytes(range(256)) * 12, 1000),
        "v2-psh-over-1024": bytes((v2 | 0b100, 3)) + mux.encode_frame(2, mux.CMD_PSH, 1, b"x" * 1100),
        "v1-upd": bytes((v1, 1)) + bytes.fromhex("0104080001000000") + bytes(8),
        "v2-fin-with-payload": bytes((v2, 2)) + bytes.fromhex("0201010003000000") + b"x",
        "wrong-version": bytes((v1, 2)) + stream,
        "truncated-psh": bytes((v2, 7)) + stream[:20],
    }
    return seeds


def _ws_frames_seeds():
    from gostgev.codec import ws
    from tests.codec.test_ws_frames import MASK, RFC_5_7, unhex
    client, server = 1, 0  # options bit 0: we are the server, frames must be masked
    seeds = {"rfc-%d" % i: bytes((client if masked else server, 3 + i)) + unhex(hexed)
             for i, (hexed, _, masked) in enumerate(RFC_5_7)}
    seeds.update({
        "binary-256-masked": bytes((client, 0)) + ws.encode_frame(ws.OP_BINARY, bytes(range(256)), MASK),
        "close-normal": bytes((server, 9)) + ws.encode_frame(ws.OP_CLOSE, ws.close_payload(1000, "bye")),
        "close-bad-code": bytes((server, 9)) + ws.encode_frame(ws.OP_CLOSE, b"\x03\xe7"),
        "len64-declared": bytes((server, 50)) + bytes.fromhex("827f0000000000010000") + b"abc",
        "len64-top-bit": bytes((server, 50)) + bytes.fromhex("827f8000000000000000"),
        "over-limit-1000": bytes((server | 0b100, 11)) + ws.encode_frame(ws.OP_BINARY, b"y" * 1200),
        "reserved-bits": bytes((server, 1)) + bytes.fromhex("c100"),
        "unmasked-from-client": bytes((client, 1)) + unhex(RFC_5_7[0][0]),
        "fragmented-ping-between": bytes((server, 4)) + bytes.fromhex("0103 48656c 8900 80026c6f"),
    })
    return seeds


def _ws_handshake_seeds():
    from gostgev.codec import ws
    client_side, server_side = 0, 1  # side byte: odd means we read the upgrade request
    response = ws.server_handshake_response(WS_KEY)
    request = ws.client_handshake("example.com:443", "/ws", WS_KEY, [("X-Real-IP", "10.0.0.1")])
    seeds = {
        "response-101": bytes((client_side,)) + response,
        "response-403": bytes((client_side,)) + b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
        "response-wrong-accept": bytes((client_side,)) + response.replace(b"s3pPLMBi", b"AAAAAAAA"),
        "response-extension": bytes((client_side,)) + response[:-2] + b"Sec-WebSocket-Extensions: x\r\n\r\n",
        "request-gorilla": bytes((server_side,)) + request,
        "request-no-key": bytes((server_side,)) + re.sub(rb"Sec-WebSocket-Key: [^\r]*\r\n", b"", request),
        "request-post": bytes((server_side,)) + request.replace(b"GET", b"POST", 1),
    }
    seeds["response-truncated"] = seeds["response-101"][:40]
    return seeds


def _proxy_seeds():
    from tests.codec.test_proxyproto import IDS, VECTORS
    seeds = {name: data for name, (data, _) in zip(IDS, VECTORS, strict=True)}
    seeds.update(_damaged(seeds, keep=8))
    seeds["v1-leading-zero-port"] = b"PROXY TCP4 1.2.3.4 5.6.7.8 080 443\r\n"
    seeds["v2-unix"] = seeds["v2-local"][:12] + b"\x21\x31\x00\xd8" + bytes(216)
    return seeds


def _url_seeds():
    tunnel = "4d21094e-b74c-4916-86c1-d9fa36ea677b"
    lines = {
        "tcp-targets": "tcp://:8080/10.0.0.1:80,10.0.0.2:80?sniffing=true",
        "file": "file://127.0.0.1:8000?dir=/",
        "tunnel-server": "tunnel://:8443?entrypoint=:8000&tunnel=srv-0.local:%s,*.apps.local:%s" % (tunnel, tunnel),
        "rtcp-client": "-L rtcp://:0/192.168.1.1:80\n-F tunnel://127.0.0.1:8443?tunnel.id=%s" % tunnel,
        "relay-bind": "relay://:8420?bind=true",
        "relay-client": "-L rtcp://:2222/192.168.1.1:22\n-F relay://user:pass@127.0.0.1:8420",
        "selector": "tcp://:8080/a:80,b:80?strategy=hash&maxFails=3&failTimeout=1m30s",
        "prefixed-keys": "tcp://:8080/a:80?handler.sniffing=true&listener.keepalive=1&service.x=y",
        "ws-chain": "-L tcp://:2222/ssh.local\n-F tunnel+ws://127.0.0.1:8443?tunnel.id=%s&path=/ws" % tunnel,
        "no-scheme": ":8080/10.0.0.1:80",
        "port-range": "tcp://:8000-8010/10.0.0.1:80",
        "bad-ipv6": "tcp://[::1:8080/a:80",
        "unknown-handler": "nope://:8080",
    }
    return {name: text.encode() for name, text in lines.items()}


def _config_seeds():
    etc = ROOT / "etc"
    seeds = {name: _without_comments(etc / (name + ".yaml")) for name in ("tunnel-server", "reverse-proxy")}
    seeds["minimal"] = b"services:\n- name: a\n  addr: :8080\n  handler: {type: tcp}\n" \
                       b"  forwarder: {nodes: [{name: n, addr: 127.0.0.1:80}]}\n"
    seeds["tunnel-client"] = _without_comments(etc / "tunnel-client.yaml").split(b"\n- name: backend-0")[0] \
        + b"\nchains:" + _without_comments(etc / "tunnel-client.yaml").split(b"\nchains:")[1]
    seeds["unknown-handler"] = seeds["minimal"].replace(b"type: tcp", b"type: nope")
    seeds["flow-style"] = b'{"services": [{"name": "x", "addr": ":1", "handler": {"type": "relay"}}], ' \
                          b'"log": {"level": "debug", "format": "json"}}'
    seeds["not-a-mapping"] = b"- just\n- a list\n"
    seeds["broken-yaml"] = b"services: [\n"
    return seeds


def _without_comments(path):
    lines = [line.split(" #")[0].rstrip() for line in path.read_text().splitlines()]
    return ("\n".join(line for line in lines if line and not line.lstrip().startswith("#")) + "\n").encode()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
