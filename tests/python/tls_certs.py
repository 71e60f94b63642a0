"""Throwaway TLS material for the TLS tests, made with the `openssl` command.

make_tls_certs(directory) writes a CA, a server certificate for 127.0.0.1 and
localhost (subjectAltName IP:127.0.0.1, DNS:localhost) and a client
certificate, both signed by the CA, plus a second, unrelated CA and a client
certificate signed by it (a client the server must not trust). EC P-256 keys:
generating them takes milliseconds. Nothing here is fit for real use.
"""
import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest


@dataclasses.dataclass(frozen=True)
class TlsCerts:
    ca: Path             # CA certificate (PEM) that signed server and client
    server_cert: Path    # for 127.0.0.1 / localhost
    server_key: Path
    client_cert: Path    # signed by `ca`
    client_key: Path
    other_ca: Path       # an unrelated CA
    other_client_cert: Path  # signed by `other_ca`
    other_client_key: Path


def _openssl(*args, cwd):
    proc = subprocess.run(["openssl", *map(str, args)], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"openssl {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                    f"{proc.stderr}")


def _make_ca(d, name):
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
             "-subj", f"/CN=reprod test {name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def _make_leaf(d, name, ca, cn, extensions):
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}",
             cwd=d)
    (d / f"{name}.ext").write_text(extensions)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-sha256",
             "-extfile", f"{name}.ext", cwd=d)


def make_tls_certs(directory):
    """Writes the material into `directory` (created) and returns TlsCerts."""
    if shutil.which("openssl") is None:
        pytest.fail("the TLS tests need the openssl command (Debian package openssl)")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    _make_ca(d, "ca")
    _make_ca(d, "other-ca")
    _make_leaf(d, "server", "ca", "localhost",
               "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
               "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n")
    client_ext = ("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                  "extendedKeyUsage=clientAuth\n")
    _make_leaf(d, "client", "ca", "reprod test client", client_ext)
    _make_leaf(d, "other-client", "other-ca", "reprod untrusted client", client_ext)
    return TlsCerts(ca=d / "ca.pem", server_cert=d / "server.pem", server_key=d / "server.key",
                    client_cert=d / "client.pem", client_key=d / "client.key",
                    other_ca=d / "other-ca.pem", other_client_cert=d / "other-client.pem",
                    other_client_key=d / "other-client.key")
