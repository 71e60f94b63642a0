"""A throwaway single-node Ceph with an S3 endpoint (radosgw) for tests
(stdlib only).

    with CephRgw() as s3:
        s3.endpoint                 # http://127.0.0.1:PORT (path-style S3)
                                    # (https://... with tls=True, see below)
        s3.access_key, s3.secret_key, s3.region   # region "us-east-1" for SigV4
        s3.ready_seconds            # from nothing to a user that can sign requests

What runs, all under one temporary folder and all on 127.0.0.1:
  * one ceph-mon (msgr2 only, on a free port), made with monmaptool and
    `ceph-mon --mkfs`;
  * one ceph-osd with BlueStore on a sparse file (`block.img`, 10 GiB
    apparent size, only what is written takes disk), registered with
    `ceph osd new`;
  * no ceph-mgr (nothing here needs it: pools are made with fixed pg counts
    and the autoscaler off; `ceph -s` reports the missing mgr, harmlessly);
  * radosgw with the `beast` frontend on a free port; an S3 user made with
    `radosgw-admin user create` and random keys.
With tls=True radosgw serves https only (beast ssl_endpoint), with a
certificate for 127.0.0.1 signed by a throwaway CA (EC P-256, made with the
`openssl` command); `s3.ca_file` is that CA's PEM, for clients to trust.
Authentication inside the cluster is off (auth_*_required = none); S3
requests are still signed and checked (SigV4 or v2) by radosgw. Pools have
size 1 (mon_allow_pool_size_one). Daemons run in the foreground (-f) as
children we hold, and are stopped by their own PIDs (SIGTERM, SIGKILL after
a bound), radosgw first, the monitor last; the folder is then removed.

Raises ServiceUnavailable (naming the Debian package) when a binary is
missing: ceph-mon, ceph-osd, radosgw, ceph-common (ceph, monmaptool,
radosgw-admin).
"""
import json
import os
import re
import secrets
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

from ._common import (ServiceError, ServiceUnavailable, die_with_parent, free_port, keep_dirs,
                      require_binary, stop_pid, tail, tcp_open, wait_until)
from .certs import make_ca, make_leaf

BINARIES = {  # binary -> Debian package
    "ceph-mon": "ceph-mon",
    "ceph-osd": "ceph-osd",
    "radosgw": "radosgw",
    "radosgw-admin": "radosgw",
    "ceph": "ceph-common",
    "monmaptool": "ceph-common",
}

CONF_TEMPLATE = """\
[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{mon_port}
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
ms bind msgr1 = false
auth cluster required = none
auth service required = none
auth client required = none
keyring = {dir}/keyring
run dir = {dir}/run
admin socket = {dir}/run/$name.asok
pid file = {dir}/run/$name.pid
log file = {dir}/log/$name.log
crash dir = {dir}/crash
log to stderr = false
err to stderr = true
# one OSD: pools of size 1, placement across OSDs not hosts, small fixed pg
# counts (no mgr, so no autoscaler)
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon max pg per osd = 1000
mon data avail crit = 1
mon data avail warn = 2

[mon]
mon data = {dir}/mon-$id
# propose map changes at once, not batched for 1 s (radosgw's first start
# makes about a dozen: pools and their application tags)
paxos propose interval = 0.01
paxos min wait = 0.001

[osd]
osd data = {dir}/osd-$id
osd objectstore = bluestore
bluestore block path = {dir}/block.img
bluestore block create = true
bluestore block size = {block_size}
bluestore fsck on mkfs = false
bluestore fsck on mount = false
osd memory target = 1073741824
osd op num shards = 1
osd op num threads per shard = 2

[client]
# an op sent before the OSD was up waits for the next map; the objecter asks
# for one every tick (default 5 s)
objecter tick interval = 0.25

[client.rgw.test]
# radosgw's own defaults ask for cephx and a "secure" monitor connection
auth client required = none
ms mon client mode = crc
rgw data = {dir}/rgw
rgw thread pool size = 16
rgw enable gc threads = false
rgw enable lc threads = false
rgw init timeout = 60
{extra_rgw_conf}"""


class CephRgw:
    """Starts on construction (or `start()`), stops on `stop()` / leaving
    the `with` block. `base_dir`: where the temporary folder goes (default
    the system temp dir). `timings` holds the seconds each step took."""

    region = "us-east-1"

    def __init__(self, base_dir=None, startup_timeout=60, block_size=10 << 30, start=True,
                 tls=False, extra_rgw_conf=""):
        self.bin = {name: require_binary(name, pkg) for name, pkg in BINARIES.items()}
        if tls:
            self.bin["openssl"] = require_binary("openssl", "openssl")
        self.tls = tls
        self.extra_rgw_conf = extra_rgw_conf  # lines for radosgw's [client.rgw.test]
        self.ca_file = None  # with tls: the CA (PEM) that signed radosgw's certificate
        self.base_dir = base_dir
        self.startup_timeout = startup_timeout
        self.block_size = block_size
        self.dir = None
        self.conf = None
        self.procs = {}  # name -> Popen, in start order
        self._logs = []
        self.mon_port = None
        self.rgw_port = None
        self.access_key = None
        self.secret_key = None
        self.user_id = "reprod-test"
        self.ready_seconds = None
        self.timings = {}
        if start:
            self.start()

    @property
    def endpoint(self):
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.rgw_port}"

    # --- helpers ------------------------------------------------------------
    def _run(self, args, what, timeout=60):
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                              cwd=self.dir, env=self._env())
        if proc.returncode != 0:
            raise ServiceError(f"{what} failed ({proc.returncode}): "
                               f"{(proc.stderr or proc.stdout)[-3000:]}")
        return proc.stdout

    def _env(self):
        return {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "LC_ALL": "C", "HOME": self.dir,
                "CEPH_CONF": self.conf}

    def _spawn(self, name, args):
        log = open(os.path.join(self.dir, "log", f"{name}.out"), "ab")
        self._logs.append(log)
        self.procs[name] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, cwd=self.dir,
                                            env=self._env(),
                                            preexec_fn=die_with_parent(signal.SIGTERM))
        return self.procs[name]

    def ceph(self, *args, timeout=60):
        """Runs the `ceph` CLI against this cluster; returns stdout."""
        return self._run([self.bin["ceph"], "-c", self.conf, "--connect-timeout", "30", *args],
                         "ceph " + " ".join(args), timeout=timeout)

    def radosgw_admin(self, *args, timeout=60):
        return self._run([self.bin["radosgw-admin"], "-c", self.conf, *args],
                         "radosgw-admin " + " ".join(args), timeout=timeout)

    def logs(self, chars=2000):
        """The tails of every daemon's log (for failure messages)."""
        out = []
        for name in self.procs:
            for f in (f"{name}.out", f"{name}.log"):
                p = os.path.join(self.dir or "", "log", f)
                if os.path.exists(p):
                    out.append(f"--- {f}\n{tail(p, chars)}")
        return "\n".join(out)

    def _make_tls(self):
        """A CA and a server certificate for 127.0.0.1 (subjectAltName IP)
        under DIR/tls; sets ca_file; returns (certificate, key) paths."""
        d = os.path.join(self.dir, "tls")
        os.makedirs(d)
        openssl = self.bin["openssl"]
        make_ca(d, "ca", "/CN=reprod test S3 CA", openssl=openssl)
        make_leaf(d, "rgw", "ca", "/CN=127.0.0.1",
                  "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                  "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n", openssl=openssl)
        self.ca_file = os.path.join(d, "ca.pem")
        return os.path.join(d, "rgw.pem"), os.path.join(d, "rgw.key")

    def rgw_log(self):
        """radosgw's log file, whole."""
        with open(os.path.join(self.dir, "log", "client.rgw.test.log"), errors="replace") as f:
            return f.read()

    def put_payload_hashes(self):
        """(path, payload hash) of every PUT radosgw checked, in order, from
        the canonical requests its log shows at debug rgw >= 10: method,
        path, query, headers, a blank line, signed headers, payload hash
        (a SHA-256 in hex, or UNSIGNED-PAYLOAD)."""
        return [(m.group(1), m.group(2)) for m in re.finditer(
            r"canonical request = PUT\n(\S+)\n.*?\n\n[a-z0-9;-]+\n(\S+)\n",
            self.rgw_log(), re.S)]

    def _step(self, name, t0):
        now = time.monotonic()
        self.timings[name] = round(now - t0, 3)
        return now

    # --- lifecycle ----------------------------------------------------------
    def start(self):
        t_start = t = time.monotonic()
        self.dir = tempfile.mkdtemp(prefix="reprod-ceph-", dir=self.base_dir)
        try:
            for sub in ("run", "log", "crash", "rgw", "mon-a", "osd-0"):
                os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
            self.conf = os.path.join(self.dir, "ceph.conf")
            self.mon_port = free_port()
            self.rgw_port = free_port()
            while self.rgw_port == self.mon_port:
                self.rgw_port = free_port()
            if self.tls:
                self._tls_files = self._make_tls()
            fsid = str(uuid.uuid4())
            with open(self.conf, "w") as f:
                f.write(CONF_TEMPLATE.format(fsid=fsid, dir=self.dir, mon_port=self.mon_port,
                                             block_size=self.block_size,
                                             extra_rgw_conf=self.extra_rgw_conf))
            monmap = os.path.join(self.dir, "monmap")
            self._run([self.bin["monmaptool"], "--create", "--fsid", fsid, "--addv", "a",
                       f"[v2:127.0.0.1:{self.mon_port}]", monmap], "monmaptool")
            self._run([self.bin["ceph-mon"], "-c", self.conf, "--mkfs", "-i", "a", "--monmap",
                       monmap], "ceph-mon --mkfs")
            t = self._step("mon_mkfs", t)
            mon = self._spawn("mon.a", [self.bin["ceph-mon"], "-c", self.conf, "-f", "-i", "a"])

            # The OSD's BlueStore mkfs needs no monitor: it runs while the
            # monitor starts and the OSD id is allocated.
            osd_uuid = str(uuid.uuid4())
            with ThreadPoolExecutor(2) as pool:
                mkfs = pool.submit(self._run, [self.bin["ceph-osd"], "-c", self.conf,
                                               "--no-mon-config", "--mkfs", "-i", "0",
                                               "--osd-uuid", osd_uuid], "ceph-osd --mkfs", 120)

                def new_osd():
                    wait_until(lambda: tcp_open(self.mon_port), self.startup_timeout,
                               what="ceph-mon to listen", alive=[("ceph-mon", mon)])
                    return self.ceph("osd", "new", osd_uuid, "0").strip()

                osd_id = pool.submit(new_osd)
                mkfs.result()
                if osd_id.result() != "0":
                    raise ServiceError(f"ceph osd new gave id {osd_id.result()!r}, not 0")
            t = self._step("mon_up_osd_mkfs", t)
            osd = self._spawn("osd.0", [self.bin["ceph-osd"], "-c", self.conf, "-f", "-i", "0"])
            # radosgw waits for the OSD by itself (its first I/O blocks until
            # the pools' PGs are active), so it starts at once.
            for attempt in range(3):
                if self._start_rgw(mon, osd):
                    break
                rgw_log = tail(os.path.join(self.dir, "log", "client.rgw.test.log"))
                if "bind" not in rgw_log or attempt == 2:
                    raise ServiceError(f"radosgw exited before answering:\n{rgw_log}")
                self.rgw_port = free_port()  # taken meanwhile: another one
            t = self._step("osd_rgw_up", t)
            self.access_key = "RT" + secrets.token_hex(9).upper()
            self.secret_key = secrets.token_hex(20)
            user = json.loads(self.radosgw_admin(
                "user", "create", "--uid", self.user_id, "--display-name", "reprod tests",
                "--access-key", self.access_key, "--secret", self.secret_key))
            keys = {k["access_key"]: k["secret_key"] for k in user.get("keys", [])}
            if keys.get(self.access_key) != self.secret_key:
                raise ServiceError(f"radosgw-admin user create did not set our key: {user}")
            self._step("user_create", t)
            self.ready_seconds = round(time.monotonic() - t_start, 3)
        except BaseException as e:
            detail = self.logs() if self.dir and not isinstance(e, ServiceUnavailable) else ""
            self.stop()
            if isinstance(e, ServiceError) and detail:
                raise ServiceError(f"{e}\n{detail}") from e
            raise
        return self

    def _start_rgw(self, mon, osd):
        """One try; True once it answers, False when radosgw exited (e.g.
        its port was taken meanwhile)."""
        if self.tls:
            cert, key = self._tls_files
            frontend = (f"beast ssl_endpoint=127.0.0.1:{self.rgw_port} ssl_certificate={cert} "
                        f"ssl_private_key={key}")
        else:
            frontend = f"beast endpoint=127.0.0.1:{self.rgw_port}"
        rgw = self._spawn("client.rgw.test", [
            self.bin["radosgw"], "-c", self.conf, "-f", "-n", "client.rgw.test",
            "--rgw-frontends", frontend])

        def answers():
            return "exited" if rgw.poll() is not None else self._rgw_answers()

        state = wait_until(answers, self.startup_timeout, interval=0.05,
                           what="radosgw to answer S3 requests",
                           alive=[("ceph-mon", mon), ("ceph-osd", osd)])
        if state == "exited":
            del self.procs["client.rgw.test"]
            return False
        return True

    def _rgw_answers(self):
        """True once an anonymous GET / (ListBuckets) gets an S3 reply (one
        that carries radosgw's x-amz-request-id)."""
        context = ssl.create_default_context(cafile=self.ca_file) if self.tls else None
        try:
            with urllib.request.urlopen(self.endpoint + "/", timeout=2, context=context) as r:
                return r.headers.get("x-amz-request-id") is not None
        except urllib.error.HTTPError as e:
            return e.headers.get("x-amz-request-id") is not None
        except OSError:
            return False

    def stop(self):
        """SIGTERM each daemon by PID in reverse start order (SIGKILL after
        20 s); removes the folder."""
        try:
            for name in reversed(list(self.procs)):
                try:
                    stop_pid(self.procs[name], timeout=20)
                except Exception:  # keep stopping the others
                    pass
        finally:
            self.procs = {}
            for log in self._logs:
                log.close()
            self._logs = []
            if self.dir and not keep_dirs():
                shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


if __name__ == "__main__":
    # python -m services.ceph_rgw (from tests/): start one, print the
    # endpoint and keys, stop on Enter / Ctrl-C.
    with CephRgw() as s3:
        print(f"endpoint {s3.endpoint} access_key {s3.access_key} secret_key {s3.secret_key} "
              f"region {s3.region}\nready in {s3.ready_seconds} s {s3.timings}; Enter stops it",
              flush=True)
        try:
            input()
        except (KeyboardInterrupt, EOFError):
            pass
