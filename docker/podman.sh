#!/usr/bin/env bash
# docker/podman.sh — podman with the storage settings this project's image
# builds and tests use, in one place. It keeps its own image store
# (REPROD_PODMAN_ROOT, default /var/tmp/reprod-podman) so it never touches the
# host's default store, logs events to a file (no systemd journal needed),
# uses cgroupfs (no systemd user session needed) and builds docker-format
# images:
#
#   docker/podman.sh build --isolation chroot -f docker/Dockerfile -t reprod/reprodd:dev .
#   docker/podman.sh image mount reprod/reprodd:dev
#
# REPROD_PODMAN_DRIVER picks the storage driver: overlay (default; needs a
# kernel with overlayfs, fine as root on ext4/xfs) or vfs (works everywhere,
# but every layer is a full copy: several GB for the build stage).
set -euo pipefail
# Builds write the docker image format: OCI images cannot carry HEALTHCHECK.
export BUILDAH_FORMAT="${BUILDAH_FORMAT:-docker}"
root="${REPROD_PODMAN_ROOT:-/var/tmp/reprod-podman}"
exec podman \
  --root "$root/storage" \
  --runroot "$root/run" \
  --storage-driver "${REPROD_PODMAN_DRIVER:-overlay}" \
  --cgroup-manager cgroupfs \
  --events-backend file \
  "$@"
