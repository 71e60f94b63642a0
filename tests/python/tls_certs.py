"""Throwaway TLS material for the TLS tests, made with the `openssl` command.

make_tls_certs(directory) writes a CA, a server certificate for 127.0.0.1 and
localhost (subjectAltName IP:127.0.0.1, DNS:localhost) and a client
certificate, both signed by the CA, plus a second, unrelated CA and a client
certificate signed by it (a client the server must not trust). EC P-256 keys:
generating them takes milliseconds. Nothing here is fit for real use.
"""
import dataclasses
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for services

from services._common import ServiceError  # noqa: E402
from services.certs import make_ca, make_leaf  # noqa: E402


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


def make_tls_certs(directory):
    """Writes the material into `directory` (created) and returns TlsCerts."""
    if shutil.which("openssl") is None:
        pytest.fail("the TLS tests need the openssl command (Debian package openssl)")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    client_ext = ("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                  "extendedKeyUsage=clientAuth\n")
    try:
        make_ca(d, "ca", "/CN=reprod test ca")
        make_ca(d, "other-ca", "/CN=reprod test other-ca")
        make_leaf(d, "server", "ca", "/CN=localhost",
                  "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                  "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n")
        make_leaf(d, "client", "ca", "/CN=reprod test client", client_ext)
        make_leaf(d, "other-client", "other-ca", "/CN=reprod untrusted client", client_ext)
    except ServiceError as e:
        pytest.fail(str(e))
    return TlsCerts(ca=d / "ca.pem", server_cert=d / "server.pem", server_key=d / "server.key",
                    client_cert=d / "client.pem", client_key=d / "client.key",
                    other_ca=d / "other-ca.pem", other_client_cert=d / "other-client.pem",
                    other_client_key=d / "other-client.key")
