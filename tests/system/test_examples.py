"""The examples run as a user would run them."""

import os
import subprocess
import sys

from tests import ROOT


def test_expose_http_server_through_a_tunnel():
    script = os.path.join(ROOT, "examples", "expose_http_server.py")
    result = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    size = os.path.getsize(script)
    assert result.stdout.strip() == "through the tunnel: HTTP/1.0 200 OK - %d bytes" % size
    assert result.stderr == ""
