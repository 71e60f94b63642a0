"""A judge's review in a real headless Chromium (selenium + Debian's
chromium-driver) against `reprodd --auth tokens` and its web UI.

examples/bert_tiny/run_all.py trains the good and the broken bert_tiny port
(real torch and paddle) into team42's namespace with team42's submitter
token, as a contestant would. The judge then logs in through the login form,
opens the broken port's report, finds its first failure at forward/logits,
sees drawn drift charts and |d| histograms, flips the differences-only
toggle and signs the verdict; a submitter of team7 gets a 403 on team42's
run. The broken port's `--format html` report, opened from disk with the
network switched off, shows the failing tensors its JSON names without a
console error. Screenshots go to the test's tmp folder. Skips with the reason only
when Chromium cannot start.
"""
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Debian's requests warns about urllib3's version
    import requests

import reprod_client
from conftest import REPRODCTL, ROOT, Reprodd
from test_auth_server import _token
from test_html_report import _chromium, assert_safe, failing_in_html, failing_in_json

RUN_ALL = ROOT / "examples" / "bert_tiny" / "run_all.py"


class Review:
    pass


@pytest.fixture(scope="module")
def driver():
    """Started before bert_tiny is trained, so a Chromium that cannot start
    skips at once."""
    d = _chromium()
    yield d
    d.quit()


@pytest.fixture(scope="module")
def review(driver, tmp_path_factory):
    for binary in (REPRODCTL,):
        if not binary.exists():
            pytest.fail(f"{binary} is not built (set REPROD_BIN_DIR)")
    r = Review()
    data = tmp_path_factory.mktemp("browser-data")
    r.judge = _token(data, "--role", "judge", "--label", "judge-judy")[0]
    r.sub42 = _token(data, "--role", "submitter", "--scope", "team42", "--label", "team42-ci")[0]
    r.sub7 = _token(data, "--role", "submitter", "--scope", "team7", "--label", "team7-ci")[0]
    work = tmp_path_factory.mktemp("browser")
    r.server = Reprodd(work, store="rocksdb", data_dir=data, extra_args=["--auth", "tokens"])
    r.base = f"http://127.0.0.1:{r.server.http_port}"
    try:
        with reprod_client.Client(r.server.address, token=r.sub7) as client:
            with client.open_run("team7/x", framework="torch") as run:
                run.log("forward", {"out": np.ones(3, dtype=np.float32)})
        proc = subprocess.run(
            [sys.executable, str(RUN_ALL), "--server", r.server.address, "--namespace", "team42",
             "--reprodctl", str(REPRODCTL), "--workdir", str(work / "work"), "--suffix", "web"],
            env=dict(os.environ, REPROD_TOKEN=r.sub42), capture_output=True, text=True,
            timeout=600)
        assert proc.returncode == 0, f"run_all.py exit {proc.returncode}\n" \
                                     f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        reports = requests.get(f"{r.base}/api/v1/reports", timeout=30,
                               headers={"Authorization": f"Bearer {r.judge}"}).json()["reports"]
        broken = [x for x in reports if x["cand"] == "team42/paddle-broken-web"]
        assert len(broken) == 1, reports
        r.broken = broken[0]["id"]
        yield r
    finally:
        r.server.stop()


def _wait_for(driver, css, seconds=30):
    """The elements matching `css` once there are any: a click on a form
    button returns before the next page has loaded."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, seconds).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, css))


def _login(driver, base, token):
    from selenium.webdriver.common.by import By
    driver.delete_all_cookies()
    driver.get(f"{base}/login")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "login").click()
    _wait_for(driver, "nav .who")


@pytest.mark.requires_torch
@pytest.mark.requires_paddle
def test_judge_reviews_and_signs_the_broken_port(driver, review, tmp_path):
    from selenium.webdriver.common.by import By

    _login(driver, review.base, review.judge)
    assert "team42/paddle-broken-web" in driver.page_source  # the runs list
    assert "judge-judy" in driver.find_element(By.CSS_SELECTOR, "nav .who").text
    driver.get(f"{review.base}/reports/{review.broken}")
    assert driver.find_element(By.CSS_SELECTOR, "#first-failure a.key").text == \
        "forward/logits"
    first_rows = driver.find_elements(By.CSS_SELECTOR, "#report tr.first-failure")
    assert len(first_rows) == 1 and first_rows[0].is_displayed()
    assert first_rows[0].find_elements(By.TAG_NAME, "td")[0].text == "logits"
    first_card = driver.find_element(By.CSS_SELECTOR, "#report .failure.first-failure h3")
    assert first_card.text.startswith("forward/logits")

    # Drawn marks: drift lines with points, histogram bars with counts.
    lines = driver.find_elements(By.CSS_SELECTOR, "svg.drift polyline.series")
    assert lines and all(len(line.get_attribute("points").split()) >= 2 for line in lines)
    assert driver.find_elements(By.CSS_SELECTOR, "svg.drift circle.point")
    bars = driver.find_elements(By.CSS_SELECTOR, "svg.histogram rect.bar:not(.empty)")
    assert bars and all(float(b.get_attribute("height")) > 0 for b in bars)
    driver.save_screenshot(str(tmp_path / "report-differences-only.png"))

    # The differences-only toggle (on by default) changes the visible rows.
    rows = driver.find_elements(By.CSS_SELECTOR, "#report .tables tr[id^='t-']")
    shown = sum(r.is_displayed() for r in rows)
    driver.find_element(By.CSS_SELECTOR, "label[for='diff-only']").click()
    shown_all = sum(r.is_displayed() for r in rows)
    assert shown < shown_all == len(rows), (shown, shown_all, len(rows))
    driver.save_screenshot(str(tmp_path / "report-all-rows.png"))

    # Sign the verdict: the page then shows the signer and the digests.
    assert driver.find_elements(By.ID, "unsigned")
    driver.find_element(By.ID, "sign").click()
    signers = _wait_for(driver, "#signatures tr.signature .signer")
    assert [s.text for s in signers] == ["judge-judy"]
    digests = driver.find_elements(By.CSS_SELECTOR, "#signatures tr.signature code")
    assert all(len(d.text) == 64 for d in digests[:2]), [d.text for d in digests]
    driver.save_screenshot(str(tmp_path / "report-signed.png"))

    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == [], errors

    # A logged-in submitter of another team: 403 on team42's run.
    _login(driver, review.base, review.sub7)
    assert "team7/x" in driver.page_source and "team42/" not in driver.page_source
    driver.get(f"{review.base}/runs/team42/paddle-broken-web")
    assert driver.find_element(By.TAG_NAME, "h1").text == "403 Forbidden"
    assert "team7-ci" in driver.page_source
    driver.save_screenshot(str(tmp_path / "submitter-403.png"))
    for name in ("report-differences-only", "report-all-rows", "report-signed", "submitter-403"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    print(f"screenshots in {tmp_path}")


@pytest.mark.requires_torch
@pytest.mark.requires_paddle
def test_broken_port_html_report_offline_matches_json(driver, review, tmp_path):
    from selenium.webdriver.common.by import By

    env = dict(os.environ, REPROD_TOKEN=review.judge)
    page_file = tmp_path / "broken.html"
    for fmt, out in (("html", ["--output", str(page_file)]), ("json", [])):
        proc = subprocess.run([str(REPRODCTL), "--server", review.server.address, "report", "get",
                               review.broken, "--format", fmt, *out],
                              env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1, proc.stderr  # the verdict failed, as planted
        if fmt == "json":
            report = json.loads(proc.stdout)
    page = page_file.read_text(encoding="utf-8")
    assert_safe(page)
    expected = failing_in_json(report)
    assert "forward/logits" in expected
    cards, rows = failing_in_html(page)
    assert cards == expected
    assert rows == {i for i, t in enumerate(report["tensors"])
                    if t["status"] not in ("pass", "warn")}

    driver.get_log("browser")  # drop what earlier pages logged
    driver.set_network_conditions(offline=True, latency=0, download_throughput=0,
                                  upload_throughput=0)
    try:
        driver.get(page_file.resolve().as_uri())
        assert driver.title.startswith("reprod report: FAILED")
        shown = {e.text for e in driver.find_elements(By.CSS_SELECTOR, ".failure h3 a.key")}
        assert shown == expected
        fetched = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)")
        assert fetched == [], fetched
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == [], errors
        driver.save_screenshot(str(tmp_path / "broken-offline.png"))
    finally:
        driver.delete_network_conditions()
