#!/usr/bin/env bash
# Checks the PGXN package: "make dist" builds iwd-<version>.zip with the files PGXN and PGXS need, and
# the version agrees in the Makefile, iwd.control and META.json. Ends with "dist: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
passed=0; failed=0
check() { if [ "$2" = "$3" ]; then passed=$((passed + 1)); echo "ok - $1"; else failed=$((failed + 1)); echo "not ok - $1: expected '$2', got '$3'"; fi; }
version=$(sed -n 's/^EXTVERSION *= *//p' Makefile)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
make -s dist >/dev/null && mv "iwd-$version.zip" "$work/"
check "make dist builds iwd-$version.zip" "0" "$?"
listing=$(unzip -Z1 "$work/iwd-$version.zip")
for f in META.json iwd.control Makefile README.md sql/iwd.sql extension/iwd.c; do
    check "the archive contains $f" "1" "$(grep -cx "iwd-$version/$f" <<<"$listing")"
done
unzip -q "$work/iwd-$version.zip" -d "$work"
meta="$work/iwd-$version/META.json"
check "META.json is valid JSON" "0" "$(jq empty "$meta" >/dev/null 2>&1; echo $?)"
check "META.json has the required meta-spec 1.0.0 keys" "true" \
    "$(jq '[.name, .abstract, .version, .maintainer, .license, .provides, ."meta-spec".version] | all(. != null)' "$meta")"
check "meta-spec version" "1.0.0" "$(jq -r '."meta-spec".version' "$meta")"
check "META.json version = Makefile EXTVERSION" "$version" "$(jq -r .version "$meta")"
check "provides.iwd.version = Makefile EXTVERSION" "$version" "$(jq -r .provides.iwd.version "$meta")"
check "iwd.control default_version = Makefile EXTVERSION" "$version" \
    "$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" "$work/iwd-$version/iwd.control")"
check "provides.iwd.file exists" "1" "$([ -f "$work/iwd-$version/$(jq -r .provides.iwd.file "$meta")" ] && echo 1)"
echo "dist: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
