"""A small S3 client over `curl --aws-sigv4` (an implementation of SigV4
that is not ours, so tests can use it as an oracle).

    s3 = S3Curl(server.endpoint, server.access_key, server.secret_key, workdir=tmp_path)
    r = s3.request("PUT", "/bucket/key", body=b"...")
    r.status, r.headers["etag"], r.body

Every request carries x-amz-content-sha256 (the SHA-256 of the body, which
curl signs; radosgw takes a request without it as UNSIGNED-PAYLOAD, which
curl 7.88 does not sign as). Query parameters go in sorted and as
`name=value`: curl 7.88 signs a bare `?uploads` as `uploads`, radosgw as
`uploads=`, so write `uploads=`.
"""
import hashlib
import os
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from urllib.parse import quote

from ._common import ServiceUnavailable, require_binary

S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def require_curl_sigv4():
    curl = require_binary("curl", "curl")
    out = subprocess.run([curl, "--help", "all"], capture_output=True, text=True,
                         timeout=30).stdout
    if "--aws-sigv4" not in out:
        raise ServiceUnavailable("curl (7.75 or newer, for --aws-sigv4)", "curl --aws-sigv4")
    return curl


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lower-case names, the final response's
        self.body = body

    def xml(self):
        return ET.fromstring(self.body)

    def error_code(self):
        """The <Code> of an S3 error body, or None."""
        try:
            return self.xml().findtext("Code")
        except ET.ParseError:
            return None

    def __repr__(self):
        return f"HTTP {self.status} {self.headers} {self.body[:500]!r}"


class S3Curl:
    def __init__(self, endpoint, access_key, secret_key, region="us-east-1", workdir=None):
        self.curl = require_curl_sigv4()
        self.endpoint = endpoint.rstrip("/")
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.workdir = workdir or tempfile.gettempdir()

    def request(self, method, path, query=None, body=None, headers=None, sign=True,
                secret_key=None, payload_sha256=None, timeout=120):
        """One request. `query`: dict (sent sorted); `body`: bytes;
        `sign=False` sends it anonymously; `secret_key` signs with another
        secret; `payload_sha256` overrides the signed body hash."""
        url = self.endpoint + path
        if query:
            # Encoded as SigV4's canonical query wants it (curl 7.88 signs
            # the query as written).
            url += "?" + "&".join(sorted(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
                                         for k, v in query.items()))
        fd, base = tempfile.mkstemp(prefix="s3curl-", dir=self.workdir)
        os.close(fd)
        head_file, out_file, in_file = base + ".head", base + ".out", base + ".in"
        try:
            args = [self.curl, "-sS", "--noproxy", "*", "--max-time", str(timeout),
                    "-D", head_file, "-o", out_file, "-w", "%{http_code}"]
            if method == "HEAD":
                args.append("-I")
            elif method == "PUT" and body is not None:
                args += ["-T", in_file]
            else:
                args += ["-X", method]
            if body is not None:
                with open(in_file, "wb") as f:
                    f.write(body)
                if method != "PUT":
                    args += ["--data-binary", "@" + in_file]
            if sign:
                digest = payload_sha256 or hashlib.sha256(body or b"").hexdigest()
                args += ["--aws-sigv4", f"aws:amz:{self.region}:s3",
                         "--user", f"{self.access_key}:{secret_key or self.secret_key}",
                         "-H", f"x-amz-content-sha256: {digest}"]
            for k, v in (headers or {}).items():
                args += ["-H", f"{k}: {v}"]
            args.append(url)
            proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout + 30)
            if proc.returncode != 0:
                raise RuntimeError(f"curl {method} {url} exited {proc.returncode}: {proc.stderr}")
            with open(head_file, "rb") as f:
                raw = f.read().decode("latin-1")
            # The last block (after any "100 Continue").
            block = [b for b in raw.replace("\r\n", "\n").split("\n\n") if b.startswith("HTTP/")][-1]
            hdrs = {}
            for line in block.split("\n")[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    hdrs[k.strip().lower()] = v.strip()
            data = b""
            if os.path.exists(out_file):
                with open(out_file, "rb") as f:
                    data = f.read()
            return Response(int(proc.stdout.strip()), hdrs, data)
        finally:
            for p in (base, head_file, out_file, in_file):
                if os.path.exists(p):
                    os.unlink(p)
