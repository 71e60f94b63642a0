"""Helpers shared by the throwaway test services (stdlib only)."""
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time


class ServiceUnavailable(RuntimeError):
    """A binary the service needs is not installed; `package` names the
    Debian package that provides it (tests skip with this message)."""

    def __init__(self, package, binary):
        self.package = package
        self.binary = binary
        super().__init__(f"{binary} not found: install the Debian package {package} "
                         f"(scripts/setup.sh installs it)")


class ServiceError(RuntimeError):
    """A service did not come up (or did not stop); the message carries the
    tail of its log."""


def die_with_parent(sig):
    """A preexec_fn: the child gets `sig` when the process that started it
    dies (prctl PR_SET_PDEATHSIG), so a test runner killed mid-test leaves no
    daemon behind. Runs after subprocess dropped to another user, which would
    otherwise clear it."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1

    def preexec():
        libc.prctl(pr_set_pdeathsig, int(sig), 0, 0, 0)
    return preexec


def keep_dirs():
    """REPROD_SERVICES_KEEP=1 keeps the services' folders (logs) after stop."""
    return bool(os.environ.get("REPROD_SERVICES_KEEP"))


def require_binary(path_or_name, package):
    """Returns the absolute path of a binary, or raises ServiceUnavailable."""
    if os.path.isabs(path_or_name):
        if os.access(path_or_name, os.X_OK):
            return path_or_name
    else:
        found = shutil.which(path_or_name)
        if found:
            return found
    raise ServiceUnavailable(package, path_or_name)


def free_port():
    """A TCP port that was free on 127.0.0.1 a moment ago (the kernel's pick
    from the ephemeral range). A service that then fails to bind it is
    started again on another one by its caller."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tcp_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def tail(path, chars=3000):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - chars))
            return f.read().decode(errors="replace")
    except OSError as e:
        return f"({path}: {e})"


def stop_pid(proc, sig=signal.SIGTERM, timeout=20):
    """Sends `sig` to the Popen `proc` (its own PID only), waits up to
    `timeout` s, then SIGKILLs it. Returns the exit code."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
    return proc.returncode


def wait_until(predicate, timeout, interval=0.02, what="condition", alive=()):
    """Polls `predicate` until it returns a true value (returned) or
    `timeout` s pass (ServiceError). Fails early when one of the Popen
    objects in `alive` exits."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        for name, proc in alive:
            if proc.poll() is not None:
                raise ServiceError(f"{name} exited with {proc.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            raise ServiceError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
