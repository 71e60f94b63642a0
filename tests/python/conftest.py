"""Shared fixtures for the Python oracle tests.

The tests drive the real `reprodctl` binary and check what it says against
independent oracles: numpy float64 computations and the incumbent `reprod_log`
package itself (from PyPI).
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import frameworks

ROOT = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("REPROD_BIN_DIR", ROOT / "build"))
REPRODCTL = BIN_DIR / "client" / "cpp" / "reprodctl"


# reprod_log (an oracle) imports paddle at module load for type hints only; a
# stub stands in where paddle is not installed (see frameworks.py).
frameworks.install_paddle_stub()


def pytest_configure(config):
    for name in ("torch", "paddle"):
        config.addinivalue_line(
            "markers", f"requires_{name}: needs the real {name}; skipped where "
            "REPROD_TEST_FRAMEWORKS=optional and it is not installed, fails elsewhere")


def pytest_runtest_setup(item):
    for name in ("torch", "paddle"):
        if item.get_closest_marker(f"requires_{name}") is None or frameworks.available(name):
            continue
        where = f"{name} is not installed in {sys.prefix}"
        if frameworks.optional():
            pytest.skip(f"needs {name}: {where} (REPROD_TEST_FRAMEWORKS=optional)")
        pytest.fail(f"needs {name}: {where}; scripts/setup.sh installs it into .venv",
                    pytrace=False)


class Result:
    def __init__(self, proc):
        self.code = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr

    def json(self):
        return json.loads(self.stdout)

    def __repr__(self):
        return f"exit {self.code}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


def run_reprodctl(*args, timeout=300, cwd=None):
    if not REPRODCTL.exists():
        pytest.fail(f"reprodctl not built at {REPRODCTL} (set REPROD_BIN_DIR)")
    proc = subprocess.run([str(REPRODCTL), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)
    return Result(proc)


def start_until_listening(args, port_file, seconds=30):
    """Starts reprodd with `args` (which write `port_file`), waits until it
    listens or exits, stops it with SIGTERM; returns (exit code, output,
    whether it listened)."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + seconds
        while not Path(port_file).exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        listened = Path(port_file).exists()
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    return proc.returncode, out, listened


@pytest.fixture
def reprodctl():
    return run_reprodctl


# --- reprodd for the Python client tests (test_client_*.py) ---------------

REPRODD = BIN_DIR / "server" / "reprodd"


def processes_naming(path):
    """PIDs of processes whose command line contains `path`: a benchmark's
    reprodd and workers name files under their own temporary folder, so
    other sessions' processes never match. For "nothing left running"."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if str(path).encode() in f.read():
                    pids.append(int(entry))
        except (OSError, ValueError):
            continue
    return pids


def stop_process(proc, timeout=20):
    """SIGTERM `proc` and wait for it; SIGKILL after `timeout` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Reprodd:
    """A reprodd process on loopback: memory store, or RocksDB in data_dir.

    port=0 picks a free port; restart() starts it again on the same port
    (and data dir), for crash/restart tests. extra_args are appended to the
    command line (e.g. the --tls-* flags). The web UI listens on a free
    loopback port (http_port) unless extra_args give --http-listen, so
    parallel servers never fight over its default 8080.
    """

    def __init__(self, workdir, store="memory", data_dir=None, port=0, extra_args=(),
                 log_level="warn"):
        if not REPRODD.exists():
            pytest.fail(f"reprodd not built at {REPRODD} (set REPROD_BIN_DIR)")
        self.workdir = Path(workdir)
        self.store = store
        self.data_dir = Path(data_dir) if data_dir else None
        self.port = port
        self.extra_args = [str(a) for a in extra_args]
        self.log_level = log_level
        self.proc = None
        self.log = None
        self.http_port = None
        self.start()

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        port_file = self.workdir / f"port.{os.getpid()}.{id(self)}"
        http_port_file = Path(f"{port_file}.http")
        for f in (port_file, http_port_file):
            if f.exists():
                f.unlink()
        args = [str(REPRODD), "--listen", f"127.0.0.1:{self.port}", "--port-file", str(port_file),
                "--backend", "cpu", "--threads", "1", "--log-level", self.log_level]
        if self.store == "memory":
            args += ["--store", "memory"]
        else:
            args += ["--data-dir", str(self.data_dir)]
        if "--http-listen" not in self.extra_args:
            args += ["--http-listen", "127.0.0.1:0"]
        args += self.extra_args
        self.log = open(self.workdir / "reprodd.log", "a")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"reprodd exited with {self.proc.returncode}: "
                            f"{(self.workdir / 'reprodd.log').read_text()[-2000:]}")
            text = port_file.read_text().strip() if port_file.exists() else ""
            if text:
                self.port = int(text)
                # Written before the gRPC port file when the web UI is on.
                http = http_port_file.read_text().strip() if http_port_file.exists() else ""
                self.http_port = int(http) if http else None
                return
            if time.time() > deadline:
                self.kill()
                pytest.fail("reprodd did not write its port file within 30 s")
            time.sleep(0.02)

    def kill(self):
        """SIGKILL (a crash)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.log:
            self.log.close()
            self.log = None

    def stop(self):
        """SIGTERM (clean stop), SIGKILL after 20 s."""
        if self.proc and self.proc.poll() is None:
            stop_process(self.proc)
        if self.log:
            self.log.close()
            self.log = None

    def restart(self):
        self.start()


@pytest.fixture(scope="module")
def reprodd(tmp_path_factory):
    """One reprodd (memory store) per test module; yields its Reprodd."""
    server = Reprodd(tmp_path_factory.mktemp("reprodd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def run_ns(request):
    """A run namespace of this test's own (valid run-name characters)."""
    import re
    return re.sub(r"[^A-Za-z0-9_.-]", "-", request.node.name)[:100]
