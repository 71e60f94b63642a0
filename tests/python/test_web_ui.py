"""reprodd's web UI and JSON API over real HTTP on loopback (server/web/).

One `reprodd --auth tokens` (RocksDB, tokens issued with `reprodd token
create` while it is stopped) serves the whole module. The ACL matrix calls
every HTTP route of docs/acl.md (rendered from server/auth/acl.cc, the table
the router serves: server_web_test checks router == table) as each kind of
caller and expects exactly what the route's access kind says; a route the
table gains without a request here fails the test. Then: a submitter never
sees another namespace over HTTP, hostile input gets a clean 4xx and the
server keeps answering, what the pages show is escaped, and no token or
session id reaches the log. TLS (HTTPS, plaintext refused, mutual TLS) runs
against servers of its own with a throwaway CA.
"""
import html
import re
import time
import warnings

import numpy as np
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Debian's requests warns about urllib3's version
    import requests

import reprod_client
from conftest import ROOT, Reprodd
from test_auth_server import _token
from tls_certs import make_tls_certs

HOSTILE = "<script>alert(1)</script>"
NO_PRINCIPAL = ("none", "bad", "expired", "revoked")
CALLERS = NO_PRINCIPAL + ("sub42", "sub7", "judge", "admin")
# Expected outcome per access kind (docs/acl.md) and caller holding a
# principal: the target is always team42's run or report.
ALLOWED = {
    "public": {"sub42", "sub7", "judge", "admin"},
    "authenticated": {"sub42", "sub7", "judge", "admin"},
    "read-run": {"sub42", "judge", "admin"},
    "compare-runs": {"sub42", "judge", "admin"},
    "write-run": {"sub42", "admin"},
    "judge": {"judge", "admin"},
    "admin": {"admin"},
}


class Env:
    pass


def _login(base, token, verify=True, cert=None):
    """A requests.Session logged in with `token`, and its CSRF token."""
    s = requests.Session()
    s.verify = verify
    s.cert = cert
    r = s.post(f"{base}/login", data={"token": token}, allow_redirects=False, timeout=30)
    assert r.status_code == 303, (r.status_code, r.text[:500])
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie, cookie
    return s, _csrf(s, base)


def _csrf(session, base):
    page = session.get(f"{base}/", timeout=30).text
    m = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
    assert m, page[:2000]
    return m.group(1)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = Env()
    data = tmp_path_factory.mktemp("web-data")
    tok = lambda *a: _token(data, *a)  # noqa: E731
    e.tokens = {
        "admin": tok("--role", "admin", "--label", "web-admin")[0],
        "judge": tok("--role", "judge", "--label", "web-judge")[0],
        "sub42": tok("--role", "submitter", "--scope", "team42", "--label", "alice-team42")[0],
        "sub7": tok("--role", "submitter", "--scope", "team7", "--label", "bob-team7")[0],
        "hostile": tok("--role", "submitter", "--scope", "team42", "--label", HOSTILE)[0],
    }
    # Expires once the fixture below has logged it in (see the end).
    e.tokens["expired"] = tok("--role", "admin", "--label", "short-lived", "--expires-in",
                              "8s")[0]
    expires_at = time.time() + 8
    e.tokens["revoked"], e.revoked_id = tok("--role", "admin", "--label", "soon-revoked")
    _, e.throwaway_id = tok("--role", "judge", "--label", "throwaway")
    e.workdir = tmp_path_factory.mktemp("web-server")
    e.server = Reprodd(e.workdir, store="rocksdb", data_dir=data,
                       extra_args=["--auth", "tokens"], log_level="debug")
    assert e.server.http_port, "reprodd wrote no .http port file"
    e.base = f"http://127.0.0.1:{e.server.http_port}"

    # Runs: two of team42 (one owned by the hostile label, with a hostile
    # run label), one of team7; a report in each namespace.
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    for who, name, labels in (("sub42", "team42/a", {}),
                              ("hostile", "team42/b", {"note": HOSTILE}),
                              ("sub7", "team7/x", {})):
        with reprod_client.Client(e.server.address, token=e.tokens[who]) as client:
            with client.open_run(name, framework="torch", labels=labels) as run:
                run.log("forward", {"out": x + (name == "team42/b")})
    e.report42 = _api(e, "sub42", "POST", "/api/v1/compare",
                      data={"ref": "team42/a", "cand": "team42/b"}).json()["id"]
    e.report7 = _api(e, "sub7", "POST", "/api/v1/compare",
                     data={"ref": "team7/x", "cand": "team7/x"}).json()["id"]

    # Sessions made while every token was good; then the revoked one is
    # revoked through the admin page and the expired one runs out.
    e.sessions = {}
    for who in ("expired", "revoked"):
        e.sessions[who] = _login(e.base, e.tokens[who])
    admin, csrf = _login(e.base, e.tokens["admin"])
    r = admin.post(f"{e.base}/admin/tokens/{e.revoked_id}/revoke", data={"csrf": csrf},
                   allow_redirects=False, timeout=30)
    assert r.status_code == 303, r.text[:500]
    time.sleep(max(0.0, expires_at - time.time() + 0.3))
    yield e
    e.server.stop()


def _api(e, who, method, path, **kw):
    headers = {"Authorization": f"Bearer {e.tokens[who]}"} if who else {}
    return requests.request(method, e.base + path, headers=headers, allow_redirects=False,
                            timeout=60, **kw)


def _routes_from_docs():
    """(route, access) of every HTTP row of docs/acl.md."""
    text = (ROOT / "docs" / "acl.md").read_text()
    rows = re.findall(r"^\| `((?:GET|POST) [^`]+)` \| (\w+) \| ([a-z-]+) \|", text, re.M)
    assert rows, "docs/acl.md lists no HTTP route"
    for route, status, _ in rows:
        assert status == "built", f"{route} is {status}: the web UI serves every HTTP route"
    return [(route, access) for route, _, access in rows]


def _request(e, route):
    """A concrete request (method, path, form) that exercises `route` on
    team42's run/report; harmless to repeat."""
    requests_by_route = {
        "GET /healthz": ("GET", "/healthz", None),
        "GET /metrics": ("GET", "/metrics", None),
        "GET /login": ("GET", "/login", None),
        "POST /login": ("POST", "/login", {"token": e.tokens["judge"]}),
        "POST /logout": ("POST", "/logout", {}),
        "GET /": ("GET", "/", None),
        "GET /runs/{run}": ("GET", "/runs/team42/a", None),
        "POST /runs/{run}/reference": ("POST", "/runs/team42/a/reference", {"reference": "0"}),
        "GET /compare": ("GET", "/compare", None),
        "POST /compare": ("POST", "/compare", {"ref": "team42/a", "cand": "team42/b"}),
        "GET /reports": ("GET", "/reports", None),
        "GET /reports/{id}": ("GET", f"/reports/{e.report42}", None),
        "GET /reports/{id}/download/{format}": ("GET", f"/reports/{e.report42}/download/json",
                                                None),
        "POST /reports/{id}/sign": ("POST", f"/reports/{e.report42}/sign", {}),
        "GET /admin/tokens": ("GET", "/admin/tokens", None),
        "POST /admin/tokens": ("POST", "/admin/tokens", {"role": "judge", "label": "matrix"}),
        "POST /admin/tokens/{token}/revoke": ("POST", f"/admin/tokens/{e.throwaway_id}/revoke",
                                              {}),
        "GET /admin/audit": ("GET", "/admin/audit", None),
        "GET /api/v1/runs": ("GET", "/api/v1/runs", None),
        "GET /api/v1/runs/{run}": ("GET", "/api/v1/runs/team42/a", None),
        "GET /api/v1/runs/{run}/tensors": ("GET", "/api/v1/runs/team42/a/tensors", None),
        "POST /api/v1/compare": ("POST", "/api/v1/compare", {"ref": "team42/a",
                                                             "cand": "team42/b"}),
        "GET /api/v1/reports": ("GET", "/api/v1/reports", None),
        "GET /api/v1/reports/{id}": ("GET", f"/api/v1/reports/{e.report42}", None),
        "GET /api/v1/tokens": ("GET", "/api/v1/tokens", None),
        "GET /api/v1/audit": ("GET", "/api/v1/audit", None),
    }
    assert route in requests_by_route, f"{route} (docs/acl.md) has no request in this test"
    return requests_by_route[route]


def _call_as(e, caller, method, path, form):
    """Pages: the caller's browser session (CSRF included); /api: its Bearer
    token. Callers without a principal: none, a bogus session / token, and
    the sessions (pages) or tokens (api) of the expired and revoked ones."""
    api = path.startswith("/api/")
    if api:
        headers = {}
        if caller == "bad":
            headers["Authorization"] = "Bearer rpd_" + "0" * 64
        elif caller != "none":
            headers["Authorization"] = f"Bearer {e.tokens[caller]}"
        return requests.request(method, e.base + path, headers=headers, data=form,
                                allow_redirects=False, timeout=60)
    if caller in ("expired", "revoked"):
        # A copy: a public POST /login answer must not replace its cookie.
        logged_in, csrf = e.sessions[caller]
        session = requests.Session()
        session.cookies.set("reprod_session", logged_in.cookies.get("reprod_session"))
    elif caller in ("none", "bad"):
        session, csrf = requests.Session(), "0" * 64
        if caller == "bad":
            session.cookies.set("reprod_session", "f" * 64)
    else:
        session, csrf = _login(e.base, e.tokens[caller])
    if form is not None and method == "POST" and path != "/login":
        form = dict(form, csrf=csrf)
    return session.request(method, e.base + path, data=form, allow_redirects=False, timeout=60)


def test_docs_list_exactly_the_served_routes(env):
    routes = [r for r, _ in _routes_from_docs()]
    for route in routes:
        _request(env, route)  # fails for a route without a request here
    assert len(routes) == len(set(routes))


@pytest.mark.parametrize("caller", CALLERS)
def test_http_acl_matrix(env, caller):
    wrong = []
    for route, access in _routes_from_docs():
        method, path, form = _request(env, route)
        r = _call_as(env, caller, method, path, form)
        if access == "public":
            expected = "allowed"
        elif caller in NO_PRINCIPAL:
            expected = 401
        else:
            expected = "allowed" if caller in ALLOWED[access] else 403
        got = r.status_code
        ok = got in (200, 303) if expected == "allowed" else got == expected
        if not ok:
            wrong.append(f"{route} as {caller}: expected {expected}, got {got}: {r.text[:300]}")
        if got == 401 and not path.startswith("/api/"):
            assert 'action="/login"' in r.text, f"{route}: a 401 page is the login page"
        if got == 403:
            assert "alice-team42" in r.text or "bob-team7" in r.text or "web-judge" in r.text, \
                f"{route} as {caller}: a 403 names the token's label: {r.text[:300]}"
    assert wrong == [], "\n".join(wrong)


def test_revoked_and_expired_sessions_end_at_once(env):
    admin, csrf = _login(env.base, env.tokens["admin"])
    gone, _ = _login(env.base, env.tokens["admin"])  # a second admin session
    # A fresh token, logged in, then revoked: its next request is a 401.
    r = admin.post(f"{env.base}/admin/tokens", data={"csrf": csrf, "role": "judge",
                                                     "label": "revoke-me"}, timeout=30)
    new = re.search(r'id="new-token">(rpd_[0-9a-f]{64})<', r.text).group(1)
    token_id = re.search(r"Token <code>([0-9a-f]{12})</code>", r.text).group(1)
    judge, _ = _login(env.base, new)
    assert judge.get(f"{env.base}/reports", timeout=30).status_code == 200
    r = admin.post(f"{env.base}/admin/tokens/{token_id}/revoke", data={"csrf": csrf},
                   allow_redirects=False, timeout=30)
    assert r.status_code == 303
    r = judge.get(f"{env.base}/reports", timeout=30)
    assert r.status_code == 401 and "was revoked" in r.text, r.text[:500]
    # The expired token's session (logged in while it was good) is refused.
    expired, _ = env.sessions["expired"]
    assert expired.get(f"{env.base}/", timeout=30).status_code == 401
    # Logout ends a session; the other admin session is untouched.
    r = gone.post(f"{env.base}/logout", data={"csrf": _csrf(gone, env.base)},
                  allow_redirects=False, timeout=30)
    assert r.status_code == 303 and "Max-Age=0" in r.headers["Set-Cookie"]
    assert gone.get(f"{env.base}/", timeout=30).status_code == 401
    assert admin.get(f"{env.base}/", timeout=30).status_code == 200


def test_post_forms_need_the_sessions_csrf_token(env):
    admin, csrf = _login(env.base, env.tokens["admin"])
    other, other_csrf = _login(env.base, env.tokens["judge"])
    for form in ({}, {"csrf": ""}, {"csrf": other_csrf}, {"csrf": csrf[:-1] + ("1" if csrf[-1] == "0" else "0")}):
        r = admin.post(f"{env.base}/reports/{env.report42}/sign", data=form,
                       allow_redirects=False, timeout=30)
        assert r.status_code == 403 and "CSRF" in r.text, (form, r.status_code)
    r = admin.post(f"{env.base}/reports/{env.report42}/sign", data={"csrf": csrf},
                   allow_redirects=False, timeout=30)
    assert r.status_code == 303


def test_submitter_never_sees_another_namespace(env):
    s7, csrf = _login(env.base, env.tokens["sub7"])
    page = s7.get(f"{env.base}/", timeout=30).text
    assert "team7/x" in page and "team42/" not in page
    listed = {r["name"] for r in _api(env, "sub7", "GET", "/api/v1/runs").json()["runs"]}
    assert listed == {"team7/x"}
    assert "team42/" not in s7.get(f"{env.base}/compare", timeout=30).text
    reports = s7.get(f"{env.base}/reports", timeout=30).text
    assert env.report7 in reports and env.report42 not in reports
    api_reports = {r["id"] for r in _api(env, "sub7", "GET", "/api/v1/reports").json()["reports"]}
    assert api_reports == {env.report7}
    for path in ("/runs/team42/a", f"/reports/{env.report42}",
                 f"/reports/{env.report42}/download/html"):
        r = s7.get(env.base + path, timeout=30)
        assert r.status_code == 403 and "bob-team7" in r.text, (path, r.status_code)
        assert "alice-team42" not in r.text  # nothing of the other team leaks
    r = s7.post(f"{env.base}/compare", data={"csrf": csrf, "ref": "team7/x", "cand": "team42/a"},
                allow_redirects=False, timeout=30)
    assert r.status_code == 403 and "team42/a" in r.text
    for path in ("/api/v1/runs/team42/a", "/api/v1/runs/team42/a/tensors",
                 f"/api/v1/reports/{env.report42}"):
        r = _api(env, "sub7", "GET", path)
        assert r.status_code == 403 and r.json()["code"] == "PERMISSION_DENIED", path
    r = _api(env, "sub7", "POST", "/api/v1/compare", data={"ref": "team42/a",
                                                            "cand": "team42/b"})
    assert r.status_code == 403
    # The same requests work for team42's own submitter, whose run page
    # lists team42's report.
    assert _api(env, "sub42", "GET", "/api/v1/runs/team42/a/tensors").status_code == 200
    s42, _ = _login(env.base, env.tokens["sub42"])
    page = s42.get(f"{env.base}/runs/team42/a", timeout=30).text
    assert f'href="/reports/{env.report42}"' in page and env.report7 not in page


def _alive(env):
    r = requests.get(f"{env.base}/healthz", timeout=10)
    assert r.status_code == 200 and r.text == "ok\n"


def test_bad_input_is_a_clean_4xx_and_the_server_stays_up(env):
    cookie = {"Cookie": "reprod_session=" + "a" * (64 * 1024)}
    r = requests.get(f"{env.base}/", headers=cookie, timeout=30)
    assert 400 <= r.status_code < 500, r.status_code
    _alive(env)
    for path in ("/nope", "/runs/only-one-part", "/api/v2/runs", "/runs/a/b/c/d",
                 "/reports/../../etc/passwd", "/static/x.js"):
        r = requests.get(env.base + path, timeout=30)
        assert r.status_code == 404, (path, r.status_code)
    r = requests.delete(f"{env.base}/runs/team42/a", timeout=30)
    assert r.status_code == 405
    # Path traversal in run names, raw and percent-encoded: never a 2xx and
    # never a file's content.
    judge, _ = _login(env.base, env.tokens["judge"])
    for path in ("/runs/..%2F..%2Fetc%2Fpasswd", "/runs/..%2Fteam42", "/runs/team42/..",
                 "/runs/%2e%2e/%2e%2e", "/runs/team42%2F..%2F..%2Fx",
                 "/api/v1/runs/..%2f..%2fetc/passwd", "/runs/team42/a%00b",
                 "/reports/..%2F..%2Fetc%2Fpasswd/download/json",
                 f"/reports/{env.report42}/download/..%2F..%2Fetc%2Fpasswd"):
        r = judge.get(env.base + path, timeout=30)
        assert r.status_code in (400, 404), (path, r.status_code)
        assert "root:" not in r.text
    # Oversized forms.
    big = {"token": "x" * (200 * 1024)}
    assert requests.post(f"{env.base}/login", data=big, timeout=30).status_code == 413
    r = judge.post(f"{env.base}/compare", data={"ref": "a" * (100 * 1024)}, timeout=30)
    assert r.status_code == 413
    _alive(env)


def test_hostile_labels_are_escaped_everywhere(env):
    admin, _ = _login(env.base, env.tokens["admin"])
    pages = {
        "runs": admin.get(f"{env.base}/", timeout=30).text,
        "run": admin.get(f"{env.base}/runs/team42/b", timeout=30).text,
        "tokens": admin.get(f"{env.base}/admin/tokens", timeout=30).text,
        "audit": admin.get(f"{env.base}/admin/audit", timeout=30).text,
    }
    for name, page in pages.items():
        assert "<script" not in page.lower(), name
        if name != "audit":  # the audit log names the label only once it acted
            assert html.escape(HOSTILE) in page, name
    # The JSON API carries the label as data.
    run = _api(env, "admin", "GET", "/api/v1/runs/team42/b").json()
    assert run["owner"] == HOSTILE and run["labels"]["note"] == HOSTILE
    # Every page forbids scripts and outside fetches.
    csp = admin.get(f"{env.base}/", timeout=30).headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp


def test_report_page_embeds_the_stored_rendering_and_downloads(env):
    judge, csrf = _login(env.base, env.tokens["judge"])
    page = judge.get(f"{env.base}/reports/{env.report42}", timeout=30).text
    assert 'id="diff-only"' in page and 'id="sign"' in page
    stored = _api(env, "judge", "GET", f"/api/v1/reports/{env.report42}").json()
    assert stored["report"]["passed"] is False and stored["ref"] == "team42/a"
    for fmt, marker in (("json", '"schema"'), ("junit", "<testsuite"), ("markdown", "#"),
                        ("text", "mean diff"), ("html", "<!DOCTYPE html>")):
        r = judge.get(f"{env.base}/reports/{env.report42}/download/{fmt}", timeout=30)
        assert r.status_code == 200 and marker in r.text, fmt
        assert "attachment" in r.headers["Content-Disposition"]
    assert judge.get(f"{env.base}/reports/{env.report42}/download/exe",
                     timeout=30).status_code == 404
    # A submitter sees the report but no sign form.
    s42, _ = _login(env.base, env.tokens["sub42"])
    page = s42.get(f"{env.base}/reports/{env.report42}", timeout=30).text
    assert 'id="diff-only"' in page and 'id="sign"' not in page


def test_tokens_and_sessions_never_reach_the_log(env):
    s, _ = _login(env.base, env.tokens["sub42"])
    session_id = s.cookies.get("reprod_session")
    requests.get(f"{env.base}/", headers={"Authorization": f"Bearer {env.tokens['sub7']}"},
                 timeout=30)
    requests.get(f"{env.base}/api/v1/runs?token={env.tokens['judge']}", timeout=30)
    log = (env.workdir / "reprodd.log").read_text()
    assert "web login: token 'alice-team42'" in log  # the log does name labels
    for name, token in env.tokens.items():
        assert token not in log, f"{name}'s token is in reprodd.log"
        assert token[4:20] not in log
    assert session_id and session_id not in log


# --- TLS ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_tls_certs(tmp_path_factory.mktemp("web-tls"))


def _tls_server(tmp_path, certs, *extra, auth=False):
    args = ["--tls-cert", certs.server_cert, "--tls-key", certs.server_key, *extra]
    data = None
    token = None
    if auth:
        data = tmp_path / "data"
        data.mkdir()
        token = _token(data, "--role", "judge", "--label", "tls-judge")[0]
        args += ["--auth", "tokens"]
    server = Reprodd(tmp_path, store="rocksdb" if auth else "memory", data_dir=data,
                     extra_args=args)
    return server, token


def test_https_with_the_test_ca_and_plaintext_refused(tmp_path, certs):
    server, token = _tls_server(tmp_path, certs, auth=True)
    try:
        base = f"https://127.0.0.1:{server.http_port}"
        r = requests.get(f"{base}/healthz", verify=str(certs.ca), timeout=30)
        assert r.status_code == 200 and r.text == "ok\n"
        # The session cookie is Secure over HTTPS.
        r = requests.post(f"{base}/login", data={"token": token}, verify=str(certs.ca),
                          allow_redirects=False, timeout=30)
        assert r.status_code == 303 and "; Secure" in r.headers["Set-Cookie"]
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{base}/healthz", verify=str(certs.other_ca), timeout=30)
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"http://127.0.0.1:{server.http_port}/healthz", timeout=30)
        assert requests.get(f"{base}/healthz", verify=str(certs.ca), timeout=30).ok
    finally:
        server.stop()


def test_mutual_tls_rejects_a_client_without_a_trusted_cert(tmp_path, certs):
    server, _ = _tls_server(tmp_path, certs, "--tls-client-ca", certs.ca)
    try:
        base = f"https://127.0.0.1:{server.http_port}"
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"{base}/healthz", verify=str(certs.ca), timeout=30)
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"{base}/healthz", verify=str(certs.ca), timeout=30,
                         cert=(str(certs.other_client_cert), str(certs.other_client_key)))
        r = requests.get(f"{base}/healthz", verify=str(certs.ca), timeout=30,
                         cert=(str(certs.client_cert), str(certs.client_key)))
        assert r.status_code == 200
    finally:
        server.stop()


def test_non_loopback_web_listen_needs_tokens_or_insecure(tmp_path):
    from conftest import REPRODD
    import subprocess
    res = subprocess.run([str(REPRODD), "--store", "memory", "--listen", "127.0.0.1:0",
                          "--http-listen", "0.0.0.0:0"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2
    assert "web UI" in res.stderr and "--auth tokens" in res.stderr, res.stderr


def test_judge_publishes_a_reference_that_submitters_may_compare_against(env):
    judge, csrf = _login(env.base, env.tokens["judge"])
    s42, csrf42 = _login(env.base, env.tokens["sub42"])
    compare = {"csrf": csrf42, "ref": "team7/x", "cand": "team42/a"}
    r = s42.post(f"{env.base}/compare", data=compare, allow_redirects=False, timeout=60)
    assert r.status_code == 403  # team7/x is neither its own nor a reference
    assert "team7/x" not in s42.get(f"{env.base}/", timeout=30).text
    assert 'id="publish"' in judge.get(f"{env.base}/runs/team7/x", timeout=30).text
    r = judge.post(f"{env.base}/runs/team7/x/reference", data={"csrf": csrf, "reference": "1"},
                   allow_redirects=False, timeout=30)
    assert r.status_code == 303
    try:
        assert "team7/x" in s42.get(f"{env.base}/", timeout=30).text
        r = s42.post(f"{env.base}/compare", data=compare, allow_redirects=False, timeout=60)
        assert r.status_code == 303 and r.headers["Location"].startswith("/reports/rpt-")
        assert s42.get(env.base + r.headers["Location"], timeout=30).status_code == 200
        # Publishing is the judge's, in the audit log with its label.
        audit = _api(env, "admin", "GET", "/api/v1/audit?object=team7/x").json()["records"]
        assert any(a["verb"] == "publish" and a["label"] == "web-judge" and a["result"] == "ok"
                   for a in audit), audit
    finally:
        r = judge.post(f"{env.base}/runs/team7/x/reference",
                       data={"csrf": csrf, "reference": "0"}, allow_redirects=False, timeout=30)
        assert r.status_code == 303
    assert "team7/x" not in s42.get(f"{env.base}/", timeout=30).text


def test_without_auth_the_pages_work_with_csrf_and_no_login(reprodd, run_ns):
    """The embedded default (--auth none): no login, forms still need the
    CSRF token of the anonymous session the first page view creates."""
    base = f"http://127.0.0.1:{reprodd.http_port}"
    x = np.ones(4, dtype=np.float32)
    with reprod_client.Client(reprodd.address) as client:
        for name, value in (("ref", x), ("cand", x * 2)):
            with client.open_run(f"{run_ns}/{name}", framework="torch") as run:
                run.log("forward", {"out": value})
    s = requests.Session()
    first = s.get(f"{base}/compare", timeout=30)
    cookie = first.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    page = first.text
    assert "Set-Cookie" not in s.get(f"{base}/", timeout=30).headers  # one session
    csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', page).group(1)
    form = {"ref": f"{run_ns}/ref", "cand": f"{run_ns}/cand", "preset": "reprod"}
    assert s.post(f"{base}/compare", data=form, allow_redirects=False,
                  timeout=60).status_code == 403
    assert requests.post(f"{base}/compare", data=dict(form, csrf=csrf), allow_redirects=False,
                         timeout=60).status_code == 403  # another browser: no session
    r = s.post(f"{base}/compare", data=dict(form, csrf=csrf), allow_redirects=False, timeout=60)
    assert r.status_code == 303
    report = s.get(base + r.headers["Location"], timeout=30)
    assert report.status_code == 200 and "FAILED" in report.text
    assert "log out" not in report.text and "local (admin)" in report.text
    assert requests.get(f"{base}/login", allow_redirects=False, timeout=30).status_code == 303
    assert requests.head(f"{base}/healthz", timeout=30).status_code == 200


def test_report_page_lists_modules_up_to_the_first_divergence(reprodd, run_ns):
    """A compare of captured runs: the report page (the stored HTML report
    embedded) opens with the first divergence and the modules in execution
    order, coloured pass / fail / unmatched."""
    base = f"http://127.0.0.1:{reprodd.http_port}"
    x = np.arange(6, dtype=np.float32)
    order = ["enc.0.q", "enc.0.norm", "enc.1.q", "enc.1.norm", "head"]
    with reprod_client.Client(reprodd.address) as client:
        for name in ("ref", "cand"):
            with client.open_run(f"{run_ns}/{name}-layers", framework="torch") as run:
                for module in order + ([f"only.{name}"]):
                    # The candidate's enc.1.norm and everything after it differ.
                    off = 1 if name == "cand" and module in order[3:] else 0
                    run.log("layers", {f"{module}/forward/output/0": x + off}, step=0)
        report = client.compare(f"{run_ns}/ref-layers", f"{run_ns}/cand-layers",
                                preset="reprod")
    fd = report.first_divergence
    assert (fd["module"], fd["direction"], fd["step"]) == ("enc.1.norm", "forward", 0), fd
    assert fd["passed_before"] == ["enc.0.q", "enc.0.norm", "enc.1.q"]
    assert sorted(fd["unmatched"]) == ["only.cand", "only.ref"]
    page = requests.get(f"{base}/reports/{report.id}", timeout=30).text
    section = page[page.index('<section id="divergence">'):]
    section = section[:section.index("</section>")]
    rows = re.findall(r'<li class="([a-z ]+)"><span class="badge [a-z]+">([a-z]+)</span> '
                      r'<code>([^<]+)</code></li>', section)
    assert rows == [("pass", "pass", "enc.0.q"), ("pass", "pass", "enc.0.norm"),
                    ("pass", "pass", "enc.1.q"), ("fail divergent", "fail", "enc.1.norm"),
                    ("fail", "fail", "head"), ("missing", "unmatched", "only.cand"),
                    ("missing", "unmatched", "only.ref")], rows
    # Shown before the acceptance checklist: the first thing a reader sees.
    assert page.index('id="divergence"') < page.index('id="checklist"')
