"""scripts/gostgev.init as an operator uses it: ``sh gostgev.init ACTION`` against a real daemon.

Each test has its own config, pid file and log file in tmp_path, named by a
defaults file that ``GOSTGEV_DEFAULTS`` points at, and a ``gostgev`` wrapper
first on PATH that runs this checkout.  The daemon serves a ``file`` handler
on 127.0.0.1; the fixture kills whatever daemon a test leaves behind.

The script runs from a copy whose one change is the venv it looks in before
PATH: ``tmp_path/opt/gostgev/bin/gostgev`` instead of
``/opt/gostgev/bin/gostgev``, so that a gostgev installed on this machine
does not take the place of the wrapper.
"""

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys

import pytest
import yaml

from tests import ROOT
from tests.conftest import wait_until
from tests.procs import listening

INIT_SCRIPT = os.path.join(ROOT, "scripts", "gostgev.init")
LOGROTATE = os.path.join(ROOT, "etc", "gostgev.logrotate")
LOCALHOST = "127.0.0.1"
HAVE_PROC = os.path.isdir("/proc/self")


def alive(pid):
    """A live process; a zombie (an orphan nobody has reaped yet) is dead."""
    if not HAVE_PROC:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    try:
        with open("/proc/%d/status" % pid) as fh:
            for line in fh:
                if line.startswith("State:"):
                    return line.split()[1] not in ("Z", "X")
    except OSError:
        pass
    return False


def http_get(port, path="/"):
    """``(status, body)`` of one GET, or None when nothing answers."""
    try:
        with socket.create_connection((LOCALHOST, port), timeout=3) as sock:
            sock.sendall(b"GET %s HTTP/1.1\r\nHost: files\r\nConnection: close\r\n\r\n" % path.encode())
            data = b""
            for _ in range(1000):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    if not head:
        return None
    return int(head.split(b" ", 2)[1]), body


def refuses(port):
    try:
        socket.create_connection((LOCALHOST, port), timeout=3).close()
    except ConnectionRefusedError:
        return True
    return False


VENV_LINE = "VENV_GOSTGEV=/opt/gostgev/bin/$NAME\n"


def write_wrapper(path):
    """An executable ``path`` that runs gostgev from this checkout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('#!/bin/sh\nPYTHONPATH=%s${PYTHONPATH:+:$PYTHONPATH}\nexport PYTHONPATH\n'
                    'exec %s -m gostgev "$@"\n' % (shlex.quote(str(ROOT)), shlex.quote(sys.executable)))
    path.chmod(0o755)


def write_impostor(path, marker):
    """An executable ``path`` that must not be run: it creates ``marker`` and fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\necho \"$0\" >> %s\necho 'wrong gostgev' >&2\nexit 1\n"
                    % shlex.quote(str(marker)))
    path.chmod(0o755)


def postrotate_script():
    """The shell lines between ``postrotate`` and ``endscript`` in etc/gostgev.logrotate."""
    with open(LOGROTATE) as fh:
        lines = fh.read().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "postrotate")
    end = next(i for i, line in enumerate(lines) if line.strip() == "endscript")
    return "\n".join(lines[start + 1:end]) + "\n"


class InitScript:
    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.bin_dir = tmp_path / "bin"
        write_wrapper(self.bin_dir / "gostgev")
        self.impostor_ran = tmp_path / "impostor-ran"
        self.venv_gostgev = tmp_path / "opt" / "gostgev" / "bin" / "gostgev"
        with open(INIT_SCRIPT) as fh:
            text = fh.read()
        assert text.count(VENV_LINE) == 1
        self.script = tmp_path / "gostgev.init"
        self.script.write_text(text.replace(VENV_LINE, "VENV_GOSTGEV=%s/$NAME\n"
                                            % shlex.quote(str(self.venv_gostgev.parent))))
        for site in ("a", "b"):
            (tmp_path / "www" / site).mkdir(parents=True)
            (tmp_path / "www" / site / "index.html").write_text(site.upper() + "\n")
        for sub in ("etc", "run", "log"):
            (tmp_path / sub).mkdir()
        self._port = None
        self.config = tmp_path / "etc" / "gost.yaml"
        self.pidfile = tmp_path / "run" / "gostgev.pid"
        self.logfile = tmp_path / "log" / "gostgev.log"
        self.write_config("a")
        self.defaults = tmp_path / "default-gostgev"
        self.write_defaults()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GOSTGEV_")}
        self.env["GOSTGEV_DEFAULTS"] = str(self.defaults)
        self.env["PATH"] = str(self.bin_dir) + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin")

    def write_defaults(self, **extra):
        settings = {"GOSTGEV_CONFIG": self.config, "GOSTGEV_PIDFILE": self.pidfile,
                    "GOSTGEV_LOGFILE": self.logfile, "GOSTGEV_GRACE": 1, **extra}
        self.defaults.write_text("".join("%s=%s\n" % (k, shlex.quote(str(v))) for k, v in settings.items()))

    @property
    def port(self):
        """Where the daemon serves: it binds port 0, and its latest ``listening on`` line names the port
        (a reload keeps it, a restart gets a new one; after a log rotation the last one known counts)."""
        try:
            ports = listening(self.logfile.read_text())
        except FileNotFoundError:
            ports = {}
        self._port = ports.get("files", self._port)
        return self._port

    def write_config(self, site):
        self.config.write_text(yaml.safe_dump({"services": [{
            "name": "files", "addr": "%s:0" % LOCALHOST,
            "handler": {"type": "file", "metadata": {"file.dir": str(self.tmp / "www" / site)}},
            "listener": {"type": "tcp"}}]}))

    def run(self, action, env=None):
        return subprocess.run(["sh", str(self.script), action], capture_output=True, text=True, timeout=20,
                              env=env or self.env, cwd=str(self.tmp))

    def pid(self):
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def get(self, path="/"):
        port = self.port
        return http_get(port, path) if port else None

    def our_processes(self):
        """Live processes whose command line names this test's config: the daemons we started."""
        if not HAVE_PROC:
            pid = self.pid()
            return [pid] if pid and alive(pid) else []
        marker = str(self.config).encode()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as fh:
                    args = fh.read().split(b"\0")
            except OSError:
                continue
            if marker in args and alive(int(entry)):
                found.append(int(entry))
        return found

    def cleanup(self):
        pids = self.our_processes()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_until(lambda: not any(alive(pid) for pid in pids), 5)


def explain(result):
    return "exit %d\nstdout: %s\nstderr: %s" % (result.returncode, result.stdout, result.stderr)


@pytest.fixture
def init(tmp_path):
    script = InitScript(tmp_path)
    try:
        yield script
    finally:
        script.cleanup()


def test_start_status_reload_restart_stop(init):
    result = init.run("status")
    assert result.returncode == 3, explain(result)
    assert "not running" in result.stdout

    result = init.run("start")
    assert result.returncode == 0, explain(result)
    assert result.stdout.startswith("Starting gostgev: ok")
    assert wait_until(lambda: init.get() == (200, b"A\n"), 10)
    pid = init.pid()
    assert pid and alive(pid)
    result = init.run("status")
    assert result.returncode == 0, explain(result)
    assert "running (pid %d)" % pid in result.stdout

    result = init.run("start")
    assert result.returncode == 0, explain(result)
    assert "already running" in result.stdout
    assert init.pid() == pid and len(init.our_processes()) == 1

    # reload: the same process serves the new config
    init.write_config("b")
    result = init.run("reload")
    assert result.returncode == 0, explain(result)
    assert wait_until(lambda: init.get() == (200, b"B\n"), 10)
    assert init.pid() == pid and alive(pid)

    # a broken config is refused, and the running one keeps serving
    init.config.write_text("services: [\n")
    result = init.run("reload")
    assert result.returncode == 1, explain(result)
    assert "invalid YAML" in result.stderr
    assert init.get() == (200, b"B\n")
    assert init.pid() == pid and alive(pid)
    result = init.run("restart")
    assert result.returncode == 1, explain(result)
    assert init.pid() == pid and alive(pid) and init.get() == (200, b"B\n")

    # restart: a new process
    init.write_config("a")
    result = init.run("restart")
    assert result.returncode == 0, explain(result)
    new_pid = init.pid()
    assert new_pid and new_pid != pid and alive(new_pid) and not alive(pid)
    assert wait_until(lambda: init.get() == (200, b"A\n"), 10)

    result = init.run("stop")
    assert result.returncode == 0, explain(result)
    assert result.stdout.startswith("Stopping gostgev: ok")
    assert not init.pidfile.exists()
    assert not alive(new_pid)
    assert refuses(init.port)
    assert init.run("status").returncode == 3
    result = init.run("stop")
    assert result.returncode == 0 and "not running" in result.stdout


def test_start_does_not_claim_success_for_a_broken_config(init):
    init.config.write_text("services:\n- name: s\n  addr: 127.0.0.1:1\n  handler: {type: nope}\n")
    result = init.run("start")
    assert result.returncode == 1, explain(result)
    assert "Starting gostgev: failed" in result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and 'unknown handler "nope"' in lines[0], result.stderr
    assert not init.pidfile.exists()
    assert init.our_processes() == []
    assert init.run("status").returncode == 3


@pytest.mark.parametrize("action", ["start", "reload"])
def test_the_config_check_shows_warnings(init, action):
    if action == "reload":
        assert init.run("start").returncode == 0
    init.config.write_text(init.config.read_text().replace("listener:", "listner: {type: tcp}\n  listener:", 1))
    result = init.run(action)
    assert result.returncode == 0, explain(result)
    assert result.stderr.splitlines() == [
        'gostgev: warning: services[0].listner: unknown key (did you mean "listener"?)'], explain(result)
    init.run("stop")


def test_stale_pid_files(init):
    dead = subprocess.Popen(["true"])
    dead.wait(timeout=10)
    init.pidfile.write_text("%d\n" % dead.pid)
    result = init.run("status")
    assert result.returncode == 1, explain(result)
    assert "not running" in result.stdout and str(init.pidfile) in result.stdout
    result = init.run("stop")
    assert result.returncode == 0, explain(result)
    assert not init.pidfile.exists()
    assert init.run("status").returncode == 3

    # the pid of a live process that is not gostgev: not ours to report or signal
    other = subprocess.Popen(["sleep", "30"])
    try:
        init.pidfile.write_text("%d\n" % other.pid)
        assert init.run("status").returncode == 1
        result = init.run("start")
        assert result.returncode == 0, explain(result)
        pid = init.pid()
        assert pid != other.pid and alive(pid)
        assert wait_until(lambda: init.get() == (200, b"A\n"), 10)
        assert init.run("stop").returncode == 0
        assert other.poll() is None
    finally:
        other.kill()
        other.wait(timeout=10)


def test_sigusr1_reopens_the_log_file(init):
    result = init.run("start")
    assert result.returncode == 0, explain(result)
    assert wait_until(lambda: init.get() == (200, b"A\n"), 10)
    pid = init.pid()
    log = init.logfile
    assert "started" in log.read_text()

    rotated = log.with_name("gostgev.log.1")
    os.rename(log, rotated)
    os.kill(pid, signal.SIGUSR1)
    assert wait_until(log.exists, 10)
    assert init.run("reload").returncode == 0
    assert wait_until(lambda: "reloaded" in log.read_text(), 10)
    assert "reloaded" not in rotated.read_text()

    # logrotate's postrotate does the same through the pid file
    os.rename(log, log.with_name("gostgev.log.2"))
    script = postrotate_script().replace("/run/gostgev.pid", str(init.pidfile))
    assert str(init.pidfile) in script
    assert subprocess.run(["sh", "-c", script], env=init.env, timeout=10).returncode == 0
    assert wait_until(lambda: log.exists() and "log files reopened" in log.read_text(), 10)
    assert init.pid() == pid and alive(pid)
    assert init.run("stop").returncode == 0


def test_usage_and_a_missing_gostgev(init):
    result = init.run("bogus")
    assert result.returncode == 2 and "Usage:" in result.stderr
    path = "/usr/bin:/bin"
    if shutil.which("gostgev", path=path):
        pytest.skip("gostgev is installed in %s" % path)
    result = init.run("start", env={**init.env, "PATH": path})
    assert result.returncode == 5, explain(result)
    assert "not installed" in result.stderr
    assert init.run("reload", env={**init.env, "PATH": path}).returncode == 5


def start_reload_stop(init, env=None):
    """start, reload, restart and stop through the script; the daemon serves in between."""
    for action in ("start", "reload", "restart"):
        result = init.run(action, env=env)
        assert result.returncode == 0, explain(result)
        assert wait_until(lambda: init.get() == (200, b"A\n"), 10)
    result = init.run("stop", env=env)
    assert result.returncode == 0, explain(result)
    assert init.our_processes() == [] and not init.pidfile.exists()


@pytest.mark.parametrize("how", ["path", "name"])
def test_the_gostgev_bin_setting_comes_first(init, how):
    write_impostor(init.bin_dir / "gostgev", init.impostor_ran)
    write_impostor(init.venv_gostgev, init.impostor_ran)
    custom = init.tmp / "custom" / "gostgev-custom"
    write_wrapper(custom)
    env = init.env
    if how == "path":
        init.write_defaults(GOSTGEV_BIN=custom)
    else:
        init.write_defaults(GOSTGEV_BIN=custom.name)
        env = {**init.env, "PATH": str(custom.parent) + os.pathsep + init.env["PATH"]}
    start_reload_stop(init, env)
    assert not init.impostor_ran.exists(), init.impostor_ran.read_text()


def test_a_gostgev_bin_that_is_not_there(init):
    not_executable = init.tmp / "custom" / "gostgev"
    not_executable.parent.mkdir()
    not_executable.write_text("#!/bin/sh\nexit 0\n")
    for bad in (init.tmp / "nowhere" / "gostgev", init.tmp / "custom", not_executable, "no-such-gostgev"):
        init.write_defaults(GOSTGEV_BIN=bad)
        for action in ("start", "reload", "restart"):
            result = init.run(action)
            assert result.returncode == 5, explain(result)
            assert "GOSTGEV_BIN=%s is not an executable file" % bad in result.stderr, explain(result)
    assert init.our_processes() == [] and not init.pidfile.exists()


def test_the_venv_in_opt_comes_before_path(init):
    write_impostor(init.bin_dir / "gostgev", init.impostor_ran)
    write_wrapper(init.venv_gostgev)
    start_reload_stop(init)
    assert not init.impostor_ran.exists(), init.impostor_ran.read_text()
    # without it, the one on PATH
    init.venv_gostgev.unlink()
    result = init.run("start")
    assert result.returncode == 1 and "wrong gostgev" in result.stderr, explain(result)
    assert init.impostor_ran.read_text().split() == [str(init.bin_dir / "gostgev")]


def test_the_script_is_posix_sh_with_an_lsb_header():
    with open(INIT_SCRIPT) as fh:
        text = fh.read()
    assert text.startswith("#!/bin/sh\n### BEGIN INIT INFO\n") and "### END INIT INFO" in text
    for key in ("Provides", "Required-Start", "Required-Stop", "Default-Start", "Default-Stop"):
        assert "# %s:" % key in text
    assert subprocess.run(["sh", "-n", INIT_SCRIPT], timeout=10).returncode == 0
    if shutil.which("shellcheck"):
        result = subprocess.run(["shellcheck", "-s", "sh", INIT_SCRIPT], capture_output=True, text=True, timeout=20)
        assert result.returncode == 0, result.stdout
