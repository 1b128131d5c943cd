# Builds of iwd side by side, for the benchmarks that compare commits in one run (sourced from the
# checkout's top directory). builds_init NAME sets checkout, pg_config, pg_root, share and trees (a new
# work directory /tmp/iwd-bench-NAME.XXXXXX, removed by the caller's EXIT trap unless IWD_KEEP is set);
# build BUILD COMMIT makes iwd of COMMIT (git archive) and installs it (DESTDIR) into $trees/BUILD, a copy
# of this machine's PostgreSQL tree, which PostgreSQL's relocatable paths make its own: the shared
# installation is left alone. A build's programs are then under $trees/BUILD$pg_root/bin.
# shellcheck shell=bash

builds_init() {
    checkout=$(pwd)
    pg_config=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
    pg_root=$(dirname "$("$pg_config" --bindir)")
    share=$("$pg_config" --sharedir)
    trees=$(mktemp -d "/tmp/iwd-bench-$1.XXXXXX") && chmod 755 "$trees"
}

build() {
    local dest=$trees/$1
    mkdir -p "$dest/src" "$dest$pg_root" "$dest$share"
    cp -a "$pg_root/." "$dest$pg_root/" && cp -a "$share/." "$dest$share/" || return 1
    git -C "$checkout" archive "$2" | tar -x -C "$dest/src" || return 1
    (cd "$dest/src" && make -j2 with_llvm=no >"$dest/build.log" 2>&1 &&
        make with_llvm=no install DESTDIR="$dest" >>"$dest/build.log" 2>&1) ||
        { echo "building $2 failed: $dest/build.log" >&2; tail -5 "$dest/build.log" >&2; return 1; }
}
