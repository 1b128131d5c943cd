#!/usr/bin/env bash
# Checks the PGXN package: "make dist" builds iwd-<version>.zip (git archive of HEAD) with the files PGXN
# and PGXS need; the version agrees in the Makefile, iwd.control and META.json; META.json carries the
# keys meta-spec 1.0.0 requires; the unpacked package builds and installs as any PGXS extension; and
# every function of its install script states its labels (scripts/check-sql-labels.py). The zip is moved
# to a temporary directory. Ends with "dist: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
passed=0; failed=0
check() {
    if [ "$2" = "$3" ]; then passed=$((passed + 1)); echo "ok - $1"; return 0; fi
    failed=$((failed + 1)); echo "not ok - $1: expected '$2', got '$3'"; return 1
}
finish() { echo "dist: $passed passed, $failed failed"; [ "$failed" -eq 0 ]; exit; }

version=$(sed -n 's/^EXTVERSION *= *//p' Makefile)
name=$(sed -n 's/^EXTENSION *= *//p' Makefile)
zip="$name-$version.zip"
work=$(mktemp -d /tmp/iwd-dist.XXXXXX)
trap 'rm -rf "$work"' EXIT

make -s dist >"$work/make.log" 2>&1 && mv "$zip" "$work/"
check "make dist builds $zip" "0" "$?" || { cat "$work/make.log"; finish; }
check "make dist leaves no zip in the top directory" "" "$(ls "$zip" 2>/dev/null)"
listing=$(unzip -Z1 "$work/$zip")
check "every path is under $name-$version/" "0" "$(grep -vc "^$name-$version/" <<<"$listing")"
for f in META.json "$name.control" Makefile README.md; do
    check "the package contains $f" "1" "$(grep -cx "$name-$version/$f" <<<"$listing")"
done
# what HEAD holds (the zip is HEAD's archive; the index may hold other work)
for dir in sql extension; do
    files=$(git ls-tree -r --name-only HEAD -- "$dir")
    missing=$(while read -r f; do grep -qx "$name-$version/$f" <<<"$listing" || echo "$f"; done <<<"$files")
    check "the package contains all of $dir/ ($(wc -l <<<"$files") files)" "" "$missing"
done

unzip -q "$work/$zip" -d "$work"
top="$work/$name-$version"
meta="$top/META.json"
check "META.json is valid JSON" "0" "$(jq empty "$meta" >/dev/null 2>&1; echo $?)" || finish
check "META.json has the keys meta-spec 1.0.0 requires" "[]" \
    "$(jq -c '[("name", "abstract", "version", "maintainer", "license", "provides", "meta-spec") as $k | select(has($k) | not) | $k]' "$meta")"
check "meta-spec version 1.0.0" "1.0.0" "$(jq -r '."meta-spec".version' "$meta")"
check "META.json name = the Makefile's EXTENSION" "$name" "$(jq -r .name "$meta")"
check "META.json version is a semantic version" "1" "$(jq -r .version "$meta" | grep -cE '^[0-9]+\.[0-9]+\.[0-9]+$')"
check "META.json version = Makefile EXTVERSION" "$version" "$(jq -r .version "$meta")"
check "provides.$name.version = Makefile EXTVERSION" "$version" "$(jq -r --arg n "$name" '.provides[$n].version' "$meta")"
check "iwd.control default_version = Makefile EXTVERSION" "$version" \
    "$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" "$top/$name.control")"
check "every provided extension names an existing file and a version" "[]" \
    "$(cd "$top" && jq -r '.provides | to_entries[] | "\(.key) \(.value.file // "") \(.value.version // "")"' META.json |
       while read -r ext file ver; do [ -n "$ver" ] && [ -f "$file" ] || echo "$ext"; done | jq -R . | jq -sc .)"
check "the license is one meta-spec 1.0.0 names" "1" \
    "$(jq -r '.license | if type == "string" then . else (keys[0] // "") end' "$meta" |
       grep -cxE 'agpl_3|apache_1_1|apache_2_0|artistic_1|artistic_2|bsd|freebsd|gfdl_1_2|gfdl_1_3|gpl_1|gpl_2|gpl_3|lgpl_2_1|lgpl_3_0|mit|mozilla_1_0|mozilla_1_1|openssl|perl_5|postgresql|qpl_1_0|ssleay|sun|zlib|open_source|restricted|unrestricted|unknown')"
check "maintainer is a string or a list of strings" "true" \
    "$(jq '.maintainer | (type == "string") or (type == "array" and length > 0 and all(type == "string"))' "$meta")"

# the unpacked package builds and installs as any PGXS extension (into a staging directory)
pg_config=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
make -C "$top" -s PG_CONFIG="$pg_config" >"$work/build.log" 2>&1
check "the unpacked package builds with make" "0" "$?" || tail -20 "$work/build.log"
make -C "$top" -s PG_CONFIG="$pg_config" install DESTDIR="$work/root" >>"$work/build.log" 2>&1
check "make install DESTDIR=... succeeds" "0" "$?" || tail -20 "$work/build.log"
upgrade_from=$(sed -n 's/^UPGRADE_FROM *= *//p' Makefile)
check "make install puts the library, the control file, the install and upgrade scripts in place" "4" \
    "$(ls "$work/root$("$pg_config" --pkglibdir)/$name.so" \
          "$work/root$("$pg_config" --sharedir)/extension/$name.control" \
          "$work/root$("$pg_config" --sharedir)/extension/$name--$version.sql" \
          "$work/root$("$pg_config" --sharedir)/extension/$name--$upgrade_from--$version.sql" 2>/dev/null | wc -l)"
check "the unpacked package's build needs none of the sidecar's libraries" "0" \
    "$(grep -cE 'h2o|hiredis|jansson|sidecar' "$work/build.log")"
# every function states its volatility, null behaviour and parallel safety (and the check can fail)
scripts/check-sql-labels.py "$work/root$("$pg_config" --sharedir)/extension/$name--$version.sql" >"$work/labels.log"
check "every function of the install script has its three labels; a SAFE one calls only SAFE ones" "0" "$?" ||
    grep -v '^sql-labels:' "$work/labels.log"
check "the label check fails on a function without labels" "1" \
    "$(echo "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1';" | scripts/check-sql-labels.py >/dev/null
       echo $?)"
finish
