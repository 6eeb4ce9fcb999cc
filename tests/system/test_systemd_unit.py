"""etc/gostgev.service: where it runs gostgev from, and ``systemd-analyze verify`` on it.

verify refuses a unit whose program does not exist, so it runs on a copy in
tmp_path with the install location replaced by an executable that exists
here.  It also reports on the system's own units; only the lines naming the
copy count, and the broken copies below show that those lines would appear.
"""

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests import ROOT

UNIT = os.path.join(ROOT, "etc", "gostgev.service")
README = os.path.join(ROOT, "README.md")
INIT_SCRIPT = os.path.join(ROOT, "scripts", "gostgev.init")
INSTALLED = "/opt/gostgev/bin/gostgev"   # where the README installs gostgev
COPY_NAME = "gostgev-under-test.service"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def read(path):
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def directives(text, key):
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(key + "=")]


def an_executable():
    """The gostgev console script next to this python (a venv), else on PATH, else python itself."""
    beside = os.path.join(os.path.dirname(sys.executable), "gostgev")
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return beside
    return shutil.which("gostgev") or sys.executable


def verify(tmp_path, text):
    """The lines of ``systemd-analyze verify`` output that are about the unit ``text``."""
    path = tmp_path / COPY_NAME
    path.write_text(text)
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", str(path)], capture_output=True, text=True,
                            timeout=60, cwd=str(tmp_path))
    output = result.stdout + result.stderr
    return [line for line in output.splitlines() if COPY_NAME in line], result


def unit_here():
    text = read(UNIT)
    assert INSTALLED in text
    return text.replace(INSTALLED, an_executable())


def test_the_unit_runs_gostgev_from_the_readme_install():
    text = read(UNIT)
    (start,) = directives(text, "ExecStart")
    assert start.split()[0] == INSTALLED
    (pre,) = directives(text, "ExecStartPre")
    assert "exec %s -c " % INSTALLED in pre
    # ProtectHome hides /home and /root: the program must not live there.
    assert not INSTALLED.startswith(("/home/", "/root/", "/run/user/"))
    readme = read(README)
    assert "python3 -m venv /opt/gostgev && /opt/gostgev/bin/pip install ." in readme
    assert INSTALLED in readme
    init = read(INIT_SCRIPT)
    assert re.search(r"^VENV_GOSTGEV=/opt/gostgev/bin/\$NAME$", init, re.M)


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_finds_nothing_to_say(tmp_path):
    lines, result = verify(tmp_path, unit_here())
    assert lines == [], "systemd-analyze verify (exit %d):\n%s%s" % (result.returncode, result.stdout,
                                                                      result.stderr)


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("old, new, expect", [
    ("\nKillSignal=", "\nKilSignal=", "Unknown key"),
    ("\nRestart=on-failure", "\nRestart=sometimes", "restart"),
    ("\n[Service]", "\n[Servic]", "Unknown section"),
])
def test_verify_reports_a_broken_directive(tmp_path, old, new, expect):
    text = unit_here()
    assert text.count(old) == 1
    lines, result = verify(tmp_path, text.replace(old, new))
    assert any(expect in line for line in lines), "exit %d:\n%s%s" % (result.returncode, result.stdout,
                                                                      result.stderr)


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_verify_reports_a_missing_program(tmp_path):
    missing = str(tmp_path / "opt" / "gostgev" / "bin" / "gostgev")
    lines, result = verify(tmp_path, read(UNIT).replace(INSTALLED, missing))
    assert any(missing in line and "not executable" in line for line in lines), (
        "exit %d:\n%s%s" % (result.returncode, result.stdout, result.stderr))
