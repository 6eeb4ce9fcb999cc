"""ClientHello sniffing: real hellos from the ssl module, a hex corpus, hand-built bad input, fuzzing."""

import json
import pathlib
import random
import re
import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gostgev.codec.tls import MAX_CLIENT_HELLO_BYTES, MAX_RECORD_BYTES, ClientHello, looks_like_tls, parse_client_hello
from gostgev.errors import RemoteProtocolError

DATA = pathlib.Path(__file__).resolve().parent.parent / "data" / "tls"
FIXTURES = sorted(p.stem for p in DATA.glob("*.hex"))


def load_fixture(name):
    """A ``.hex`` file (``#`` comments and whitespace ignored) and its ``.json`` expectation."""
    text = re.sub(r"#.*", "", (DATA / (name + ".hex")).read_text())
    expected = json.loads((DATA / (name + ".json")).read_text())
    hello = ClientHello(sni=expected["sni"], alpn=tuple(expected["alpn"]), length=expected["length"])
    return bytes.fromhex("".join(text.split())), hello


def real_hello(host=None, alpn=None, maximum_version=None):
    """The first flight of an in-memory OpenSSL client."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if maximum_version:
        ctx.maximum_version = maximum_version
    outgoing = ssl.MemoryBIO()
    conn = ctx.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=host)
    with pytest.raises(ssl.SSLWantReadError):
        conn.do_handshake()
    return outgoing.read()


def resplit(data, sizes):
    """Re-cut a single-record hello's fragment into records of the given sizes (rest last)."""
    fragment, out, pos = data[5:], b"", 0
    for size in [*sizes, len(data)]:
        chunk = fragment[pos:pos + size]
        pos += len(chunk)
        if chunk:
            out += record(chunk, version=data[1:3])
    return out


def record(fragment, content_type=0x16, version=b"\x03\x01"):
    return bytes([content_type]) + version + len(fragment).to_bytes(2, "big") + fragment


def vec(data, n):
    return len(data).to_bytes(n, "big") + data


def ext(ext_type, data):
    return ext_type.to_bytes(2, "big") + vec(data, 2)


def sni_ext(*names, name_type=0):
    return ext(0, vec(b"".join(bytes([name_type]) + vec(n, 2) for n in names), 2))


def alpn_ext(*names):
    return ext(16, vec(b"".join(vec(n, 1) for n in names), 2))


def body(*exts, session_id=b"\x11" * 32, suites=b"\x13\x01", compression=b"\x00", raw_exts=None):
    out = b"\x03\x03" + b"\x22" * 32 + vec(session_id, 1) + vec(suites, 2) + vec(compression, 1)
    if raw_exts is not None:
        return out + raw_exts
    return out + vec(b"".join(exts), 2) if exts else out


def hello(hello_body, msg_type=1):
    return record(bytes([msg_type]) + vec(hello_body, 3))


REAL = {
    "sni": (real_hello("example.com"), "example.com", ()),
    "no-sni": (real_hello(), None, ()),
    "alpn": (real_hello("www.example.org", ["h2", "http/1.1"]), "www.example.org", ("h2", "http/1.1")),
    "tls12": (real_hello("Mixed.Case.", ["http/1.1"], ssl.TLSVersion.TLSv1_2), "mixed.case", ("http/1.1",)),
}
_multi = REAL["alpn"]
REAL["three-records"] = (resplit(_multi[0], [1, 300]), _multi[1], _multi[2])


def samples():
    for name in FIXTURES:
        yield pytest.param(*load_fixture(name), id="file-" + name)
    for name, (data, sni, alpn) in REAL.items():
        yield pytest.param(data, ClientHello(sni=sni, alpn=alpn, length=len(data)), id="ssl-" + name)


def test_corpus_is_present():
    """The hex corpus ships with the tests and each file has an expectation."""
    assert len(FIXTURES) >= 5
    assert all((DATA / (name + ".json")).exists() for name in FIXTURES)


@pytest.mark.parametrize("data, expected", list(samples()))
def test_whole(data, expected):
    """A complete hello parses in one call, ignoring anything pipelined after it."""
    assert parse_client_hello(data) == expected
    assert parse_client_hello(data + b"\x17\x03\x03\x00\x05hello") == expected


@pytest.mark.parametrize("data, expected", list(samples()))
def test_byte_by_byte(data, expected):
    """Every strict prefix of the hello's records needs more data."""
    for n in range(expected.length):
        assert parse_client_hello(data[:n]) is None, n
    assert parse_client_hello(data[:expected.length]) == expected


@pytest.mark.parametrize("data, expected", list(samples()))
def test_random_chunks(data, expected):
    """Feeding random-sized reads answers None until the hello's last record arrives."""
    rng = random.Random(1234)
    for _ in range(20):
        buf, pos, result = b"", 0, None
        while pos < len(data):
            step = rng.randint(1, 200)
            buf += data[pos:pos + step]
            pos += step
            result = parse_client_hello(buf)
            if len(buf) < expected.length:
                assert result is None
            else:
                assert result == expected
        assert result == expected


def test_resplit_every_first_record_size():
    """Any two-record split of a real hello parses identically."""
    data, sni, alpn = REAL["alpn"]
    for first in range(1, len(data) - 5, 7):
        split = resplit(data, [first])
        assert parse_client_hello(split) == ClientHello(sni=sni, alpn=alpn, length=len(split))


def test_minimal_hello_without_extensions():
    """Extensions are optional before TLS 1.3."""
    data = hello(body(session_id=b""))
    assert parse_client_hello(data) == ClientHello(sni=None, alpn=(), length=len(data))


def test_hello_in_one_byte_records():
    """Tiny records are legal; the handshake is reassembled."""
    whole = hello(body(sni_ext(b"tiny.example")))
    fragment = whole[5:]
    data = b"".join(record(fragment[i:i + 1]) for i in range(len(fragment)))
    assert parse_client_hello(data) == ClientHello(sni="tiny.example", alpn=(), length=len(data))


@pytest.mark.parametrize(
    "exts, sni, alpn",
    [
        ([sni_ext(b"skip", name_type=7)], None, ()),
        ([ext(0, vec(b"\x07" + vec(b"x", 2) + b"\x00" + vec(b"Real.Example", 2), 2))], "real.example", ()),
        ([ext(0, b"")], None, ()),
        ([sni_ext(b"")], None, ()),
        ([sni_ext(b"first.example", b"second.example")], "first.example", ()),
        ([alpn_ext(b"\x8a\x8a", b"h2")], None, ("\\x8a\\x8a", "h2")),
        ([ext(0x0A0A, b""), alpn_ext(b"http/1.1"), ext(0xFAFA, b"\x00")], None, ("http/1.1",)),
    ],
    ids=["unknown-name-type-only", "host-after-unknown", "empty-ext", "empty-name",
         "first-host-wins", "grease-alpn", "grease-exts"],
)
def test_synthetic_extensions(exts, sni, alpn):
    """Edge cases real stacks send: GREASE, unknown name types, the empty server_name."""
    data = hello(body(*exts))
    assert parse_client_hello(data) == ClientHello(sni=sni, alpn=alpn, length=len(data))


# The first of two records carrying a hello: complete, yet the hello is not.
FIRST_OF_TWO_RECORDS = resplit(hello(body(sni_ext(b"a.b"))), [40])[:45]

BAD = {
    "not-handshake-record": (record(b"\x01\x00\x00\x00", content_type=0x17), "content type 23"),
    "alert-first-byte": (b"\x15", "content type 21"),
    "http": (b"GET / HTTP/1.1\r\n\r\n", "content type 71"),
    "zero-length-record": (record(b""), "record length 0"),
    "oversized-record": (b"\x16\x03\x01" + (MAX_RECORD_BYTES + 1).to_bytes(2, "big"), "record length 16385"),
    "server-hello": (hello(body(), msg_type=2), "handshake type 2"),
    "server-hello-type-only": (record(b"\x02"), "handshake type 2"),
    "oversized-handshake": (record(b"\x01" + MAX_CLIENT_HELLO_BYTES.to_bytes(3, "big")), "cannot fit"),
    "non-handshake-mid-hello": (FIRST_OF_TWO_RECORDS + record(b"x", content_type=0x17), "content type 23"),
    "short-body": (hello(b"\x03\x03" + b"\x00" * 10), "random"),
    "long-session-id": (hello(body(session_id=b"\x00" * 33)), "session_id longer"),
    "session-id-overruns": (hello(b"\x03\x03" + b"\x00" * 32 + b"\xff"), "session_id needs"),
    "odd-cipher-suites": (hello(body(suites=b"\x13\x01\x13")), "cipher_suites"),
    "no-cipher-suites": (hello(body(suites=b"")), "cipher_suites"),
    "no-compression": (hello(body(compression=b"")), "compression"),
    "extensions-short": (hello(body(raw_exts=b"\x00\x10" + ext(0x1234, b"abc"))), "extensions needs"),
    "extensions-long": (hello(body(raw_exts=b"\x00\x02" + ext(0x1234, b"abc"))), "after the extensions"),
    "extensions-length-truncated": (hello(body(raw_exts=b"\x00")), "extensions length"),
    "extension-overruns": (hello(body(raw_exts=vec(b"\x12\x34\x00\x09abc", 2))), "extension 4660 needs"),
    "extension-header-truncated": (hello(body(raw_exts=vec(b"\x12", 2))), "extension type"),
    "duplicate-extension": (hello(body(ext(0x1234, b""), ext(0x1234, b""))), "duplicate extension 4660"),
    "duplicate-sni": (hello(body(sni_ext(b"a.example"), sni_ext(b"b.example"))), "duplicate extension 0"),
    "sni-bad-chars": (hello(body(sni_ext(b"evil host"))), "invalid host name"),
    "sni-colon": (hello(body(sni_ext(b"::1"))), "invalid host name"),
    "sni-non-ascii": (hello(body(sni_ext("b\u00fccher.de".encode()))), "invalid host name"),
    "sni-too-long": (hello(body(sni_ext(b"a" * 256))), "longer than 255"),
    "sni-list-overruns": (hello(body(ext(0, b"\x00\x09\x00\x00\x01a"))), "server_name: list needs"),
    "sni-junk-after-list": (hello(body(ext(0, vec(b"\x00\x00\x01a", 2) + b"!"))), "after the list"),
    "sni-name-overruns": (hello(body(ext(0, vec(b"\x00\x00\x09a", 2)))), "server_name: name needs"),
    "alpn-empty-name": (hello(body(alpn_ext(b"h2", b""))), "empty protocol name"),
    "alpn-name-overruns": (hello(body(ext(16, vec(b"\x05h2", 2)))), "protocol name needs"),
    "alpn-list-missing": (hello(body(ext(16, b""))), "alpn: list length"),
}


@pytest.mark.parametrize("data, reason", list(BAD.values()), ids=list(BAD.keys()))
def test_invalid(data, reason):
    """Bytes that cannot be a ClientHello raise our error naming the broken field."""
    with pytest.raises(RemoteProtocolError, match=re.escape(reason)):
        parse_client_hello(data)


def test_length_corruption_in_real_hello():
    """Shortening the handshake length leaves extensions that no longer fit."""
    data = REAL["alpn"][0]
    declared = int.from_bytes(data[6:9], "big")
    for delta in (1, 2, 5, 100):
        corrupt = data[:6] + (declared - delta).to_bytes(3, "big") + data[9:]
        with pytest.raises(RemoteProtocolError):
            parse_client_hello(corrupt)


def test_longer_handshake_length_waits_for_next_record():
    """A hello declared longer than its record continues in the next one, or fails on a non-handshake record."""
    data = REAL["sni"][0]
    longer = data[:6] + (int.from_bytes(data[6:9], "big") + 1).to_bytes(3, "big") + data[9:]
    assert parse_client_hello(longer) is None
    with pytest.raises(RemoteProtocolError):
        parse_client_hello(longer + record(b"\x00", content_type=0x17))


def test_limit_bounds_buffering():
    """A hello dribbled out in one-byte records fails once the limit is reached, never waits forever."""
    head = record(b"\x01") + record(b"\x00") + record(b"\xf0") + record(b"\x00")
    filler = record(b"\x00") * (MAX_CLIENT_HELLO_BYTES // 6)
    data = head + filler
    assert parse_client_hello(data[:MAX_CLIENT_HELLO_BYTES - 6]) is None
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        parse_client_hello(data)


def test_largest_allowed_hello():
    """A hello whose records, headers included, fill the limit exactly is accepted."""
    padding = 0x0015  # RFC 7685 padding extension, content ignored
    # Three full records plus a fourth: four headers inside the limit.
    fragment_total = MAX_CLIENT_HELLO_BYTES - 4 * 5
    base = body(ext(padding, b""))
    pad = fragment_total - 4 - len(base)
    fragment = b"\x01" + vec(body(ext(padding, b"\x00" * pad)), 3)
    assert len(fragment) == fragment_total
    data = b"".join(record(fragment[i:i + MAX_RECORD_BYTES]) for i in range(0, len(fragment), MAX_RECORD_BYTES))
    assert len(data) == MAX_CLIENT_HELLO_BYTES
    assert parse_client_hello(data) == ClientHello(sni=None, alpn=(), length=MAX_CLIENT_HELLO_BYTES)
    assert parse_client_hello(data[:-1]) is None


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"", None),
        (b"\x16", None),
        (b"\x16\x03", None),
        (b"\x16\x03\x01", True),
        (b"\x16\x03\x03\x02\x00", True),
        (b"\x16\x03\x04", True),
        (b"\x16\x03\x00", False),
        (b"\x16\x03\x05", False),
        (b"\x16\x02", False),
        (b"\x17\x03\x03", False),
        (b"GET ", False),
        (b"G", False),
        (b"\x05\x01\x00", False),
    ],
)
def test_looks_like_tls(data, expected):
    """True, False as soon as the bytes rule TLS out, None while undecided."""
    assert looks_like_tls(data) is expected


@pytest.mark.parametrize("data, expected", list(samples()))
def test_looks_like_tls_on_samples(data, expected):
    """Every real hello passes the cheap predicate."""
    assert looks_like_tls(data) is True


def check_invariant(data):
    try:
        result = parse_client_hello(data)
    except RemoteProtocolError:
        return
    assert result is None or isinstance(result, ClientHello)
    if result is not None:
        assert 0 < result.length <= len(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_arbitrary_bytes(data):
    """Any bytes give a value, None, or RemoteProtocolError."""
    check_invariant(data)
    check_invariant(b"\x16\x03\x01" + data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(REAL)), st.integers(0, 600), st.binary(max_size=200))
def test_fuzz_truncated_prefix_plus_noise(name, cut, noise):
    """A real hello cut anywhere and followed by garbage still obeys the invariant."""
    check_invariant(REAL[name][0][:cut] + noise)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 600), max_size=5))
def test_fuzz_record_splits(sizes):
    """Re-cutting a real hello into arbitrary records never changes what is parsed."""
    data, sni, alpn = REAL["alpn"]
    split = resplit(data, sizes)
    assert parse_client_hello(split) == ClientHello(sni=sni, alpn=alpn, length=len(split))
