"""reprod_client.compat, the reprod_log drop-in, against reprod_log 1.0.1 itself
and against a real reprodd.

Parity: one script (PARITY_SCRIPT) runs twice in subprocesses, once with
`import reprod_log as R` and once with `import reprod_client.compat as R`. The
.npy files must be byte-identical, the diff logs must agree line for line
(timestamps aside, values to 1e-6 relative), and the recorded return values,
prints and exceptions must match. The one planned difference, a NaN mean
(reprod_log passes it), is asserted as such.

Streaming: conftest's reprodd per module (ephemeral port, memory store); tensors saved
through ReprodLogger are read back with Client.read_tensor byte-exactly.
"""
import json
import logging
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

CLIENT_SRC = ROOT / "client" / "python"
TESTS_DIR = Path(__file__).resolve().parent


def _import_compat():
    """reprod_client.compat from the installed package when it is importable,
    else from the source tree (the offline parts need no generated stubs)."""
    try:
        import reprod_client.compat as compat
    except ImportError:
        sys.path.insert(0, str(CLIENT_SRC))
        import reprod_client.compat as compat
    return compat


compat = _import_compat()
PACKAGE_ROOT = Path(compat.__file__).resolve().parents[1]

# --- parity with reprod_log -------------------------------------------------

PARITY_SCRIPT = r'''
import json, logging, os, sys
import numpy as np
IMPORT_LINE

out = sys.argv[1]
os.chdir(out)
results = {}

def record(name, fn):
    try:
        value = fn()
        results[name] = {"ok": repr(value)}
    except Exception as e:
        results[name] = {"error": type(e).__name__}

def report(helper, **kw):
    try:
        return helper.report(**kw)
    finally:
        # reprod_log adds its handlers to the root logger on every report()
        # and never removes them: drop them so each log file holds only its
        # own report (a no-op for the compat module, which leaves the root
        # logger alone).
        logging.getLogger("root").handlers.clear()

rng = np.random.RandomState(7)
logits = rng.randn(4, 8).astype(np.float32)
hidden = rng.randn(2, 3, 5)
ids = rng.randint(0, 1000, size=(3,)).astype(np.int64)
half = rng.randn(6).astype(np.float16)
weight = rng.randn(3, 5).astype(np.float32)
noise = (rng.randn(4, 8) * 1e-7).astype(np.float32)

sides = {}
for side in ("torch", "paddle"):
    p = side == "paddle"
    fwd = R.ReprodLogger()
    fwd.add("logits", logits + noise if p else logits)
    fwd.add("hidden", hidden * (1 + 1e-9) if p else hidden)
    fwd.add("ids", ids + 1 if p else ids)
    fwd.add("half", half + np.float16(1e-3) if p else half)
    fwd.save("log_reprod/forward_%s.npy" % side)

    loss = R.ReprodLogger()
    for step in range(3):
        value = np.float32(0.5 + 0.1 * step + (1e-8 * step if p else 0))
        # torch's loss.detach().numpy() is 0-d, paddle 2.x's loss.numpy() (1,)
        loss.add("loss_%d" % step, np.array([value]) if p else np.array(value))
    loss.save("log_reprod/loss_%s" % side)     # numpy adds .npy

    w = R.ReprodLogger()
    w.add("fc.weight", weight.T.copy() if p else weight)   # Linear: transposed
    w.add("fc.bias", np.zeros(5, np.float32))
    w.save("log_reprod/bp_align_%s.npy" % side)

    nan = R.ReprodLogger()
    bad = logits.copy()
    if p:
        bad[0, 0] = np.nan
    nan.add("logits", bad)
    nan.save("log_reprod/nan_%s.npy" % side)

    misc = R.ReprodLogger()
    misc.add("mask", np.array([True, False, True]))
    misc.add("bytes", np.arange(5, dtype=np.uint8))
    misc.add("scalar", np.array(3.5))
    misc.add("empty", np.zeros((0, 4), np.float32))
    misc.add("fortran", np.asfortranarray(rng.randn(3, 4)))
    misc.add("big_endian", np.arange(4, dtype=">i4"))
    misc.add("gone", np.ones(2))
    misc.remove("gone")
    misc.remove("never_added")
    record("misc_keys", lambda: sorted(misc.data))
    misc.save("deep/nested/misc_%s.npy" % side)

    cleared = R.ReprodLogger()
    cleared.add("x", np.ones(3))
    cleared.clear()
    record("cleared_data", lambda: cleared.data)
    cleared.save("cleared_%s.npy" % side)

try:
    R.ReprodLogger().add("x", [1.0, 2.0])
    results["add_list"] = "no error"
except AssertionError as e:
    results["add_list"] = "AssertionError: " + str(e)

h = R.ReprodDiffHelper()
record("report_before_compare", lambda: report(h, path="never.log"))
record("load_missing", lambda: h.load_info("log_reprod/nope.npy"))
ref = h.load_info("log_reprod/forward_torch.npy")
cand = h.load_info("log_reprod/forward_paddle.npy")
record("load_type", lambda: type(ref).__name__)
record("compare_forward", lambda: h.compare_info(ref, cand))
results["diff_forward"] = {k: {m: float(v[m]) for m in v} for k, v in h.diff_dict.items()}
for name, kw in [
        ("forward_mean_fail", dict()),
        ("forward_mean_pass", dict(diff_threshold=1.0)),
        ("forward_max", dict(diff_method="max", diff_threshold=1e-3)),
        ("forward_min", dict(diff_method="min")),
        ("forward_all", dict(diff_method="all", diff_threshold=1e-3)),
        ("forward_all_pass", dict(diff_method="all", diff_threshold=2.0)),
        ("forward_list", dict(diff_method=["min", "max"], diff_threshold=1e-3))]:
    record(name, lambda: report(h, path="logs/%s.log" % name, **kw))
record("bogus_method", lambda: report(h, diff_method="median", path="logs/bogus.log"))

for stem in ("loss", "bp_align", "nan"):
    a = h.load_info("log_reprod/%s_torch.npy" % stem)
    b = h.load_info("log_reprod/%s_paddle.npy" % stem)
    record("compare_" + stem, lambda: h.compare_info(a, b))
    record(stem + "_mean", lambda: report(h, path="logs/%s_diff.log" % stem))
    record(stem + "_all", lambda: report(h, diff_method="all", diff_threshold=1e-7,
                                         path="logs/%s_all.log" % stem))

nested_a = {"enc": {"w": weight, "b": np.ones(3)}, "out": logits}
nested_b = {"enc": {"w": weight + 1e-5, "b": np.ones(3)}, "out": logits}
record("compare_nested", lambda: h.compare_info(nested_a, nested_b))
record("nested", lambda: report(h, diff_method="all", path="logs/nested.log"))
record("nested_pass", lambda: report(h, diff_threshold=1e-4, path="logs/nested_pass.log"))

record("missing_key", lambda: h.compare_info({"a": logits}, {"b": logits}))
record("extra_key", lambda: h.compare_info({"a": logits}, {"a": logits, "b": logits}))
record("type_mismatch", lambda: h.compare_info({"a": logits}, {"a": {"x": logits}}))
record("not_array", lambda: h.compare_info({"a": 1.0}, {"a": 1.0}))
record("not_dict", lambda: h.compare_info([logits], [logits]))

with open("results.json", "w") as f:
    json.dump(results, f, indent=1, sort_keys=True)
'''

IMPORTS = {
    # reprod_log imports paddle for type hints only: a stub stands in where
    # paddle is not installed (the numpy 2 venv); a real paddle is kept.
    "reprod_log": "import frameworks; frameworks.install_paddle_stub(); import reprod_log as R",
    "compat": "import reprod_client.compat as R",
}

LOG_LINE = re.compile(r"^\[\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\] (root INFO: .*)$")
VALUE = re.compile(r"value: (\S+)$")


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    """Runs PARITY_SCRIPT under both imports; returns {variant: (dir, stdout)}."""
    outs = {}
    for variant, line in IMPORTS.items():
        out = tmp_path_factory.mktemp(variant)
        script = out / "script.py"
        script.write_text(PARITY_SCRIPT.replace("IMPORT_LINE", line))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(PACKAGE_ROOT), str(TESTS_DIR)] + [p for p in [env.get("PYTHONPATH")] if p])
        env["PYTHONWARNINGS"] = "ignore"
        env.pop("REPROD_RUN", None)         # offline: the compat must not stream here
        proc = subprocess.run([sys.executable, str(script), str(out)], capture_output=True,
                              text=True, timeout=120, env=env)
        assert proc.returncode == 0, f"{variant}:\n{proc.stdout}\n{proc.stderr}"
        outs[variant] = (out, proc.stdout)
    return outs


def _rel_files(root, pattern):
    return sorted(str(p.relative_to(root)) for p in root.rglob(pattern))


def test_npy_files_are_identical(parity):
    ref_dir, _ = parity["reprod_log"]
    got_dir, _ = parity["compat"]
    names = _rel_files(ref_dir, "*.npy")
    assert names == _rel_files(got_dir, "*.npy")
    assert len(names) == 12
    assert "log_reprod/loss_torch.npy" in names            # .npy appended
    assert "deep/nested/misc_paddle.npy" in names          # folders created
    for name in names:
        want = np.load(ref_dir / name, allow_pickle=True).tolist()
        got = np.load(got_dir / name, allow_pickle=True).tolist()
        assert list(got) == list(want), name
        for key in want:
            assert got[key].dtype == want[key].dtype, (name, key)
            assert got[key].shape == want[key].shape, (name, key)
            assert got[key].tobytes() == want[key].tobytes(), (name, key)
        assert (got_dir / name).read_bytes() == (ref_dir / name).read_bytes(), name


def _log_lines(path):
    lines = []
    for raw in path.read_text().splitlines():
        m = LOG_LINE.match(raw)
        assert m, f"{path}: not a reprod_log line: {raw!r}"
        lines.append(m.group(1))
    return lines


def _assert_lines_agree(want, got, where):
    assert len(got) == len(want), f"{where}: {len(got)} lines, want {len(want)}"
    for i, (w, g) in enumerate(zip(want, got)):
        mw, mg = VALUE.search(w), VALUE.search(g)
        if mw is None:
            assert g == w, f"{where}:{i + 1}"
            continue
        assert mg is not None, f"{where}:{i + 1}: {g!r}"
        assert g[:mg.start()] == w[:mw.start()], f"{where}:{i + 1}"
        vw, vg = float(mw.group(1)), float(mg.group(1))
        assert vg == pytest.approx(vw, rel=1e-6, abs=0, nan_ok=True), f"{where}:{i + 1}"


def test_diff_logs_agree_line_for_line(parity):
    ref_dir, _ = parity["reprod_log"]
    got_dir, _ = parity["compat"]
    names = _rel_files(ref_dir, "*.log")
    assert names == _rel_files(got_dir, "*.log")
    # every report call's file exists, the failing ones (before compare_info,
    # bad method) truncated to empty as reprod_log leaves them
    assert len(names) == 17
    planned = {"logs/nan_diff.log", "logs/nan_all.log"}
    for name in names:
        if name in planned:
            continue
        want = _log_lines(ref_dir / name)
        _assert_lines_agree(want, _log_lines(got_dir / name), name)
    assert (got_dir / "never.log").read_text() == ""
    assert (got_dir / "logs/bogus.log").read_text() == ""
    fail = _log_lines(got_dir / "logs/forward_mean_fail.log")
    assert fail[-1] == "root INFO: diff check failed"
    assert _log_lines(got_dir / "logs/forward_mean_pass.log")[-1] == \
        "root INFO: diff check passed"
    # reprod_log's nested format: parent key without colon, children indented
    nested = _log_lines(got_dir / "logs/nested.log")
    assert nested[:3] == ["root INFO: enc", "root INFO: \tw: ",
                          nested[2]] and nested[2].startswith(
                              "root INFO: \t\tmin diff: check passed: False, value: 9.99")


def test_nan_mean_fails_unlike_reprod_log(parity):
    """The planned difference (docs/design.md §Diff semantics: NaN never
    passes): reprod_log passes a NaN mean because nan > threshold is False;
    the compat fails it. All else is identical."""
    ref = _log_lines(parity["reprod_log"][0] / "logs/nan_diff.log")
    got = _log_lines(parity["compat"][0] / "logs/nan_diff.log")
    assert ref == ["root INFO: logits: ",
                   "root INFO: \tmean diff: check passed: True, value: nan",
                   "root INFO: diff check passed"]
    assert got == ["root INFO: logits: ",
                   "root INFO: \tmean diff: check passed: False, value: nan",
                   "root INFO: diff check failed"]
    ref_all = _log_lines(parity["reprod_log"][0] / "logs/nan_all.log")
    got_all = _log_lines(parity["compat"][0] / "logs/nan_all.log")
    assert len(got_all) == len(ref_all) == 5
    assert got_all[-1] == "root INFO: diff check failed"
    assert "check passed: False, value: nan" in got_all[3]


def test_results_prints_and_errors_agree(parity):
    ref_dir, ref_out = parity["reprod_log"]
    got_dir, got_out = parity["compat"]
    want = json.loads((ref_dir / "results.json").read_text())
    got = json.loads((got_dir / "results.json").read_text())
    want_diff, got_diff = want.pop("diff_forward"), got.pop("diff_forward")
    assert sorted(got_diff) == sorted(want_diff) == ["half", "hidden", "ids", "logits"]
    for key in want_diff:
        assert got_diff[key] == pytest.approx(want_diff[key], rel=1e-6, abs=0), key
    assert got == want
    assert got["forward_mean_fail"] == {"ok": "None"}         # report() returns None
    assert got["report_before_compare"] == {"error": "AttributeError"}
    assert got["missing_key"] == got["extra_key"] == {"error": "AssertionError"}
    assert got["not_array"] == {"error": "NotImplementedError"}
    assert got["add_list"].startswith("AssertionError: val must be np.ndarray")
    assert got["misc_keys"]["ok"] == repr(sorted(
        ["mask", "bytes", "scalar", "empty", "fortran", "big_endian"]))

    # stdout: the same report lines, transpose notes and remove() notes, once
    # each (reprod_log's handlers were reset after every report in the script)
    def interesting(text):
        lines = []
        for raw in text.splitlines():
            m = LOG_LINE.match(raw)
            if m:
                lines.append(m.group(1))
            elif raw.startswith(("transpose", "gone", "never_added")):
                lines.append(raw)
        return lines

    want_lines, got_lines = interesting(ref_out), interesting(got_out)
    assert "never_added is not in dict_keys(['mask', 'bytes', 'scalar', 'empty', " \
        "'fortran', 'big_endian'])" in got_lines
    assert got_lines.count("transpose sub_data1") == 1
    nan_lines = [i for i, l in enumerate(want_lines) if "value: nan" in l]
    for i in nan_lines:
        want_lines[i] = want_lines[i].replace("True", "False")
    for i, l in enumerate(want_lines):
        if l == "root INFO: diff check passed" and i - 1 in nan_lines:
            want_lines[i] = "root INFO: diff check failed"
    _assert_lines_agree(want_lines, got_lines, "stdout")


# --- compat alone, in process -----------------------------------------------

def test_checkpoint_names_follow_reprodctl_push():
    name = compat.checkpoint_name_from_path
    assert name("log_reprod/forward_torch.npy") == "forward"
    assert name("forward_paddle.npy") == "forward"
    assert name("/a/b/train_align_benchmark.npy") == "train_align"
    assert name("bp_align_ref.npz") == "bp_align"
    assert name("metric_pd.npy") == "metric"
    assert name("lr_reference.npy") == "lr"
    assert name(Path("x/loss_candidate.npy")) == "loss"
    assert name("torch.npy") == "torch"
    assert name("x_torch_paddle.npy") == "x_torch"
    assert name("dir/a.b.npy") == "a.b"
    assert name(".hidden") == ".hidden"
    assert compat.framework_from_path("forward_paddle.npy") == "paddle"
    assert compat.framework_from_path("forward_pt.npy") == "torch"
    assert compat.framework_from_path("forward_ref.npy") == ""


def test_repeated_reports_keep_their_own_files(tmp_path, capsys):
    """reprod_log appends every later report to earlier files and prints each
    line once per report so far; the compat writes each report once."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    h = compat.ReprodDiffHelper()
    a = np.arange(4, dtype=np.float32)
    h.compare_info({"a": a}, {"a": a})
    h.report(path=str(tmp_path / "one.log"))
    assert h.passed is True
    h.compare_info({"b": a}, {"b": a + 1})
    assert h.report(diff_method="max", path=str(tmp_path / "sub" / "two.log")) is None
    assert h.passed is False
    one = _log_lines(tmp_path / "one.log")
    two = _log_lines(tmp_path / "sub" / "two.log")
    assert one == ["root INFO: a: ", "root INFO: \tmean diff: check passed: True, value: 0.0",
                   "root INFO: diff check passed"]
    assert two == ["root INFO: b: ", "root INFO: \tmax diff: check passed: False, value: 1.0",
                   "root INFO: diff check failed"]
    out = [LOG_LINE.match(l).group(1) for l in capsys.readouterr().out.splitlines()]
    assert out == one + two
    assert root.handlers == handlers and root.level == level
    h.report(path=None)                                     # stdout only
    assert _log_lines(tmp_path / "one.log") == one


def test_streaming_needs_a_run(monkeypatch, tmp_path):
    monkeypatch.setenv("REPROD_SERVER", "127.0.0.1:1")      # reprodctl's variable alone
    monkeypatch.delenv("REPROD_RUN", raising=False)
    logger = compat.ReprodLogger()
    assert not logger.streaming
    logger.add("x", np.ones(3))
    logger.save(str(tmp_path / "forward_paddle.npy"))       # no server contacted
    monkeypatch.setenv("REPROD_RUN", "ns/run")
    assert compat.ReprodLogger().streaming
    assert not compat.ReprodLogger(run=False).streaming
    monkeypatch.delenv("REPROD_SERVER")
    assert not compat.ReprodLogger().streaming
    assert compat.ReprodLogger(server="127.0.0.1:1").streaming
    with pytest.raises(ValueError, match="not 'namespace/name'"):
        compat.ReprodLogger(run="no-namespace")
    with pytest.raises(ValueError, match="checkpoint 'a b'"):
        compat.ReprodLogger(run="ns/run", checkpoint="a b")


class _RunsCommand:
    """Unpickling this calls os.system (a malicious reprod_log file)."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_load_info_refuses_pickled_code_and_loads_real_files(tmp_path):
    from reprod_client.compat import ReprodDiffHelper, ReprodLogger

    marker = tmp_path / "pwned"
    evil = tmp_path / "forward_paddle.npy"
    # np.save of a dict whose value runs `touch marker` when unpickled.
    np.save(evil, {"logits": _RunsCommand(f"touch {marker}")}, allow_pickle=True)
    helper = ReprodDiffHelper()
    with pytest.raises(Exception) as err:
        helper.load_info(str(evil))
    assert str(evil) in str(err.value) and "system" in str(err.value)
    assert not marker.exists(), "the pickled command ran"

    # A real reprod_log dict (nested arrays of several dtypes) still loads,
    # equal to numpy's own (unrestricted) loader.
    logger = ReprodLogger(run=False)
    logger.add("logits", np.arange(6, dtype=np.float32).reshape(2, 3))
    logger.add("ids", np.array([1, 2], dtype=np.int64))
    good = tmp_path / "good.npy"
    logger.save(str(good))
    ours = helper.load_info(str(good))
    theirs = np.load(good, allow_pickle=True).tolist()
    assert ours.keys() == theirs.keys()
    for k in theirs:
        assert ours[k].dtype == theirs[k].dtype
        np.testing.assert_array_equal(ours[k], theirs[k])
    # A bare (non-object) array loads without pickle.
    bare = tmp_path / "bare.npy"
    np.save(bare, np.ones(3, dtype=np.float16))
    np.testing.assert_array_equal(_load_bare(helper, bare), np.ones(3, dtype=np.float16))


def _load_bare(helper, path):
    from reprod_client.compat import _load_npy_safely
    return _load_npy_safely(str(path))


FIXTURES = ROOT / "formats" / "testdata"


@pytest.mark.parametrize("name", ["np1_save_dict.npy", "np2_save_dict.npy"])
def test_load_info_reads_files_of_either_numpy_major(name):
    """The two sides of a port often run different numpy majors. numpy 2
    pickles name numpy._core, which numpy 1.x cannot import, and numpy 2 only
    keeps numpy.core as a deprecated alias. np.save({'a': np.arange(3,
    dtype=np.float32)}) as numpy 1.24 and 2.4 wrote it
    (formats/testdata/make_fixtures.py) loads under either, without warnings."""
    from reprod_client.compat import ReprodDiffHelper

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        info = ReprodDiffHelper().load_info(str(FIXTURES / name))
    assert list(info) == ["a"]
    assert info["a"].dtype == np.float32 and info["a"].tolist() == [0.0, 1.0, 2.0]


def test_load_info_reads_npy_format_3(tmp_path):
    """Format 3.0 (a UTF-8 header) has no public header reader in numpy 2:
    a structured array with non-Latin-1 field names loads as np.load loads it,
    a pickled dict under a 3.0 header goes through the restricted unpickler."""
    from reprod_client.compat import ReprodDiffHelper

    helper = ReprodDiffHelper()
    utf8 = tmp_path / "utf8.npy"
    arr = np.array([(1, 2.5), (-3, 0.25)], dtype=[("\u03b1", "<i4"), ("\u540d", "<f8")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Stored array in format 3.0"
        np.save(utf8, arr)
    with open(utf8, "rb") as f:
        assert np.lib.format.read_magic(f) == (3, 0)
    got = _load_bare(helper, utf8)
    assert got.dtype == arr.dtype and got.tolist() == [(1, 2.5), (-3, 0.25)]

    def write_v3(path, value):
        with open(path, "wb") as f:
            np.lib.format.write_array(f, np.array(value, dtype=object), version=(3, 0),
                                      allow_pickle=True)

    good = tmp_path / "dict_v3.npy"
    write_v3(good, {"a": np.array([1.5, -2.0], dtype=np.float32)})
    info = helper.load_info(str(good))
    assert list(info) == ["a"] and info["a"].dtype == np.float32
    assert info["a"].tolist() == [1.5, -2.0]

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil_v3.npy"
    write_v3(evil, {"logits": _RunsCommand(f"touch {marker}")})
    with pytest.raises(Exception) as err:
        helper.load_info(str(evil))
    assert str(evil) in str(err.value) and "system" in str(err.value)
    assert not marker.exists(), "the pickled command ran"


def test_import_does_not_load_paddle_or_torch():
    code = ("import sys, reprod_client.compat; "
            "print(sorted(m for m in ('paddle', 'torch', 'reprod_log') if m in sys.modules))")
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --- streaming to a real reprodd ----------------------------------------------

@pytest.fixture(scope="module")
def server(reprodd):
    """Address of the module's reprodd (conftest.py: memory store, loopback)."""
    return reprodd.address


@pytest.fixture
def client(server):
    from reprod_client import Client
    return Client(address=server)


@pytest.fixture
def run_name(request):
    return "compat/" + re.sub(r"[^A-Za-z0-9_.-]", "-", request.node.name)[:100]


def _dead_address():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def _assert_stored(client, run, checkpoint, key, want):
    got = client.read_tensor(run, checkpoint, key)
    assert got.dtype == want.dtype and got.shape == want.shape, key
    assert got.tobytes() == np.ascontiguousarray(want).tobytes(), key


def _expected_npy(tmp_path, data):
    path = tmp_path / "expected.npy"
    np.save(path, data)
    return path.read_bytes()


def test_save_streams_under_the_file_checkpoint(server, client, run_name, monkeypatch,
                                               tmp_path):
    monkeypatch.setenv("REPROD_SERVER", server)
    monkeypatch.setenv("REPROD_RUN", run_name)
    rng = np.random.RandomState(3)
    data = {
        "logits": rng.randn(4, 8).astype(np.float32),
        "hidden": rng.randn(2, 3, 5),
        "half": rng.randn(7).astype(np.float16),
        "ids": np.arange(6, dtype=np.int64).reshape(2, 3),
        "mask": np.array([True, False]),
        "loss": np.array(0.25, dtype=np.float32),
        "fortran": np.asfortranarray(rng.randn(3, 4).astype(np.float32)),
        "big_endian": np.arange(5, dtype=">f8"),
    }
    logger = compat.ReprodLogger()
    assert logger.streaming
    for key, val in data.items():
        logger.add(key, val)
    path = tmp_path / "log_reprod" / "forward_paddle.npy"
    logger.save(str(path))
    assert path.read_bytes() == _expected_npy(tmp_path, data)
    for key, val in data.items():
        _assert_stored(client, run_name, "forward", key,
                       val.astype(val.dtype.newbyteorder("<")))
    assert client.get_run(run_name).framework == "paddle"
    logger.save(str(path))                      # identical again: already present, no error

    losses = compat.ReprodLogger()
    for step in range(3):
        losses.add(f"loss_{step}", np.array([0.5 + step], dtype=np.float32))
    losses.save(str(tmp_path / "bp_align_paddle"))           # numpy adds .npy
    _assert_stored(client, run_name, "bp_align", "loss_2", np.array([2.5], np.float32))


def test_changed_bytes_at_a_stored_address_raise_at_save(server, client, run_name, tmp_path):
    logger = compat.ReprodLogger(server=server, run=run_name)
    logger.add("x", np.zeros(3, np.float32))
    logger.save(str(tmp_path / "loss_torch.npy"))
    logger.add("x", np.ones(3, np.float32))
    with pytest.raises(Exception) as err:
        logger.save(str(tmp_path / "loss_torch.npy"))
    from reprod_client import ReprodError
    assert isinstance(err.value, ReprodError)
    assert server in str(err.value)
    assert np.load(tmp_path / "loss_torch.npy", allow_pickle=True).tolist()["x"][0] == 1
    _assert_stored(client, run_name, "loss", "x", np.zeros(3, np.float32))
    assert client.get_run(run_name).framework == "torch"


def test_unsupported_dtypes_are_skipped_with_a_warning(server, client, run_name, tmp_path):
    logger = compat.ReprodLogger(server=server, run=run_name, framework="paddle")
    logger.add("ok", np.arange(3, dtype=np.int32))
    logger.add("c64", np.arange(3, dtype=np.complex64))
    logger.add("words", np.array(["a", "b"]))
    unsigned = {f"u{8 * n}": np.array([0, 7, 2**(8 * n) - 1], dtype=f"<u{n}") for n in (2, 4, 8)}
    for key, value in unsigned.items():   # sent as they are, never skipped
        logger.add(key, value)
    logger.data["nested"] = {"w": np.ones(2, np.float32)}   # direct dict use, flattened
    logger.data[7] = np.zeros(1, np.int8)                   # int key: "7", as push reads it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger.save(str(tmp_path / "metric.npy"))
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2, messages
    assert "c64: unsupported dtype '<c8'" in messages[0]
    assert "words: unsupported dtype '<U1'" in messages[1]
    assert all(w.filename == __file__ for w in caught)
    _assert_stored(client, run_name, "metric", "ok", np.arange(3, dtype=np.int32))
    _assert_stored(client, run_name, "metric", "nested/w", np.ones(2, np.float32))
    _assert_stored(client, run_name, "metric", "7", np.zeros(1, np.int8))
    for key, value in unsigned.items():
        _assert_stored(client, run_name, "metric", key, value)
    assert len(client.list_tensors(run_name)) == 6
    assert np.load(tmp_path / "metric.npy", allow_pickle=True).tolist().keys() == \
        logger.data.keys()


def test_live_checkpoint_streams_at_add(server, client, run_name, tmp_path):
    logger = compat.ReprodLogger(server=server, run=run_name, checkpoint="forward")
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    logger.add("a", a)
    deadline = time.time() + 20
    while True:     # stored in the background, before any save()
        try:
            _assert_stored(client, run_name, "forward", "a", a)
            break
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(0.1)
    a_sent = a.copy()
    a += 1                                      # in place after add: the file sees it
    logger.data["b"] = np.ones(2)               # not through add(): sent at save
    logger.save(str(tmp_path / "whatever_paddle.npy"))
    _assert_stored(client, run_name, "forward", "a", a_sent)
    _assert_stored(client, run_name, "forward", "b", np.ones(2))
    assert np.load(tmp_path / "whatever_paddle.npy", allow_pickle=True).tolist()["a"][0, 0] == 1


def test_server_down_raises_at_save_naming_the_address(tmp_path):
    from reprod_client import ReprodError
    address = _dead_address()
    data = {"x": np.arange(4, dtype=np.float32)}
    for kwargs in ({}, {"checkpoint": "forward"}):
        logger = compat.ReprodLogger(server=address, run="compat/down", **kwargs)
        start = time.time()
        logger.add("x", data["x"])              # live mode: kept for save()
        path = tmp_path / f"forward_paddle{len(kwargs)}.npy"
        with pytest.raises(ReprodError) as err:
            logger.save(str(path))
        assert address in str(err.value), kwargs
        assert time.time() - start < 60
        assert path.read_bytes() == _expected_npy(tmp_path, data)
