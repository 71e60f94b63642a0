"""Throwaway X.509 material made with the `openssl` command (stdlib only):
a CA and the leaf certificates it signs, EC P-256 keys (milliseconds to
make), valid for 2 days. Nothing here is fit for real use.

    make_ca(d, "ca", "/CN=reprod test CA")           # d/ca.key, d/ca.pem
    make_leaf(d, "server", "ca", "/CN=localhost",
              "subjectAltName=IP:127.0.0.1\\n")       # d/server.key, d/server.pem

Raises ServiceError, with openssl's stderr, when a command fails.
"""
import os
import subprocess

from ._common import ServiceError

EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def run_openssl(*args, cwd, openssl="openssl"):
    proc = subprocess.run([openssl, *map(str, args)], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ServiceError(f"openssl {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                           f"{proc.stderr}")


def make_ca(d, name, subject, openssl="openssl"):
    """A self-signed CA: d/NAME.key and d/NAME.pem."""
    run_openssl("req", "-x509", *EC_KEY, "-keyout", f"{name}.key", "-out", f"{name}.pem",
                "-days", "2", "-subj", subject,
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d, openssl=openssl)


def make_leaf(d, name, ca, subject, extensions, openssl="openssl"):
    """d/NAME.key and d/NAME.pem, signed by the CA d/CA.pem with the
    extensions (openssl extfile lines)."""
    run_openssl("req", "-new", *EC_KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", subject, cwd=d, openssl=openssl)
    with open(os.path.join(d, f"{name}.ext"), "w") as f:
        f.write(extensions)
    run_openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-sha256",
                "-extfile", f"{name}.ext", cwd=d, openssl=openssl)
