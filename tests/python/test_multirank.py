"""examples/bert_tiny/multirank.py end to end: 2 torch ranks (gloo) and 2
paddle ranks (gloo) train bert_tiny data-parallel into one run per
framework, a real reprodd stores them, reprodctl compare pairs them rank to
rank under multirank_policy.yaml.

Checked against the stored tensors themselves (Client.read_tensor of each
rank, numpy float64), not against the engine's own numbers:
  * every tensor is stored under the rank that logged it, with the
    placement it was logged with (logits: shard(0) of the global batch at
    rank * 4; gradients: replicate / partial);
  * the correct port passes on every rank, with no replica mismatch (the
    all-reduced gradients and the weights are identical across ranks);
  * --bug rank1 (LayerNorm epsilon on rank 1 only): rank 0 passes, rank 1
    fails, exactly the keys whose read-back max |torch - paddle| exceeds
    the policy's bound fail, and the first divergence is rank 1's
    bert.encoder.layer.1.attention.output.LayerNorm forward at step 0;
  * --bug sync (rank 1 keeps its own gradient of one weight): exactly the
    replicated tensors whose read-back bytes differ between the paddle
    ranks are replica mismatches, the torch run has none;
  * the global logits (both ranks' shards merged by the server) have the
    max |d| numpy finds on the concatenated logits exactly, and its mean
    |d| to 1e-12 (with the sync bug, far from passing, too).
Takes 25-50 s on two cores.
"""
import fnmatch
import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

import reprod_client
from conftest import REPRODCTL, ROOT

EXAMPLE = ROOT / "examples" / "bert_tiny"
MULTIRANK = EXAMPLE / "multirank.py"
POLICY = EXAMPLE / "multirank_policy.yaml"
STEPS, BATCH, WORLD = 3, 4, 2
GRADS = ["bert.embeddings.word_embeddings.weight",
         "bert.encoder.layer.0.attention.self.query.weight",
         "bert.encoder.layer.1.output.LayerNorm.weight",
         "classifier.weight"]  # common.BP_GRADS
LAYER_MODULES = 22                   # Embedding / LayerNorm / Linear modules of bert_tiny
PER_RANK = STEPS * (1 + 1 + 2 * len(GRADS) + 2 * LAYER_MODULES) + len(GRADS)
BUGGY_MODULE = "bert.encoder.layer.1.attention.output.LayerNorm"

sys.path.insert(0, str(EXAMPLE))
import common  # noqa: E402  (framework-free: the name mapping)


def multirank(reprodd, workdir, out, bug, suffix, ref=None):
    args = [sys.executable, str(MULTIRANK), "--server", reprodd.address, "--reprodctl",
            str(REPRODCTL), "--workdir", str(workdir), "--suffix", suffix, "--bug", bug,
            "--steps", str(STEPS), "--batch", str(BATCH), "--world", str(WORLD),
            "--out", str(out / bug)]
    if ref:
        args += ["--ref", ref]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"--bug {bug}: exit {proc.returncode}\n{proc.stdout}\n" \
                                 f"{proc.stderr[-6000:]}"
    report = json.loads((out / bug / "report.json").read_text())
    runs = json.loads((out / bug / "runs.json").read_text())
    return proc.stdout, report, runs


@pytest.fixture(scope="module")
def results(reprodd, tmp_path_factory):
    if not REPRODCTL.exists():
        pytest.fail(f"{REPRODCTL} is not built (set REPROD_BIN_DIR)")
    tmp = tmp_path_factory.mktemp("multirank")
    workdir, out = tmp / "work", tmp / "out"
    good = multirank(reprodd, workdir, out, "none", "e2e")
    ref = good[2]["ref"]
    bad = multirank(reprodd, workdir, out, "rank1", "e2e", ref=ref)
    unsynced = multirank(reprodd, workdir, out, "sync", "e2e", ref=ref)
    return {"none": good, "rank1": bad, "sync": unsynced,
            "client": reprod_client.Client(reprodd.address), "workdir": workdir}


def bound(checkpoint, key):
    """The policy's max_abs bound of a (torch-named) key."""
    policy = yaml.safe_load(POLICY.read_text())
    for rule in policy["rules"]:
        if fnmatch.fnmatchcase(f"{checkpoint}/{key}", rule["match"]):
            (check,) = rule["checks"]
            assert check["metric"] == "max_abs"
            return check["max"]
    assert policy["defaults"]["metric"] == "max_abs"
    return policy["defaults"]["max"]


def read_diffs(client, ref, cand):
    """{(rank, checkpoint, torch key, step): max |torch - paddle|} over every
    tensor of the candidate run, read back rank by rank. Capture keys carry
    paddle's module paths, paired through common.TORCH_TO_PADDLE (not the
    policy's rename); everything else is logged under torch's names."""
    torch_modules = {t.key.split("/", 1)[0] for t in client.list_tensors(ref, "layers")}
    to_torch = {common.paddle_name(m): m for m in torch_modules}
    assert len(to_torch) == len(torch_modules) == LAYER_MODULES
    out = {}
    for t in client.list_tensors(cand):
        key = t.key
        if t.checkpoint == "layers":
            module, rest = key.split("/", 1)
            key = f"{to_torch[module]}/{rest}"
        a = client.read_tensor(ref, t.checkpoint, key, t.step, rank=t.rank).astype(np.float64)
        b = client.read_tensor(cand, t.checkpoint, t.key, t.step, rank=t.rank).astype(np.float64)
        assert a.shape == b.shape, (t.rank, t.checkpoint, t.key)
        out[(t.rank, t.checkpoint, key, t.step)] = float(np.abs(a - b).max()) if a.size else 0.0
    return out


# --- the runs as stored (server: ranks and placements) ------------------------

@pytest.mark.requires_torch
@pytest.mark.requires_paddle
def test_stored_tensors_carry_rank_and_placement(results):
    client = results["client"]
    _, _, runs = results["rank1"]
    for run in (runs["ref"], runs["cand"]):
        infos = client.list_tensors(run)
        by_rank = {r: [t for t in infos if t.rank == r] for r in range(WORLD)}
        assert {t.rank for t in infos} == set(range(WORLD)), run
        assert all(len(ts) == PER_RANK for ts in by_rank.values()), \
            {r: len(ts) for r, ts in by_rank.items()}
        for t in infos:
            where = (run, t.rank, t.checkpoint, t.key, t.step)
            if t.checkpoint == "forward":
                assert t.shape == (BATCH, 2), where
                assert t.placement == reprod_client.Shard(0, (WORLD * BATCH, 2),
                                                          (t.rank * BATCH, 0)), where
            elif t.checkpoint in ("grads", "weights"):
                assert t.placement == reprod_client.Replicate(), where
            elif t.checkpoint == "grads_local":
                assert t.placement == reprod_client.Partial(), where
            else:
                assert t.placement is None, where
        # The replicated tensors are bit-identical across the ranks (an
        # all-reduce gives every rank the same sum), the partial ones not.
        for ckpt, same in (("grads", True), ("weights", True), ("grads_local", False)):
            for t in by_rank[0]:
                if t.checkpoint != ckpt:
                    continue
                a = client.read_tensor(run, ckpt, t.key, t.step, rank=0)
                b = client.read_tensor(run, ckpt, t.key, t.step, rank=1)
                assert np.array_equal(a, b) == same, (run, ckpt, t.key, t.step)


@pytest.mark.requires_torch
@pytest.mark.requires_paddle
def test_shards_are_the_global_batch_in_rank_order(results):
    """The ranks' step-0 logits, concatenated in rank order, are the logits
    one process computes on the whole global batch (before any update)."""
    import common_torch
    import torch

    client, runs = results["client"], results["none"][2]
    data = common.load_data(results["workdir"])
    (batch,) = common.train_batches(data, 1, WORLD * BATCH)
    model = common_torch.load_model(results["workdir"])
    with torch.no_grad():
        expected = model(*common_torch.tensors(*batch[:3])).numpy().astype(np.float64)
    for run in (runs["ref"], runs["cand"]):
        pieces = [client.read_tensor(run, "forward", "logits", 0, rank=r) for r in range(WORLD)]
        got = np.concatenate(pieces).astype(np.float64)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6, err_msg=run)
        # The order matters: the ranks' halves swapped are not the batch
        # (the untrained model's logits differ by ~1e-4 between rows).
        swapped = np.concatenate(pieces[::-1]).astype(np.float64)
        assert np.abs(swapped - expected).max() > 1e-5


# --- the verdicts (engine: rank-to-rank pairing, per-rank summary) -----------

def rank_entries(report):
    assert "ranks" in report, "the report has no per-rank summary ('ranks')"
    return {r["rank"]: r for r in report["ranks"]}


@pytest.mark.requires_torch
@pytest.mark.requires_paddle
def test_good_port_passes_on_every_rank(results):
    stdout, report, runs = results["none"]
    assert report["passed"] is True, stdout
    assert report["summary"]["tensors"] == WORLD * PER_RANK
    assert report["summary"]["passed"] == WORLD * PER_RANK
    assert sorted({t["rank"] for t in report["tensors"]}) == list(range(WORLD))
    ranks = rank_entries(report)
    assert sorted(ranks) == list(range(WORLD))
    for r, entry in ranks.items():
        assert (entry["tensors"], entry["passed"], entry["failed"]) == (PER_RANK, PER_RANK, 0)
        assert entry["first_failure"] is None and entry["first_divergence"] is None
        assert f"rank {r}: PASSED ({PER_RANK}/{PER_RANK} pairs passed)" in stdout
    assert report["first_divergence"] is None
    assert report["replica_mismatches"] == []
    # Independently: every pair of every rank is within its bound.
    diffs = read_diffs(results["client"], runs["ref"], runs["cand"])
    assert len(diffs) == WORLD * PER_RANK
    over = {k: d for k, d in diffs.items() if d > bound(k[1], k[2])}
    assert over == {}
    # The bounds leave a margin over the correct port's own differences.
    assert all(d * 3 <= bound(k[1], k[2]) for k, d in diffs.items()), \
        max(diffs.items(), key=lambda kv: kv[1] / bound(kv[0][1], kv[0][2]))


@pytest.mark.requires_torch
@pytest.mark.requires_paddle
def test_rank1_bug_is_reported_on_rank_1(results):
    stdout, report, runs = results["rank1"]
    assert report["passed"] is False, stdout
    diffs = read_diffs(results["client"], runs["ref"], runs["cand"])
    expected_fail = {k for k, d in diffs.items() if d > bound(k[1], k[2])}
    # The oracle first: the bug shows on rank 1 only, at the buggy LayerNorm
    # and downstream of it, at every step.
    assert expected_fail and {k[0] for k in expected_fail} == {1}, expected_fail
    assert (1, "layers", f"{BUGGY_MODULE}/forward/output/0", 0) in expected_fail
    # The report fails exactly those pairs, each on its own rank.
    failed = {(t["rank"], t["checkpoint"], t["key"], t["step"]) for t in report["tensors"]
              if t["status"] not in ("pass", "warn")}
    assert failed == expected_fail
    ranks = rank_entries(report)
    assert ranks[0]["failed"] == 0 and ranks[0]["passed"] == PER_RANK
    assert ranks[0]["first_failure"] is None and ranks[0]["first_divergence"] is None
    assert ranks[1]["failed"] == len(expected_fail)
    assert ranks[1]["first_failure"]["checkpoint"] == "layers"
    fd = report["first_divergence"]
    assert fd is not None
    assert (fd["rank"], fd["module"], fd["direction"], fd["step"]) == \
        (1, BUGGY_MODULE, "forward", 0), fd
    assert fd["key"] == f"{BUGGY_MODULE}/forward/output/0"
    assert ranks[1]["first_divergence"]["module"] == BUGGY_MODULE
    assert ranks[1]["first_divergence"]["rank"] == 1
    # Rank 0's copy of the all-reduced gradients equals rank 1's in the
    # candidate too: the bug is not a replica mismatch.
    assert report["replica_mismatches"] == []
    assert "rank 0: PASSED" in stdout and "rank 1: FAILED" in stdout
    assert f"first divergence: rank 1, {BUGGY_MODULE} (forward, step 0)" in stdout


def replica_oracle(client, run):
    """{(checkpoint, key, step)} of the replicated tensors whose rank-1 bytes
    differ from rank 0's, read back from the run."""
    out = set()
    for t in client.list_tensors(run):
        if t.rank != 1 or t.placement != reprod_client.Replicate():
            continue
        a = client.read_tensor(run, t.checkpoint, t.key, t.step, rank=0)
        b = client.read_tensor(run, t.checkpoint, t.key, t.step, rank=1)
        if a.tobytes() != b.tobytes():
            out.add((t.checkpoint, t.key, t.step))
    return out


@pytest.mark.requires_torch
@pytest.mark.requires_paddle
def test_unsynchronised_gradient_is_a_replica_mismatch(results):
    """--bug sync: paddle's rank 1 all-reduces a copy of classifier.weight's
    gradient and steps with its own: its "replicated" gradient and, in the
    end, its weight differ from rank 0's."""
    stdout, report, runs = results["sync"]
    client = results["client"]
    assert report["passed"] is False, stdout
    assert replica_oracle(client, runs["ref"]) == set()
    expected = replica_oracle(client, runs["cand"])
    assert expected == ({("grads", "classifier.weight", s) for s in range(STEPS)}
                        | {("weights", "classifier.weight", None)})
    mismatches = report["replica_mismatches"]
    assert {(m["checkpoint"], m["key"], m["step"]) for m in mismatches} == expected
    assert all((m["run"], m["rank"], m["against_rank"]) == ("cand", 1, 0) for m in mismatches)
    assert all(m["reason"] for m in mismatches)
    # Step 0 still pairs up on rank 0 (its all-reduce got both shares); rank
    # 1's gradient is its own half, far from torch's average.
    status = {(t["rank"], t["checkpoint"], t["key"], t["step"]): t["status"]
              for t in report["tensors"]}
    assert status[(0, "grads", "classifier.weight", 0)] == "pass"
    assert status[(1, "grads", "classifier.weight", 0)] == "fail"
    assert "replica mismatch in cand: grads/classifier.weight@0 rank 1 vs rank 0" in stdout


# --- the global tensors (engine: shard statistics merged) ---------------------

@pytest.mark.requires_torch
@pytest.mark.requires_paddle
@pytest.mark.parametrize("variant", ["none", "rank1", "sync"])
def test_global_logits_statistics_merge_exactly(results, variant):
    _, report, runs = results[variant]
    client = results["client"]
    assert "global_tensors" in report, "the report has no global_tensors"
    logits = {t["step"]: t for t in report["global_tensors"]
              if (t["checkpoint"], t["key"]) == ("forward", "logits")}
    assert sorted(logits) == list(range(STEPS))
    for step, g in logits.items():
        full = {}
        for run in ("ref", "cand"):
            pieces = [client.read_tensor(runs[run], "forward", "logits", step, rank=r)
                      for r in range(WORLD)]
            full[run] = np.concatenate(pieces, axis=0).astype(np.float64)
        assert full["ref"].shape == (WORLD * BATCH, 2)
        d = np.abs(full["ref"] - full["cand"])
        s = g["stats"]
        assert g["ranks"] == list(range(WORLD))
        assert s["count"] == d.size
        assert s["max_abs"] == float(d.max()), (step, s["max_abs"], float(d.max()))
        assert abs(s["mean_abs"] - float(d.mean())) <= 1e-12, (step, s["mean_abs"], d.mean())
        assert list(s["max_abs_index"]) == list(np.unravel_index(int(d.argmax()), d.shape))
        assert g["status"] == ("pass" if d.max() <= bound("forward", "logits") else "fail")


def test_help_teaches():
    proc = subprocess.run([sys.executable, str(MULTIRANK), "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for text in ("--bug {none,rank1,sync}", "replica mismatch",
                 "Shard(0, global_shape=(B_global, 2)", "Replicate()",
                 "rank 0 opens the run with recreate=True", "--ref", "--no-captures",
                 "multirank_policy.yaml"):
        assert text in proc.stdout, text
    assert "--worker" not in proc.stdout  # internal
