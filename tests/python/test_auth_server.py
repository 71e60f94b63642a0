"""`reprodd --auth tokens` over real gRPC: every call is checked against the
access table of docs/acl.md (server/auth/acl.cc).

Tokens are issued with `reprodd token create` against the data dir while the
server is stopped, as an operator would. The matrix below is the documented
table (docs/acl.md, "Access kinds") written out by hand for one
representative RPC of each access kind and every kind of caller; a
submitter of another namespace must not read, list, compare, overwrite,
seal or delete a run; no token string may appear in the server's log.
"""
import importlib
import pkgutil
import re
import socket
import subprocess
import time

import grpc
import numpy as np
import pytest

from conftest import REPRODD, ROOT, Reprodd, run_reprodctl, start_until_listening

import reprod_client
from reprod_client._proto import admin_pb2, admin_pb2_grpc, compare_pb2, compare_pb2_grpc, \
    ingest_pb2, review_pb2, review_pb2_grpc, runs_pb2, runs_pb2_grpc, shm_pb2

UNAUTH = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED
OK = grpc.StatusCode.OK
NOT_FOUND = grpc.StatusCode.NOT_FOUND


def _token(data_dir, *args):
    """Issues a token; returns (token, id)."""
    res = subprocess.run([str(REPRODD), "token", "create", *args, "--data-dir", str(data_dir)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    token = res.stdout.strip()
    assert re.fullmatch(r"rpd_[0-9a-f]{64}", token), res.stdout
    token_id = re.search(r"token ([0-9a-f]+) \(", res.stderr).group(1)
    return token, token_id


class Env:
    pass


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = Env()
    data = tmp_path_factory.mktemp("auth-data")
    e.tokens = {
        "admin": _token(data, "--role", "admin", "--label", "root-admin")[0],
        "judge": _token(data, "--role", "judge", "--label", "the-judge")[0],
        "sub42": _token(data, "--role", "submitter", "--scope", "team42",
                        "--label", "alice-team42")[0],
        "sub7": _token(data, "--role", "submitter", "--scope", "team7/*",
                       "--label", "bob-team7")[0],
        "expired": _token(data, "--role", "admin", "--label", "short-lived",
                          "--expires-in", "1s")[0],
    }
    revoked, revoked_id = _token(data, "--role", "admin", "--label", "gone")
    res = subprocess.run([str(REPRODD), "token", "revoke", revoked_id, "--data-dir", str(data)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    e.tokens["revoked"] = revoked
    # Unknown (well-formed, never issued) and malformed tokens.
    e.tokens["unknown"] = "rpd_" + "0" * 64
    e.tokens["malformed"] = "not-a-token"
    e.workdir = tmp_path_factory.mktemp("auth-server")
    e.server = Reprodd(e.workdir, store="rocksdb", data_dir=data,
                       extra_args=["--auth", "tokens", "--allow-shm"])
    e.channel = grpc.insecure_channel(e.server.address)
    e.runs = runs_pb2_grpc.RunServiceStub(e.channel)
    e.compare = compare_pb2_grpc.CompareServiceStub(e.channel)
    e.reports = compare_pb2_grpc.ReportServiceStub(e.channel)
    e.tokens_svc = review_pb2_grpc.TokenServiceStub(e.channel)
    e.audit = review_pb2_grpc.AuditServiceStub(e.channel)
    e.admin = admin_pb2_grpc.AdminServiceStub(e.channel)

    # Seed: two runs of team42 and one of team7, each written by its
    # submitter through the Python client, and one report per namespace.
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    for who, name in (("sub42", "team42/a"), ("sub42", "team42/b"), ("sub7", "team7/x")):
        with reprod_client.Client(e.server.address, token=e.tokens[who]) as client:
            with client.open_run(name, framework="torch") as run:
                run.log("forward", {"out": x})
    e.report42 = e.compare.Compare(compare_pb2.CompareRequest(ref="team42/a", cand="team42/b"),
                                   metadata=_md(e.tokens["sub42"]), timeout=60).id
    e.report7 = e.compare.Compare(compare_pb2.CompareRequest(ref="team7/x", cand="team7/x"),
                                  metadata=_md(e.tokens["sub7"]), timeout=60).id
    time.sleep(1.2)  # "expired" (1 s) is past its expiry from here on
    yield e
    e.channel.close()
    e.server.stop()


def _md(token):
    return (("authorization", f"Bearer {token}"),) if token else None


def _code(call, request, token, **kw):
    try:
        call(request, metadata=_md(token), timeout=30, **kw)
        return OK
    except grpc.RpcError as err:
        return err.code()


# Callers that never get past authentication.
NO_PRINCIPAL = (None, "unknown", "malformed", "expired", "revoked")

# docs/acl.md's access kinds for one RPC each: the expected code per caller.
# write-run uses CreateRun(exist_ok) on an existing run (changes nothing);
# admin uses DeleteRun of a run that does not exist (NOT_FOUND once allowed).
MATRIX = {
    "authenticated": {"sub42": OK, "sub7": OK, "judge": OK, "admin": OK},
    "read-run": {"sub42": OK, "sub7": DENIED, "judge": OK, "admin": OK},
    "write-run": {"sub42": OK, "sub7": DENIED, "judge": DENIED, "admin": OK},
    "compare-runs": {"sub42": OK, "sub7": DENIED, "judge": OK, "admin": OK},
    "admin": {"sub42": DENIED, "sub7": DENIED, "judge": DENIED, "admin": NOT_FOUND},
    "judge": {"sub42": DENIED, "sub7": DENIED, "judge": NOT_FOUND, "admin": NOT_FOUND},
}


def _call(e, kind):
    if kind == "authenticated":
        return e.runs.ListRuns, runs_pb2.ListRunsRequest()
    if kind == "read-run":
        return e.runs.GetRun, runs_pb2.GetRunRequest(name="team42/a")
    if kind == "write-run":
        return e.runs.CreateRun, runs_pb2.CreateRunRequest(
            run=runs_pb2.Run(name="team42/a", framework="torch"), exist_ok=True)
    if kind == "compare-runs":
        return e.compare.Compare, compare_pb2.CompareRequest(ref="team42/a", cand="team42/b")
    if kind == "admin":
        return e.runs.DeleteRun, runs_pb2.DeleteRunRequest(name="team42/never-made")
    if kind == "judge":  # publishing a run that does not exist: NOT_FOUND once allowed
        return e.runs.SetReference, runs_pb2.SetReferenceRequest(name="team42/never-made",
                                                                 reference=True)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", sorted(MATRIX))
@pytest.mark.parametrize("caller", list(NO_PRINCIPAL) + ["sub42", "sub7", "judge", "admin"])
def test_acl_matrix(env, kind, caller):
    call, request = _call(env, kind)
    token = env.tokens[caller] if caller else None
    expected = UNAUTH if caller in NO_PRINCIPAL else MATRIX[kind][caller]
    assert _code(call, request, token) == expected


def _every_rpc(e):
    """Each reprod.v1 RPC with a request naming team42/a (streams drained)."""
    drain = lambda call: lambda req, **kw: list(call(req, **kw))
    read = runs_pb2.ReadTensorRequest(run="team42/a")
    read.address.checkpoint, read.address.key = "forward", "out"
    begin = ingest_pb2.IngestRequest()
    begin.begin.run = "team42/a"
    ingest = e.channel.stream_stream(
        "/reprod.v1.IngestService/Ingest", request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=ingest_pb2.IngestResponse.FromString)
    shm = e.channel.stream_stream(
        "/reprod.v1.SharedMemoryService/Session",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=shm_pb2.ShmResponse.FromString)
    shm_tensor = shm_pb2.ShmRequest()
    shm_tensor.tensor.begin.run = "team42/a"
    pair = dict(ref="team42/a", cand="team42/b")
    return {
        "CreateRun": (e.runs.CreateRun, runs_pb2.CreateRunRequest(
            run=runs_pb2.Run(name="team42/a"), exist_ok=True)),
        "GetRun": (e.runs.GetRun, runs_pb2.GetRunRequest(name="team42/a")),
        "ListRuns": (e.runs.ListRuns, runs_pb2.ListRunsRequest()),
        "SealRun": (e.runs.SealRun, runs_pb2.SealRunRequest(name="team42/a")),
        "DeleteRun": (e.runs.DeleteRun, runs_pb2.DeleteRunRequest(name="team42/a")),
        "ListTensors": (e.runs.ListTensors, runs_pb2.ListTensorsRequest(run="team42/a")),
        "ReadTensor": (drain(e.runs.ReadTensor), read),
        "Ingest": (lambda req, **kw: list(ingest(iter([req]), **kw)), begin),
        "Session": (lambda req, **kw: list(shm(iter([req]), **kw)), shm_tensor),
        "Compare": (e.compare.Compare, compare_pb2.CompareRequest(**pair)),
        "Watch": (drain(e.compare.Watch), compare_pb2.WatchRequest(**pair)),
        "GetReport": (e.reports.GetReport, compare_pb2.GetReportRequest(id=e.report42)),
        "ListReports": (e.reports.ListReports, compare_pb2.ListReportsRequest()),
        "SetReference": (e.runs.SetReference, runs_pb2.SetReferenceRequest(name="team42/a")),
        "SignReport": (e.reports.SignReport, compare_pb2.SignReportRequest(id=e.report42)),
        "CreateToken": (e.tokens_svc.CreateToken, review_pb2.CreateTokenRequest(
            role="judge", label="never-made")),
        "ListTokens": (e.tokens_svc.ListTokens, review_pb2.ListTokensRequest()),
        "RevokeToken": (e.tokens_svc.RevokeToken, review_pb2.RevokeTokenRequest(id="ffffffffffff")),
        "ListEvents": (e.audit.ListEvents, review_pb2.ListEventsRequest()),
        "VerifyAudit": (e.audit.VerifyAudit, review_pb2.VerifyAuditRequest()),
        "Backup": (e.admin.Backup, admin_pb2.BackupRequest(name="never-made")),
        "Compact": (e.admin.Compact, admin_pb2.CompactRequest()),
    }


def test_every_rpc_goes_through_the_gate(env):
    rpcs = _every_rpc(env)
    # Every method of the proto services is here.
    modules = [importlib.import_module(f"reprod_client._proto.{m.name}")
               for m in pkgutil.iter_modules(reprod_client._proto.__path__)
               if m.name.endswith("_pb2")]
    assert admin_pb2 in modules and len(modules) >= 6, modules
    methods = {m.name for f in modules
               for svc in f.DESCRIPTOR.services_by_name.values() for m in svc.methods}
    assert methods == set(rpcs)
    for name, (call, request) in rpcs.items():
        assert _code(call, request, None) == UNAUTH, name
        assert _code(call, request, env.tokens["revoked"]) == UNAUTH, name
        # A judge may read and compare but never write or delete, nor manage
        # tokens or read the audit log.
        if name in ("CreateRun", "SealRun", "DeleteRun", "Ingest", "Session", "CreateToken",
                    "ListTokens", "RevokeToken", "ListEvents", "VerifyAudit", "Backup", "Compact"):
            assert _code(call, request, env.tokens["judge"]) == DENIED, name
        # Submitters never publish, sign, manage tokens or read the audit log.
        if name in ("SetReference", "SignReport", "CreateToken", "ListTokens", "RevokeToken",
                    "ListEvents", "VerifyAudit"):
            assert _code(call, request, env.tokens["sub42"]) == DENIED, name


def test_health_is_public(env):
    check = env.channel.unary_unary("/grpc.health.v1.Health/Check",
                                    request_serializer=lambda b: b,
                                    response_deserializer=lambda b: b)
    # An empty HealthCheckRequest (service ""); SERVING is field 1 = 1.
    assert check(b"", timeout=10) == b"\x08\x01"


def test_reflection_is_public_as_the_table_says(env):
    # The table says public (gRPC serves reflection itself; it tells what the
    # published protos tell): without any token it lists the services.
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase)
    assert "public" in _acl_row("/grpc.reflection.v1alpha.ServerReflection/"
                                "ServerReflectionInfo")
    services = set(ProtoReflectionDescriptorDatabase(env.channel).get_services())
    assert {"reprod.v1.RunService", "reprod.v1.TokenService"} <= services, services


def _acl_row(route):
    doc = (ROOT / "docs" / "acl.md").read_text()
    rows = [line for line in doc.splitlines() if f"`{route}`" in line]
    assert len(rows) == 1, (route, rows)
    return rows[0]


def test_refusals_say_why_without_the_token(env):
    with pytest.raises(grpc.RpcError) as no_token:
        env.runs.GetRun(runs_pb2.GetRunRequest(name="team42/a"), timeout=10)
    assert "Bearer" in no_token.value.details()
    with pytest.raises(grpc.RpcError) as denied:
        env.runs.GetRun(runs_pb2.GetRunRequest(name="team42/a"),
                        metadata=_md(env.tokens["sub7"]), timeout=10)
    assert denied.value.code() == DENIED
    details = denied.value.details()
    assert "bob-team7" in details and "team42/a" in details, details
    for token in env.tokens.values():
        assert token not in details


def test_other_namespace_is_out_of_reach(env):
    sub7 = env.tokens["sub7"]
    r = env.runs
    assert _code(r.GetRun, runs_pb2.GetRunRequest(name="team42/a"), sub7) == DENIED
    assert _code(r.ListTensors, runs_pb2.ListTensorsRequest(run="team42/a"), sub7) == DENIED
    read = runs_pb2.ReadTensorRequest(run="team42/a")
    read.address.checkpoint, read.address.key = "forward", "out"
    assert _code(lambda req, **kw: list(r.ReadTensor(req, **kw)), read, sub7) == DENIED
    assert _code(env.compare.Compare,
                 compare_pb2.CompareRequest(ref="team42/a", cand="team7/x"), sub7) == DENIED
    assert _code(env.reports.GetReport, compare_pb2.GetReportRequest(id=env.report42),
                 sub7) == DENIED
    assert _code(r.CreateRun, runs_pb2.CreateRunRequest(
        run=runs_pb2.Run(name="team42/a"), exist_ok=True), sub7) == DENIED
    assert _code(r.SealRun, runs_pb2.SealRunRequest(name="team42/a", abort=True), sub7) == DENIED
    assert _code(r.DeleteRun, runs_pb2.DeleteRunRequest(name="team42/a"), sub7) == DENIED
    # Ingest: each BeginTensor's run is checked before anything else.
    begin = ingest_pb2.IngestRequest()
    begin.begin.run = "team42/a"
    ingest = lambda req, **kw: list(env.channel.stream_stream(
        "/reprod.v1.IngestService/Ingest", request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=ingest_pb2.IngestResponse.FromString)(iter([req]), **kw))
    assert _code(ingest, begin, sub7) == DENIED
    assert _code(ingest, begin, None) == UNAUTH
    # The owner passes the gate (and fails on the missing header instead).
    assert _code(ingest, begin, env.tokens["sub42"]) == grpc.StatusCode.INVALID_ARGUMENT
    # Still there, untouched.
    run = r.GetRun(runs_pb2.GetRunRequest(name="team42/a"), metadata=_md(env.tokens["admin"]))
    assert run.state == runs_pb2.RUN_STATE_SEALED and run.tensor_count == 1


def _listed(env, who):
    runs = env.runs.ListRuns(runs_pb2.ListRunsRequest(), metadata=_md(env.tokens[who]))
    reports = env.reports.ListReports(compare_pb2.ListReportsRequest(),
                                      metadata=_md(env.tokens[who]))
    return sorted(r.name for r in runs.runs), {r.id: (r.ref, r.cand) for r in reports.reports}


def test_listings_are_filtered_for_submitters(env):
    runs, reports = _listed(env, "admin")
    assert runs == ["team42/a", "team42/b", "team7/x"]
    assert env.report42 in reports and env.report7 in reports
    assert _listed(env, "judge") == (runs, reports)
    # No reference runs here: a submitter sees the reports of its own runs.
    def of(ns):
        return {i: rc for i, rc in reports.items() if all(n.startswith(ns) for n in rc)}
    assert _listed(env, "sub42") == (["team42/a", "team42/b"], of("team42/"))
    assert _listed(env, "sub7") == (["team7/x"], of("team7/"))
    assert len(of("team42/")) + len(of("team7/")) == len(reports)


def test_owner_is_the_creating_tokens_label(env):
    admin = _md(env.tokens["admin"])
    assert env.runs.GetRun(runs_pb2.GetRunRequest(name="team42/b"), metadata=admin).owner == \
        "alice-team42"
    assert env.runs.GetRun(runs_pb2.GetRunRequest(name="team7/x"), metadata=admin).owner == \
        "bob-team7"


def test_tokens_never_in_the_log(env):
    # Make sure refusals were logged (by label) before grepping for tokens.
    _code(env.runs.GetRun, runs_pb2.GetRunRequest(name="team42/a"), env.tokens["sub7"])
    _code(env.runs.GetRun, runs_pb2.GetRunRequest(name="team42/a"), env.tokens["revoked"])
    deadline = time.time() + 5
    log = ""
    while time.time() < deadline and "bob-team7" not in log:
        log = (env.workdir / "reprodd.log").read_text()
        time.sleep(0.05)
    assert "refused /reprod.v1.RunService/GetRun" in log and "bob-team7" in log, log[-2000:]
    for token in env.tokens.values():
        assert token not in log
        assert token[4:] not in log  # not even the hex part


def test_reprodctl_sends_its_token(env, monkeypatch):
    server = ("--server", env.server.address)
    monkeypatch.delenv("REPROD_TOKEN", raising=False)
    shown = run_reprodctl(*server, "--token", env.tokens["sub42"], "runs", "show", "team42/a")
    assert shown.code == 0, shown
    assert re.search(r"owner:\s+alice-team42", shown.stdout), shown
    monkeypatch.setenv("REPROD_TOKEN", env.tokens["judge"])
    listed = run_reprodctl(*server, "runs", "ls")
    assert listed.code == 0 and "team7/x" in listed.stdout, listed
    # Refusals: exit 2 with the server's reason and a hint, no token echoed.
    monkeypatch.setenv("REPROD_TOKEN", env.tokens["sub7"])
    denied = run_reprodctl(*server, "runs", "show", "team42/a")
    assert denied.code == 2 and "bob-team7" in denied.stderr and "docs/acl.md" in denied.stderr, \
        denied
    monkeypatch.delenv("REPROD_TOKEN")
    missing = run_reprodctl(*server, "runs", "ls")
    assert missing.code == 2 and "REPROD_TOKEN" in missing.stderr, missing
    expired = run_reprodctl(*server, "--token", env.tokens["expired"], "runs", "ls")
    assert expired.code == 2 and "expired" in expired.stderr, expired
    for result in (denied, missing, expired):
        for token in env.tokens.values():
            assert token not in result.stderr + result.stdout


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_non_loopback_listen_needs_tokens_or_insecure(tmp_path):
    args = [str(REPRODD), "--store", "memory", "--http-listen", "off",
            "--listen", f"0.0.0.0:{_free_port()}"]
    res = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "--auth tokens" in res.stderr and "--insecure" in res.stderr, res.stderr
    port_file = tmp_path / "port"
    code, out, listened = start_until_listening(
        args[:-1] + ["0.0.0.0:0", "--auth", "tokens", "--port-file", str(port_file)], port_file)
    assert listened and code == 0, out
    assert "--insecure" not in out and "auth: tokens" in out, out
