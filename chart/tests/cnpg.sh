#!/usr/bin/env bash
# The CloudNativePG example (chart/examples/cloudnativepg/cluster.yaml): it parses, and holds what iwd's
# availability needs: a Cluster of PostgreSQL 15 instances (a primary and standbys) running the iwd image
# of the chart's release, iwd preloaded, at least one synchronous standby (and no more than there are
# standbys), iwd parameters the extension defines, and tenant Databases of that Cluster with the extension.
# Sourced at the end of chart/tests/run.sh (its checks counted there); run on its own it ends with
# "cnpg: N passed, M failed".
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -uo pipefail
    cd "$(dirname "$0")/../.." || exit 1
    suite=cnpg
    # shellcheck source=../../scripts/lib.sh
    . scripts/lib.sh
    cnpg_alone=1
fi
example=chart/examples/cloudnativepg/cluster.yaml

# facts: one line per fact the checks compare, from the parsed documents (or the parse error)
facts=$(python3 - "$example" <<'PY' 2>&1
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
clusters = [d for d in docs if d.get("kind") == "Cluster"]
databases = [d for d in docs if d.get("kind") == "Database"]
print("kinds", " ".join(sorted({d.get("kind", "?") for d in docs})))
print("apiVersions", " ".join(sorted({d.get("apiVersion", "?") for d in docs})))
print("clusters", len(clusters))
c = clusters[0] if clusters else {}
spec = c.get("spec", {})
pg = spec.get("postgresql", {})
print("name", c.get("metadata", {}).get("name", ""))
print("instances", spec.get("instances", 0))
print("image", spec.get("imageName", ""))
print("preload", ",".join(pg.get("shared_preload_libraries", [])))
print("sync", spec.get("minSyncReplicas", 0), spec.get("maxSyncReplicas", 0))
print("parameters", " ".join(k for k in pg.get("parameters", {}) if k.startswith("iwd")))
print("nonstring", " ".join(k for k, v in pg.get("parameters", {}).items() if not isinstance(v, str)))
for d in databases:
    s = d.get("spec", {})
    exts = [e.get("name") for e in s.get("extensions", []) if e.get("ensure", "present") == "present"]
    print("database", s.get("name", ""), s.get("cluster", {}).get("name", ""), ",".join(exts))
PY
)
fact() { sed -n "s/^$1 //p" <<<"$facts" | head -n 1; }

check "the example parses as YAML documents" "1" "$(fact clusters)" || echo "$facts"
check "a Cluster and tenant Databases" "Cluster Database" "$(fact kinds)"
check "of CloudNativePG's API" "postgresql.cnpg.io/v1" "$(fact apiVersions)"
check_match "three instances or more: a primary and standbys" '^([3-9]|[1-9][0-9]+)$' "$(fact instances)"
app_version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' chart/Chart.yaml)
check_match "the iwd PostgreSQL image of the chart's release ($app_version)" \
    "/iwd/postgres:15-iwd${app_version//./\\.}\$" "$(fact image)"
check "iwd is preloaded" "iwd" "$(tr ',' '\n' <<<"$(fact preload)" | grep -x iwd)"
read -r min_sync max_sync <<<"$(fact sync)"
check "at least one synchronous standby" "yes" "$([ "${min_sync:-0}" -ge 1 ] && echo yes)"
check "no more synchronous standbys than standbys" "yes" \
    "$([ "${max_sync:-0}" -ge "${min_sync:-0}" ] && [ "${max_sync:-0}" -le $(($(fact instances) - 1)) ] && echo yes)"
defined=$(grep -ho '"iwd[_a-z]*\.[a-z_]*"' extension/*.c | tr -d '"' | sort -u)
for p in $(fact parameters); do
    check "parameter $p is one the extension defines" "$p" "$(grep -x -F "$p" <<<"$defined")"
done
check "every parameter is a string (Kubernetes refuses numbers there)" "" "$(fact nonstring)"
cluster=$(fact name)
n=0
while read -r db owner_cluster extensions; do
    n=$((n + 1))
    check "Database $db belongs to Cluster $cluster" "$cluster" "$owner_cluster"
    check "Database $db has the extension iwd" "iwd" "$(tr ',' '\n' <<<"$extensions" | grep -x iwd)"
done < <(sed -n 's/^database //p' <<<"$facts")
check "at least one tenant Database" "yes" "$([ "$n" -ge 1 ] && echo yes)"
[ -n "${cnpg_alone:-}" ] && summary
