"""What real paper-reproduction submissions hold, checked end to end.

- Paddle before 2.5 returns every loss and metric as shape (1,), torch as ();
  reprod_log passes such pairs, and so must we (with a note), unless the
  policy says `shapes: strict`.
- A comparison in which nothing could be compared never passes: files, a
  submission folder and two runs on a server.
- A file pushed without --step pairs with a run logged at one step.

The oracle is the incumbent itself: files are written by the real
reprod_log.ReprodLogger and its own compute_diff gives the expected value.
"""
import json
import re
import zipfile

import numpy as np
import pytest
import reprod_log
from reprod_log.compare import compute_diff

from conftest import REPRODCTL, Reprodd, run_reprodctl

POINTS = ("forward", "metric", "loss", "bp_align", "train_align")


def save_with_reprod_log(path, values):
    logger = reprod_log.ReprodLogger()
    for key, value in values.items():
        logger.add(key, value)
    logger.save(str(path))


def text_values(stdout):
    """The `value: X` of each check line of a text report."""
    return [float(v) for v in re.findall(r"check passed: \w+, value: (\S+)", stdout)]


def torch_loss():
    return np.array(2.302585, dtype=np.float32)             # torch: 0-d


def paddle_loss():
    return np.array([2.3025851], dtype=np.float32)          # paddle < 2.5: (1,)


def test_scalar_loss_against_shape_1_loss_passes_with_reprod_logs_value(tmp_path):
    ref, cand = tmp_path / "loss_torch.npy", tmp_path / "loss_paddle.npy"
    save_with_reprod_log(ref, {"loss": torch_loss()})
    save_with_reprod_log(cand, {"loss": paddle_loss()})
    theirs = compute_diff({"loss": torch_loss()}, {"loss": paddle_loss()})
    expected = float(theirs["loss"]["mean"])
    assert 0 < expected < 1e-6

    res = run_reprodctl("compare", ref, cand)
    assert res.code == 0, res
    assert text_values(res.stdout) == [pytest.approx(expected, rel=1e-6)]
    assert "diff check passed" in res.stdout

    res = run_reprodctl("compare", ref, cand, "--format", "json")
    assert res.code == 0, res
    t = res.json()["tensors"][0]
    assert t["status"] == "pass"
    assert t["shape_ref"] == [] and t["shape_cand"] == [1]
    assert t["stats"]["mean_abs"] == pytest.approx(expected, rel=1e-6)
    assert "shapes () and (1,) differ only in size-1 dimensions" in t["notes"]

    strict = run_reprodctl("compare", ref, cand, "--shapes", "strict", "--format", "json")
    assert strict.code == 1, strict
    t = strict.json()["tensors"][0]
    assert t["status"] == "shape_mismatch"
    assert t["reason"] == "shape mismatch: ref () vs cand (1,) (policy has shapes: strict)"

    policy = tmp_path / "strict.yaml"
    policy.write_text("shapes: strict\n")
    assert run_reprodctl("compare", ref, cand, "--policy", policy).code == 1


def write_submission(folder, loss_ref, loss_cand, acc_ref, acc_cand):
    folder.mkdir()
    rng = np.random.default_rng(7)
    logits = rng.standard_normal((4, 2)).astype(np.float32)
    for side, loss, acc in (("torch", loss_ref, acc_ref), ("paddle", loss_cand, acc_cand)):
        save_with_reprod_log(folder / f"forward_{side}.npy", {"logits": logits})
        save_with_reprod_log(folder / f"metric_{side}.npy", {"acc": acc})
        save_with_reprod_log(folder / f"loss_{side}.npy", {"loss": loss})
        save_with_reprod_log(folder / f"bp_align_{side}.npy",
                             {f"loss_{i}": loss for i in range(3)})
        save_with_reprod_log(folder / f"train_align_{side}.npy", {"acc": acc})


def review_rows(stdout):
    rows = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] in POINTS:
            rows[parts[0]] = parts[2]
    return rows


def test_review_passes_scalar_loss_and_metric_points(tmp_path):
    sub = tmp_path / "log_reprod"
    write_submission(sub, torch_loss(), paddle_loss(),
                     np.array(0.875), np.array([0.875]))
    res = run_reprodctl("review", sub, "--out-dir", tmp_path / "logs")
    assert res.code == 0, res
    assert review_rows(res.stdout) == {p: "PASS" for p in POINTS}
    assert "Review PASSED" in res.stdout

    strict = run_reprodctl("review", sub, "--out-dir", tmp_path / "logs", "--shapes", "strict")
    assert strict.code == 1, strict
    rows = review_rows(strict.stdout)
    for point in ("metric", "loss", "bp_align", "train_align"):
        assert rows[point] == "FAIL", strict
    assert rows["forward"] == "PASS"


# --- nothing compared is never a pass --------------------------------------


def zip_without_arrays(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("README.txt", "not a tensor")
        z.writestr("notes/config.json", "{}")


def test_two_archives_with_nothing_readable_exit_2_naming_each_member(tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    zip_without_arrays(a)
    zip_without_arrays(b)
    res = run_reprodctl("compare", a, b)
    assert res.code == 2, res
    assert "nothing to compare" in res.stderr
    for path in (a, b):
        for member in ("README.txt", "notes/config.json"):
            assert f"{path}: {member}: " in res.stderr, res


def test_two_empty_dicts_exit_2_and_disjoint_keys_exit_1(tmp_path):
    a, b = tmp_path / "forward_torch.npy", tmp_path / "forward_paddle.npy"
    np.save(a, {}, allow_pickle=True)
    np.save(b, {}, allow_pickle=True)
    res = run_reprodctl("compare", a, b, "--format", "json")
    assert res.code == 2, res
    assert "nothing to compare" in res.stderr
    report = res.json()
    assert report["passed"] is False
    assert report["summary"]["compared"] == 0

    save_with_reprod_log(a, {"x": np.ones(3, np.float32)})
    save_with_reprod_log(b, {"y": np.ones(3, np.float32)})
    res = run_reprodctl("compare", a, b, "--format", "json")
    assert res.code == 1, res
    report = res.json()
    assert report["passed"] is False
    assert report["summary"]["missing_in_ref"] == 1
    assert report["summary"]["missing_in_cand"] == 1
    assert report["reasons"][0].startswith("nothing compared:")


def test_folders_with_nothing_to_compare_exit_2(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = run_reprodctl("review", empty)
    assert res.code == 2, res
    assert "nothing to compare" in res.stderr

    hollow = tmp_path / "hollow"
    hollow.mkdir()
    for point in POINTS:
        for side in ("torch", "paddle"):
            np.save(hollow / f"{point}_{side}.npy", {}, allow_pickle=True)
    res = run_reprodctl("review", hollow)
    assert res.code == 2, res
    assert "nothing to compare" in res.stderr
    assert "holds no tensor in either run" in res.stdout


def test_empty_runs_on_the_server_are_a_failed_report_and_exit_2(tmp_path):
    from reprod_client import Client

    server = Reprodd(tmp_path)
    try:
        client = Client(server.address)
        for name in ("empty/torch", "empty/paddle"):
            run = client.open_run(name, framework="torch")
            run.seal()
        res = run_reprodctl("--server", server.address, "compare", "empty/torch",
                            "empty/paddle", "--format", "json")
        assert res.code == 2, res
        assert "nothing to compare" in res.stderr
        report = res.json()
        assert report["passed"] is False
        assert report["reasons"] == ["nothing to compare: neither side holds a tensor"]
        client.close()
    finally:
        server.stop()


def test_file_without_step_pairs_with_a_run_logged_at_step_0(tmp_path):
    server = Reprodd(tmp_path)
    try:
        f = tmp_path / "loss_torch.npy"
        save_with_reprod_log(f, {"loss": torch_loss()})
        g = tmp_path / "loss_paddle.npy"
        save_with_reprod_log(g, {"loss": paddle_loss()})
        remote = ["--server", server.address]
        assert run_reprodctl(*remote, "push", f, "--run", "s/torch").code == 0
        assert run_reprodctl(*remote, "push", g, "--run", "s/paddle", "--step", "0").code == 0
        res = run_reprodctl(*remote, "compare", "s/torch", "s/paddle", "--format", "json")
        assert res.code == 0, res
        (t,) = res.json()["tensors"]
        assert t["step"] == 0
        assert "paired by key: ref has no step, cand has step 0" in t["notes"]

        # Two steps on one side: no guess, but the message says which steps exist.
        assert run_reprodctl(*remote, "push", g, "--run", "s/paddle", "--step", "1").code == 0
        res = run_reprodctl(*remote, "compare", "s/torch", "s/paddle", "--format", "json")
        assert res.code == 1, res
        reasons = {(t["status"], t["step"]): t["reason"] for t in res.json()["tensors"]}
        assert reasons[("missing_in_ref", 0)] == "missing in ref (ref has it without a step)"
        assert reasons[("missing_in_cand", None)] == \
            "missing in cand (cand has it at steps 0, 1)"
    finally:
        server.stop()


# --- uint16 leaves holding bfloat16 bits (Paddle's bf16 view) --------------


def bf16_bits(values):
    """bfloat16 bit patterns of float32 values exactly representable in bf16."""
    f = np.asarray(values, dtype=np.float32)
    return (f.view(np.uint32) >> 16).astype(np.uint16)


def test_as_bf16_reads_a_uint16_view_as_bfloat16(tmp_path):
    values = np.array([1.0, 2.0, -0.5, 0.15625, 2.0**126, -0.0], dtype=np.float32)
    ref, cand = tmp_path / "forward_torch.npy", tmp_path / "forward_paddle.npy"
    save_with_reprod_log(ref, {"w": values, "ids": bf16_bits(values).astype(np.int64)})
    save_with_reprod_log(cand, {"w": bf16_bits(values), "ids": bf16_bits(values)})
    # The bits are exact: bfloat16 -> float32 is the top half of the word.
    assert np.array_equal(
        (bf16_bits(values).astype(np.uint32) << 16).view(np.float32), values)

    plain = run_reprodctl("compare", ref, cand, "--format", "json")
    assert plain.code == 1, plain  # uint16 integers against floats
    by_key = {t["key"]: t for t in plain.json()["tensors"]}
    assert by_key["w"]["dtype_cand"] == "uint16"
    assert by_key["w"]["status"] == "fail"
    assert by_key["ids"]["status"] == "pass"  # same integers, int64 vs uint16

    res = run_reprodctl("compare", ref, cand, "--as-bf16", "forward/w", "--format", "json")
    assert res.code == 0, res
    by_key = {t["key"]: t for t in res.json()["tensors"]}
    w = by_key["w"]
    assert w["dtype_cand"] == "bfloat16"
    assert w["stats"]["max_abs"] == 0.0
    assert "cand uint16 read as bfloat16 (as_bf16)" in w["notes"]
    assert by_key["ids"]["dtype_cand"] == "uint16"  # not listed: integers

    policy = tmp_path / "bf16.yaml"
    policy.write_text('as_bf16: ["*/w"]\n')
    assert run_reprodctl("compare", ref, cand, "--policy", policy).code == 0
