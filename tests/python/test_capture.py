"""reprod_client.capture with the real torch and the real paddle, into a
real reprodd.

Each framework runs capture_scenarios.py in its own process (torch and
paddle are never imported together). The oracle there computes every
module's output by calling the submodules directly and every output's
gradient with the framework's autograd.grad on a separate forward pass, no
hook involved; here the tensors read back from the server must equal them
bit for bit, the keys must be exactly the expected set (nothing more:
nothing is logged after the capture ends), and gradients must arrive in
backward order.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import reprod_client
from reprod_client import capture as capture_fn

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "capture_scenarios.py"

FRAMEWORKS = [pytest.param("torch", marks=pytest.mark.requires_torch),
              pytest.param("paddle", marks=pytest.mark.requires_paddle)]


def run_scenario(framework, reprodd, run, scenario, tmp_path):
    out = tmp_path / f"{framework}-{scenario}"
    out.mkdir()
    proc = subprocess.run([sys.executable, str(SCRIPT), framework, reprodd.address, run,
                           scenario, str(out)], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"{framework} {scenario}:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    expected = dict(np.load(out / "expected.npz"))
    meta = json.loads((out / "meta.json").read_text())
    return expected, meta


def stored(client, run):
    """{(step, key): TensorInfo} and the keys in arrival order."""
    infos = client.list_tensors(run)
    return {(t.step, t.key): t for t in infos}, [(t.step, t.key) for t in infos]


def expected_by_address(expected):
    return {(int(k.split("|", 1)[0]), k.split("|", 1)[1]): v for k, v in expected.items()}


def assert_values_equal(client, run, checkpoint, want):
    for (step, key), value in want.items():
        got = client.read_tensor(run, checkpoint, key, step)
        assert got.dtype == np.float32, (step, key, got.dtype)
        assert got.shape == value.shape, (step, key, got.shape, value.shape)
        assert np.array_equal(got, value), \
            f"{key}@{step}: max |diff| {np.abs(got - value).max()}"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_full_capture_keys_values_gradients_and_no_side_effects(framework, reprodd, run_ns,
                                                                tmp_path):
    run = f"{run_ns[:60]}/{framework}-full"
    expected, meta = run_scenario(framework, reprodd, run, "full", tmp_path)
    want = expected_by_address(expected)
    client = reprod_client.Client(reprodd.address)
    got, order = stored(client, run)

    assert meta["modules"] == ["[root]", "block", "block.lin", "block.norm", "pair", "pair.a",
                               "pair.b", "head"]
    # Exactly the expected keys: steps 0 and 1 complete, step 2 forward only
    # (its backward ran after the capture ended), nothing from after exit.
    assert set(got) == set(want), (sorted(set(got) - set(want)), sorted(set(want) - set(got)))
    step0 = {k for s, k in want if s == 0}
    assert {k for s, k in want if s == 1} == step0  # the call counts restarted
    assert "block[1]/forward/output/0" in step0 and "block[2]/forward/output/0" not in step0
    assert {"pair/forward/output/0", "pair/forward/output/1/0", "pair/forward/output/1/1",
            "[root]/forward/output/logits", "[root]/forward/output/aux",
            "[root]/forward/output/sum"} <= step0
    assert not any("note" in k for k in step0)  # non-tensor leaves are skipped
    assert all(got[a].checkpoint == "layers" for a in got)
    assert_values_equal(client, run, "layers", want)

    # Arrival order: each module's inputs right before its outputs, children
    # before parents, and the gradients in backward order.
    pos = {a: i for i, a in enumerate(order)}
    for s in (0, 1, 2):
        assert pos[(s, "block.lin/forward/input/0")] + 1 == pos[(s, "block.lin/forward/output/0")]
        assert pos[(s, "block.lin/forward/output/0")] < pos[(s, "block/forward/output/0")] \
            < pos[(s, "block[1]/forward/output/0")] < pos[(s, "[root]/forward/output/logits")]
    grads = [f"{m}/backward/grad_output/0" for m in
             ("head", "pair.a", "block.norm[1]", "block.lin[1]", "block.norm", "block.lin")]
    for s in (0, 1):
        assert [pos[(s, g)] for g in grads] == sorted(pos[(s, g)] for g in grads)
        assert pos[(s, "[root]/forward/output/sum")] < pos[(s, grads[0])]

    assert meta["loss_unchanged"] and meta["grads_unchanged"], meta
    assert meta["hooks_inside"] == 8 and meta["hooks_after_exit"] == 0, meta
    if framework == "torch":
        assert meta["tensor_hooks_after_exit"] == 0, meta


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_include_exclude_every_n_steps_forward_only(framework, reprodd, run_ns, tmp_path):
    run = f"{run_ns[:60]}/{framework}-select"
    expected, meta = run_scenario(framework, reprodd, run, "select", tmp_path)
    want = expected_by_address(expected)
    client = reprod_client.Client(reprodd.address)
    got, _ = stored(client, run)
    assert meta["modules"] == ["block", "block.lin"]  # exclude wins over include
    assert set(got) == set(want) and {s for s, _ in got} == {5, 7}, sorted(got)
    assert len(got) == 8
    assert_values_equal(client, run, "layers", want)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_late_backward_logs_at_its_step_and_stale_hooks_are_dropped(framework, reprodd, run_ns,
                                                                    tmp_path):
    run = f"{run_ns[:60]}/{framework}-late"
    expected, meta = run_scenario(framework, reprodd, run, "late_backward", tmp_path)
    want = expected_by_address(expected)
    client = reprod_client.Client(reprodd.address)
    got, _ = stored(client, run)
    assert set(got) == set(want), (sorted(set(got) - set(want)), sorted(set(want) - set(got)))
    assert any(s == 0 and "/backward/" in k for s, k in got)
    assert not any(s == 1 and "/backward/" in k for s, k in got)
    assert_values_equal(client, run, "layers", want)
    if framework == "torch":
        # logits is hooked by head and by [root]
        assert meta["kept_tensor_hooks"] == 2 and meta["stale_tensor_hooks"] == 0, meta


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_backward_only_into_another_checkpoint(framework, reprodd, run_ns, tmp_path):
    run = f"{run_ns[:60]}/{framework}-bwd"
    expected, _ = run_scenario(framework, reprodd, run, "backward_only", tmp_path)
    want = expected_by_address(expected)
    client = reprod_client.Client(reprodd.address)
    got, _ = stored(client, run)
    assert set(got) == set(want) and all("/backward/grad_output/" in k for _, k in got)
    assert len(got) == 15
    assert all(got[a].checkpoint == "grads" for a in got)
    assert_values_equal(client, run, "grads", want)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_parameter_gradients_of_each_modules_own_parameters(framework, reprodd, run_ns, tmp_path):
    run = f"{run_ns[:60]}/{framework}-params"
    expected, _ = run_scenario(framework, reprodd, run, "params", tmp_path)
    want = expected_by_address(expected)
    client = reprod_client.Client(reprodd.address)
    got, order = stored(client, run)
    assert set(got) == set(want), (sorted(set(got) - set(want)), sorted(set(want) - set(got)))
    params = {k for s, k in want if s == 0 and "/param_grad/" in k}
    assert params == {f"{m}/backward/param_grad/{p}" for m in ("block.lin", "block.norm",
                                                               "pair.a", "pair.b", "head")
                      for p in ("weight", "bias")}
    assert {s for s, _ in got} == {0, 2}  # every_n_steps=2: step 1 logs nothing
    assert_values_equal(client, run, "layers", want)
    # A parameter's gradient arrives during the backward pass, after the
    # gradient of the output it produced.
    pos = {a: i for i, a in enumerate(order)}
    assert pos[(0, "head/backward/grad_output/0")] < pos[(0, "head/backward/param_grad/weight")] \
        < pos[(0, "block.lin/backward/grad_output/0")]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_stats_mode_logs_four_float64_statistics_per_tensor(framework, reprodd, run_ns, tmp_path):
    run = f"{run_ns[:60]}/{framework}-stats"
    expected, meta = run_scenario(framework, reprodd, run, "stats", tmp_path)
    assert meta["stats"] is True
    want = expected_by_address(expected)
    client = reprod_client.Client(reprodd.address)
    got, _ = stored(client, run)
    # The same keys as a full capture (inputs, outputs, gradients) ...
    assert set(got) == set(want) and len(got) == 15 + 15 + 11
    for (step, key), value in want.items():
        # ... each holding [mean, mean |x|, rms, max |x|] as numpy computes them.
        stats = client.read_tensor(run, "layers", key, step)
        assert stats.dtype == np.float64 and stats.shape == (4,), (key, stats)
        np.testing.assert_allclose(stats, value, rtol=1e-9, atol=1e-300, err_msg=key)
        assert got[(step, key)].byte_length == 32 and got[(step, key)].dtype == "float64"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_errors_name_the_module_and_key(framework, reprodd, run_ns, tmp_path):
    run = f"{run_ns[:60]}/{framework}-errors"
    _, meta = run_scenario(framework, reprodd, run, "errors", tmp_path)
    errors = meta["errors"]
    assert "torch.nn.Module or a paddle.nn.Layer" in errors["not_a_model"]
    assert "builtins.object" in errors["not_a_model"]
    assert "nothing.*" in errors["selects_nothing"] and "block.lin" in errors["selects_nothing"]
    assert "'[root]'" in errors["bad_key"] and "bad key" in errors["bad_key"], errors


class _FakeRun:
    def log(self, *a, **k):  # pragma: no cover - never reached
        raise AssertionError


def test_argument_checks_without_a_framework():
    run = _FakeRun()
    with pytest.raises(TypeError, match="torch.nn.Module or a paddle.nn.Layer"):
        capture_fn(object(), run)
    fake = type("Module", (), {"__module__": "torch.nn.modules.module"})
    model = type("Net", (fake,), {})()
    with pytest.raises(ValueError, match="what must name"):
        reprod_client.Capture(model, run, what=("sideways",))
    with pytest.raises(ValueError, match="every_n_steps"):
        reprod_client.Capture(model, run, every_n_steps=0)
    with pytest.raises(ValueError, match="invalid checkpoint"):
        reprod_client.Capture(model, run, checkpoint="a/b")
