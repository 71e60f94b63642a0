"""The review server's tokens, publishing, signed verdicts and audit log over
real gRPC, driven the way people use them: `reprodd --auth tokens
--admin-token-file`, then `reprodctl token|runs publish|report sign|audit`
and the Python client.

Oracles: the token file's mode and format, exit codes and messages of
reprodctl, the audit records the server lists (who, verb, object, result)
against the calls this test made, run digests recomputed here from the
tensor index (SHA-256 over the documented field encoding), and a run
changed after signing (a re-pushed tensor of an overwrite run) that `audit
verify` must name. Tampering with stored bytes on disk is tested in C++
(server/review_ops_test.cc), where the store can be opened directly.
"""
import hashlib
import json
import os
import re
import stat
import subprocess

import grpc
import numpy as np
import pytest

from conftest import REPRODD, Reprodd, run_reprodctl

import reprod_client
from reprod_client._proto import ingest_pb2, runs_pb2, runs_pb2_grpc, tensor_pb2

class Env:
    pass


def _ctl(env, token, *args):
    return run_reprodctl("--server", env.server.address, "--token", token, *args)


def _create_token(env, *args):
    res = _ctl(env, env.admin, "token", "create", *args)
    assert res.code == 0, res
    token = res.stdout.strip()
    assert re.fullmatch(r"rpd_[0-9a-f]{64}", token), res.stdout
    token_id = re.search(r"token ([0-9a-f]{12}) \(", res.stderr).group(1)
    env.all_tokens.append(token)
    return token, token_id


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = Env()
    e.workdir = tmp_path_factory.mktemp("audit-server")
    e.admin_file = e.workdir / "admin.token"
    e.server = Reprodd(e.workdir, store="rocksdb", data_dir=e.workdir / "data", log_level="info",
                       extra_args=["--auth", "tokens", "--admin-token-file", e.admin_file])
    e.admin = e.admin_file.read_text().strip()
    e.all_tokens = [e.admin]
    e.judge, _ = _create_token(e, "--role", "judge", "--label", "jury-ana")
    e.sub42, _ = _create_token(e, "--role", "submitter", "--scope", "team42",
                               "--label", "alice-team42")
    e.sub7, _ = _create_token(e, "--role", "submitter", "--scope", "team7", "--label", "bob-team7")
    # Runs: a reference published by the judge, and team42's candidate
    # (overwrite allowed, left open: the test changes it after signing).
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    with reprod_client.Client(e.server.address, token=e.admin) as c:
        with c.open_run("upstream/bert", framework="torch") as run:
            run.log("forward", {"logits": x, "loss": np.float32(0.5)})
    with reprod_client.Client(e.server.address, token=e.sub42) as c:
        run = c.open_run("team42/bert", framework="paddle", overwrite=True)
        run.log("forward", {"logits": x + np.float32(1e-3), "loss": np.float32(0.5)})
        run.close()  # flushed, left open
    yield e
    e.server.stop()


def _audit(env, *args):
    res = _ctl(env, env.admin, "audit", "ls", "--format", "json", *args)
    assert res.code == 0, res
    return json.loads(res.stdout)


def _field(text):
    data = text.encode()
    return b"%d:%s;" % (len(data), data)


def _run_digest(env, run):
    """RunDigest (server/auth/audit_log.h) recomputed from the tensor index."""
    with reprod_client.Client(env.server.address, token=env.admin) as c:
        tensors = sorted(c.list_tensors(run),
                         key=lambda t: (t.checkpoint, t.key, t.step is not None, t.step or 0))
    out = _field("reprod-run-digest-v1") + _field(str(len(tensors)))
    for t in tensors:
        out += (_field(t.checkpoint) + _field(t.key) +
                _field("-" if t.step is None else str(t.step)) + _field(t.dtype) +
                _field(",".join(str(d) for d in t.shape)) + _field("%08x" % t.crc32c))
    return hashlib.sha256(out).hexdigest()


def test_admin_token_file_is_created_private_and_reused(env, tmp_path):
    mode = stat.S_IMODE(os.stat(env.admin_file).st_mode)
    assert mode == 0o600, oct(mode)
    assert re.fullmatch(r"rpd_[0-9a-f]{64}", env.admin)
    listed = _ctl(env, env.admin, "token", "ls", "--format", "json")
    assert listed.code == 0, listed
    labels = {t["label"]: t for t in json.loads(listed.stdout)}
    assert labels[f"admin ({env.admin_file})"]["role"] == "admin"
    # A file holding a token the store does not know: registered as admin.
    own = "rpd_" + "ab" * 32
    token_file = tmp_path / "own.token"
    token_file.write_text(own + "\n")
    server = Reprodd(tmp_path, extra_args=["--auth", "tokens", "--admin-token-file", token_file])
    try:
        res = run_reprodctl("--server", server.address, "--token", own, "token", "ls")
        assert res.code == 0 and f"admin ({token_file})" in res.stdout, res
        assert token_file.read_text() == own + "\n"  # not rewritten
    finally:
        server.stop()
    # A malformed file stops the server with a message naming it.
    bad = tmp_path / "bad.token"
    bad.write_text("hello")
    res = subprocess.run([str(REPRODD), "--store", "memory", "--listen", "127.0.0.1:0",
                          "--http-listen", "off", "--auth", "tokens", "--admin-token-file", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and str(bad) in res.stderr + res.stdout, res


def test_token_create_ls_revoke_over_the_wire(env):
    token, token_id = _create_token(env, "--role", "submitter", "--scope", "team42",
                                    "--label", "short-lived-ci", "--expires", "1d")
    assert _ctl(env, token, "runs", "ls").code == 0
    listed = _ctl(env, env.admin, "token", "ls")
    assert listed.code == 0 and token_id in listed.stdout and "short-lived-ci" in listed.stdout
    for t in env.all_tokens:
        assert t not in listed.stdout and t[4:] not in listed.stdout
    revoked = _ctl(env, env.admin, "token", "revoke", token_id)
    assert revoked.code == 0 and "short-lived-ci" in revoked.stdout, revoked
    # At once: the next call with it is refused.
    after = _ctl(env, token, "runs", "ls")
    assert after.code == 2 and "revoked" in after.stderr, after
    # Only admins manage tokens.
    for who in (env.judge, env.sub42):
        res = _ctl(env, who, "token", "create", "--role", "judge", "--label", "x")
        assert res.code == 2 and "not an admin" in res.stderr, res
        assert res.stdout == ""
    bad = _ctl(env, env.admin, "token", "create", "--role", "submitter", "--label", "no-scope")
    assert bad.code == 2 and "scope" in bad.stderr, bad
    events = _audit(env, "--run", "short-lived-ci")
    assert [e["verb"] for e in events] == ["token-revoke", "token-create"]
    assert events[1]["details"]["id"] == token_id and events[1]["label"].startswith("admin (")


def test_publish_and_sign_by_a_judge_only(env):
    # Submitters can neither publish nor sign (exit 2 naming the rule).
    res = _ctl(env, env.sub42, "runs", "publish", "upstream/bert")
    assert res.code == 2 and "not a judge" in res.stderr, res
    pub = _ctl(env, env.judge, "runs", "publish", "upstream/bert")
    assert pub.code == 0 and "published upstream/bert" in pub.stdout, pub
    shown = _ctl(env, env.sub42, "runs", "show", "upstream/bert")  # now visible to team42
    assert shown.code == 0 and re.search(r"reference:\s+yes", shown.stdout), shown
    assert _ctl(env, env.sub7, "runs", "show", "team42/bert").code == 2

    with reprod_client.Client(env.server.address, token=env.sub42) as c:
        report = c.compare("upstream/bert", "team42/bert")
    env.report_id = report.id
    assert not report.passed
    refused = _ctl(env, env.sub42, "report", "sign", report.id)
    assert refused.code == 2 and "not a judge" in refused.stderr, refused
    signed = _ctl(env, env.judge, "report", "sign", report.id)
    assert signed.code == 0, signed
    ref_digest, cand_digest = _run_digest(env, "upstream/bert"), _run_digest(env, "team42/bert")
    assert f"signed by jury-ana (judge) at " in signed.stdout
    assert f"ref digest {ref_digest}, cand digest {cand_digest}" in signed.stdout, signed

    got = _ctl(env, env.sub42, "report", "get", report.id)
    assert got.code == 1, got  # the verdict failed
    assert re.search(r"^signed by jury-ana \(judge\) at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d; "
                     rf"ref digest {ref_digest}, cand digest {cand_digest}$", got.stdout, re.M), got
    with reprod_client.Client(env.server.address, token=env.judge) as c:
        sigs = c.get_report(report.id).signatures
        again = c.sign_report(report.id)
        assert c.set_reference("upstream/bert", True).reference  # idempotent
        assert c.get_run("upstream/bert").reference
    assert len(sigs) == 1 and len(again.signatures) == 2
    assert sigs[0]["signer_label"] == "jury-ana" and sigs[0]["signer_role"] == "judge"
    assert sigs[0]["ref_run_digest"] == ref_digest and sigs[0]["policy_hash_of"] == "spec"
    assert again.signatures[1]["chain_head"] != sigs[0]["chain_head"]

    events = _audit(env, "--run", report.id)
    verbs = [(e["verb"], e["label"], e["result"]) for e in events]
    assert verbs == [("sign", "jury-ana", "ok"), ("sign", "jury-ana", "ok"),
                     ("sign", "alice-team42", "PERMISSION_DENIED")], verbs
    publishes = [(e["verb"], e["label"], e["result"]) for e in _audit(env, "--run", "upstream/bert")
                 if e["verb"] == "publish"]
    assert publishes == [("publish", "jury-ana", "ok"), ("publish", "jury-ana", "ok"),
                         ("publish", "alice-team42", "PERMISSION_DENIED")], publishes


def test_audit_lists_every_mutation_with_its_author(env):
    events = _audit(env, "--run", "team42/bert")
    by_verb = {}
    for e in events:
        by_verb.setdefault(e["verb"], []).append(e)
    assert by_verb["create"][-1]["label"] == "alice-team42"
    push = by_verb["push"][-1]
    assert push["label"] == "alice-team42" and push["result"] == "ok"
    assert push["details"]["tensors"] == "2" and push["details"]["stored"] == "2", push
    # Text listing: newest first, labels shown; judges and submitters may not read it.
    text = _ctl(env, env.admin, "audit", "ls", "--limit", "5")
    assert text.code == 0 and text.stdout.splitlines()[0].split()[:3] == ["SEQ", "TIME", "WHO"]
    assert len(text.stdout.splitlines()) == 6
    for who in (env.judge, env.sub42):
        res = _ctl(env, who, "audit", "ls")
        assert res.code == 2 and "not an admin" in res.stderr, res
    # Unauthenticated refusals are logged, not audited.
    before = len(_audit(env, "--limit", "10000"))
    assert run_reprodctl("--server", env.server.address, "runs", "rm", "team42/bert").code == 2
    assert len(_audit(env, "--limit", "10000")) == before
    # An authenticated refusal on a mutating route is.
    assert _ctl(env, env.sub7, "runs", "seal", "team42/bert").code == 2
    last = _audit(env, "--limit", "1")[0]
    assert (last["verb"], last["object"], last["label"], last["result"]) == \
        ("seal", "team42/bert", "bob-team7", "PERMISSION_DENIED")


def test_a_failed_push_is_recorded_with_its_error(env):
    # A raw Ingest stream into the sealed reference (the clients check the
    # state before streaming): the server refuses its BeginTensor.
    channel = grpc.insecure_channel(env.server.address)
    ingest = channel.stream_stream(
        "/reprod.v1.IngestService/Ingest", request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=ingest_pb2.IngestResponse.FromString)
    req = ingest_pb2.IngestRequest()
    req.begin.run = "upstream/bert"
    req.begin.header.address.checkpoint, req.begin.header.address.key = "forward", "late"
    req.begin.header.dtype = tensor_pb2.DTYPE_FLOAT32
    req.begin.header.shape.append(0)
    with pytest.raises(grpc.RpcError) as err:
        list(ingest(iter([req]), metadata=(("authorization", f"Bearer {env.admin}"),),
                    timeout=30))
    channel.close()
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value
    last = _audit(env, "--run", "upstream/bert", "--limit", "1")[0]
    assert (last["verb"], last["result"], last["label"]) == \
        ("push", "FAILED_PRECONDITION", f"admin ({env.admin_file})"), last
    assert last["details"]["tensors"] == "0"


def test_thousand_record_chain_verifies_over_the_wire(env):
    channel = grpc.insecure_channel(env.server.address)
    runs = runs_pb2_grpc.RunServiceStub(channel)
    md = (("authorization", f"Bearer {env.sub42}"),)
    for i in range(1000):
        runs.CreateRun(runs_pb2.CreateRunRequest(run=runs_pb2.Run(name=f"team42/r{i % 10}"),
                                                 exist_ok=True), metadata=md, timeout=30)
    channel.close()
    res = _ctl(env, env.admin, "audit", "verify")
    assert res.code == 0, res
    count = int(re.search(r"audit log OK: (\d+) records", res.stdout).group(1))
    assert count >= 1000, res.stdout


def test_a_run_changed_after_signing_fails_verify(env):
    assert _ctl(env, env.admin, "audit", "verify").code == 0
    # team42/bert allows overwrite: replacing a tensor changes its digest.
    with reprod_client.Client(env.server.address, token=env.sub42) as c:
        run = c.open_run("team42/bert", framework="paddle", overwrite=True)
        run.log("forward", {"loss": np.float32(0.75)})
        run.close()
    res = _ctl(env, env.admin, "audit", "verify")
    assert res.code == 1, res
    assert "team42/bert" in res.stdout and env.report_id in res.stdout, res
    assert "changed after signing" in res.stdout and "first bad record" in res.stdout, res


def test_tokens_never_in_the_log(env):
    log = (env.workdir / "reprodd.log").read_text()
    assert "admin token" in log and "jury-ana" in log, log[-2000:]
    for token in env.all_tokens:
        assert token not in log and token[4:] not in log
