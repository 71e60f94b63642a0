"""Hostile names and policy strings never put a raw control character on a
screen or in a log: keys with newline, CR, ESC, NUL, DEL, tab, bidi overrides,
markup, '|' and a 10 KB key go through every report format (text, json,
junit, markdown, html), reprodctl's terminal lines and a real reprodd's log;
every output is checked byte by byte, and the JSON gives back the exact
original names."""
import json
import subprocess

import grpc
import numpy as np
import pytest

import layouts
from conftest import REPRODD, Reprodd, start_until_listening

from reprod_client._proto import ingest_pb2, runs_pb2, runs_pb2_grpc, tensor_pb2

LONG_KEY = "k" * 5000 + "\n" + "m" * 5239  # 10 KiB, with a newline inside
HOSTILE_KEYS = [
    "line1\nline2",
    "cr\rreturn",
    "esc\x1b[31mred\x1b[0m\x1b]0;title\x07",
    "nul\x00byte",
    "del\x7fete",
    "tab\tkey",
    "bidi\u202eevil\u202c",
    "iso\u2066late\u2069\u200f",
    "c1\x85next",
    "<script>alert(1)</script>",
    "pipe|cell",
    LONG_KEY,
]
BIDI = {chr(c) for c in list(range(0x202A, 0x202F)) + list(range(0x2066, 0x206A))}
INVISIBLE = BIDI | {chr(c) for c in range(0x80, 0xA0)} | {"\u061c", "\u200e", "\u200f"}


def assert_visible(data, what, allow_newline=True, line_ok=None):
    """No byte < 0x20 (except '\\n' line ends when allowed), no 0x7f, no bidi
    or C1 code point in `data` (bytes). line_ok(line) may strip a format's own
    leading tab from a line before it is checked."""
    assert isinstance(data, bytes)
    for n, line in enumerate(data.split(b"\n")):
        if not allow_newline and n > 0:
            pytest.fail(f"{what}: raw newline before line {n + 1}")
        if line_ok is not None:
            line = line_ok(line)
        for i, b in enumerate(line):
            assert b >= 0x20 and b != 0x7F, \
                f"{what}: raw byte {b:#04x} at line {n + 1} offset {i}: {line[:200]!r}"
    text = data.decode("utf-8")  # also: nothing that is not UTF-8
    bad = sorted({f"U+{ord(c):04X}" for c in text if c in INVISIBLE})
    assert not bad, f"{what}: raw {bad}"


def run_bytes(*args, timeout=300):
    from conftest import REPRODCTL
    return subprocess.run([str(REPRODCTL), *map(str, args)], capture_output=True,
                          timeout=timeout)


def _text_line_ok(line):
    # reprod_log's check lines are "<prefix>\t<method> diff: ..."; that tab is
    # the format's, every other one would be a key's.
    if not line:  # after the last line end
        return line
    prefix, sep, rest = line.partition(b"root INFO: ")
    assert sep, line[:200]
    return prefix + sep + (rest[1:] if rest.startswith(b"\t") else rest)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    rng = np.random.default_rng(11)
    ref = {k: rng.standard_normal(3).astype(np.float32) for k in HOSTILE_KEYS}
    cand = {k: v + np.float32(1e-2) for k, v in ref.items()}  # every pair fails
    cand.pop("pipe|cell")  # and one is missing
    rp, cp = tmp / "forward_torch.npy", tmp / "forward_paddle.npy"
    layouts.save_reprod_log(rp, ref)
    layouts.save_reprod_log(cp, cand)
    return rp, cp


@pytest.mark.parametrize("fmt", ["text", "json", "junit", "markdown", "html"])
def test_every_report_format_and_compare_stderr_stay_visible(files, fmt):
    rp, cp = files
    res = run_bytes("compare", rp, cp, "--format", fmt)
    assert res.returncode == 1, res.stderr.decode(errors="replace")[-2000:]
    assert_visible(res.stdout, f"--format {fmt}",
                   line_ok=_text_line_ok if fmt == "text" else None)
    assert_visible(res.stderr, f"compare --format {fmt} stderr")
    if fmt == "text":  # the failing tensors are listed after a text report
        assert b"FAIL forward/line1\\nline2" in res.stderr, res.stderr[:2000]
    if fmt == "json":
        # Lossless: the exact names, NUL, bidi and the 10 KB key included.
        assert {t["key"] for t in json.loads(res.stdout)["tensors"]} == set(HOSTILE_KEYS)
    if fmt == "text":
        lines = res.stdout.decode().splitlines()
        # One line per key: the newline inside a key did not split it.
        assert sum(": " in l and l.endswith(": ") for l in lines) == len(HOSTILE_KEYS)
        assert any(l.endswith("] root INFO: line1\\nline2: ") for l in lines), lines[:5]
        assert any(l.endswith("INFO: bidi\\u202eevil\\u202c: ") for l in lines)
        assert any(l.endswith("INFO: nul\\x00byte: ") for l in lines)
    if fmt == "markdown":
        md = res.stdout.decode()
        assert "`esc\\x1b[31mred\\x1b[0m\\x1b]0;title\\x07`" in md
        assert "&lt;script" not in md and "`<script>alert(1)</script>`" in md
    if fmt == "html":
        page = res.stdout.decode()
        assert "bidi\\u202eevil\\u202c" in page and "<script>alert" not in page


def test_inspect_lines_stay_visible(files):
    rp, _ = files
    res = run_bytes("inspect", rp)
    assert res.returncode == 0, res.stderr
    assert_visible(res.stdout, "inspect")
    assert b"line1\\nline2" in res.stdout
    js = run_bytes("inspect", rp, "--format", "json")
    assert {t["key"] for t in json.loads(js.stdout)["tensors"]} == set(HOSTILE_KEYS)


HOSTILE_POLICIES = {
    "name": 'name: "team\\npolicy\\e[31m"\n',
    "rename to": 'rename: [{from: "a", to: "x\\u202ey"}]\n',
    "rename dots": 'rename: [{from: "a", to: "b/../c"}]\n',
    "checkpoint": 'checkpoints:\n  "fwd\\rx": {max_abs: {max: 1}}\n',
    "checkpoint dots": 'checkpoints:\n  "..": {max_abs: {max: 1}}\n',
    "required": 'required: ["a\\0b"]\n',
    "long name": f'name: "{"n" * 10240}\\n"\n',
}


@pytest.mark.parametrize("case", sorted(HOSTILE_POLICIES))
def test_hostile_policy_strings_are_refused_visibly(files, tmp_path, case):
    rp, cp = files
    policy = tmp_path / "hostile.yaml"
    policy.write_text(HOSTILE_POLICIES[case])
    res = run_bytes("compare", rp, cp, "--policy", policy)
    assert res.returncode == 2, res
    assert_visible(res.stderr, f"policy {case} stderr")
    err = res.stderr.decode()
    assert str(policy) in err and "invalid " in err, err  # names the file and the name
    assert len(err) < 1500, err  # a 10 KB name is abbreviated
    assert res.stdout == b""


def test_dot_segments_refused_in_files_pushed(reprodd, tmp_path, run_ns):
    path = tmp_path / "forward_torch.npy"
    layouts.save_reprod_log(path, {"a/../b": np.ones(2, np.float32)})
    res = run_bytes("--server", reprodd.address, "push", path, "--run", f"{run_ns}/r")
    assert res.returncode == 2, res
    err = res.stderr.decode()
    assert "a/../b" in err and "'..'" in err and "forward_torch.npy" in err, err


def _raw_begin(address, run, checkpoint, key):
    """A raw Ingest BeginTensor (the clients refuse such names first)."""
    channel = grpc.insecure_channel(address)
    ingest = channel.stream_stream(
        "/reprod.v1.IngestService/Ingest", request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=ingest_pb2.IngestResponse.FromString)
    req = ingest_pb2.IngestRequest()
    req.begin.run = run
    req.begin.header.address.checkpoint, req.begin.header.address.key = checkpoint, key
    req.begin.header.dtype = tensor_pb2.DTYPE_FLOAT32
    req.begin.header.shape.append(0)
    try:
        with pytest.raises(grpc.RpcError) as err:
            list(ingest(iter([req]), timeout=30))
    finally:
        channel.close()
    return err.value


def test_server_log_and_terminal_lines_over_a_real_reprodd(tmp_path):
    server = Reprodd(tmp_path, log_level="info")
    try:
        address = server.address
        forged = "torch\n[2026-01-01 00:00:00.000] [info] run x/y deleted\x1b[2J\u202e"
        channel = grpc.insecure_channel(address)
        run = runs_pb2.Run(name="hostile/run", framework=forged)
        run.labels["note"] = "a\rb\x00c\u2066"
        run.labels["k|<script>"] = "v\x7f"
        # Created, and audited with the client's strings in printable ASCII
        # (the audit log's canonical encoding takes nothing else).
        runs_pb2_grpc.RunServiceStub(channel).CreateRun(
            runs_pb2.CreateRunRequest(run=run), timeout=30)
        audit = run_bytes("--server", address, "audit", "ls", "--run", "hostile/run")
        assert audit.returncode == 0, audit
        assert_visible(audit.stdout, "reprodctl audit ls")
        assert b"framework=torch\\x0a[2026-01-01" in audit.stdout, audit.stdout
        channel.close()
        # Keys, checkpoints and runs with control bytes or dot segments over
        # the wire: refused, and the refusal is logged visibly.
        for checkpoint, key in [("forward", "a\nb"), ("forward", "x/../y"), ("..", "k"),
                                ("fwd\x1b[31m", "k"), ("forward", LONG_KEY)]:
            err = _raw_begin(address, "hostile/run2", checkpoint, key)
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
            assert_visible(err.details().encode(), "ingest refusal")
            assert len(err.details()) < 1500, err.details()

        for args in (["runs", "ls"], ["runs", "show", "hostile/run"],
                     ["runs", "show", "hostile/run", "--format", "json"],
                     ["push", tmp_path / "missing\x1b.npy", "--run", "hostile/x"]):
            res = run_bytes("--server", address, *args)
            assert_visible(res.stdout, f"reprodctl {args[:2]} stdout")
            assert_visible(res.stderr, f"reprodctl {args[:2]} stderr")
        shown = run_bytes("--server", address, "runs", "show", "hostile/run").stdout.decode()
        assert "torch\\n[2026-01-01" in shown and "\\u202e" in shown, shown
        as_json = json.loads(run_bytes("--server", address, "runs", "show", "hostile/run",
                                       "--format", "json").stdout)
        assert as_json["framework"] == forged
    finally:
        server.stop()
    log = (tmp_path / "reprodd.log").read_bytes()
    assert_visible(log, "reprodd log")
    text = log.decode()
    created = [l for l in text.splitlines() if "run hostile/run created" in l]
    assert len(created) == 1 and "torch\\n[2026-01-01 00:00:00.000] [info] run x/y deleted" \
        "\\x1b[2J\\u202e" in created[0], text[-3000:]
    assert not any(l.startswith("[2026-01-01 00:00:00.000]") for l in text.splitlines())
    assert "a\\nb" in text and "(10240 bytes)" in text, text[-3000:]
    assert all(len(l) < 5000 for l in text.splitlines())


def test_refuses_names_that_only_look_like_loopback(tmp_path):
    res = subprocess.run([str(REPRODD), "--store", "memory", "--http-listen", "off",
                          "--listen", "127.attacker.example:50051"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res
    assert "refusing to listen on non-loopback address 127.attacker.example:50051" \
        in res.stderr, res.stderr
    res = subprocess.run([str(REPRODD), "--store", "memory", "--listen", "127.0.0.1:0",
                          "--http-listen", "127.attacker.example:8080"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res
    assert "refusing to serve the web UI on non-loopback address" in res.stderr, res.stderr


def test_localhost_resolves_to_loopback(tmp_path):
    port_file = tmp_path / "port"
    code, out, listened = start_until_listening(
        [str(REPRODD), "--store", "memory", "--http-listen", "off", "--listen", "localhost:0",
         "--port-file", str(port_file)], port_file)
    assert listened and code == 0, out
    assert "non-loopback" not in out, out
