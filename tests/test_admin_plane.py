"""The admin plane (web API, /metrics) under slow and hostile clients, on loopback.

Clients that must look like different peers bind their own source address in
127.0.1.0/24 or 127.0.2.0/24: all of 127.0.0.0/8 is loopback on Linux.
"""

import base64
import logging
import re

import gevent
import pytest
from gevent import socket
from gevent.event import Event

from gostgev import metrics
from gostgev.api import ApiServer
from gostgev.auth import Auther, User
from tests.conftest import LOCALHOST
from tests.test_api import AUTHER, CREDS, FakeRuntime

#: a request head that is never finished: the blank line is missing
UNFINISHED = b"GET /services HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n"
SLOW_CLIENTS = 40
#: seconds an authenticated request may take while the slow clients trickle
ANSWER_WITHIN = 3.0


def open_from(port, source=LOCALHOST, timeout=5.0):
    return socket.create_connection((LOCALHOST, port), timeout=timeout, source_address=(source, 0))


def request_bytes(path, creds=CREDS, close=True):
    head = "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n" % path
    if creds:
        head += "Authorization: Basic %s\r\n" % base64.b64encode(("%s:%s" % creds).encode()).decode()
    if close:
        head += "Connection: close\r\n"
    return (head + "\r\n").encode()


def read_response(sock, limit=1 << 20):
    """One response off ``sock`` (head and Content-Length body): (status, {header: value}, body)."""
    data = b""
    while b"\r\n\r\n" not in data and len(data) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("closed before a response head: %r" % data[:200])
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("closed in a response body")
        body += chunk
    return int(lines[0].split()[1]), headers, body


def get(port, path, creds=CREDS, source=LOCALHOST, within=ANSWER_WITHIN):
    """One GET on a new connection; its answer must come within ``within`` seconds."""
    with gevent.Timeout(within, AssertionError("no answer to GET %s within %gs" % (path, within))):
        with open_from(port, source) as sock:
            sock.sendall(request_bytes(path, creds))
            return read_response(sock)


def closed_by_server(sock, within):
    """True once the server closes ``sock`` (EOF or reset), False if it is still open after ``within`` s."""
    with gevent.Timeout(within, False):
        try:
            while True:   # bounded by the timeout; a live server sends nothing here
                if not sock.recv(4096):
                    return True
        except ConnectionResetError:
            return True
    return False


def trickle(sock, data, interval, stop):
    """Send ``data`` a byte at a time, ``interval`` apart; ends with the data, on ``stop``, or once closed."""
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return
        if stop.wait(interval):
            return


@pytest.fixture
def slow_clients():
    """``start(port, count, interval, first_ip=1)``: clients from 127.0.1.x trickling an unfinished head."""
    stop = Event()
    socks, greenlets = [], []

    def start(port, count=SLOW_CLIENTS, interval=0.7, first_ip=1):
        for i in range(count):
            sock = open_from(port, "127.0.1.%d" % (first_ip + i))
            socks.append(sock)
            greenlets.append(gevent.spawn(trickle, sock, UNFINISHED, interval, stop))
        return socks

    yield start
    stop.set()
    gevent.joinall(greenlets, timeout=5)
    for sock in socks:
        sock.close()


@pytest.fixture
def api():
    started = []

    def start(auther=AUTHER, **attributes):
        server = ApiServer(FakeRuntime(), (LOCALHOST, 0), auther=auther)
        for name, value in attributes.items():
            setattr(server, name, value)   # the tunables are class attributes, overridable per server
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def metrics_server():
    server = metrics.MetricsServer((LOCALHOST, 0), auther=Auther([User("prom", "s3cret")]),
                                   metrics=metrics.Metrics(hostname="node-1"))
    server.start()
    yield server
    server.stop()


def test_slow_clients_do_not_lock_the_api_out(api, slow_clients):
    server = api()
    slow_clients(server.address[1])
    status, _, body = get(server.address[1], "/services")
    assert status == 200 and b'"entry"' in body


def test_slow_clients_do_not_lock_metrics_out(metrics_server, slow_clients):
    port = metrics_server.address[1]
    slow_clients(port)
    status, headers, body = get(port, "/metrics", creds=("prom", "s3cret"))
    assert status == 200 and b'gost_services{host="node-1"}' in body
    assert get(port, "/metrics", creds=None)[0] == 401


def cut_off_while_trickling(sock):
    """Whether the server closes ``sock`` within 2 s while a head trickles in
    a byte every 50 ms (about 2.7 s for the whole head)."""
    stop = Event()
    sender = gevent.spawn(trickle, sock, UNFINISHED, 0.05, stop)
    try:
        return closed_by_server(sock, 2.0)
    finally:
        stop.set()
        sender.join(timeout=2)


def test_a_head_has_one_deadline_not_one_per_read(api):
    """Bytes arriving more often than the deadline do not extend it."""
    server = api(head_timeout=0.5)
    with open_from(server.address[1]) as sock:
        assert cut_off_while_trickling(sock)


def test_a_silent_connection_is_closed_at_the_deadline(api):
    server = api(head_timeout=0.3)
    with open_from(server.address[1]) as sock:
        assert closed_by_server(sock, 2.0)


def test_a_body_has_a_deadline_too(api):
    server = api(body_timeout=0.3)
    with open_from(server.address[1]) as sock:
        sock.sendall(b"POST /config/reload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n\r\n{}")
        assert closed_by_server(sock, 2.0)
    assert server.runtime.reloads == 0


def test_keep_alive_serves_several_requests_and_deadlines_later_heads(api):
    server = api(head_timeout=0.5)
    with open_from(server.address[1]) as sock:
        for path in ("/services", "/tunnels"):
            sock.sendall(request_bytes(path, close=False))
            status, headers, body = read_response(sock)
            assert status == 200 and headers.get("connection", "").lower() != "close"
        # A later head gets the same deadline: trickled, it is cut off.
        assert cut_off_while_trickling(sock)


def test_pipelined_requests_are_answered_in_order(api):
    server = api()
    with open_from(server.address[1]) as sock:
        sock.sendall(request_bytes("/services", close=False) + request_bytes("/nope", close=True))
        data = b""
        with gevent.Timeout(ANSWER_WITHIN, AssertionError("the server did not close after the second answer")):
            while chunk := sock.recv(65536):   # until the server closes, after the second answer
                data += chunk
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", data) == [b"200", b"404"]


def test_connections_over_the_per_ip_cap_are_closed_at_once(api, caplog):
    caplog.set_level(logging.WARNING, logger="gostgev.api")
    server = api()
    port = server.address[1]
    held = [open_from(port, "127.0.2.1") for _ in range(server.max_per_ip)]
    try:
        # accepted in connection order, so these come after the held ones
        over = [open_from(port, "127.0.2.1") for _ in range(3)]
        for sock in over:
            assert closed_by_server(sock, 1.0)   # well before the 5 s head deadline
            sock.close()
        # other peers are served meanwhile
        assert get(port, "/services", source="127.0.2.2")[0] == 200
    finally:
        for sock in held:
            sock.close()
    refusals = [r for r in caplog.records if "per client" in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in refusals]    # one line for a burst, no traceback
    assert refusals[0].exc_info is None
    # once they are gone the peer gets in again
    assert get(port, "/services", source="127.0.2.1")[0] == 200


def test_over_the_total_cap_the_longest_waiting_head_makes_room(api, slow_clients):
    server = api(max_connections=6)
    socks = slow_clients(server.address[1], count=6, interval=0.3)
    assert get(server.address[1], "/services")[0] == 200
    assert closed_by_server(socks[0], 2.0)


def test_a_malformed_head_gets_400_and_a_closed_connection(api, caplog):
    caplog.set_level(logging.WARNING, logger="gostgev.api")
    server = api()
    with open_from(server.address[1]) as sock:
        sock.sendall(b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
        status, _, _ = read_response(sock)
        assert status == 400
        assert closed_by_server(sock, 2.0)
    assert all(r.exc_info is None for r in caplog.records)
