#!/usr/bin/env bash
# Checks that the extension's files call each other one way: every extension/*.c takes functions and
# variables (the symbols nm lists as undefined in its object) only from files on a lower layer than its
# own (README, Architecture), so that no call runs in a circle. A file missing from the list below fails:
# a new file takes its place in the layers. Builds the objects when they are missing or stale. Ends with
# "extension-calls: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."

# file layer, lowest first
layers="
guc 0
guard 0
events 1
draft 1
search 1
lifecycle 1
stats 1
pool 1
input 2
taskjson 2
claim 2
worker 2
config 3
scheduler 3
datamart 3
classify 4
score 4
launcher 4
capture 5
iwd 6
"
layer_of() { # file (without .c) -> layer, empty when unknown
    awk -v m="$1" '$1 == m {print $2}' <<<"$layers"
}

if ! make -s iwd.so >/dev/null 2>&1; then
    echo "not ok - the extension does not build (make iwd.so)"
    echo "extension-calls: 0 passed, 1 failed"
    exit 1
fi
# symbol -> the file that defines it
declare -A owner
for obj in extension/*.o; do
    file=$(basename "$obj" .o)
    while read -r symbol; do
        owner[$symbol]=$file
    done < <(nm --defined-only "$obj" | awk '$2 ~ /^[TDBRC]$/ {print $3}')
done

passed=0; failed=0
for src in extension/*.c; do
    file=$(basename "$src" .c); layer=$(layer_of "$file")
    if [ -z "$layer" ]; then
        failed=$((failed + 1)); echo "not ok - $src has no layer in scripts/check-extension-calls.sh"; continue
    fi
    bad=""
    while read -r symbol; do
        callee=${owner[$symbol]:-}
        [ -z "$callee" ] || [ "$callee" = "$file" ] && continue
        callee_layer=$(layer_of "$callee")
        if [ -z "$callee_layer" ] || [ "$callee_layer" -ge "$layer" ]; then
            bad="$bad $symbol ($callee.c, layer ${callee_layer:-none})"
        fi
    done < <(nm --undefined-only "extension/$file.o" | awk '{print $2}')
    if [ -z "$bad" ]; then
        passed=$((passed + 1)); echo "ok - $src (layer $layer) calls lower files only"
    else
        failed=$((failed + 1)); echo "not ok - $src (layer $layer) calls$bad"
    fi
done
echo "extension-calls: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
