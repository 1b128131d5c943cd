#!/usr/bin/env bash
# Checks that iwd.control, META.json and the install script agree with the Makefile's EXTVERSION.
set -uo pipefail
cd "$(dirname "$0")/.."
want=${1:-$(sed -n 's/^EXTVERSION *= *//p' Makefile)}
passed=0; failed=0
check() {
    if [ "$2" = "$want" ]; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL: $1 has '$2', Makefile has '$want'"; fi
}
check iwd.control "$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" iwd.control)"
check "META.json version" "$(jq -r .version META.json)"
check "META.json provides.iwd.version" "$(jq -r .provides.iwd.version META.json)"
if [ "$(jq -r '."meta-spec".version' META.json)" = "1.0.0" ] && jq -e '.name and .abstract and .maintainer and .license and .provides' META.json >/dev/null; then
    passed=$((passed + 1))
else
    failed=$((failed + 1)); echo "FAIL: META.json lacks a required meta-spec 1.0.0 key"
fi
echo "version: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
