"""Client.compare / Client.watch / reports, and the errors users meet:
conflicting resends, invalid keys, sealed runs, unknown runs, all against a
real reprodd (memory store)."""
import threading
import time

import numpy as np
import pytest

from reprod_client import (AlreadyExists, Client, FailedPrecondition, NotFound, Report,
                           ReprodError)


@pytest.fixture(scope="module")
def client(reprodd):
    with Client(reprodd.address) as c:
        yield c


def produce(client, name, tensors_by_step, seal=True):
    run = client.open_run(name)
    for step, tensors in tensors_by_step:
        run.log("forward", tensors, step=step)
    if seal:
        run.seal()
    else:
        run.flush()
    return run


def pair(offset):
    rng = np.random.default_rng(5)
    a = rng.standard_normal(100).astype(np.float32)
    b = rng.standard_normal((4, 4)).astype(np.float32)
    return {"a": a, "enc": {"b": b + offset}, "c": np.arange(3.0)}


def test_compare_reports_first_failure_and_renderings(client, run_ns):
    ref, cand = f"{run_ns}/torch", f"{run_ns}/paddle"
    produce(client, ref, [(0, pair(0.0))])
    produce(client, cand, [(0, pair(1e-3))])
    report = client.compare(ref, cand)
    assert isinstance(report, Report) and report.id.startswith("rpt-")
    assert report.passed is False
    assert report.first_failure == {"checkpoint": "forward", "key": "enc/b", "step": 0}
    assert report.summary["tensors"] == 3 and report.summary["failed"] == 1
    assert report["schema"] == "reprod.report.v1"
    by_key = {t["key"]: t for t in report["tensors"]}
    assert by_key["enc/b"]["status"] == "fail"
    assert by_key["enc/b"]["stats"]["mean_abs"] == pytest.approx(1e-3, rel=1e-3)
    assert by_key["a"]["status"] == "pass"
    text = report.text()
    assert "enc/b@0: " in text and "mean diff: check passed: False" in text
    assert "mean diff: check passed: True" in text
    assert "enc/b" in report.markdown()
    assert "<testsuite" in report.junit()
    page = report.html()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    assert 'href="#t-' in page and ">forward/enc/b@0</a>" in page  # the failure card
    assert "FAILED" in repr(report) and report.id in repr(report)
    again = client.get_report(report.id)
    assert again.first_failure == report.first_failure and again.passed is False
    assert report.id in [r.id for r in client.reports(run=ref)]
    # A looser policy passes; checkpoints filter.
    loose = client.compare(ref, cand, preset="allclose")
    assert loose.policy == "allclose"
    ok = client.compare(ref, ref, preset="reprod", checkpoints=["forward"])
    assert ok.passed and ok.first_failure is None


def test_watch_yields_verdicts_then_the_report(client, run_ns):
    ref, cand = f"{run_ns}/torch", f"{run_ns}/paddle"
    ref_run = produce(client, ref, [(0, pair(0.0))], seal=False)
    cand_run = produce(client, cand, [(0, pair(1e-3))], seal=False)
    events, errors = [], []

    def consume():
        try:
            for event in client.watch(ref, cand, timeout=60):
                events.append(event)
        except Exception as e:
            errors.append(e)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    ref_run.log("loss", {"loss": 0.5}, step=0)
    cand_run.log("loss", {"loss": 0.5}, step=0)
    ref_run.seal()
    cand_run.seal()
    thread.join(60)
    assert not thread.is_alive() and not errors, errors
    verdicts, final = events[:-1], events[-1]
    assert isinstance(final, Report) and final.passed is False
    assert all(isinstance(v, dict) for v in verdicts)
    by_key = {(v["checkpoint"], v["key"]): v for v in verdicts}
    assert set(by_key) == {("forward", "a"), ("forward", "enc/b"), ("forward", "c"),
                           ("loss", "loss")}
    assert by_key[("forward", "enc/b")]["status"] == "fail"
    assert by_key[("forward", "enc/b")]["step"] == 0
    assert by_key[("forward", "enc/b")]["stats"]["mean_abs"] == pytest.approx(1e-3, rel=1e-3)
    assert by_key[("loss", "loss")]["status"] == "pass"
    assert final.first_failure == {"checkpoint": "forward", "key": "enc/b", "step": 0}


def test_watch_can_start_before_the_runs_exist(client, run_ns):
    ref, cand = f"{run_ns}/torch", f"{run_ns}/paddle"
    with pytest.raises(NotFound):
        next(client.watch(ref, cand, timeout=10))
    events, errors = [], []

    def consume():
        try:
            events.extend(client.watch(ref, cand, timeout=60, wait=30))
        except Exception as e:
            errors.append(e)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    time.sleep(1.0)
    assert thread.is_alive() and not events  # waiting for the runs
    produce(client, ref, [(0, pair(0.0))], seal=True)
    produce(client, cand, [(0, pair(0.0))], seal=True)
    thread.join(60)
    assert not thread.is_alive() and not errors, errors
    assert isinstance(events[-1], Report) and events[-1].passed is True
    assert len(events) == 4  # three forward pairs, then the report


def test_conflicting_resend_is_raised_at_flush(client, run_ns, reprodd):
    run = client.open_run(f"{run_ns}/run")
    run.log("forward", {"x": np.zeros(4, np.float32)})
    run.flush()
    run.log("forward", {"x": np.zeros(4, np.float32)})  # identical: idempotent
    run.flush()
    assert run.stats.already_present == 1
    run.log("forward", {"x": np.ones(4, np.float32)})   # different bytes
    with pytest.raises(AlreadyExists) as e:
        run.flush()
    msg = str(e.value)
    assert reprodd.address in msg and f"{run_ns}/run" in msg and "x" in msg
    assert e.value.address == reprodd.address and e.value.run == f"{run_ns}/run"
    with pytest.raises(AlreadyExists):  # sticky: every later call raises it
        run.log("forward", {"y": np.ones(1)})
    with pytest.raises(AlreadyExists):
        run.close()


def test_overwrite_run_replaces(client, run_ns):
    name = f"{run_ns}/run"
    run = client.open_run(name, overwrite=True)
    run.log("forward", {"x": np.zeros(4, np.float32)})
    run.flush()
    run.log("forward", {"x": np.ones(4, np.float32)})
    run.seal()
    assert client.read_tensor(name, "forward", "x").tolist() == [1.0] * 4
    with pytest.raises(FailedPrecondition, match="sealed"):
        client.open_run(name, overwrite=True)
    other = client.open_run(f"{run_ns}/other", overwrite=True)
    with pytest.raises(FailedPrecondition, match="overwrite"):
        client.open_run(f"{run_ns}/other")  # exists with overwrite=True
    other.close()
    fresh = client.open_run(name, recreate=True)  # a rerun starts from an empty run
    assert fresh.info.state == "open" and fresh.info.tensor_count == 0
    fresh.seal()


def test_invalid_input_is_rejected_locally(client, run_ns):
    run = client.open_run(f"{run_ns}/run")
    with pytest.raises(ValueError) as e:
        run.log("forward", {"enc": {"bad key!": np.ones(2)}, "good": np.ones(2)})
    assert "'enc/bad key!'" in str(e.value)
    with pytest.raises(ValueError, match="checkpoint"):
        run.log("for/ward", {"x": 1.0})
    with pytest.raises(ValueError, match="unsupported dtype complex128"):
        run.log("forward", {"z": np.zeros(2, complex)})
    with pytest.raises(TypeError):
        run.log("forward", np.ones(2))
    with pytest.raises(ValueError, match="run name"):
        client.open_run("no-namespace")
    run.seal()
    assert run.info.tensor_count == 0  # nothing from the rejected calls was logged
    with pytest.raises(ReprodError, match="closed"):
        run.log("forward", {"x": 1.0})


def test_context_manager_aborts_on_exception(client, run_ns):
    name = f"{run_ns}/run"
    with pytest.raises(RuntimeError, match="boom"):
        with client.open_run(name) as run:
            run.log("forward", {"x": np.ones(3)})
            raise RuntimeError("boom")
    info = client.get_run(name)
    assert info.state == "aborted" and info.tensor_count == 1


def test_unknown_runs_and_reports(client, run_ns, reprodd):
    with pytest.raises(NotFound) as e:
        client.compare(f"{run_ns}/nope", f"{run_ns}/nope2")
    assert reprodd.address in str(e.value)
    with pytest.raises(NotFound):
        client.get_run(f"{run_ns}/nope")
    with pytest.raises(NotFound):
        client.get_report("rpt-0000000000000000")
    name = f"{run_ns}/run"
    client.open_run(name, labels={"model": "bert"}).seal()
    assert [r.name for r in client.runs(prefix=f"{run_ns}/")] == [name]
    assert client.get_run(name).labels == {"model": "bert"}
    assert client.delete_run(name) == 0
    with pytest.raises(NotFound):
        client.get_run(name)


UNCLOSED = """
import sys
import numpy as np
from reprod_client import Client
run = Client(sys.argv[1]).open_run(sys.argv[2])
run.log("forward", {"x": np.arange(1 << 20, dtype=np.float32)})
"""


def test_unclosed_run_is_flushed_at_exit(client, reprodd, run_ns):
    import subprocess
    import sys

    name = f"{run_ns}/run"
    proc = subprocess.run([sys.executable, "-c", UNCLOSED, reprodd.address, name],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "was not closed" in proc.stderr
    got = client.read_tensor(name, "forward", "x")
    assert np.array_equal(got, np.arange(1 << 20, dtype=np.float32))
    assert client.get_run(name).state == "open"  # flushed, not sealed
