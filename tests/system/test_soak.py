"""A short run of scripts/soak.py: random payloads through the forwarder and the tunnel, clients killed."""

import os
import subprocess
import sys

import pytest

from tests import ROOT


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_short_soak_passes():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "soak.py"), "--duration", "20",
                             "--clients", "20"], cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
