"""reprodctl's HTML report (--format html): it names exactly the failing
tensors the JSON report names, its drift charts mark the failing steps, the
server serves it byte for byte, and a real headless Chromium shows it without
console errors with the "differences only" toggle working.

The stepped report comes from two runs logged into a real reprodd (files carry
no steps); the offline report from a reprod_log file pair with a hostile key.
"""
import html as html_lib
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import layouts
from conftest import REPRODCTL, Result

HOSTILE = "<script>alert(1)</script>\"'&"
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def run(*args, timeout=120):
    proc = subprocess.run([str(REPRODCTL), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)
    return Result(proc)


def display(t):
    """checkpoint/key[@step] as the HTML page writes a tensor's name."""
    step = "" if t["step"] is None else f"@{t['step']}"
    return f"{t['checkpoint']}/{t['key']}{step}"


def failing_in_json(report):
    return {display(t) for t in report["tensors"] if t["status"] not in ("pass", "warn")}


def failing_in_html(page):
    """Names of the failure cards (failing tensors section) and of the table
    rows that are not passing, unescaped."""
    cards = re.findall(r'<div class="failure[^"]*" id="f-\d+"><h3><a class="key" '
                       r'href="#t-\d+">(.*?)</a>', page)
    rows = re.findall(r'<tr id="t-(\d+)" class="(?:fail|missing|shape)[^"]*">', page)
    return {html_lib.unescape(c) for c in cards}, {int(i) for i in rows}


def assert_safe(page):
    assert "<script" not in page.lower()
    assert "http://" not in page and "https://" not in page
    for target in re.findall(r'\b(?:src|href)\s*=\s*"([^"]*)"', page):
        assert target.startswith("#") or target == "data:,", target


# --- offline file pair -----------------------------------------------------


def test_offline_html_names_the_json_failures(tmp_path):
    rng = np.random.default_rng(3)
    ref = {"enc": {"w": rng.standard_normal((3, 4))}, HOSTILE: rng.standard_normal(5),
           "ok": np.arange(4.0), "nan": np.ones(3)}
    cand = {"enc": {"w": ref["enc"]["w"] + 1e-4}, HOSTILE: ref[HOSTILE] + 1e-2,
            "ok": np.arange(4.0), "nan": np.array([1.0, np.nan, 1.0])}
    rp, cp = tmp_path / "forward_torch.npy", tmp_path / "forward_paddle.npy"
    layouts.save_reprod_log(rp, ref)
    layouts.save_reprod_log(cp, cand)

    h = run("compare", rp, cp, "--format", "html", "--out", tmp_path / "r.html")
    j = run("compare", rp, cp, "--format", "json")
    assert h.code == 1 and j.code == 1, (h, j)
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    report = j.json()
    assert_safe(page)

    expected = failing_in_json(report)
    assert expected == {"forward/enc/w", f"forward/{HOSTILE}", "forward/nan"}
    cards, rows = failing_in_html(page)
    assert cards == expected
    assert rows == {i for i, t in enumerate(report["tensors"])
                    if t["status"] not in ("pass", "warn")}
    # The hostile key appears only escaped.
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;" in page
    # Cards are ordered by severity: nan (infinite), then the hostile key
    # (mean_abs 1e-2, 1e4 x its bound), then enc/w (1e-4).
    order = [html_lib.unescape(c) for c in re.findall(
        r'<div class="failure[^"]*" id="f-\d+"><h3><a class="key" href="#t-\d+">(.*?)</a>', page)]
    assert order == ["forward/nan", f"forward/{HOSTILE}", "forward/enc/w"]
    # Each card shows the JSON's mean_abs, which is numpy's.
    for t in report["tensors"]:
        if t["key"] == "enc/w":
            want = float(np.mean(np.abs(cand["enc"]["w"] - ref["enc"]["w"])))
            assert t["stats"]["mean_abs"] == pytest.approx(want, rel=1e-12)
            assert f"mean_abs <span>{t['stats']['mean_abs']!r}</span>" in page
    assert page.count('<svg class="histogram"') == 3
    assert '<tr class="point fail"><td class="key">forward' in page


# --- stepped runs on a server ----------------------------------------------

LOSS_FAIL_FROM = 3  # loss steps >= 3 drift past 1e-6
STEPS = 6


@pytest.fixture(scope="module")
def stepped(reprodd, tmp_path_factory):
    """Two runs with per-step loss and per-layer forward outputs, compared on
    the server in html and json; yields (html text, html path, json report,
    report id, server address)."""
    from reprod_client import Client

    ns = "html-report"
    rng = np.random.default_rng(7)
    base = {f"layer{i}": rng.standard_normal((4, 8)).astype(np.float64) for i in range(3)}
    with Client(reprodd.address) as client:
        for name, drift in ((f"{ns}/torch", 0.0), (f"{ns}/paddle", 1.0)):
            r = client.open_run(name)
            for step in range(STEPS):
                loss_err = drift * (10.0 ** (step - 8) if step >= LOSS_FAIL_FROM else 0.0)
                r.log("loss", {"loss": np.array(2.5 + loss_err)}, step=step)
                outs = {k: v + drift * (1e-3 if (k == "layer2" and step >= 4) else 0.0)
                        for k, v in base.items()}
                r.log("forward", outs, step=step)
            r.seal()
    out = tmp_path_factory.mktemp("html")
    path = out / "stepped.html"
    server = reprodd.address
    h = run("--server", server, "compare", f"{ns}/torch", f"{ns}/paddle", "--format", "html",
            "--out", path)
    assert h.code == 1, h
    m = re.search(r"report (rpt-[0-9a-f]+)", h.stderr)
    assert m, h
    j = run("--server", server, "compare", f"{ns}/torch", f"{ns}/paddle", "--format", "json")
    assert j.code == 1, j
    yield path.read_text(encoding="utf-8"), path, j.json(), m.group(1), server


def test_stepped_html_matches_json_and_marks_failing_steps(stepped):
    page, _, report, _, _ = stepped
    assert_safe(page)
    expected = failing_in_json(report)
    assert expected == ({f"loss/loss@{s}" for s in range(LOSS_FAIL_FROM, STEPS)}
                        | {f"forward/layer2@{s}" for s in range(4, STEPS)})
    cards, rows = failing_in_html(page)
    assert cards == expected
    assert rows == {i for i, t in enumerate(report["tensors"])
                    if t["status"] not in ("pass", "warn")}

    # One drift chart per stepped key (loss + 3 layers), each with one point
    # per step; the failing points are exactly the JSON's failing steps.
    charts = re.findall(r'<figure><figcaption>(.*?)</figcaption>(<svg class="drift".*?</svg>)',
                        page)
    assert {c for c, _ in charts} == {"loss/loss", "forward/layer0", "forward/layer1",
                                      "forward/layer2"}
    for caption, svg in charts:
        ckpt, key = caption.split("/", 1)
        failing = [t for t in report["tensors"] if t["checkpoint"] == ckpt and t["key"] == key
                   and t["checks"] and t["checks"][0]["status"] == "fail"]
        assert svg.count('<circle class="point fail"') == len(failing), caption
        assert svg.count('<circle class="point ') == STEPS, caption
        assert svg.count('<line class="bound"') == 1, caption
    heat = re.search(r'<svg class="heatmap".*?</svg>', page).group(0)
    assert heat.count('<rect class="cell ') == 4 * STEPS
    assert heat.count('<rect class="cell fail"') == len(expected)


def test_server_serves_the_same_html(stepped):
    page, _, _, report_id, server = stepped
    got = run("--server", server, "report", "get", report_id, "--format", "html")
    assert got.code == 1, got
    assert got.stdout == page


# --- a real browser ----------------------------------------------------------


def _chromium():
    """A headless Chromium driven by /usr/bin/chromedriver, or a skip saying
    why it cannot start."""
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        pytest.skip(f"selenium is not installed ({e}); scripts/setup.sh installs it")
    binary = shutil.which("chromium")
    if binary is None or not CHROMEDRIVER.exists():
        pytest.skip("chromium or chromium-driver is not installed; scripts/setup.sh installs them")
    opts = Options()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,2400"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    except WebDriverException as e:
        pytest.skip(f"Chromium could not start: {e.msg}")


def test_chromium_renders_rows_and_toggle(stepped, tmp_path):
    from selenium.webdriver.common.by import By

    _, path, report, _, _ = stepped
    driver = _chromium()
    try:
        driver.get(path.resolve().as_uri())
        assert driver.title.startswith("reprod report: FAILED")
        rows = driver.find_elements(By.CSS_SELECTOR, "table.tensors tr[id^='t-']")
        assert len(rows) == len(report["tensors"])

        def visible_ids():
            return {int(r.get_attribute("id")[2:]) for r in rows if r.is_displayed()}

        passing = {i for i, t in enumerate(report["tensors"]) if t["status"] == "pass"}
        failing = {i for i, t in enumerate(report["tensors"]) if t["status"] not in ("pass", "warn")}
        assert passing and failing
        # Differences only by default: every non-passing row visible, no passing one.
        assert visible_ids() == set(range(len(rows))) - passing
        assert failing <= visible_ids()
        # The failing keys are visible rows with the names the JSON gives.
        for i in failing:
            cells = driver.find_element(By.ID, f"t-{i}").find_elements(By.TAG_NAME, "td")
            assert cells[0].text == report["tensors"][i]["key"]
            assert cells[1].text == str(report["tensors"][i]["step"])
        marks = driver.find_elements(By.CSS_SELECTOR, "svg.drift circle.point.fail")
        assert len(marks) == len(failing) and all(m.is_displayed() for m in marks)

        driver.find_element(By.CSS_SELECTOR, "label[for='diff-only']").click()
        assert visible_ids() == set(range(len(rows)))
        driver.find_element(By.CSS_SELECTOR, "label[for='diff-only']").click()
        assert visible_ids() == set(range(len(rows))) - passing

        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 1000
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == [], errors
    finally:
        driver.quit()
