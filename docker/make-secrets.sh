#!/usr/bin/env bash
# docker/make-secrets.sh — the secrets docker/compose.yaml mounts, in
# docker/secrets/ (git-ignored): an admin token (rpd_ + 64 hex digits), a
# private CA (ca.crt; its key stays in docker/secrets/ca.key: move it away)
# and a server certificate for the compose service name `reprodd`,
# localhost and 127.0.0.1 (the image's health check connects there), plus
# any names in REPROD_TLS_NAMES ("DNS:reprod.example.org,IP:192.0.2.10").
# Idempotent: existing files are kept. The token and the key are readable by
# uid 10001 (the image's user) only: run as root, or under rootless podman
# `podman unshare chown 10001:10001 docker/secrets/admin.token docker/secrets/tls.key`.
set -euo pipefail
dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/secrets"
install -d -m 0755 "$dir"
cd "$dir"
log() { printf '[make-secrets] %s\n' "$*" >&2; }

if [ ! -f admin.token ]; then
  (umask 077 && echo "rpd_$(openssl rand -hex 32)" >admin.token)
  log "wrote admin.token"
fi
if [ ! -f ca.crt ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout ca.key -out ca.crt -days 3650 -subj "/CN=reprod compose CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    2>/dev/null
  chmod 0600 ca.key
  log "wrote ca.crt (and ca.key: keep it elsewhere)"
fi
if [ ! -f tls.crt ]; then
  names="DNS:reprodd,DNS:localhost,IP:127.0.0.1${REPROD_TLS_NAMES:+,$REPROD_TLS_NAMES}"
  (umask 077 && openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout tls.key -out tls.csr -subj "/CN=reprodd" 2>/dev/null)
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' \
    "$names" >tls.ext
  openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out tls.crt \
    -days 825 -sha256 -extfile tls.ext 2>/dev/null
  rm -f tls.csr tls.ext
  log "wrote tls.crt, tls.key for $names"
fi
chmod 0644 ca.crt tls.crt
chmod 0600 admin.token tls.key
if [ "$(id -u)" = 0 ]; then chown 10001:10001 admin.token tls.key; fi
log "secrets in $dir"
