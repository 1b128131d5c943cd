#!/usr/bin/env bash
# Checks that the sidecar's modules depend on each other one way: every sidecar/*.c and *.h includes only
# its own module's header and headers of modules on a lower layer (README, Architecture), so that calls
# between files never run in a circle. A file missing from the list below fails: a new module takes its
# place in the layers. Ends with "layers: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/../sidecar"

# module layer: a module is a .c and its .h (routes: routes.h, the router routes.c and a routes_<resource>.c
# per REST resource), lowest first
layers="
iwd 0
clock 1
redis_cluster 1
text 1
mime 1
provisioning 1
server_slots 1
log 2
config 3
metrics 3
secret 4
redis_conn 4
tenant 5
redis 5
control 5
thread 6
http 6
answer 7
static 7
pg 8
registry 9
push 9
events 9
tenant_work 9
collector 10
webhooks 10
email 10
router 10
auth 10
routes 11
main 12
"
layer_of() { # module -> layer, empty when unknown
    awk -v m="$1" '$1 == m {print $2}' <<<"$layers"
}
module_of() { # file -> module
    local base=${1%.*}
    case "$base" in routes_*) echo routes ;; *) echo "$base" ;; esac
}

passed=0; failed=0
for file in *.c *.h; do
    module=$(module_of "$file"); layer=$(layer_of "$module")
    if [ -z "$layer" ]; then
        failed=$((failed + 1)); echo "not ok - $file: module $module has no layer in scripts/check-layers.sh"; continue
    fi
    bad=""
    while read -r header; do
        [ -f "$header" ] || continue # a system header included with quotes would not be the sidecar's
        dep=$(module_of "$header"); dep_layer=$(layer_of "$dep")
        [ "$dep" = "$module" ] && continue
        if [ -z "$dep_layer" ] || [ "$dep_layer" -ge "$layer" ]; then
            bad="$bad $header (layer ${dep_layer:-none})"
        fi
    done < <(sed -n 's/^#include "\([^"]*\)".*/\1/p' "$file")
    if [ -z "$bad" ]; then
        passed=$((passed + 1)); echo "ok - $file (layer $layer) includes lower modules only"
    else
        failed=$((failed + 1)); echo "not ok - $file (layer $layer) includes$bad"
    fi
done
echo "layers: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
