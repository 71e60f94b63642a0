#!/bin/sh
# docker/runtime-packages.sh BINARY... — prints the Debian packages that hold
# the shared libraries BINARY... load (ldd), one per line, sorted: what a
# runtime image (or a server without build tools) must install. Run where the
# binaries were built (docker/Dockerfile's build stage). Fails when a library
# belongs to no package, so nothing is silently left out.
#
# Debian 12 merged /usr, but dpkg still records most libraries under /lib:
# each library is looked up as ldd names it, resolved, and with /usr added
# or removed.
set -eu
[ "$#" -gt 0 ] || { echo "usage: $0 BINARY..." >&2; exit 2; }
ldd "$@" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u | while read -r lib; do
  real="$(readlink -f "$lib")"
  found=""
  for path in "$lib" "$real" "${lib#/usr}" "${real#/usr}" "/usr$lib" "/usr$real"; do
    if owner="$(dpkg-query -S "$path" 2>/dev/null)"; then
      found="${owner%%:*}"
      break
    fi
  done
  if [ -z "$found" ]; then
    echo "runtime-packages.sh: no Debian package holds $lib ($real)" >&2
    exit 1
  fi
  echo "$found"
done | sort -u
