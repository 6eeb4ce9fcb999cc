"""Replay the fuzzing seed corpus (tests/data/fuzz/<target>/) through each target's checker.

The same checkers (scripts/fuzz_targets.py) back scripts/fuzz.py, so every
seed, and every regression input added after a finding, is re-checked on
each test run.  tests/fuzz_seeds.py builds the corpus.
"""

import fuzz_targets
import pytest
from fuzz_targets import ERROR, MORE, OUTCOMES, TARGETS, VALUE

from gostgev.codec import mux
from gostgev.errors import RemoteProtocolError
from tests.fuzz_seeds import CORPUS, corpus_seeds

HEAD = b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"


def seed_files():
    for name in sorted(TARGETS):
        for path in sorted((CORPUS / name).glob("*")):
            yield pytest.param(name, path, id="%s/%s" % (name, path.name))


def test_every_target_has_a_corpus_and_nothing_else_does():
    assert sorted(p.name for p in CORPUS.iterdir() if p.is_dir()) == sorted(TARGETS)
    for name in TARGETS:
        assert any((CORPUS / name).iterdir()), name


def test_the_seed_builder_makes_seeds_for_every_target_and_only_those():
    seeds = corpus_seeds()
    assert sorted(seeds) == sorted(TARGETS)
    assert all(seeds.values())


@pytest.mark.parametrize("name, path", list(seed_files()))
def test_seed_obeys_the_invariant(name, path):
    assert TARGETS[name].check(path.read_bytes()) in OUTCOMES


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_corpus_reaches_values_and_errors(name):
    """Seeds that all fail at the first byte would fuzz nothing: some must parse, some must be refused."""
    outcomes = {TARGETS[name].check(p.read_bytes()) for p in (CORPUS / name).iterdir()}
    assert VALUE in outcomes
    if name != "sniff":  # detection has no error outcome
        assert ERROR in outcomes


# -- the checkers can fail ------------------------------------------------------------

def test_a_foreign_exception_escapes(monkeypatch):
    def broken(data):
        raise KeyError("not ours")

    monkeypatch.setattr(fuzz_targets, "parse_request_head", broken)
    with pytest.raises(KeyError):
        fuzz_targets.check_http_request(HEAD)


def test_an_answer_that_changes_with_more_bytes_is_caught(monkeypatch):
    real = fuzz_targets.parse_request_head

    def fickle(data):
        if len(data) < 10:
            raise RemoteProtocolError("refused early, accepted later")
        return real(data)

    monkeypatch.setattr(fuzz_targets, "parse_request_head", fickle)
    with pytest.raises(AssertionError, match="became"):
        fuzz_targets.check_http_request(HEAD)


def test_a_buffer_past_its_limit_is_caught(monkeypatch):
    class Hoarder(mux.FrameBuffer):
        def __next__(self):
            raise StopIteration  # never hands out a frame, so everything stays pending

    monkeypatch.setattr(fuzz_targets.mux, "FrameBuffer", Hoarder)
    frames = b"".join(mux.encode_frame(2, mux.CMD_PSH, 1, b"x" * 1000) for _ in range(3))
    with pytest.raises(AssertionError, match="pending"):
        fuzz_targets.check_mux_frames(bytes((1 | 0b100, 0)) + frames)  # v2, 1024-byte frames


def test_need_more_past_the_limit_is_caught(monkeypatch):
    monkeypatch.setattr(fuzz_targets, "parse_client_hello", lambda data: None)
    assert fuzz_targets.check_tls_client_hello(b"\x16" * 100) == MORE
    with pytest.raises(AssertionError, match="past the limit"):
        fuzz_targets.check_tls_client_hello(b"\x16" * fuzz_targets.MAX_CLIENT_HELLO_BYTES)
