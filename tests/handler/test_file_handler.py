"""The ``file`` handler: static files over HTTP, never outside its root."""

import pytest

from tests.conftest import connect, http_get, recv_all


@pytest.fixture
def site(tmp_path, run_services):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_text("home\n")
    (root / "sub" / "data.txt").write_text("data\n")
    (root / "list").mkdir()
    (root / "list" / "<b>.txt").write_text("x")
    (tmp_path / "secret.txt").write_text("secret\n")
    (root / "escape").symlink_to(tmp_path / "secret.txt")
    ports = run_services({"services": [{"name": "f", "addr": "127.0.0.1:0",
                                        "handler": {"type": "file", "metadata": {"dir": str(root)}}}]})
    return ports["f"]


def test_serves_index_and_files(site):
    assert http_get(site, "x") == (200, b"home\n")
    assert http_get(site, "x", "/sub/data.txt") == (200, b"data\n")
    assert http_get(site, "x", "/sub/data.txt?v=1") == (200, b"data\n")
    assert http_get(site, "x", "/nope")[0] == 404


@pytest.mark.parametrize("path", ["/../secret.txt", "/sub/../../secret.txt", "/%2e%2e/secret.txt", "/escape"])
def test_never_leaves_the_root(site, path):
    status, body = http_get(site, "x", path)
    assert status == 404 and b"secret" not in body


def test_directory_listing_escapes_names_and_redirects(site):
    status, body = http_get(site, "x", "/list/")
    assert status == 200 and b"&lt;b&gt;.txt" in body and b"<b>.txt" not in body
    assert http_get(site, "x", "/list")[0] == 301


def test_keep_alive_serves_several_requests_on_one_connection(site):
    with connect(site) as sock:
        sock.sendall(b"GET /sub/data.txt HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"HEAD /index.html HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"DELETE / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = recv_all(sock)
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert b"data\n" in data and b"home" not in data          # HEAD has no body
    assert b"HTTP/1.1 405 Method Not Allowed" in data
