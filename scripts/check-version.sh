#!/usr/bin/env bash
# The version test: the top Makefile's EXTVERSION is the one source of iwd's release. Every file that
# states it agrees (iwd.control's default_version; META.json's version and provides.iwd.version;
# chart/Chart.yaml's version and appVersion and chart/values.yaml's image tag; the Data Mart chart's
# chart/iwddm/Chart.yaml version and appVersion; sidecar/openapi.yaml's
# info.version), and the builds pass it on (the extension's objects get -DIWD_EXTVERSION, the sidecar
# -DIWD_VERSION, whether built from the top Makefile or alone). A copy of those files with one of them
# off must fail the check, naming it. Ends with "version: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
want=${1:-$(sed -n 's/^EXTVERSION *= *//p' Makefile)}
passed=0; failed=0
check() { # check NAME EXPECTED ACTUAL
    if [ "$2" = "$3" ]; then passed=$((passed + 1)); echo "ok - $1"
    else failed=$((failed + 1)); echo "not ok - $1: expected '$2', got '$3'"; fi
}

# stated DIR: "<where> <version>" for every place in the tree DIR that states the release
stated() {
    local dir=$1
    echo "iwd.control:default_version $(sed -n "s/^default_version *= *'\(.*\)'/\1/p" "$dir/iwd.control")"
    echo "META.json:version $(jq -r .version "$dir/META.json")"
    echo "META.json:provides.iwd.version $(jq -r .provides.iwd.version "$dir/META.json")"
    echo "chart/Chart.yaml:version $(awk '/^version:/ { gsub(/"/, "", $2); print $2 }' "$dir/chart/Chart.yaml")"
    echo "chart/Chart.yaml:appVersion $(awk '/^appVersion:/ { gsub(/"/, "", $2); print $2 }' "$dir/chart/Chart.yaml")"
    echo "chart/iwddm/Chart.yaml:version $(awk '/^version:/ { gsub(/"/, "", $2); print $2 }' \
        "$dir/chart/iwddm/Chart.yaml")"
    echo "chart/iwddm/Chart.yaml:appVersion $(awk '/^appVersion:/ { gsub(/"/, "", $2); print $2 }' \
        "$dir/chart/iwddm/Chart.yaml")"
    echo "chart/values.yaml:image.tag $(awk '/^[^ #]/ { in_image = /^image:/ }
        in_image && /^  tag:/ { gsub(/[" ]/, "", $2); print $2; exit }' "$dir/chart/values.yaml")"
    echo "sidecar/openapi.yaml:info.version $(awk '/^[^ #]/ { in_info = /^info:/ }
        in_info && /^  version:/ { gsub(/[" ]/, "", $2); print $2; exit }' "$dir/sidecar/openapi.yaml")"
}

# mismatches DIR VERSION: the places of DIR that do not state VERSION, one per line
mismatches() {
    stated "$1" | awk -v v="$2" '$2 != v { print $1 }'
}

while read -r where version; do
    check "$where is the Makefile's EXTVERSION $want" "$want" "$version"
done < <(stated .)
check "META.json has the keys meta-spec 1.0.0 requires" "1.0.0 true" \
    "$(jq -r '"\(."meta-spec".version) \(.name and .abstract and .maintainer and .license and .provides)"' META.json)"

# the builds pass the version on (dry runs: nothing is built)
check "the extension's objects are compiled with -DIWD_EXTVERSION=\"$want\"" "1" \
    "$(make -s -n -B extension/iwd.o 2>/dev/null | grep -c -- "-DIWD_EXTVERSION='\"$want\"'")"
check "make sidecar compiles the sidecar with -DIWD_VERSION=\"$want\"" "1" \
    "$(make -s -n -B sidecar 2>/dev/null | grep -- "-o iwd-sidecar " | grep -c -- "-DIWD_VERSION='\"$want\"'")"
check "make -C sidecar alone compiles it with -DIWD_VERSION=\"$want\"" "1" \
    "$(make -s -n -B -C sidecar iwd-sidecar 2>/dev/null | grep -c -- "-DIWD_VERSION='\"$want\"'")"

# the check fails when any one place is off: each in turn, in a copy of the files
work=$(mktemp -d /tmp/iwd-version.XXXXXX)
trap 'rm -rf "$work"' EXIT
copy() {
    rm -rf "$work/tree" && mkdir -p "$work/tree/chart/iwddm" "$work/tree/sidecar" &&
    cp iwd.control META.json "$work/tree/" && cp chart/Chart.yaml chart/values.yaml "$work/tree/chart/" &&
    cp chart/iwddm/Chart.yaml "$work/tree/chart/iwddm/" &&
    cp sidecar/openapi.yaml "$work/tree/sidecar/"
}
copy
check "a faithful copy of the files has no mismatch" "" "$(mismatches "$work/tree" "$want")"
off=0.0.0-off
for where in $(stated . | cut -d' ' -f1); do
    copy
    file=${where%%:*}
    case $where in
        iwd.control:*) sed -i "s/^default_version *=.*/default_version = '$off'/" "$work/tree/$file" ;;
        META.json:version) jq --arg v "$off" '.version = $v' META.json >"$work/tree/$file" ;;
        META.json:provides.iwd.version) jq --arg v "$off" '.provides.iwd.version = $v' META.json >"$work/tree/$file" ;;
        chart/Chart.yaml:version | chart/iwddm/Chart.yaml:version)
            sed -i "s/^version:.*/version: $off/" "$work/tree/$file" ;;
        chart/Chart.yaml:appVersion | chart/iwddm/Chart.yaml:appVersion)
            sed -i "s/^appVersion:.*/appVersion: \"$off\"/" "$work/tree/$file" ;;
        chart/values.yaml:image.tag)
            awk -v v="$off" '/^[^ #]/ { in_image = /^image:/ } in_image && /^  tag:/ { $0 = "  tag: \"" v "\"" } 1' \
                chart/values.yaml >"$work/tree/$file" ;;
        sidecar/openapi.yaml:info.version)
            awk -v v="$off" '/^[^ #]/ { in_info = /^info:/ } in_info && /^  version:/ { $0 = "  version: " v } 1' \
                sidecar/openapi.yaml >"$work/tree/$file" ;;
        *) echo "no way to put $where off" ;;
    esac
    check "with $where off, the check names it (and only it)" "$where" "$(mismatches "$work/tree" "$want")"
done
echo "version: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
