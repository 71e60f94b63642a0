"""deploy/: the systemd unit, its example environment file and the
Kubernetes manifests are what they claim to be.

- systemd: `systemd-analyze verify` loads the unit (and the GPU drop-in)
  without a warning, `systemd-analyze security --offline` rates its exposure
  "OK" (<= 2.0 of 10), the stop timeout outlasts reprodd's shutdown grace,
  there is an ExecReload exactly when reprodd handles SIGHUP, and no library
  reprodd loads needs an executable stack (MemoryDenyWriteExecute=yes).
- reprodd.env.example names exactly the REPROD_* variables that the built
  reprodd reads (its --help, one [Env:...] per flag), and reprodd starts
  from it (tokens, TLS) and answers a health check over TLS.
- Kubernetes: every kustomization (base, overlays/*) is rendered (kubectl
  kustomize when present, and always by the small renderer below, which
  must agree with it), each object validates against the Kubernetes
  OpenAPI schemas (kubernetes-validate, strict: unknown fields fail) for
  K8S_VERSIONS, and a security lint checks the high-severity items that
  checkov's Kubernetes policies check, on every pod template.
- The scale-out variant (overlays/scale-out: replicas on --store
  postgres+s3): a Deployment of at least 2 replicas with no volume claim,
  its store settings from a ConfigMap (keys reprodd reads, no password in
  the PostgreSQL URL), its secrets as files from Secrets (nothing secret in
  arguments or literal variables), a headless Service for the clients'
  multi-address failover, a PodDisruptionBudget, a spread over nodes, and
  egress to the ports its PostgreSQL and S3 endpoints name; and two
  reprodd started from its arguments and environment (against a throwaway
  PostgreSQL and radosgw) serve one store.
"""
import copy
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import REPRODD, ROOT
from tls_certs import make_tls_certs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for services
from services.fixtures import ceph_s3, postgres_server  # noqa: E402,F401

DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "reprodd.service"
GPU_DROPIN = DEPLOY / "systemd" / "reprodd.service.d" / "gpu.conf"
ENV_EXAMPLE = DEPLOY / "systemd" / "reprodd.env.example"
KUSTOMIZATIONS = sorted([DEPLOY / "kubernetes" / "base",
                         *(DEPLOY / "kubernetes" / "overlays").iterdir()])
# The oldest Kubernetes release still commonly run (managed clusters) and the
# newest whose schemas the pinned kubernetes-validate ships.
K8S_VERSIONS = ("1.30.0", "1.37.0")
MAX_EXPOSURE = 2.0  # systemd-analyze security: "OK" ends at 2.0


def _need_reprodd():
    if not REPRODD.exists():
        pytest.fail(f"reprodd not built at {REPRODD} (set REPROD_BIN_DIR)")


def _reprodd_help():
    _need_reprodd()
    return subprocess.run([str(REPRODD), "--help"], capture_output=True, text=True,
                          timeout=30, check=True).stdout


def _help_env_names():
    names = set(re.findall(r"\(Env:(REPROD_\w+)\)", _reprodd_help()))
    assert len(names) > 10, "reprodd --help lists no [Env:...] names: did its format change?"
    return names


# --- systemd -------------------------------------------------------------

def _systemd_analyze():
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd); the unit "
                    "is not verified here")
    return path


def _unit_settings(text):
    """[(key, value)] of a unit file's assignments, in order."""
    return [tuple(part.strip() for part in line.split("=", 1)) for line in text.splitlines()
            if "=" in line and not line.lstrip().startswith(("#", ";"))]


def _unit_value(key):
    values = [v for k, v in _unit_settings(UNIT.read_text()) if k == key]
    assert len(values) == 1, f"{UNIT.name}: {key}= set {len(values)} times"
    return values[0]


def _unit_copy(directory, with_gpu, unit_text=None):
    """The unit in `directory` with ExecStart on the built reprodd (verify
    needs the binary to exist), plus the GPU drop-in when asked."""
    _need_reprodd()
    text = unit_text if unit_text is not None else UNIT.read_text()
    assert "ExecStart=/usr/local/bin/reprodd " in text
    unit = directory / "reprodd.service"
    # systemd wants an absolute path (REPROD_BIN_DIR may be relative).
    unit.write_text(text.replace("ExecStart=/usr/local/bin/reprodd ",
                                 f"ExecStart={REPRODD.resolve()} "))
    if with_gpu:
        (directory / "reprodd.service.d").mkdir()
        shutil.copy(GPU_DROPIN, directory / "reprodd.service.d" / "gpu.conf")
    return unit


def _verify(analyze, unit):
    # SYSTEMD_UNIT_PATH makes verify load drop-ins next to the unit too.
    env = dict(os.environ, SYSTEMD_UNIT_PATH=f"{unit.parent}:", SYSTEMD_LOG_COLOR="0")
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                          timeout=60, env=env)
    about_unit = [line for line in (proc.stdout + proc.stderr).splitlines()
                  if str(unit.parent) in line or "reprodd" in line]
    return proc.returncode, about_unit, proc.stdout + proc.stderr


@pytest.mark.parametrize("with_gpu", [False, True], ids=["unit", "unit+gpu.conf"])
def test_systemd_verify_is_clean(tmp_path, with_gpu):
    analyze = _systemd_analyze()
    code, about_unit, output = _verify(analyze, _unit_copy(tmp_path, with_gpu))
    assert code == 0, output
    assert about_unit == [], output


def test_systemd_verify_reports_a_bad_key(tmp_path):
    """The check above can fail: verify names an unknown key (exit 0 all the same)."""
    analyze = _systemd_analyze()
    bad = UNIT.read_text().replace("ProtectHome=yes", "ProtectHom=yes")
    _, about_unit, output = _verify(analyze, _unit_copy(tmp_path, False, bad))
    assert any("Unknown key" in line and "ProtectHom" in line for line in about_unit), output


@pytest.mark.parametrize("with_gpu", [False, True], ids=["unit", "unit+gpu.conf"])
def test_systemd_security_exposure_is_ok(tmp_path, with_gpu):
    analyze = _systemd_analyze()
    unit = _unit_copy(tmp_path, with_gpu)
    proc = subprocess.run([analyze, "security", "--offline=true", "--no-pager", str(unit)],
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, SYSTEMD_COLORS="0"))
    m = re.search(r"Overall exposure level for reprodd\.service: ([0-9.]+)", proc.stdout)
    assert m, proc.stdout + proc.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE, proc.stdout
    if with_gpu:  # the drop-in really took effect
        assert re.search(r"✗ PrivateDevices=", proc.stdout), proc.stdout


def test_unit_stop_timeout_outlasts_shutdown_grace():
    timeout = float(_unit_value("TimeoutStopSec").rstrip("s"))
    assert _unit_value("KillSignal") == "SIGTERM"
    env_grace = dict(_env_assignments())["REPROD_SHUTDOWN_GRACE"]
    default_grace = re.search(r"--shutdown-grace FLOAT\S*=([0-9.]+)", _reprodd_help()).group(1)
    for grace in (float(env_grace), float(default_grace)):
        # The grace, then closing the database (flush, WAL sync): 10 s more.
        assert timeout >= grace + 10, (timeout, grace)


def test_exec_reload_only_if_reprodd_reloads():
    reloads = "SIGHUP" in (ROOT / "server" / "main.cc").read_text()
    has_reload = any(k == "ExecReload" for k, _ in _unit_settings(UNIT.read_text()))
    assert has_reload == reloads, (
        "reprodd handles SIGHUP now: add ExecReload=/bin/kill -HUP $MAINPID" if reloads
        else "reprodd has no reload signal, so the unit must not have ExecReload")


def test_unit_data_dir_is_its_state_dir():
    """The data dir and the env example's backup root are the unit's state
    directories (the only writable places under ProtectSystem=strict)."""
    state = _unit_value("StateDirectory").split()
    assert _unit_value("ExecStart").split()[1:] == ["--data-dir", f"/var/lib/{state[0]}"]
    env = dict(line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
               if line and not line.startswith("#"))
    assert env["REPROD_BACKUP_ROOT"] in [f"/var/lib/{d}" for d in state[1:]], (env, state)
    assert _unit_value("ProtectSystem") == "strict"
    assert _unit_value("EnvironmentFile") == "-/etc/reprod/reprodd.env"


def _loaded_objects():
    """reprodd and every shared library it loads (ldd)."""
    _need_reprodd()
    out = subprocess.run(["ldd", str(REPRODD)], capture_output=True, text=True, timeout=30,
                         check=True).stdout
    libs = re.findall(r"=> (/\S+) \(0x", out) + re.findall(r"^\s*(/\S+) \(0x", out, re.M)
    assert len(libs) > 5, out
    return [REPRODD, *map(Path, libs)]


def test_no_executable_stack_so_memory_deny_write_execute_holds():
    """MemoryDenyWriteExecute=yes refuses an executable stack: a library
    flagged for one (GNU_STACK RWE) would stop reprodd from loading."""
    if shutil.which("readelf") is None:
        pytest.skip("readelf (Debian package binutils) is not installed")
    assert _unit_value("MemoryDenyWriteExecute") == "yes"
    flagged = []
    for obj in _loaded_objects():
        headers = subprocess.run(["readelf", "-lW", str(obj)], capture_output=True, text=True,
                                 timeout=30, check=True).stdout
        stack = [line for line in headers.splitlines() if "GNU_STACK" in line]
        assert stack, f"{obj}: no GNU_STACK header (the default there is an executable stack)"
        if re.search(r"\bRWE\s*0x", stack[0]):
            flagged.append(str(obj))
    assert flagged == []


# --- the example environment file ----------------------------------------

def _env_assignments():
    """(name, value) of the example's active lines (systemd EnvironmentFile)."""
    pairs = []
    for number, line in enumerate(ENV_EXAMPLE.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Z_][A-Z0-9_]*)=(\S*)", line)
        assert m, f"{ENV_EXAMPLE.name}:{number}: not KEY=VALUE: {line!r}"
        pairs.append((m.group(1), m.group(2)))
    return pairs


def test_env_example_names_exactly_the_variables_reprodd_reads():
    read = _help_env_names()
    named = set(re.findall(r"\bREPROD_[A-Z0-9_]+", ENV_EXAMPLE.read_text()))
    assert named - read == set(), "not read by reprodd (reprodd --help)"
    assert read - named == set(), "read by reprodd but missing from the example"
    active = [name for name, _ in _env_assignments()]
    assert len(active) == len(set(active)), active


def test_env_example_defaults_are_safe():
    env = dict(_env_assignments())
    assert env["REPROD_AUTH"] == "tokens"
    assert "REPROD_INSECURE" not in env
    assert env["REPROD_ADMIN_TOKEN_FILE"].startswith("/var/lib/reprod/")
    for name in ("REPROD_LISTEN_TLS_CERT", "REPROD_LISTEN_TLS_KEY"):
        assert env[name].startswith("/etc/reprod/tls/"), name


def test_reprodd_starts_from_the_env_example(tmp_path):
    """The example's settings as they are, but loopback port 0 for the two
    listeners and throwaway files and folders for TLS, the admin token and
    the backups: reprodd starts
    with tokens and TLS, writes the admin token 0600, and its health service
    answers SERVING over TLS."""
    _need_reprodd()
    certs = make_tls_certs(tmp_path / "tls")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPROD_")}
    env.update(_env_assignments())
    token_file = tmp_path / "admin.token"
    env.update(REPROD_LISTEN="127.0.0.1:0", REPROD_HTTP_LISTEN="127.0.0.1:0",
               REPROD_LISTEN_TLS_CERT=str(certs.server_cert),
               REPROD_LISTEN_TLS_KEY=str(certs.server_key),
               REPROD_ADMIN_TOKEN_FILE=str(token_file), REPROD_BACKEND="cpu",
               REPROD_MIN_FREE_BYTES="0", REPROD_PORT_FILE=str(tmp_path / "port"),
               REPROD_BACKUP_ROOT=str(tmp_path / "backups"))
    proc = subprocess.Popen([str(REPRODD), "--data-dir", str(tmp_path / "data")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 30
        port_file = tmp_path / "port"
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None, proc.communicate()[0]
            assert time.time() < deadline, "reprodd wrote no port file in 30 s"
            time.sleep(0.05)
        port = int(port_file.read_text())
        assert re.fullmatch(r"rpd_[0-9a-f]{64}\n?", token_file.read_text())
        assert token_file.stat().st_mode & 0o777 == 0o600
        creds = grpc.ssl_channel_credentials(root_certificates=certs.ca.read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{port}", creds) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "auth: tokens" in out and "TLS: on" in out, out
    assert (tmp_path / "backups").is_dir(), out


# --- Kubernetes: rendering -------------------------------------------------

KUSTOMIZE_FIELDS = {"apiVersion", "kind", "resources", "patches"}


def _split_pointer(path):
    assert path.startswith("/"), path
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _json_patch(doc, ops, where):
    """RFC 6902 add/replace/remove, the operations the overlays use."""
    for op in ops:
        *parents, last = _split_pointer(op["path"])
        node = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        kind = op["op"]
        if isinstance(node, list):
            index = len(node) if last == "-" else int(last)
            if kind == "add":
                node.insert(index, copy.deepcopy(op["value"]))
            elif kind == "replace":
                node[index] = copy.deepcopy(op["value"])
            elif kind == "remove":
                del node[index]
            else:
                pytest.fail(f"{where}: op {kind!r} not supported by this renderer")
        else:
            if kind in ("replace", "remove"):
                assert last in node, f"{where}: {op['path']} does not exist for {kind}"
            if kind in ("add", "replace"):
                node[last] = copy.deepcopy(op["value"])
            elif kind == "remove":
                del node[last]
            else:
                pytest.fail(f"{where}: op {kind!r} not supported by this renderer")


def _matches(obj, target):
    group, _, version = obj["apiVersion"].rpartition("/")
    want = {"kind": obj["kind"], "name": obj["metadata"]["name"], "group": group,
            "version": version}
    return all(want[k] == v for k, v in target.items())


def render_kustomization(directory):
    """The objects `kustomize build directory` makes, for the kustomize
    features deploy/kubernetes uses (resources; patches given as JSON
    patches with a target). Anything else fails loudly, never silently."""
    directory = Path(directory)
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    extra = set(k) - KUSTOMIZE_FIELDS
    assert not extra, f"{directory}/kustomization.yaml: {sorted(extra)} not supported here"
    objects = []
    for entry in k.get("resources", []):
        path = directory / entry
        if path.is_dir():
            objects += render_kustomization(path)
        else:
            objects += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for patch in k.get("patches", []):
        text = (directory / patch["path"]).read_text() if "path" in patch else patch["patch"]
        ops = yaml.safe_load(text)
        where = f"{directory}: patch {patch.get('path', '(inline)')}"
        assert isinstance(ops, list), f"{where}: only JSON patches are supported here"
        targets = [o for o in objects if _matches(o, patch["target"])]
        assert targets, f"{where}: target {patch['target']} matches no object"
        for obj in targets:
            _json_patch(obj, ops, where)
    return objects


def _by_key(objects):
    keyed = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    assert len(keyed) == len(objects), "two objects with the same kind and name"
    return keyed


def _external_render(directory):
    """kustomize's own rendering, or None where neither binary exists."""
    if shutil.which("kustomize"):
        args = ["kustomize", "build", str(directory)]
    elif shutil.which("kubectl"):
        args = ["kubectl", "kustomize", str(directory)]
    else:
        return None
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def _rendered(directory):
    ours = render_kustomization(directory)
    theirs = _external_render(directory)
    if theirs is not None:
        assert _by_key(ours) == _by_key(theirs), "renderer and kustomize disagree"
    return ours


def _id(path):
    return str(path.relative_to(DEPLOY / "kubernetes"))


def test_renderer_applies_json_patches():
    doc = {"a": {"b/c": [1, 2]}, "d": 1}
    _json_patch(doc, [{"op": "add", "path": "/a/b~1c/-", "value": 3},
                      {"op": "add", "path": "/a/b~1c/0", "value": 0},
                      {"op": "replace", "path": "/d", "value": {"x": 1}},
                      {"op": "add", "path": "/e", "value": "new"},
                      {"op": "remove", "path": "/a/b~1c/1"}], "test")
    assert doc == {"a": {"b/c": [0, 2, 3]}, "d": {"x": 1}, "e": "new"}


def test_kustomizations_found():
    names = [_id(k) for k in KUSTOMIZATIONS]
    assert names == ["base", "overlays/gpu", "overlays/scale-out"], names


# --- Kubernetes: schema validation ----------------------------------------

def _validate(obj, version):
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except ValidationError as e:
        return f"{'.'.join(map(str, e.path))}: {e.message}"
    except SchemaNotFoundError as e:
        return e.message
    return None


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=_id)
def test_manifests_validate_against_kubernetes_schemas(kustomization, version):
    objects = _rendered(kustomization)
    kinds = {o["kind"] for o in objects}
    assert {"Service", "NetworkPolicy"} <= kinds and kinds & {"StatefulSet", "Deployment"}, kinds
    errors = {f"{o['kind']}/{o['metadata']['name']}": _validate(o, version) for o in objects}
    assert {k: v for k, v in errors.items() if v} == {}


def test_schema_validation_catches_mistakes():
    """The validation above can fail: a misspelt field, a wrong type."""
    sts = _by_key(render_kustomization(DEPLOY / "kubernetes" / "base"))[("StatefulSet", "reprodd")]
    typo = copy.deepcopy(sts)
    typo["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True
    assert _validate(typo, K8S_VERSIONS[0]) is not None
    wrong_type = copy.deepcopy(sts)
    wrong_type["spec"]["replicas"] = "one"
    assert "replicas" in (_validate(wrong_type, K8S_VERSIONS[0]) or "")


# --- Kubernetes: security lint ---------------------------------------------

POD_TEMPLATE_KINDS = {"StatefulSet", "Deployment", "DaemonSet", "ReplicaSet", "Job"}


def _pod_specs(obj):
    if obj["kind"] == "Pod":
        return [obj["spec"]]
    if obj["kind"] in POD_TEMPLATE_KINDS:
        return [obj["spec"]["template"]["spec"]]
    if obj["kind"] == "CronJob":
        return [obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]]
    return []


def _policy_selects(policy, labels):
    selector = policy["spec"]["podSelector"]
    assert not selector.get("matchExpressions"), "lint: matchExpressions not handled"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def security_findings(objects):
    """High-severity findings (checkov's CKV_K8S ids where one exists)."""
    found = []
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    for obj in objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        for pod in _pod_specs(obj):
            psc = pod.get("securityContext", {})
            for key in ("hostNetwork", "hostPID", "hostIPC"):  # CKV_K8S_17/18/19
                if pod.get(key):
                    found.append(f"{name}: {key}")
            if any("hostPath" in v for v in pod.get("volumes", [])):
                found.append(f"{name}: hostPath volume")
            if pod.get("automountServiceAccountToken") is not False:  # CKV_K8S_38
                found.append(f"{name}: service account token mounted")
            if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":  # CKV_K8S_31
                found.append(f"{name}: no RuntimeDefault seccomp profile")
            labels = (obj["spec"].get("template", {}).get("metadata", {}).get("labels")
                      or obj["metadata"].get("labels", {}))
            if not any(_policy_selects(p, labels) for p in policies):
                found.append(f"{name}: no NetworkPolicy selects its pods")
            for c in pod.get("initContainers", []) + pod["containers"]:
                where = f"{name} container {c['name']}"
                sc = c.get("securityContext", {})
                if not sc.get("runAsNonRoot", psc.get("runAsNonRoot")):  # CKV_K8S_23
                    found.append(f"{where}: runAsNonRoot not true")
                if sc.get("runAsUser", psc.get("runAsUser", 0)) < 10000:  # CKV_K8S_40
                    found.append(f"{where}: runAsUser below 10000")
                if sc.get("privileged"):  # CKV_K8S_16
                    found.append(f"{where}: privileged")
                if sc.get("allowPrivilegeEscalation") is not False:  # CKV_K8S_20
                    found.append(f"{where}: allowPrivilegeEscalation not false")
                if not sc.get("readOnlyRootFilesystem"):  # CKV_K8S_22
                    found.append(f"{where}: root file system writable")
                caps = sc.get("capabilities", {})
                if "ALL" not in caps.get("drop", []):  # CKV_K8S_28/37
                    found.append(f"{where}: capabilities not dropped (ALL)")
                if caps.get("add"):  # CKV_K8S_25/39
                    found.append(f"{where}: capabilities added {caps['add']}")
                res = c.get("resources", {})
                for kind in ("requests", "limits"):  # CKV_K8S_10..13
                    for what in ("cpu", "memory"):
                        if what not in res.get(kind, {}):
                            found.append(f"{where}: no {what} {kind[:-1]}")
                if any(p.get("hostPort") for p in c.get("ports", [])):  # CKV_K8S_26
                    found.append(f"{where}: hostPort")
                if any("secretKeyRef" in e.get("valueFrom", {}) for e in c.get("env", [])):
                    found.append(f"{where}: secret in an environment variable")  # CKV_K8S_35
                if not (c.get("livenessProbe") and c.get("readinessProbe")):  # CKV_K8S_8/9
                    found.append(f"{where}: no liveness or readiness probe")
    return found


def test_security_lint_finds_each_problem():
    """The lint can fail: a pod that breaks every rule is named for each."""
    bad = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "bad"},
           "spec": {"template": {"metadata": {"labels": {"app": "bad"}}, "spec": {
               "hostNetwork": True, "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
               "containers": [{"name": "c", "ports": [{"containerPort": 1, "hostPort": 1}],
                               "securityContext": {"privileged": True,
                                                   "capabilities": {"add": ["SYS_ADMIN"]}},
                               "env": [{"name": "T", "valueFrom": {"secretKeyRef": {}}}]}]}}}}
    found = security_findings([bad])
    for needle in ("hostNetwork", "hostPath", "token mounted", "seccomp", "NetworkPolicy",
                   "runAsNonRoot", "runAsUser", "privileged", "allowPrivilegeEscalation",
                   "root file system", "not dropped", "capabilities added", "no cpu request",
                   "no memory limit", "hostPort", "secret in an environment", "probe"):
        assert any(needle in f for f in found), (needle, found)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=_id)
def test_manifests_pass_the_security_lint(kustomization):
    assert security_findings(_rendered(kustomization)) == []


def _workload(objects):
    """The one StatefulSet or Deployment named reprodd."""
    found = [o for o in objects if o["kind"] in ("StatefulSet", "Deployment")
             and o["metadata"]["name"] == "reprodd"]
    assert len(found) == 1, [f"{o['kind']}/{o['metadata']['name']}" for o in found]
    return found[0]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=_id)
def test_manifests_configure_reprodd_consistently(kustomization):
    """The container's REPROD_* variables exist in reprodd, the files they
    name are mounted, the probes name declared ports, the grace outlasts
    reprodd's, the gpu overlay asks for a GPU and the CUDA backend, and the
    embedded-store variants keep /data on a claim."""
    read = _help_env_names()
    workload = _workload(_rendered(kustomization))
    pod = workload["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert set(env) - read == set(), "not read by reprodd"
    assert env["REPROD_AUTH"] == "tokens"
    mounts = [m["mountPath"] for m in c["volumeMounts"]]
    files = ("REPROD_ADMIN_TOKEN_FILE", "REPROD_LISTEN_TLS_CERT", "REPROD_LISTEN_TLS_KEY",
             "REPROD_PG_PASSWORD_FILE", "REPROD_S3_CREDENTIALS_FILE")
    for name in (n for n in files if n in env):
        assert any(env[name].startswith(m + "/") for m in mounts), (name, env[name], mounts)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc": 50051, "http": 8080}
    assert env["REPROD_LISTEN"].endswith(":50051") and env["REPROD_HTTP_LISTEN"].endswith(":8080")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        action = next(v for k, v in c[probe].items() if k in ("httpGet", "tcpSocket", "grpc"))
        assert action["port"] in ports or action["port"] in ports.values(), probe
    assert pod["terminationGracePeriodSeconds"] >= float(env["REPROD_SHUTDOWN_GRACE"]) + 10
    secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    if kustomization.name == "scale-out":
        assert workload["kind"] == "Deployment"
        assert not any(a.startswith("--data-dir") for a in c["args"])
        assert "REPROD_DATA_DIR" not in env and "REPROD_BACKUP_ROOT" not in env
        assert secrets == {"reprodd-admin-token", "reprodd-tls", "reprodd-postgres", "reprodd-s3"}
    else:
        assert workload["kind"] == "StatefulSet"
        data = "/data"
        assert f"--data-dir={data}" in c["args"] and data in mounts
        claims = [t["metadata"]["name"] for t in workload["spec"]["volumeClaimTemplates"]]
        assert next(m["name"] for m in c["volumeMounts"] if m["mountPath"] == data) in claims
        assert secrets == {"reprodd-admin-token", "reprodd-tls"}
    gpu = c["resources"]["limits"].get("nvidia.com/gpu")
    if kustomization.name == "gpu":
        assert gpu == "1" and c["resources"]["requests"]["nvidia.com/gpu"] == "1"
        assert "--backend=cuda" in c["args"]
        assert pod["nodeSelector"] and pod["tolerations"]
    else:
        assert gpu is None and not any(a.startswith("--backend") for a in c["args"])


# --- Kubernetes: the scale-out variant ---------------------------------------

SCALE_OUT = DEPLOY / "kubernetes" / "overlays" / "scale-out"
# Where the replicas' shared store is: from a ConfigMap, never literal.
STORE_SETTINGS = ("REPROD_PG_URL", "REPROD_PG_SCHEMA", "REPROD_S3_ENDPOINT", "REPROD_S3_BUCKET",
                  "REPROD_S3_REGION", "REPROD_S3_PREFIX")
# Its secrets: files from Secrets, mounted read-only.
SECRET_FILES = ("REPROD_PG_PASSWORD_FILE", "REPROD_S3_CREDENTIALS_FILE")
# Variables that hold a secret themselves: never in the pod spec.
SECRET_VARIABLES = ("PGPASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                    "AWS_SESSION_TOKEN", "REPROD_TOKEN")
# Flags whose value is a file name, not a secret.
FILE_FLAGS = ("--pg-password-file", "--s3-credentials-file", "--admin-token-file")


def _selects(selector, labels):
    assert not selector.get("matchExpressions"), "check: matchExpressions not handled"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", selector).items())


def _egress_allows(policies, labels, port, protocol="TCP"):
    """Some NetworkPolicy selecting `labels` lets them open `port`."""
    for p in policies:
        if not _selects(p["spec"]["podSelector"], labels):
            continue
        if "Egress" not in p["spec"].get("policyTypes", []):
            return True
        for rule in p["spec"].get("egress", []):
            rule_ports = rule.get("ports")
            if not rule_ports or any(rp.get("port") == port and rp.get("protocol", "TCP") == protocol
                                     for rp in rule_ports):
                return True
    return False


def _pg_port(url):
    if "://" in url:
        return urlsplit(url).port or 5432
    m = re.search(r"(?:^|\s)port\s*=\s*'?(\d+)", url)
    return int(m.group(1)) if m else 5432


def _pg_url_has_password(url):
    if "://" in url:
        parts = urlsplit(url)
        return parts.password is not None or re.search(r"(^|&)password=", parts.query) is not None
    return re.search(r"(?:^|\s)password\s*=", url) is not None


def scale_out_findings(objects, read_env):
    """What keeps `objects` from being N stateless replicas on postgres+s3
    with their settings in a ConfigMap and their secrets in Secrets."""
    found = []
    keyed = _by_key(objects)
    workloads = [o for o in objects if o["kind"] in POD_TEMPLATE_KINDS]
    if [(o["kind"], o["metadata"]["name"]) for o in workloads] != [("Deployment", "reprodd")]:
        return [f"not one Deployment reprodd: {[o['kind'] for o in workloads]}"]
    dep = workloads[0]
    replicas = dep["spec"].get("replicas", 1)
    if replicas < 2:
        found.append(f"replicas {replicas}: fewer than 2")
    pod = dep["spec"]["template"]["spec"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    if not _selects(dep["spec"]["selector"], labels):
        found.append("the Deployment's selector does not select its pods")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    if (any(o["kind"] == "PersistentVolumeClaim" for o in objects)
            or "volumeClaimTemplates" in dep["spec"]
            or any("persistentVolumeClaim" in v or "ephemeral" in v for v in volumes.values())):
        found.append("a volume claim: replicas keep nothing")
    (c,) = pod["containers"]
    args = list(c.get("command", [])[1:]) + list(c.get("args", []))
    env = c.get("env", [])
    literal = {e["name"]: e["value"] for e in env if "value" in e}
    store = [a.split("=", 1)[1] for a in args if a.startswith("--store=")]
    store += [b for a, b in zip(args, args[1:]) if a == "--store"]
    if "REPROD_STORE" in literal:
        store.append(literal["REPROD_STORE"])
    if store != ["postgres+s3"]:
        found.append(f"store {store}, not postgres+s3")

    # Settings: each from a key of a ConfigMap in the rendering.
    configmaps = {name: o.get("data", {}) for (kind, name), o in keyed.items()
                  if kind == "ConfigMap"}
    settings = {}
    for source in c.get("envFrom", []):
        ref = source.get("configMapRef", {}).get("name")
        for key, value in configmaps.get(ref, {}).items():
            settings[source.get("prefix", "") + key] = value
    for e in env:
        ref = e.get("valueFrom", {}).get("configMapKeyRef")
        if ref is None:
            continue
        if ref["key"] not in configmaps.get(ref["name"], {}):
            found.append(f"{e['name']}: ConfigMap {ref['name']} has no key {ref['key']}")
        else:
            settings[e["name"]] = configmaps[ref["name"]][ref["key"]]
    for name in sorted(set(settings) - read_env):
        found.append(f"{name}: from a ConfigMap but not read by reprodd")
    for name in STORE_SETTINGS:
        if name in literal or name not in settings:
            found.append(f"{name}: not from a ConfigMap")
    if _pg_url_has_password(settings.get("REPROD_PG_URL", "")):
        found.append("a password in REPROD_PG_URL")

    # Secrets: never a value in the pod spec; files of Secret volumes.
    for e in env:
        if e["name"] in SECRET_VARIABLES:
            found.append(f"{e['name']} set in the pod spec")
    # (Flags and variables naming a file hold a path, not a secret.)
    for where, value in [*(("argument", a) for a in args if not a.startswith(FILE_FLAGS)),
                         *((f"variable {k}", v) for k, v in literal.items()
                           if not k.endswith("_FILE"))]:
        value = str(value)
        url = re.search(r"[a-z][a-z0-9+.-]*://\S+", value)
        if (re.search(r"rpd_[0-9a-f]{64}|password|secret|access.key|token=", value, re.I)
                or (url and urlsplit(url.group(0)).password is not None)):
            found.append(f"{where} holds a secret")
    if any(a.startswith("--pg-url") for a in args):
        found.append("--pg-url given as an argument")
    mounts = c.get("volumeMounts", [])
    for name in SECRET_FILES:
        path = literal.get(name, "")
        mount = next((m for m in mounts if path.startswith(m["mountPath"] + "/")), None)
        if mount is None or "secret" not in volumes.get(mount["name"], {}):
            found.append(f"{name}: {path!r} is not a file of a Secret volume")
        elif not mount.get("readOnly"):
            found.append(f"{name}: its Secret is mounted writable")

    # Services: one that spreads clients, one headless (a DNS record per replica).
    services = [o for o in objects if o["kind"] == "Service"
                and _selects(o["spec"].get("selector", {"-": "-"}), labels)
                and any(p.get("targetPort") in ("grpc", 50051) for p in o["spec"]["ports"])]
    if not any(s["spec"].get("clusterIP") == "None" for s in services):
        found.append("no headless Service for the gRPC port")
    if not any(s["spec"].get("clusterIP") != "None" for s in services):
        found.append("no load-balanced Service for the gRPC port")
    if any(s["spec"].get("publishNotReadyAddresses") for s in services):
        found.append("a Service publishes replicas that are not ready")

    # Disruptions: a budget that leaves replicas, a spread over nodes.
    budgets = [o for o in objects if o["kind"] == "PodDisruptionBudget"
               and _selects(o["spec"]["selector"], labels)]
    if not any(0 < b["spec"].get("maxUnavailable", 0) < replicas
               or 0 < b["spec"].get("minAvailable", 0) < replicas for b in budgets):
        found.append("no PodDisruptionBudget keeping some replicas up")
    spread = [t["topologyKey"] for t in pod.get("topologySpreadConstraints", [])]
    anti = pod.get("affinity", {}).get("podAntiAffinity", {})
    anti_keys = [t.get("topologyKey") for t in
                 anti.get("requiredDuringSchedulingIgnoredDuringExecution", [])]
    anti_keys += [t["podAffinityTerm"].get("topologyKey") for t in
                  anti.get("preferredDuringSchedulingIgnoredDuringExecution", [])]
    if "kubernetes.io/hostname" not in spread + anti_keys:
        found.append("no topology spread or anti-affinity over nodes")

    # Egress: the endpoints the ConfigMap names, and DNS for their names.
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    endpoint = urlsplit(settings.get("REPROD_S3_ENDPOINT", ""))
    s3_port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    for what, port, protocol in (("PostgreSQL", _pg_port(settings.get("REPROD_PG_URL", "")), "TCP"),
                                 ("S3", s3_port, "TCP"), ("DNS", 53, "UDP")):
        if not _egress_allows(policies, labels, port, protocol):
            found.append(f"egress to {what} ({protocol} {port}) not allowed")
    return found


def test_scale_out_is_stateless_replicas_on_postgres_s3():
    assert scale_out_findings(_rendered(SCALE_OUT), _help_env_names()) == []


def _mutated(change):
    objects = copy.deepcopy(render_kustomization(SCALE_OUT))
    keyed = _by_key(objects)
    dep = keyed[("Deployment", "reprodd")]
    change(objects, keyed, dep, dep["spec"]["template"]["spec"]["containers"][0])
    return objects


def _set_env(c, name, value):
    c["env"] = [e for e in c["env"] if e["name"] != name] + [{"name": name, "value": value}]


SCALE_OUT_MISTAKES = {
    "replicas 1": lambda o, k, d, c: d["spec"].update(replicas=1),
    "a volume claim": lambda o, k, d, c: d["spec"]["template"]["spec"]["volumes"].append(
        {"name": "data", "persistentVolumeClaim": {"claimName": "data"}}),
    "not postgres+s3": lambda o, k, d, c: c.update(args=["--data-dir=/data"]),
    "REPROD_S3_BUCKET: not from a ConfigMap": lambda o, k, d, c: _set_env(
        c, "REPROD_S3_BUCKET", "reprod"),
    "a password in REPROD_PG_URL": lambda o, k, d, c: k[("ConfigMap", "reprodd-store")][
        "data"].update(REPROD_PG_URL="postgresql://reprod:hunter2@db:5432/reprod"),
    "PGPASSWORD set in the pod spec": lambda o, k, d, c: _set_env(c, "PGPASSWORD", "hunter2"),
    "argument holds a secret": lambda o, k, d, c: c["args"].append(
        "--pg-url=postgresql://reprod:hunter2@db/reprod"),
    "REPROD_S3_CREDENTIALS_FILE": lambda o, k, d, c: _set_env(
        c, "REPROD_S3_CREDENTIALS_FILE", "/tmp/credentials"),
    "no headless Service": lambda o, k, d, c: o.remove(k[("Service", "reprodd-headless")]),
    "no PodDisruptionBudget": lambda o, k, d, c: o.remove(k[("PodDisruptionBudget", "reprodd")]),
    "no topology spread": lambda o, k, d, c: d["spec"]["template"]["spec"].pop(
        "topologySpreadConstraints"),
    "egress to S3 (TCP 7480)": lambda o, k, d, c: k[("ConfigMap", "reprodd-store")][
        "data"].update(REPROD_S3_ENDPOINT="http://rgw.example.internal:7480"),
}


@pytest.mark.parametrize("needle", SCALE_OUT_MISTAKES)
def test_scale_out_checks_catch_mistakes(needle):
    """The checks above can fail: each mistake is named."""
    found = scale_out_findings(_mutated(SCALE_OUT_MISTAKES[needle]), _help_env_names())
    assert any(needle in f for f in found), found


def _manifest_env(container, objects):
    """The container's environment as Kubernetes would set it: literal
    values and ConfigMap keys; resource fields are left out."""
    configmaps = {o["metadata"]["name"]: o.get("data", {}) for o in objects
                  if o["kind"] == "ConfigMap"}
    env = {}
    for e in container["env"]:
        ref = e.get("valueFrom", {}).get("configMapKeyRef")
        if "value" in e:
            env[e["name"]] = e["value"]
        elif ref is not None:
            env[e["name"]] = configmaps[ref["name"]][ref["key"]]
    return env


def test_replicas_start_from_the_scale_out_manifest(tmp_path, postgres_server, ceph_s3):
    """Two reprodd started with the scale-out Deployment's arguments and
    environment (its ConfigMap's schema, connections, bucket, region and
    prefix; its secret files), against a throwaway PostgreSQL and radosgw in
    place of the example endpoints, loopback port 0 for the listeners and
    the mounted files under tmp_path: both answer SERVING over TLS, a tensor
    pushed through one is listed by the other, and both stop cleanly."""
    _need_reprodd()
    import numpy as np
    from reprod_client import Client
    objects = render_kustomization(SCALE_OUT)
    dep = _by_key(objects)[("Deployment", "reprodd")]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    manifest = _manifest_env(c, objects)
    certs = make_tls_certs(tmp_path / "tls")
    token = "rpd_" + os.urandom(32).hex()

    def mounted(name, text):  # a Secret file at its path, under tmp_path
        path = tmp_path / manifest[name].lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return str(path)

    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("REPROD_", "AWS_", "PG"))}
    base.update(manifest)
    base.update(
        REPROD_PG_URL=postgres_server.url, REPROD_S3_ENDPOINT=ceph_s3.endpoint,
        REPROD_LISTEN="127.0.0.1:0", REPROD_HTTP_LISTEN="127.0.0.1:0", REPROD_THREADS="2",
        REPROD_ADMIN_TOKEN_FILE=mounted("REPROD_ADMIN_TOKEN_FILE", token + "\n"),
        REPROD_LISTEN_TLS_CERT=mounted("REPROD_LISTEN_TLS_CERT", certs.server_cert.read_text()),
        REPROD_LISTEN_TLS_KEY=mounted("REPROD_LISTEN_TLS_KEY", certs.server_key.read_text()),
        REPROD_PG_PASSWORD_FILE=mounted("REPROD_PG_PASSWORD_FILE", "not-needed-by-trust-auth\n"),
        REPROD_S3_CREDENTIALS_FILE=mounted(
            "REPROD_S3_CREDENTIALS_FILE",
            f"[default]\naws_access_key_id = {ceph_s3.access_key}\n"
            f"aws_secret_access_key = {ceph_s3.secret_key}\n"))
    assert base["REPROD_S3_REGION"] == ceph_s3.region
    procs, ports = [], []
    try:
        for i in range(2):
            env = dict(base, REPROD_PORT_FILE=str(tmp_path / f"port{i}"))
            procs.append(subprocess.Popen([str(REPRODD), *c["args"]], env=env, cwd=tmp_path,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True))
        for i, proc in enumerate(procs):
            port_file = tmp_path / f"port{i}"
            deadline = time.time() + 60
            while not (port_file.exists() and port_file.read_text().strip()):
                assert proc.poll() is None, proc.communicate()[0]
                assert time.time() < deadline, "reprodd wrote no port file in 60 s"
                time.sleep(0.05)
            ports.append(int(port_file.read_text()))
        creds = grpc.ssl_channel_credentials(root_certificates=certs.ca.read_bytes())
        for port in ports:
            with grpc.secure_channel(f"127.0.0.1:{port}", creds) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        clients = [Client(f"127.0.0.1:{port}", token, tls_ca=str(certs.ca)) for port in ports]
        try:
            run = clients[0].open_run("team/scaled", framework="numpy")
            run.log("forward", {"x": np.arange(12, dtype=np.float32).reshape(3, 4)})
            run.seal()
            seen = {r.name: r for r in clients[1].runs("team/")}
        finally:
            for client in clients:
                client.close()
        assert seen["team/scaled"].state == "sealed" and seen["team/scaled"].tensor_count == 1
    finally:
        for proc in procs:
            proc.terminate()
        outs = [proc.communicate(timeout=60)[0] for proc in procs]
    for proc, out in zip(procs, outs):
        assert proc.returncode == 0, out
        assert "store: postgres+s3" in out and "auth: tokens" in out and "TLS: on" in out, out
