"""TLS and mutual TLS on reprodd's gRPC listener, with reprodctl and the
Python client.

A throwaway CA, a server certificate for 127.0.0.1/localhost and client
certificates are made with the openssl command (tls_certs.py). Checks that
TLS clients work, that every mismatch (plaintext client at a TLS server, TLS
client at a plaintext server, a missing or untrusted client certificate)
fails with a message that says what to do, and that bad TLS files stop
reprodd with exit 2 before it listens, naming the file.
"""
import os
import subprocess
import time

import numpy as np
import pytest

import layouts
from conftest import REPRODD, REPRODCTL, Reprodd, Result
from tls_certs import make_tls_certs

import reprod_client
from reprod_client import ServerUnavailable


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_tls_certs(tmp_path_factory.mktemp("tls"))


def _server(tmp_path_factory, *extra):
    return Reprodd(tmp_path_factory.mktemp("reprodd-tls"), extra_args=extra)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory, certs):
    server = _server(tmp_path_factory, "--tls-cert", certs.server_cert,
                     "--tls-key", certs.server_key)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mtls_server(tmp_path_factory, certs):
    server = _server(tmp_path_factory, "--tls-cert", certs.server_cert,
                     "--tls-key", certs.server_key, "--tls-client-ca", certs.ca)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory):
    server = _server(tmp_path_factory)
    yield server
    server.stop()


def reprodctl(server, *args, env_extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPROD_")}
    env.update(env_extra or {})
    proc = subprocess.run([str(REPRODCTL), "--server", server.address, *map(str, args)],
                          capture_output=True, text=True, timeout=60, env=env)
    return Result(proc)


@pytest.fixture(autouse=True)
def no_tls_env(monkeypatch):
    for name in ("REPROD_TLS_CA", "REPROD_TLS_CERT", "REPROD_TLS_KEY", "REPROD_SERVER"):
        monkeypatch.delenv(name, raising=False)


def write_pair(tmp_path):
    ref = {"logits": np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)}
    cand = {"logits": ref["logits"] + np.float32(1e-7)}
    rp, cp = tmp_path / "forward_torch.npy", tmp_path / "forward_paddle.npy"
    layouts.save_reprod_log(rp, ref)
    layouts.save_reprod_log(cp, cand)
    return ref, cand, rp, cp


# --- reprodctl ------------------------------------------------------------


def test_reprodctl_push_compare_ls_over_tls(tmp_path, tls_server, certs):
    ref, cand, rp, cp = write_pair(tmp_path)
    tls = ("--tls-ca", certs.ca)
    assert reprodctl(tls_server, *tls, "push", rp, "--run", "tls/torch").code == 0
    # The CA also comes from REPROD_TLS_CA.
    res = reprodctl(tls_server, "push", cp, "--run", "tls/paddle",
                    env_extra={"REPROD_TLS_CA": str(certs.ca)})
    assert res.code == 0 and "1 stored" in res.stdout, res

    res = reprodctl(tls_server, *tls, "compare", "tls/torch", "tls/paddle", "--format", "json")
    assert res.code == 0, res
    report = res.json()
    assert report["passed"] is True
    (t,) = report["tensors"]
    want = np.abs(ref["logits"].astype(np.float64) - cand["logits"].astype(np.float64)).max()
    assert t["stats"]["max_abs"] == pytest.approx(want, rel=1e-12)

    res = reprodctl(tls_server, *tls, "runs", "ls", "tls/", "--format", "json")
    assert res.code == 0, res
    assert sorted(r["name"] for r in res.json()) == ["tls/paddle", "tls/torch"]


def test_reprodctl_plaintext_at_tls_server_says_use_tls_ca(tls_server):
    res = reprodctl(tls_server, "runs", "ls")
    assert res.code == 3, res
    assert "requires TLS" in res.stderr and "--tls-ca" in res.stderr, res
    assert tls_server.address in res.stderr, res
    assert "start a server" not in res.stderr, res  # the unreachable hint would mislead


def test_reprodctl_tls_at_plaintext_server_says_so(plain_server, certs):
    res = reprodctl(plain_server, "--tls-ca", certs.ca, "runs", "ls")
    assert res.code == 3, res
    assert "does not speak TLS" in res.stderr, res
    # gRPC core's own log line of the failed handshake is not printed...
    assert "Handshake failed with fatal error" not in res.stderr, res
    assert res.stderr.count("\n") == 1, res  # ...only reprodctl's one error line
    # ...except in the debug log.
    res = reprodctl(plain_server, "--tls-ca", certs.ca, "--log-level", "debug", "runs", "ls")
    assert res.code == 3 and "Handshake failed with fatal error" in res.stderr, res


def test_reprodctl_untrusted_server_certificate(tls_server, certs):
    res = reprodctl(tls_server, "--tls-ca", certs.other_ca, "runs", "ls")
    assert res.code == 3, res
    assert "not trusted" in res.stderr and "--tls-ca" in res.stderr, res


def test_reprodctl_mutual_tls(tmp_path, mtls_server, certs):
    _, _, rp, _ = write_pair(tmp_path)
    # No client certificate: refused, and told to give one.
    res = reprodctl(mtls_server, "--tls-ca", certs.ca, "push", rp, "--run", "m/a")
    assert res.code == 3, res
    assert "client certificate" in res.stderr and "--tls-cert" in res.stderr, res
    # A certificate from another CA: refused.
    res = reprodctl(mtls_server, "--tls-ca", certs.ca, "--tls-cert", certs.other_client_cert,
                    "--tls-key", certs.other_client_key, "runs", "ls")
    assert res.code == 3, res
    assert "--tls-client-ca" in res.stderr, res
    # The right one (flags, then environment): works.
    res = reprodctl(mtls_server, "--tls-ca", certs.ca, "--tls-cert", certs.client_cert,
                    "--tls-key", certs.client_key, "push", rp, "--run", "m/a")
    assert res.code == 0 and "1 stored" in res.stdout, res
    res = reprodctl(mtls_server, "runs", "ls", "m/", "--format", "json",
                    env_extra={"REPROD_TLS_CA": str(certs.ca),
                               "REPROD_TLS_CERT": str(certs.client_cert),
                               "REPROD_TLS_KEY": str(certs.client_key)})
    assert res.code == 0 and [r["name"] for r in res.json()] == ["m/a"], res


def test_reprodctl_bad_tls_files_are_usage_errors(tls_server, certs, tmp_path):
    missing = tmp_path / "missing.pem"
    res = reprodctl(tls_server, "--tls-ca", missing, "runs", "ls")
    assert res.code == 2, res
    assert f"--tls-ca {missing}: cannot open: No such file or directory" in res.stderr, res
    res = reprodctl(tls_server, "--tls-ca", certs.ca, "--tls-cert", certs.client_cert, "runs",
                    "ls")
    assert res.code == 2 and "--tls-cert and --tls-key go together" in res.stderr, res
    res = reprodctl(tls_server, "--tls-ca", certs.ca, "--tls-cert", certs.client_cert,
                    "--tls-key", certs.other_client_key, "runs", "ls")
    assert res.code == 2, res
    assert f"--tls-key {certs.other_client_key} is not the key of the certificate" in res.stderr


# --- the Python client ----------------------------------------------------


def test_python_client_over_tls(tls_server, certs):
    x = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    with reprod_client.Client(tls_server.address, tls_ca=str(certs.ca)) as client:
        run = client.open_run("py/tls", framework="torch", recreate=True)
        run.log("forward", {"x": x})
        run.seal()
        got = client.read_tensor("py/tls", "forward", "x")
    np.testing.assert_array_equal(got, x)
    # PEM bytes work as well as paths.
    with reprod_client.Client(tls_server.address, tls_ca=certs.ca.read_bytes()) as client:
        assert [r.name for r in client.runs("py/")] == ["py/tls"]


def test_python_client_tls_ca_from_environment(tls_server, certs, monkeypatch):
    monkeypatch.setenv("REPROD_TLS_CA", str(certs.ca))
    with reprod_client.Client(tls_server.address) as client:
        assert isinstance(client.runs(), list)


def test_python_client_plaintext_at_tls_server_fails_clearly(tls_server):
    with reprod_client.Client(tls_server.address, timeout=5) as client:
        with pytest.raises(ServerUnavailable) as e:
            client.runs()
    assert "requires TLS" in str(e.value) and "tls_ca" in str(e.value)


def test_python_client_tls_at_plaintext_server_fails_clearly(plain_server, certs):
    with reprod_client.Client(plain_server.address, tls_ca=str(certs.ca), timeout=5) as client:
        with pytest.raises(ServerUnavailable) as e:
            client.runs()
    assert "does not speak TLS" in str(e.value)


def test_python_client_mutual_tls(mtls_server, certs):
    with reprod_client.Client(mtls_server.address, tls_ca=str(certs.ca), timeout=5) as client:
        with pytest.raises(ServerUnavailable) as e:
            client.runs()
    assert "client certificate" in str(e.value) and "tls_cert" in str(e.value)
    with reprod_client.Client(mtls_server.address, tls_ca=str(certs.ca),
                              tls_cert=str(certs.client_cert),
                              tls_key=certs.client_key.read_bytes()) as client:
        assert isinstance(client.runs(), list)


def test_python_client_bad_tls_arguments(certs, tmp_path):
    with pytest.raises(ValueError, match=r"tls_ca .*missing.pem: cannot read"):
        reprod_client.Client("127.0.0.1:1", tls_ca=str(tmp_path / "missing.pem"))
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(ValueError, match=r"junk.pem: not PEM"):
        reprod_client.Client("127.0.0.1:1", tls_ca=str(tmp_path / "junk.pem"))
    with pytest.raises(ValueError, match="tls_cert and tls_key go together"):
        reprod_client.Client("127.0.0.1:1", tls_ca=str(certs.ca), tls_cert=str(certs.client_cert))


# --- reprodd's own checks -------------------------------------------------


def start_reprodd(*args, listen="127.0.0.1:0"):
    proc = subprocess.run([str(REPRODD), "--listen", listen, "--store", "memory",
                           "--http-listen", "off",
                           "--backend", "cpu", "--threads", "1", *map(str, args)],
                          capture_output=True, text=True, timeout=30)
    return Result(proc)


@pytest.mark.parametrize("case", ["missing_cert", "missing_key", "swapped", "garbage_cert",
                                  "mismatched_key", "missing_client_ca"])
def test_reprodd_bad_tls_files_exit_2_naming_the_file(case, certs, tmp_path):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    missing = tmp_path / "missing.pem"
    cert, key = certs.server_cert, certs.server_key
    args, want = {
        "missing_cert": (("--tls-cert", missing, "--tls-key", key),
                         f"--tls-cert {missing}: cannot open: No such file or directory"),
        "missing_key": (("--tls-cert", cert, "--tls-key", missing),
                        f"--tls-key {missing}: cannot open: No such file or directory"),
        "swapped": (("--tls-cert", key, "--tls-key", cert),
                    f"--tls-cert {key}: holds a private key, not a certificate"),
        "garbage_cert": (("--tls-cert", garbage, "--tls-key", key),
                         f"--tls-cert {garbage}: certificate 1 does not parse"),
        "mismatched_key": (("--tls-cert", cert, "--tls-key", certs.client_key),
                           f"--tls-key {certs.client_key} is not the key of the certificate "
                           f"in --tls-cert {cert}"),
        "missing_client_ca": (("--tls-cert", cert, "--tls-key", key, "--tls-client-ca", missing),
                              f"--tls-client-ca {missing}: cannot open"),
    }[case]
    res = start_reprodd(*args)
    assert res.code == 2, res
    assert want in res.stdout + res.stderr, res
    assert "listening" not in res.stdout + res.stderr, res


def test_reprodd_tls_flag_combinations(certs):
    res = start_reprodd("--tls-cert", certs.server_cert)
    assert res.code == 2 and "--tls-cert and --tls-key go together" in res.stdout + res.stderr
    res = start_reprodd("--tls-client-ca", certs.ca)
    assert res.code == 2 and "--tls-client-ca (mutual TLS) needs --tls-cert" in (
        res.stdout + res.stderr), res
    # TLS does not lift the loopback rule (tokens are not enforced yet).
    res = start_reprodd("--tls-cert", certs.server_cert, "--tls-key", certs.server_key,
                        listen="0.0.0.0:0")
    assert res.code == 2 and "refusing to listen on non-loopback" in res.stdout + res.stderr
    assert "TLS does not lift this rule" in res.stdout + res.stderr, res


def start_and_stop_reprodd(tmp_path, *args, env_extra=None):
    """Starts reprodd at --log-level info, waits until it listens, stops it
    (SIGTERM); returns its output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPROD_")}
    env.update(env_extra or {})
    port_file = tmp_path / "port"
    proc = subprocess.Popen([str(REPRODD), "--listen", "127.0.0.1:0", "--store", "memory",
                             "--http-listen", "off",
                             "--backend", "cpu", "--threads", "1", "--log-level", "info",
                             "--port-file", port_file, *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.time() + 30
    while not (port_file.exists() and port_file.read_text().strip()):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"reprodd did not start: {proc.communicate()[0]}")
        time.sleep(0.02)
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    return out


@pytest.mark.parametrize("mode", ["plain", "tls", "mtls"])
def test_reprodd_logs_tls_mode_without_key_material(mode, certs, tmp_path):
    pair = ("--tls-cert", certs.server_cert, "--tls-key", certs.server_key)
    args, want = {
        "plain": ((), "TLS: off"),
        "tls": (pair, f"TLS: on (certificate {certs.server_cert})"),
        "mtls": ((*pair, "--tls-client-ca", certs.ca),
                 f"TLS: on, mutual (certificate {certs.server_cert}; clients need a "
                 f"certificate signed by {certs.ca})"),
    }[mode]
    out = start_and_stop_reprodd(tmp_path, *args)
    assert want in out, out
    key_body = "".join(certs.server_key.read_text().splitlines()[1:-1])
    assert "PRIVATE KEY" not in out and key_body[:32] not in out, out


def test_reprodd_tls_from_environment(certs, tmp_path):
    out = start_and_stop_reprodd(tmp_path, env_extra={
        "REPROD_LISTEN_TLS_CERT": str(certs.server_cert),
        "REPROD_LISTEN_TLS_KEY": str(certs.server_key),
        "REPROD_LISTEN_TLS_CLIENT_CA": str(certs.ca)})
    assert f"TLS: on, mutual (certificate {certs.server_cert}" in out, out
