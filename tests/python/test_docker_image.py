"""The container images of docker/, built and run for real.

Static (always): a lint of every Dockerfile for checkov's high-severity
Dockerfile rules, shown able to fail on a bad Dockerfile; docker/compose.yaml
against the image, reprodd's flags and the Prometheus config, which
Debian's `promtool check config` accepts; the defaults shared with
deploy/kubernetes.

Built (needs root, podman and debootstrap; skipped with the reason where they
are missing): docker/make-base.sh makes the Debian base, `podman build
--isolation chroot` builds docker/Dockerfile (through docker/podman.sh, which
holds the storage flags). The image is then mounted (`podman image mount`)
and its own reprodd started under chroot as the image's user, with the
image's own environment and command (only the listen addresses moved to free
loopback ports, and a throwaway certificate bound where the image expects
TLS files). From outside, the host's reprodctl pushes two sample runs over
TLS with the admin token reprodd wrote into its /data, compares them
(verdict and numbers against numpy), the image's own HEALTHCHECK command runs
under chroot, and /metrics counts the pushed bytes. The image's config (user,
volume, ports, health check) is checked with `podman image inspect`. The
compose Prometheus image is built too and its own promtool checks its config.

The image build takes minutes (it compiles reprodd and reprodctl); podman's
layer cache makes a rerun on unchanged sources fast. REPROD_TEST_CUDA_IMAGE=1
also builds docker/Dockerfile.cuda from the toolkit in /usr/local/cuda.
"""
import json
import os
import re
import shlex
import shutil
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

import layouts
from conftest import BIN_DIR, ROOT, run_reprodctl, stop_process
from tls_certs import make_tls_certs

DOCKER = ROOT / "docker"
PODMAN = DOCKER / "podman.sh"
IMAGE = "localhost/reprod/reprodd:test"
CUDA_IMAGE = "localhost/reprod/reprodd:test-cuda"
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.cuda",
               DOCKER / "prometheus" / "Dockerfile"]
REPRODD = BIN_DIR / "server" / "reprodd"


# --- Dockerfile lint ---------------------------------------------------------

def _instructions(text):
    """(INSTRUCTION, arguments) per logical line: continuations joined,
    comments and blank lines dropped."""
    out, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        word, _, rest = current.partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    return out


def _key_values(args):
    """ENV/ARG arguments as (name, value) pairs: `A=1 B="x y"` or `A 1`."""
    words = shlex.split(args)
    if words and "=" not in words[0]:
        return [(words[0], " ".join(words[1:]))]
    return [tuple(w.split("=", 1)) if "=" in w else (w, None) for w in words]


SECRET_NAME = re.compile(r"(?i)(passw(or)?d|secret|token|api_?key|private_?key|credential)")
SECRET_VALUE = re.compile(r"rpd_[0-9a-f]{64}|-----BEGIN|AKIA[0-9A-Z]{16}")


def dockerfile_findings(text):
    """checkov's high-severity Dockerfile checks, one string per finding:
    USER set and not root at the end (CKV_DOCKER_3, _8), a HEALTHCHECK
    (CKV_DOCKER_2), no `latest` or untagged base (CKV_DOCKER_7; a FROM of
    an ARG is judged by the ARG's default; earlier stages are fine), no ADD
    of a URL (CKV_DOCKER_4), no port 22 (CKV_DOCKER_1), apt-get not apt
    (CKV_DOCKER_9), no `apt-get update` alone (CKV_DOCKER_5), installs with
    --no-install-recommends that remove the apt lists in the same RUN, and
    no secrets in ENV or ARG (a secret-like name whose value is not a file
    path, or a value that looks like a token or key)."""
    found = []
    instructions = _instructions(text)
    args, stages, users = {}, set(), []
    for word, rest in instructions:
        if word == "ARG":
            for name, value in _key_values(rest):
                args[name] = value
        if word == "FROM":
            parts = rest.split()
            image = parts[0]
            if len(parts) >= 3 and parts[1].upper() == "AS":
                stages.add(parts[2])
            if image in stages or image == "scratch":
                continue
            m = re.fullmatch(r"\$\{?(\w+)\}?", image)
            if m:
                image = args.get(m.group(1)) or ""
                if not image:
                    found.append(f"FROM {rest}: ARG {m.group(1)} has no default image")
                    continue
            name = image.rsplit("/", 1)[-1]
            if "@sha256:" not in image and (":" not in name or name.endswith(":latest")):
                found.append(f"FROM {image}: base image untagged or latest")
        if word == "USER":
            users.append(rest.split(":")[0])
        if word == "ADD" and re.search(r"(?i)\b(https?|ftp)://", rest):
            found.append(f"ADD {rest}: fetches a URL (use COPY, or RUN with a checked download)")
        if word == "EXPOSE" and any(p.split("/")[0] == "22" for p in rest.split()):
            found.append("EXPOSE 22: ssh port exposed")
        if word == "RUN":
            if re.search(r"(^|[;&|]\s*)apt\s", rest):
                found.append(f"RUN {rest[:60]}: uses apt (use apt-get)")
            steps = [s.strip() for s in re.split(r"&&|;", rest)]
            if any(re.fullmatch(r"apt-get( -\S+)* update", s) for s in steps) and \
                    not re.search(r"apt-get\b.*\binstall\b", rest):
                found.append(f"RUN {rest[:60]}: apt-get update alone")
            if re.search(r"apt-get\b[^&;|]*\binstall\b", rest) or \
                    re.search(r"xargs\s+(-\S+\s+)*apt-get\b[^&;|]*\binstall\b", rest):
                if "--no-install-recommends" not in rest:
                    found.append(f"RUN {rest[:60]}: apt-get install without "
                                 "--no-install-recommends")
                if "rm -rf /var/lib/apt/lists" not in rest:
                    found.append(f"RUN {rest[:60]}: apt lists not removed")
        if word in ("ENV", "ARG"):
            for name, value in _key_values(rest):
                value = value or ""
                if SECRET_VALUE.search(value) or (
                        SECRET_NAME.search(name) and value and not value.startswith("/")
                        and not name.endswith(("_FILE", "_PATH", "_DIR"))):
                    found.append(f"{word} {name}: a secret in the image")
    if not users:
        found.append("no USER: the container runs as root")
    elif users[-1] in ("root", "0"):
        found.append(f"USER {users[-1]}: the last USER is root")
    health = [rest for word, rest in instructions if word == "HEALTHCHECK"]
    if not health or health[-1].upper().startswith("NONE"):
        found.append("no HEALTHCHECK")
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_dockerfiles_pass_the_lint(dockerfile):
    assert dockerfile_findings(dockerfile.read_text()) == []


GOOD = """\
ARG BASE_IMAGE=localhost/reprod-debian:bookworm
FROM ${BASE_IMAGE} AS build
RUN apt-get update \\
 && apt-get install -y --no-install-recommends g++ \\
 && rm -rf /var/lib/apt/lists/*
FROM ${BASE_IMAGE}
COPY --from=build /x /x
ENV REPROD_TOKEN_FILE=/run/secrets/token
USER 10001:10001
EXPOSE 50051
HEALTHCHECK CMD ["/x", "health"]
"""


@pytest.mark.parametrize("old,new,finding", [
    ("USER 10001:10001\n", "", "no USER"),
    ("USER 10001:10001\n", "USER 10001\nUSER root\n", "last USER is root"),
    ("USER 10001:10001\n", "USER 0:0\n", "last USER is root"),
    ('HEALTHCHECK CMD ["/x", "health"]\n', "", "no HEALTHCHECK"),
    ('HEALTHCHECK CMD ["/x", "health"]\n', "HEALTHCHECK NONE\n", "no HEALTHCHECK"),
    ("FROM ${BASE_IMAGE}\n", "FROM debian\n", "untagged or latest"),
    ("FROM ${BASE_IMAGE}\n", "FROM docker.io/library/debian:latest\n", "untagged or latest"),
    ("ARG BASE_IMAGE=localhost/reprod-debian:bookworm", "ARG BASE_IMAGE=debian",
     "untagged or latest"),
    ("ARG BASE_IMAGE=localhost/reprod-debian:bookworm", "ARG BASE_IMAGE",
     "has no default image"),
    ("COPY --from=build /x /x", "ADD https://example.org/x.tgz /x", "fetches a URL"),
    ("EXPOSE 50051", "EXPOSE 50051 22/tcp", "ssh port"),
    ("--no-install-recommends ", "", "without --no-install-recommends"),
    (" \\\n && rm -rf /var/lib/apt/lists/*", "", "apt lists not removed"),
    ("apt-get install -y", "apt install -y", "uses apt"),
    ("RUN apt-get update \\\n && apt", "RUN apt-get update\nRUN apt", "update alone"),
    ("ENV REPROD_TOKEN_FILE=/run/secrets/token", "ENV REPROD_TOKEN=hunter2",
     "secret in the image"),
    ("ENV REPROD_TOKEN_FILE=/run/secrets/token", "ARG DB_PASSWORD=hunter2",
     "secret in the image"),
    ("ENV REPROD_TOKEN_FILE=/run/secrets/token", "ENV SEED=rpd_" + "ab" * 32,
     "secret in the image"),
])
def test_lint_finds_each_rule_broken(old, new, finding):
    assert dockerfile_findings(GOOD) == []
    assert old in GOOD, old
    found = dockerfile_findings(GOOD.replace(old, new, 1))
    assert any(finding in f for f in found), (finding, found)


# --- the image's defaults, compose and Prometheus ------------------------------

def _dockerfile_env(path):
    env = {}
    for word, rest in _instructions(path.read_text()):
        if word == "ENV":
            env.update(dict(_key_values(rest)))
    return env


def _reprodd_env_names():
    if not REPRODD.exists():
        pytest.fail(f"reprodd not built at {REPRODD} (set REPROD_BIN_DIR)")
    help_text = subprocess.run([str(REPRODD), "--help"], capture_output=True, text=True,
                               timeout=30, check=True).stdout
    names = set(re.findall(r"\(Env:(REPROD_\w+)\)", help_text))
    assert len(names) > 10, "reprodd --help lists no [Env:...] names"
    return names


REPRODCTL_ENV = {"REPROD_SERVER", "REPROD_TLS_CA", "REPROD_TLS_CERT", "REPROD_TLS_KEY",
                 "REPROD_TOKEN"}


def test_image_env_names_are_flags_and_match_kubernetes():
    names = _reprodd_env_names()
    statefulset = yaml.safe_load(
        (ROOT / "deploy" / "kubernetes" / "base" / "statefulset.yaml").read_text())
    pod = statefulset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    k8s_env = {e["name"]: e.get("value") for e in container["env"]}
    for dockerfile in DOCKERFILES[:2]:
        env = _dockerfile_env(dockerfile)
        ours = {k for k in env if k.startswith("REPROD_")}
        assert ours - names - REPRODCTL_ENV == set(), dockerfile
        # Same listeners, auth, TLS files and grace as the cluster.
        for name in ("REPROD_LISTEN", "REPROD_HTTP_LISTEN", "REPROD_AUTH",
                     "REPROD_LISTEN_TLS_CERT", "REPROD_LISTEN_TLS_KEY",
                     "REPROD_SHUTDOWN_GRACE"):
            assert env[name] == k8s_env[name], (dockerfile.name, name)
        text = dockerfile.read_text()
        # The uid and the binary the manifests run.
        assert f"USER {pod['securityContext']['runAsUser']}:" in text
        assert f'ENTRYPOINT ["{container["command"][0]}"]' in text
        assert "--data-dir=/data" in container["args"] and 'CMD ["--data-dir=/data"]' in text


def _port(listen):
    return int(listen.rsplit(":", 1)[1])


def test_compose_is_consistent_with_images_and_prometheus():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"reprodd", "prometheus"}
    reprodd = services["reprodd"]
    build = reprodd["build"]
    assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == DOCKER / "Dockerfile"
    assert (DOCKER / services["prometheus"]["build"]["context"] / "Dockerfile").exists()

    env = {**_dockerfile_env(DOCKER / "Dockerfile"), **reprodd["environment"]}
    assert set(k for k in reprodd["environment"]) - _reprodd_env_names() - REPRODCTL_ENV \
        == set()
    grpc_port, http_port = _port(env["REPROD_LISTEN"]), _port(env["REPROD_HTTP_LISTEN"])
    published = {int(p.split(":")[-1]) for p in reprodd["ports"]}
    assert {grpc_port, http_port} <= published
    assert any(v.split(":")[0] == "reprod-data" and v.endswith(":/data")
               for v in reprodd["volumes"])
    assert "reprod-data" in compose["volumes"]

    # Every file variable names a secret that the service mounts and the file
    # declares.
    declared = compose["secrets"]
    for name, value in reprodd["environment"].items():
        if str(value).startswith("/run/secrets/"):
            secret = value.removeprefix("/run/secrets/")
            assert secret in reprodd["secrets"] and secret in declared, name
    for secret in declared.values():
        assert secret["file"].startswith("secrets/"), secret  # docker/secrets, git-ignored

    # Prometheus scrapes the reprodd service on its HTTP port, over TLS when
    # reprodd has a certificate, with a CA mounted as a secret.
    prom = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    (job,) = prom["scrape_configs"]
    (static,) = job["static_configs"]
    assert static["targets"] == [f"reprodd:{http_port}"]
    assert job["metrics_path"] == "/metrics"
    assert env["REPROD_LISTEN_TLS_CERT"] and job["scheme"] == "https"
    ca_secret = job["tls_config"]["ca_file"].removeprefix("/run/secrets/")
    assert ca_secret in services["prometheus"]["secrets"] and ca_secret in declared
    assert job["tls_config"]["server_name"] == "reprodd"
    assert "DNS:reprodd" in (DOCKER / "make-secrets.sh").read_text()


def test_promtool_accepts_the_prometheus_config(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not installed (Debian's prometheus package; scripts/setup.sh "
                    "installs it)")
    # --syntax-only: the CA file exists only inside the compose container.
    proc = subprocess.run([promtool, "check", "config", "--syntax-only",
                           str(DOCKER / "prometheus" / "prometheus.yml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # And it can fail.
    bad_config = tmp_path / "bad.yml"  # a misspelt field
    bad_config.write_text("scrape_configs:\n  - job_name: x\n    scrape_intervall: 5s\n")
    bad = subprocess.run([promtool, "check", "config", "--syntax-only", str(bad_config)],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0


# --- the built image --------------------------------------------------------

def _need_builder():
    missing = [t for t in ("podman", "debootstrap", "unshare", "chroot") if not shutil.which(t)]
    if missing:
        pytest.skip(f"no container builder: {', '.join(missing)} not installed "
                    "(scripts/setup.sh installs podman and debootstrap)")
    if os.geteuid() != 0:
        pytest.skip("the image test needs root (debootstrap, chroot, podman's root store)")


def podman(*args, timeout=600, check=True):
    proc = subprocess.run([str(PODMAN), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"podman {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                    f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _build(dockerfile, tag, *extra, timeout=3600):
    start = time.monotonic()
    base = subprocess.run([str(DOCKER / "make-base.sh")], capture_output=True, text=True,
                          timeout=1200)
    if base.returncode != 0:
        pytest.fail(f"docker/make-base.sh failed ({base.returncode}):\n{base.stderr[-3000:]}")
    made = time.monotonic()
    podman("build", "--isolation", "chroot", "-f", dockerfile, "-t", tag, *extra, ROOT,
           timeout=timeout)
    return made - start, time.monotonic() - made


@pytest.fixture(scope="module")
def image():
    _need_builder()
    base_s, build_s = _build(DOCKER / "Dockerfile", IMAGE)
    print(f"make-base {base_s:.0f} s, podman build {build_s:.0f} s")
    (info,) = json.loads(podman("image", "inspect", IMAGE).stdout)
    try:
        yield info
    finally:
        # The untagged layers of this and earlier builds (the build stage
        # with the compilers and objects is ~1 GB a build) go; the tagged
        # images (base, test images) stay.
        podman("image", "prune", "--force", check=False)


@pytest.fixture(scope="module")
def rootfs(image):
    root = Path(podman("image", "mount", IMAGE).stdout.strip())
    try:
        yield root
    finally:
        podman("image", "unmount", IMAGE, check=False)


def _config(image):
    return image["Config"]


def _healthcheck_test(image):
    """The HEALTHCHECK command (podman shows it beside Config, Docker in it)."""
    health = image.get("Healthcheck") or image["Config"].get("Healthcheck")
    assert health, "the image has no HEALTHCHECK (an OCI-format build drops it)"
    return health["Test"]


def test_image_config(image):
    config = _config(image)
    user, _, group = config["User"].partition(":")
    assert int(user) >= 10000 and int(group) >= 10000, config["User"]
    env = dict(e.split("=", 1) for e in config["Env"])
    assert set(config["ExposedPorts"]) == {f"{_port(env['REPROD_LISTEN'])}/tcp",
                                           f"{_port(env['REPROD_HTTP_LISTEN'])}/tcp"}
    assert "/data" in config["Volumes"]
    test = _healthcheck_test(image)
    assert test[0] == "CMD" and test[1:3] == ["/usr/local/bin/reprodctl", "health"], test
    assert config["Entrypoint"] == ["/usr/local/bin/reprodd"]
    assert config["Cmd"] == ["--data-dir=/data"]


def _installed_packages(root):
    status = (root / "var" / "lib" / "dpkg" / "status").read_text()
    names = set()
    for para in status.split("\n\n"):
        fields = dict(re.findall(r"^(Package|Status): (.*)$", para, re.M))
        if fields.get("Status", "").endswith(" installed"):
            names.add(fields["Package"])
    return names


def test_image_holds_the_runtime_only(image, rootfs):
    data = rootfs / "data"
    assert (data.stat().st_uid, data.stat().st_mode & 0o777) == (10001, 0o700)
    for binary in ("reprodd", "reprodctl"):
        assert os.access(rootfs / "usr" / "local" / "bin" / binary, os.X_OK)
    installed = _installed_packages(rootfs)
    wanted = (rootfs / "usr/local/share/reprod/runtime-packages.txt").read_text().split()
    assert "libgrpc++1.51" in wanted and "libc6" in wanted, wanted
    assert set(wanted) <= installed
    # libcurl's trust store for an https:// S3 endpoint (postgres+s3).
    assert "ca-certificates" in installed
    assert (rootfs / "etc/ssl/certs/ca-certificates.crt").exists()
    # No compiler, build tool, -dev package or source tree.
    assert not {"gcc", "g++", "cmake", "ninja-build", "libgrpc++-dev"} & installed
    assert not [p for p in installed if p.endswith("-dev")]
    assert not (rootfs / "src").exists()
    size_mb = image["Size"] / 1e6
    assert size_mb < 250, f"runtime image is {size_mb:.0f} MB"


def _chroot_command(rootfs, user, binds, argv):
    """unshare + chroot: a private mount namespace (gone with the process)
    with `binds` {host dir: path in the image}, /proc and /dev, then argv
    as `user` (UID:GID). Every step execs, so the returned Popen's pid is
    argv[0]'s."""
    script = ["set -e"]
    for host, inside in binds.items():
        script.append(f"mount --bind {shlex.quote(str(host))} "
                      f"{shlex.quote(str(rootfs) + inside)}")
    script += [f"mount -t proc proc {shlex.quote(str(rootfs))}/proc",
               f"mount --rbind /dev {shlex.quote(str(rootfs))}/dev",
               f'exec chroot --userspec={user} {shlex.quote(str(rootfs))} "$@"']
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            "\n".join(script), "sh", *argv]


@pytest.fixture(scope="module")
def served(image, rootfs, tmp_path_factory):
    """The image's reprodd, run from its file system as its user with its
    own environment and command; listeners moved to free loopback ports."""
    config = _config(image)
    work = tmp_path_factory.mktemp("image-reprodd")
    certs = make_tls_certs(work / "certs")
    tls = work / "tls"
    tls.mkdir()
    shutil.copy(certs.server_cert, tls / "tls.crt")
    shutil.copy(certs.server_key, tls / "tls.key")
    shutil.copy(certs.ca, tls / "ca.crt")
    data = work / "data"
    data.mkdir(mode=0o700)
    uid, gid = (int(x) for x in config["User"].split(":"))
    for path in (data, tls / "tls.key"):
        os.chown(path, uid, gid)
    (tls / "tls.key").chmod(0o600)

    env = dict(e.split("=", 1) for e in config["Env"])
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    env.update(REPROD_LISTEN="127.0.0.1:0", REPROD_HTTP_LISTEN="127.0.0.1:0",
               REPROD_PORT_FILE="/data/port", REPROD_THREADS="2")
    binds = {data: "/data", tls: "/etc/reprod/tls"}
    argv = config["Entrypoint"] + config["Cmd"]
    log = open(work / "reprodd.log", "w")
    proc = subprocess.Popen(_chroot_command(rootfs, config["User"], binds, argv), env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while not (data / "port").exists():
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"the image's reprodd did not start (exit {proc.poll()}):\n"
                            f"{(work / 'reprodd.log').read_text()[-3000:]}")
            time.sleep(0.05)
        port = int((data / "port").read_text())
        http_port = int((data / "port.http").read_text())
        yield {"proc": proc, "address": f"127.0.0.1:{port}", "http_port": http_port,
               "ca": certs.ca, "token": (data / "admin.token").read_text().strip(),
               "env": env, "binds": binds, "log": work / "reprodd.log", "data": data}
    finally:
        stop_process(proc)
        log.close()


def _remote(served, *args):
    return run_reprodctl("--server", served["address"], "--tls-ca", served["ca"],
                         "--token", served["token"], *args)


def test_image_reprodd_stores_and_compares_sample_runs(served, tmp_path):
    rng = np.random.default_rng(14)
    ref = {"logits": rng.standard_normal((4, 8)).astype(np.float32),
           "loss": np.array([2.3125], np.float32)}
    cand = {"logits": ref["logits"].copy(), "loss": np.array([2.3125 + 0.0625], np.float32)}
    files = {}
    for side, data in (("torch", ref), ("paddle", cand)):
        path = tmp_path / f"forward_{side}.npy"
        layouts.save_reprod_log(path, data)
        res = _remote(served, "push", path, "--run", f"image/{side}")
        assert res.code == 0, res
        files[side] = path
    res = _remote(served, "compare", "image/torch", "image/paddle", "--format", "json")
    assert res.code == 1, res
    report = res.json()
    assert report["passed"] is False
    assert report["first_failure"]["key"] == "loss"
    by_key = {t["key"]: t for t in report["tensors"]}
    assert (by_key["logits"]["status"], by_key["loss"]["status"]) == ("pass", "fail")
    assert by_key["loss"]["stats"]["max_abs"] == 0.0625
    assert by_key["logits"]["stats"]["max_abs"] == 0.0
    # The same pair, identical: passes.
    assert _remote(served, "compare", "image/torch", "image/torch").code == 0

    # /metrics (public, HTTPS) counts the tensor bytes the server stored.
    context = ssl.create_default_context(cafile=str(served["ca"]))
    url = f"https://127.0.0.1:{served['http_port']}/metrics"
    with urllib.request.urlopen(url, context=context, timeout=30) as response:
        text = response.read().decode()
    pushed = sum(a.nbytes for d in (ref, cand) for a in d.values())
    assert re.search(rf"^reprod_ingest_bytes_total {pushed}$", text, re.M), text[:2000]


def test_image_healthcheck_runs_in_the_image(image, rootfs, served):
    test = _healthcheck_test(image)
    env = dict(served["env"], REPROD_SERVER=served["address"])
    proc = subprocess.run(
        _chroot_command(rootfs, _config(image)["User"], served["binds"], test[1:]), env=env,
        capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout) == (0, "SERVING\n"), proc
    # Pointed at nothing, the same check fails (exit 3: unreachable).
    env["REPROD_SERVER"] = "127.0.0.1:1"
    proc = subprocess.run(
        _chroot_command(rootfs, _config(image)["User"], served["binds"], test[1:]), env=env,
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc


def test_image_reprodd_runs_as_its_user_and_stops_on_sigterm(image, served):
    status = Path(f"/proc/{served['proc'].pid}/status").read_text()
    uid = re.search(r"^Uid:\s+(\d+)", status, re.M).group(1)
    assert uid == _config(image)["User"].split(":")[0]
    assert Path(f"/proc/{served['proc'].pid}/exe").resolve().name == "reprodd"
    # The data dir: RocksDB's files and the admin token, owned by that user.
    token = served["data"] / "admin.token"
    assert token.stat().st_uid == int(uid) and token.stat().st_mode & 0o777 == 0o600
    served["proc"].terminate()
    assert served["proc"].wait(timeout=60) == 0
    assert "listening on 127.0.0.1:" in served["log"].read_text()


def test_prometheus_image_builds_and_accepts_its_config():
    """compose's Prometheus: Debian's package on the same base, not root, a
    health check, and its own promtool accepts the baked-in config."""
    _need_builder()
    tag = "localhost/reprod/prometheus:test"
    podman("build", "--isolation", "chroot", "-f", DOCKER / "prometheus" / "Dockerfile",
           "-t", tag, DOCKER / "prometheus")
    (info,) = json.loads(podman("image", "inspect", tag).stdout)
    assert info["Config"]["User"] not in ("", "root", "0")
    assert _healthcheck_test(info)[1] == "/usr/bin/promtool"
    root = Path(podman("image", "mount", tag).stdout.strip())
    try:
        proc = subprocess.run(
            ["chroot", root, "/usr/bin/promtool", "check", "config", "--syntax-only",
             "/etc/prometheus/prometheus.yml"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc
        baked = (root / "etc/prometheus/prometheus.yml").read_text()
        assert baked == (DOCKER / "prometheus" / "prometheus.yml").read_text()
    finally:
        podman("image", "unmount", tag, check=False)


@pytest.mark.skipif(os.environ.get("REPROD_TEST_CUDA_IMAGE") != "1",
                    reason="the CUDA image build is opt-in: REPROD_TEST_CUDA_IMAGE=1 (it "
                           "compiles the CUDA backend from the toolkit in /usr/local/cuda)")
def test_cuda_image_builds():
    _need_builder()
    cuda = Path("/usr/local/cuda").resolve()
    if not (cuda / "bin" / "nvcc").exists():
        pytest.skip(f"no CUDA toolkit at {cuda}")
    _build(DOCKER / "Dockerfile.cuda", CUDA_IMAGE, "--build-context", f"cuda={cuda}")
    (info,) = json.loads(podman("image", "inspect", CUDA_IMAGE).stdout)
    env = dict(e.split("=", 1) for e in info["Config"]["Env"])
    assert env["REPROD_BACKEND"] == "cuda"
    assert info["Config"]["User"].startswith("10001:")
