#!/usr/bin/env bash
# docker/make-base.sh — makes the base image of docker/Dockerfile*,
# localhost/reprod-debian:bookworm, from Debian's own mirror: debootstrap
# --variant=minbase bookworm into a temporary folder, trimmed like Debian's
# bookworm-slim (no documentation, man pages or locales installed later;
# no apt lists or caches), then `podman import`. No registry is contacted.
#
# Idempotent: does nothing when the image exists (REPROD_REBUILD_BASE=1 to
# make it again). Needs root, debootstrap and podman (via docker/podman.sh,
# which picks the image store).
#
# Environment: REPROD_BASE_IMAGE (default localhost/reprod-debian:bookworm),
# REPROD_DEBIAN_MIRROR (default http://deb.debian.org/debian),
# REPROD_DEBIAN_SECURITY (default http://deb.debian.org/debian-security),
# TMPDIR (where the root file system is made; ~200 MB, removed at the end).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
podman=("$here/podman.sh")
image="${REPROD_BASE_IMAGE:-localhost/reprod-debian:bookworm}"
mirror="${REPROD_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security="${REPROD_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}"
suite=bookworm

log() { printf '[make-base] %s\n' "$*" >&2; }

if [ "${REPROD_REBUILD_BASE:-0}" != 1 ] && "${podman[@]}" image exists "$image"; then
  log "$image exists; nothing to do (REPROD_REBUILD_BASE=1 makes it again)"
  exit 0
fi
for tool in debootstrap podman; do
  command -v "$tool" >/dev/null || { log "error: $tool is not installed (apt-get install $tool)"; exit 2; }
done
if [ "$(id -u)" != 0 ]; then
  log "error: debootstrap needs root"
  exit 2
fi

work="$(mktemp -d "${TMPDIR:-/var/tmp}/reprod-base.XXXXXX")"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"

log "debootstrap --variant=minbase $suite from $mirror into $rootfs"
debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -20 "$work/debootstrap.log" >&2
  log "error: debootstrap failed (log above)"
  exit 1
}

log "sources: $suite, $suite-updates, $suite-security; slim dpkg and apt settings"
rm -f "$rootfs/etc/apt/sources.list"
cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
# As in Debian's official slim images: later installs leave out
# documentation, man pages and translations; apt keeps no .deb files.
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/reprod-slim" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
DPKG
cat >"$rootfs/etc/apt/apt.conf.d/reprod-slim" <<'APT'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
APT
printf 'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };\n' \
  >"$rootfs/etc/apt/apt.conf.d/reprod-clean"
find "$rootfs/usr/share/doc" -mindepth 2 -not -name copyright -not -type d -delete
find "$rootfs/usr/share/man" "$rootfs/usr/share/info" -mindepth 1 -delete
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/log/*.log \
  "$rootfs"/tmp/* "$rootfs"/run/*
# The container's resolver and host name come from the container engine.
: >"$rootfs/etc/resolv.conf"
: >"$rootfs/etc/hostname"

log "podman import -> $image ($(du -sh "$rootfs" | cut -f1))"
tar --numeric-owner --xattrs -C "$rootfs" -c . |
  "${podman[@]}" import --quiet --change 'CMD ["/bin/bash"]' \
    --message "debootstrap --variant=minbase $suite ($mirror)" - "$image" >/dev/null
log "made $image"
