"""reprodctl's remote commands against a real reprodd on loopback.

One reprodd per module (ephemeral port, temporary RocksDB data dir); every
test uses its own run namespace. Checks exit codes (0 pass, 1 fail, 2 bad
input, 3 unreachable), what the commands print, and the numbers in reports
and watch lines against numpy float64 computations.
"""
import contextlib
import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import layouts
from conftest import BIN_DIR, REPRODCTL, ROOT, Result, stop_process

REPRODD = BIN_DIR / "server" / "reprodd"
TESTDATA = ROOT / "formats" / "testdata"


def _wait_for_port(port_file, proc, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"reprodd exited with {proc.returncode} before listening")
        try:
            text = Path(port_file).read_text().strip()
            if text:
                return int(text)
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    raise RuntimeError("reprodd did not write its port file in time")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not REPRODD.exists():
        pytest.fail(f"reprodd not built at {REPRODD} (set REPROD_BIN_DIR)")
    base = tmp_path_factory.mktemp("reprodd")
    port_file = base / "port"
    log = open(base / "reprodd.log", "w")
    proc = subprocess.Popen(
        [str(REPRODD), "--listen", "127.0.0.1:0", "--data-dir", str(base / "data"),
         "--http-listen", "off", "--port-file", str(port_file), "--log-level", "warn"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        port = _wait_for_port(port_file, proc)
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(proc)
        log.close()


@pytest.fixture
def remote(server):
    """Runs reprodctl against the module's server."""

    def run(*args, timeout=120, env=None):
        proc = subprocess.run([str(REPRODCTL), "--server", server, *map(str, args)],
                              capture_output=True, text=True, timeout=timeout, env=env)
        return Result(proc)

    return run


@pytest.fixture
def ns(request):
    """A run namespace of this test's own."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", request.node.name)[:100]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mean_abs(ref, cand):
    return float(np.mean(np.abs(cand.astype(np.float64) - ref.astype(np.float64))))


def max_abs(ref, cand):
    return float(np.max(np.abs(cand.astype(np.float64) - ref.astype(np.float64))))


def report_id(stderr):
    m = re.search(r"report (rpt-[0-9a-f]+)", stderr)
    assert m, stderr
    return m.group(1)


def push_pair(tmp_path, remote, ns, ref, cand, stem="forward"):
    """Writes reprod_log files for both sides and pushes them into
    NS/torch and NS/paddle; returns the run names."""
    (tmp_path / "ref").mkdir(exist_ok=True)
    (tmp_path / "cand").mkdir(exist_ok=True)
    rp = tmp_path / "ref" / f"{stem}_torch.npy"
    cp = tmp_path / "cand" / f"{stem}_paddle.npy"
    layouts.save_reprod_log(rp, ref)
    layouts.save_reprod_log(cp, cand)
    for path, run in ((rp, f"{ns}/torch"), (cp, f"{ns}/paddle")):
        res = remote("push", path, "--run", run)
        assert res.code == 0, res
    return f"{ns}/torch", f"{ns}/paddle"


# --- push, runs ---------------------------------------------------------


def test_push_creates_run_and_is_idempotent(tmp_path, remote, ns):
    rng = np.random.default_rng(1)
    fwd = {"logits": rng.standard_normal((2, 3)).astype(np.float32),
           "enc": {"w": np.arange(6, dtype=np.int64).reshape(3, 2)}}
    loss = {"loss": np.float32(0.25) * np.ones((), np.float32)}
    layouts.save_reprod_log(tmp_path / "forward_paddle.npy", fwd)
    layouts.save_reprod_log(tmp_path / "loss_paddle.npy", loss)
    files = [tmp_path / "forward_paddle.npy", tmp_path / "loss_paddle.npy"]
    run = f"{ns}/paddle"

    res = remote("push", *files, "--run", run)
    assert res.code == 0, res
    assert f"pushed 3 tensors" in res.stdout and "3 stored" in res.stdout, res
    assert len(res.stdout.strip().splitlines()) == 1

    again = remote("push", *files, "--run", run)
    assert again.code == 0, again
    assert "3 already present" in again.stdout and "0 stored" in again.stdout, again

    ls = remote("runs", "ls", f"{ns}/", "--format", "json")
    assert ls.code == 0, ls
    runs = ls.json()
    assert [r["name"] for r in runs] == [run]
    total = sum(a.nbytes for a in (fwd["logits"], fwd["enc"]["w"], loss["loss"]))
    assert runs[0]["tensor_count"] == 3 and runs[0]["total_bytes"] == total
    assert runs[0]["state"] == "open" and runs[0]["framework"] == "paddle"

    text_ls = remote("runs", "ls", f"{ns}/")
    assert text_ls.code == 0 and run in text_ls.stdout and "open" in text_ls.stdout, text_ls

    show = remote("runs", "show", run, "--format", "json")
    assert show.code == 0, show
    tensors = {(t["checkpoint"], t["key"]): t for t in show.json()["tensors"]}
    assert set(tensors) == {("forward", "logits"), ("forward", "enc/w"), ("loss", "loss")}
    assert tensors[("forward", "logits")]["dtype"] == "float32"
    assert tensors[("forward", "logits")]["shape"] == [2, 3]
    assert tensors[("forward", "logits")]["bytes"] == 24
    assert tensors[("forward", "enc/w")]["dtype"] == "int64"
    assert tensors[("loss", "loss")]["shape"] == []
    assert tensors[("loss", "loss")]["step"] is None

    text = remote("runs", "show", run)
    assert text.code == 0, text
    assert "enc/w" in text.stdout and "(3, 2)" in text.stdout and "float32" in text.stdout


def test_push_checkpoint_and_step_flags(tmp_path, remote, ns):
    path = tmp_path / "grads.npz"
    layouts.save_npz(path, {"a": np.ones(4, np.float32), "b": {"c": np.zeros(2, np.float64)}},
                     compressed=False)
    for step in (1, 2):
        res = remote("push", path, "--run", f"{ns}/p", "--checkpoint", "bp_align", "--step", step)
        assert res.code == 0, res
    show = remote("runs", "show", f"{ns}/p", "--checkpoint", "bp_align", "--format", "json")
    assert show.code == 0, show
    got = sorted((t["checkpoint"], t["key"], t["step"]) for t in show.json()["tensors"])
    assert got == [("bp_align", k, s) for k in ("a", "b/c") for s in (1, 2)]


@pytest.mark.parametrize("name", ["savez.npz", "savez_compressed.npz", "dtypes.safetensors",
                                  "np2_save_nested.npy", "np1_save_dict.npy",
                                  "paddle_state_p4.pdparams", "np2_dtypes_p5.pkl"])
def test_push_every_format(remote, ns, name):
    res = remote("push", TESTDATA / name, "--run", f"{ns}/r")
    assert res.code == 0, res
    offline = subprocess.run([str(REPRODCTL), "inspect", TESTDATA / name, "--format", "json"],
                             capture_output=True, text=True)
    assert offline.returncode == 0, offline.stderr
    keys = {t["key"] for t in json.loads(offline.stdout)["tensors"]}
    show = remote("runs", "show", f"{ns}/r", "--format", "json")
    assert show.code == 0, show
    assert {t["key"] for t in show.json()["tensors"]} == keys
    assert all(t["checkpoint"] == Path(name).stem for t in show.json()["tensors"])


def test_push_large_tensor_streams_in_chunks(tmp_path, remote, ns):
    big = np.arange(24 * 1024 * 1024 // 8, dtype=np.float64)  # 24 MiB
    path = tmp_path / "big_paddle.npy"
    np.save(path, big)
    res = remote("push", path, "--run", f"{ns}/big")
    assert res.code == 0, res
    assert "24.0 MiB" in res.stdout, res
    show = remote("runs", "show", f"{ns}/big", "--format", "json")
    (t,) = show.json()["tensors"]
    assert t["bytes"] == big.nbytes and t["shape"] == [big.size]


def test_push_conflicting_bytes_is_refused(tmp_path, remote, ns):
    path = tmp_path / "forward_paddle.npy"
    layouts.save_reprod_log(path, {"x": np.zeros(3, np.float32)})
    assert remote("push", path, "--run", f"{ns}/r").code == 0
    layouts.save_reprod_log(path, {"x": np.ones(3, np.float32)})
    res = remote("push", path, "--run", f"{ns}/r")
    assert res.code == 2, res
    assert "forward/x" in res.stderr and "--overwrite" in res.stderr, res


def test_push_overwrite_run_replaces(tmp_path, remote, ns):
    path = tmp_path / "forward_paddle.npy"
    layouts.save_reprod_log(path, {"x": np.zeros(3, np.float32)})
    assert remote("push", path, "--run", f"{ns}/r", "--overwrite").code == 0
    layouts.save_reprod_log(path, {"x": np.ones(3, np.float32)})
    res = remote("push", path, "--run", f"{ns}/r")
    assert res.code == 0, res
    assert "1 replaced" in res.stdout, res


def test_push_bad_input(tmp_path, remote, ns):
    good = tmp_path / "forward_paddle.npy"
    layouts.save_reprod_log(good, {"x": np.zeros(3, np.float32)})
    res = remote("push", tmp_path / "missing.npy", "--run", f"{ns}/r")
    assert res.code == 2 and "missing.npy" in res.stderr, res
    res = remote("push", good, "--run", "no-namespace")
    assert res.code == 2 and "no-namespace" in res.stderr, res
    res = remote("push", good, "--run", f"{ns}/r", "--checkpoint", "bad name")
    assert res.code == 2, res
    res = remote("push", good, "--run", f"{ns}/absent", "--no-create")
    assert res.code == 2 and f"{ns}/absent" in res.stderr, res
    bad_key = tmp_path / "k_paddle.npy"
    layouts.save_reprod_log(bad_key, {"has space": np.zeros(1, np.float32)})
    res = remote("push", bad_key, "--run", f"{ns}/r")
    assert res.code == 2 and "has space" in res.stderr, res
    # Two files that map to the same checkpoint and key.
    twin = tmp_path / "forward_torch.npy"
    layouts.save_reprod_log(twin, {"x": np.zeros(3, np.float32)})
    res = remote("push", good, twin, "--run", f"{ns}/twins")
    assert res.code == 2 and "own run" in res.stderr, res


def test_seal_abort_rm(tmp_path, remote, ns):
    path = tmp_path / "forward_paddle.npy"
    layouts.save_reprod_log(path, {"x": np.zeros(3, np.float32)})
    assert remote("push", path, "--run", f"{ns}/a").code == 0
    res = remote("runs", "seal", f"{ns}/a")
    assert res.code == 0 and "sealed" in res.stdout, res
    assert remote("runs", "seal", f"{ns}/a").code == 2  # not open any more
    res = remote("push", path, "--run", f"{ns}/a")
    assert res.code == 2 and "sealed" in res.stderr, res
    assert remote("push", path, "--run", f"{ns}/b", "--seal").code == 0
    show = remote("runs", "show", f"{ns}/b", "--format", "json")
    assert show.json()["state"] == "sealed"

    assert remote("push", path, "--run", f"{ns}/c").code == 0
    res = remote("runs", "seal", f"{ns}/c", "--abort")
    assert res.code == 0 and "aborted" in res.stdout, res
    assert remote("runs", "show", f"{ns}/c", "--format", "json").json()["state"] == "aborted"

    res = remote("runs", "rm", f"{ns}/a")
    assert res.code == 0 and "deleted" in res.stdout and "1 tensors" in res.stdout, res
    res = remote("runs", "show", f"{ns}/a")
    assert res.code == 2 and f"{ns}/a" in res.stderr, res
    assert remote("runs", "rm", f"{ns}/a").code == 2


# --- compare, watch, reports ------------------------------------------------


def test_compare_runs_pass_and_numbers(tmp_path, remote, ns):
    rng = np.random.default_rng(7)
    ref = {"logits": rng.standard_normal((4, 8)).astype(np.float32)}
    cand = {"logits": ref["logits"] + np.float32(1e-8)}
    r, c = push_pair(tmp_path, remote, ns, ref, cand)
    res = remote("compare", r, c, "--format", "json")
    assert res.code == 0, res
    rid = report_id(res.stderr)
    report = res.json()
    assert report["passed"] is True
    assert report["ref"] == r and report["cand"] == c
    (t,) = report["tensors"]
    assert (t["checkpoint"], t["key"], t["status"]) == ("forward", "logits", "pass")
    assert t["stats"]["mean_abs"] == pytest.approx(mean_abs(ref["logits"], cand["logits"]), rel=1e-12)
    assert t["stats"]["max_abs"] == pytest.approx(max_abs(ref["logits"], cand["logits"]), rel=1e-12)

    text = remote("compare", r, c)
    assert text.code == 0, text
    assert "diff check passed" in text.stdout, text

    # The stored report comes back the same.
    got = remote("report", "get", rid, "--format", "json")
    assert got.code == 0, got
    assert got.json()["tensors"] == report["tensors"]
    listed = remote("report", "ls", "--run", c, "--format", "json")
    assert listed.code == 0, listed
    assert rid in [x["id"] for x in listed.json()]
    assert all(x["passed"] for x in listed.json())
    text_ls = remote("report", "ls", "--run", c)
    assert rid in text_ls.stdout and "PASS" in text_ls.stdout, text_ls


def test_compare_runs_fail_with_formats_and_output(tmp_path, remote, ns):
    ref = {"w": np.zeros((3, 3), np.float32), "b": np.zeros(3, np.float32)}
    cand = {"w": np.full((3, 3), 1e-3, np.float32), "b": np.zeros(3, np.float32)}
    r, c = push_pair(tmp_path, remote, ns, ref, cand)
    res = remote("compare", r, c, "--format", "json")
    assert res.code == 1, res
    report = res.json()
    assert report["passed"] is False
    assert report["first_failure"]["key"] == "w"
    statuses = {t["key"]: t["status"] for t in report["tensors"]}
    assert statuses == {"w": "fail", "b": "pass"}
    w = next(t for t in report["tensors"] if t["key"] == "w")
    assert w["stats"]["mean_abs"] == pytest.approx(mean_abs(ref["w"], cand["w"]), rel=1e-12)

    out = tmp_path / "r.xml"
    res = remote("compare", r, c, "--format", "junit", "--output", out)
    assert res.code == 1, res
    assert out.read_text().lstrip().startswith("<?xml") and res.stdout == ""
    res = remote("compare", r, c, "--format", "markdown")
    assert res.code == 1 and "|" in res.stdout, res
    # A looser threshold passes; the shortcut flags travel as a policy document.
    res = remote("compare", r, c, "--threshold", "1e-2")
    assert res.code == 0, res
    res = remote("compare", r, c, "--atol", "1e-2", "--rtol", "0")
    assert res.code == 0, res
    # --checkpoint limits the comparison.
    res = remote("compare", r, c, "--checkpoint", "forward", "--format", "json")
    assert res.code == 1 and res.json()["summary"]["tensors"] == 2, res


def test_compare_runs_bad_input(tmp_path, remote, ns):
    ref = {"x": np.zeros(2, np.float32)}
    r, c = push_pair(tmp_path, remote, ns, ref, ref)
    res = remote("compare", r, f"{ns}/nope")
    assert res.code == 2 and f"{ns}/nope" in res.stderr, res
    res = remote("compare", r, c, "--preset", "no-such-preset")
    assert res.code == 2, res
    policy = tmp_path / "p.yaml"
    policy.write_text("defaults: {metric: bogus, max: 1}\n")
    res = remote("compare", r, c, "--policy", policy)
    assert res.code == 2 and "bogus" in res.stderr, res
    policy.write_text("defaults: {metric: max_abs, max: 1.0e-9}\n")
    res = remote("compare", r, c, "--policy", policy)
    assert res.code == 0, res
    assert remote("report", "get", "rpt-00000000deadbeef").code == 2


def test_watch_sealed_runs(tmp_path, remote, ns):
    rng = np.random.default_rng(3)
    ref = {"a": rng.standard_normal(10).astype(np.float32),
           "b": rng.standard_normal(10).astype(np.float32)}
    cand = {"a": ref["a"], "b": ref["b"] + np.float32(0.5)}
    r, c = push_pair(tmp_path, remote, ns, ref, cand)
    for run in (r, c):
        assert remote("runs", "seal", run).code == 0
    res = remote("watch", r, c, timeout=60)
    assert res.code == 1, res
    lines = {m.group(2): (m.group(1), float(m.group(3)))
             for m in re.finditer(r"^(PASS|FAIL|WARN)  forward/(\w+)  mean_abs (\S+)",
                                  res.stdout, re.M)}
    assert lines["a"] == ("PASS", 0.0)
    assert lines["b"][0] == "FAIL"
    assert lines["b"][1] == pytest.approx(mean_abs(ref["b"], cand["b"]), rel=1e-12)
    assert "diff check failed" in res.stdout, res
    report_id(res.stderr)

    res = remote("watch", r, c, "--format", "json", timeout=60)
    assert res.code == 1, res
    assert res.json()["passed"] is False  # stdout is the report alone
    assert "FAIL  forward/b" in res.stderr


@contextlib.contextmanager
def background_watch(server, *args):
    """`reprodctl watch ARGS` running in the background (text pipes); killed
    if still running when the block ends."""
    proc = subprocess.Popen([str(REPRODCTL), "--server", server, "watch", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_watch_live_runs(tmp_path, remote, server, ns):
    """Verdicts arrive while both runs are open; the final report once both
    are sealed."""
    rng = np.random.default_rng(5)
    fwd = {"x": rng.standard_normal(5).astype(np.float32)}
    r, c = push_pair(tmp_path, remote, ns, fwd, fwd)
    with background_watch(server, r, c) as proc:
        first = proc.stdout.readline()
        assert first.startswith("PASS  forward/x  mean_abs 0.0"), first
        # A new checkpoint arrives on both sides while the watch runs.
        loss_ref = {"loss": np.array([2.0], np.float32)}
        loss_cand = {"loss": np.array([2.5], np.float32)}
        push_pair(tmp_path, remote, ns, loss_ref, loss_cand, stem="loss")
        second = proc.stdout.readline()
        assert second.startswith("FAIL  loss/loss  mean_abs 0.5  max_abs 0.5"), second
        assert proc.poll() is None  # still watching: the runs are open
        for run in (r, c):
            assert remote("runs", "seal", run).code == 0
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, (out, err)
    assert "diff check failed" in out, out
    assert "rpt-" in err


def test_watch_waits_for_runs_created_later(tmp_path, remote, server, ns):
    """Without --wait an unknown run is bad input (exit 2, naming it); with
    --wait the watch starts before the runs exist and follows them."""
    res = remote("watch", f"{ns}/torch", f"{ns}/paddle", timeout=30)
    assert res.code == 2, res
    assert f"{ns}/torch" in res.stderr
    res = remote("watch", f"{ns}/torch", f"{ns}/paddle", "--wait", "1", timeout=30)
    assert res.code == 2 and "waiting up to 1 s" in res.stderr, res

    with background_watch(server, f"{ns}/torch", f"{ns}/paddle", "--wait", "60") as proc:
        time.sleep(1.0)
        assert proc.poll() is None  # still waiting for the runs
        fwd = {"x": np.arange(4, dtype=np.float32)}
        r, c = push_pair(tmp_path, remote, ns, fwd, fwd)
        first = proc.stdout.readline()
        assert first.startswith("PASS  forward/x  mean_abs 0.0"), first
        for run in (r, c):
            assert remote("runs", "seal", run).code == 0
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, (out, err)
    assert "waiting up to 60 s" in err


# --- no server ----------------------------------------------------------


def test_unreachable_server_is_exit_3_quickly(tmp_path):
    path = tmp_path / "forward_paddle.npy"
    layouts.save_reprod_log(path, {"x": np.zeros(3, np.float32)})
    addr = f"127.0.0.1:{free_port()}"
    for args in (["push", path, "--run", "a/b"], ["runs", "ls"], ["compare", "a/b", "c/d"],
                 ["watch", "a/b", "c/d"], ["report", "ls"]):
        start = time.time()
        proc = subprocess.run([str(REPRODCTL), "--server", addr, *map(str, args)],
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 3, (args, proc.stderr)
        assert time.time() - start < 6, args
        assert addr in proc.stderr and "reprodd" in proc.stderr, proc.stderr
    # The environment variable names the server too.
    env = dict(os.environ, REPROD_SERVER=addr)
    proc = subprocess.run([str(REPRODCTL), "runs", "ls"], capture_output=True, text=True,
                          timeout=30, env=env)
    assert proc.returncode == 3 and addr in proc.stderr, proc.stderr


def test_offline_compare_unchanged_for_files(tmp_path, reprodctl):
    a = {"x": np.arange(5, dtype=np.float32)}
    layouts.save_reprod_log(tmp_path / "f_torch.npy", a)
    layouts.save_reprod_log(tmp_path / "f_paddle.npy", a)
    # No server is involved: an unreachable --server does not matter.
    res = reprodctl("--server", "127.0.0.1:1", "compare", tmp_path / "f_torch.npy",
                    tmp_path / "f_paddle.npy")
    assert res.code == 0, res
    res = reprodctl("compare", tmp_path / "nope_torch.npy", tmp_path / "f_paddle.npy")
    assert res.code == 2 and "nope_torch.npy" in res.stderr, res


def test_help_has_examples(reprodctl):
    for cmd in (["push"], ["runs"], ["runs", "ls"], ["watch"], ["report"], ["report", "get"],
                ["compare"]):
        res = reprodctl(*cmd, "--help")
        assert res.code == 0 and "Example" in res.stdout, (cmd, res)
