"""A throwaway PostgreSQL 15 server for tests (stdlib only).

    with PostgresServer() as pg:
        pg.url                      # postgresql://postgres@127.0.0.1:PORT/postgres
        pg.psql("SELECT 1")         # runs psql -X -v ON_ERROR_STOP=1, returns stdout
        pg.ready_seconds            # initdb + start until ready, in seconds

initdb creates a cluster in a fresh temporary folder (trust authentication,
superuser `postgres`, fsync off: nothing in it outlives the test); the
postmaster listens on 127.0.0.1 on a free port, its Unix socket is in the
same folder, and it is stopped by its own PID (SIGINT: fast shutdown, then
SIGKILL after a bound) and the folder removed.

PostgreSQL refuses to run as root: under root, initdb and postgres run as
the `postgres` system user (Debian's postgresql-common creates it) or, where
that does not exist, as `nobody`, dropped to by subprocess itself (no runuser,
so the PID we hold is the postmaster's). Otherwise they run as the caller.
Raises ServiceUnavailable (naming the Debian package) when PostgreSQL 15's
binaries are absent.
"""
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

from ._common import (ServiceError, die_with_parent, free_port, keep_dirs, require_binary,
                      stop_pid, tail, tcp_open, wait_until)

PG_BIN = os.environ.get("REPROD_PG_BIN", "/usr/lib/postgresql/15/bin")
PACKAGE = "postgresql-15"


def _service_user():
    """(uid, gid, name) to run PostgreSQL as, or None to stay who we are."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        return pw.pw_uid, pw.pw_gid, name
    raise ServiceError("running as root and neither a 'postgres' nor a 'nobody' user exists")


class PostgresServer:
    """Starts on construction (or `start()`), stops on `stop()` / leaving
    the `with` block. `base_dir`: where the temporary folder goes (default
    the system temp dir; under root it must be traversable by the
    `postgres` user, which pytest's 0700 tmp_path is not)."""

    def __init__(self, base_dir=None, startup_timeout=30, start=True):
        self.initdb = require_binary(os.path.join(PG_BIN, "initdb"), PACKAGE)
        self.postgres = require_binary(os.path.join(PG_BIN, "postgres"), PACKAGE)
        self.psql_bin = require_binary(os.path.join(PG_BIN, "psql"), "postgresql-client-15")
        self.base_dir = base_dir
        self.startup_timeout = startup_timeout
        self.user = _service_user()
        self.dir = None
        self.port = None
        self.proc = None
        self.ready_seconds = None
        self._log = None
        if start:
            self.start()

    # --- paths --------------------------------------------------------------
    @property
    def data_dir(self):
        return os.path.join(self.dir, "data")

    @property
    def socket_dir(self):
        return self.dir

    @property
    def log_path(self):
        return os.path.join(self.dir, "postgres.log")

    @property
    def url(self):
        """libpq connection URL (trust auth, superuser postgres)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    # --- lifecycle ----------------------------------------------------------
    def _popen_kwargs(self):
        kw = {"cwd": self.dir, "env": {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "TZ": "UTC",
                                       "HOME": self.dir}}
        if self.user is not None:
            uid, gid, _ = self.user
            kw.update(user=uid, group=gid, extra_groups=[])
        return kw

    def start(self):
        t0 = time.monotonic()
        self.dir = tempfile.mkdtemp(prefix="reprod-pg-", dir=self.base_dir)
        try:
            if self.user is not None:
                os.chown(self.dir, self.user[0], self.user[1])
            init = subprocess.run(
                [self.initdb, "-D", self.data_dir, "-U", "postgres", "-A", "trust", "-E", "UTF8",
                 "--locale=C", "--no-sync", "--no-instructions"],
                capture_output=True, text=True, timeout=120, **self._popen_kwargs())
            if init.returncode != 0:
                raise ServiceError(f"initdb failed ({init.returncode}): {init.stderr[-3000:]}")
            for attempt in range(3):
                if self._start_postmaster():
                    break
                if "could not bind" not in tail(self.log_path) or attempt == 2:
                    raise ServiceError(f"postgres did not start: {tail(self.log_path)}")
            self.ready_seconds = time.monotonic() - t0
        except BaseException:
            self.stop()
            raise
        return self

    def _start_postmaster(self):
        """One try on a fresh free port; True once ready, False when the
        postmaster exited (e.g. the port was taken meanwhile)."""
        self.port = free_port()
        if self._log:
            self._log.close()
        self._log = open(self.log_path, "ab")
        if self.user is not None:
            os.chown(self.log_path, self.user[0], self.user[1])
        self.proc = subprocess.Popen(
            [self.postgres, "-D", self.data_dir, "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.socket_dir}",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=20", "-c", "shared_buffers=16MB"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent(signal.SIGINT), **self._popen_kwargs())
        pid_file = os.path.join(self.data_dir, "postmaster.pid")

        def ready():
            if self.proc.poll() is not None:
                return "exited"
            # postmaster.pid's last line turns "ready" once it accepts connections.
            try:
                with open(pid_file) as f:
                    lines = f.read().splitlines()
            except OSError:
                return False
            return len(lines) >= 8 and lines[7].strip() == "ready" and tcp_open(self.port)

        state = wait_until(ready, self.startup_timeout, what="postgres to accept connections")
        if state == "exited":
            self.proc = None
            return False
        return True

    def stop(self):
        """Fast shutdown by PID (SIGINT), SIGKILL after 20 s; removes the folder."""
        try:
            stop_pid(self.proc, signal.SIGINT, timeout=20)
        finally:
            self.proc = None
            if self._log:
                self._log.close()
                self._log = None
            if self.dir and not keep_dirs():
                shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # --- client -------------------------------------------------------------
    def psql(self, sql, database="postgres", timeout=60):
        """Runs `sql` through psql (stops at the first error, one transaction
        per -c unless the SQL says otherwise); returns stdout (unaligned,
        tuples only, '|'-separated). Raises ServiceError on failure."""
        proc = subprocess.run(
            [self.psql_bin, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             f"postgresql://postgres@127.0.0.1:{self.port}/{database}", "-f", "-"],
            input=sql, capture_output=True, text=True, timeout=timeout,
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C", "PGCONNECT_TIMEOUT": "10"})
        if proc.returncode != 0:
            raise ServiceError(f"psql exited {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout


if __name__ == "__main__":
    # python -m services.postgres (from tests/): start one, print its URL,
    # stop on Enter / Ctrl-C.
    with PostgresServer() as pg:
        print(f"{pg.url}  (ready in {pg.ready_seconds:.2f} s; Enter stops it)", flush=True)
        try:
            input()
        except (KeyboardInterrupt, EOFError):
            pass
