# shellcheck shell=bash disable=SC2154 # (sourced after scripts/lib.sh: $suite, check, free_port are its)
# The validating proxy of sidecar/openapi.yaml for a test suite (sourced, not run): a suite starts it,
# its REST traffic goes through it (scripts/lib.sh's req, chromium's --proxy-server) and at the end one
# check requires that no exchange violated the document (tests/openapi/proxy.mjs says what is checked).
#
#   openapi_tools                 installs the proxy's and the linter's npm packages into .tools/openapi
#                                 (npm ci from tests/openapi/package-lock.json, again only when it changed)
#   openapi_proxy_start DIR       starts the proxy on a free port, its records in DIR; exports
#                                 IWD_OPENAPI_PROXY (http://127.0.0.1:PORT), which req uses
#   openapi_proxy_check           the check: exchanges were seen and none violated the document
#   openapi_proxy_stop            stops it (the suite's cleanup)

openapi_dir=$iwd_top/tests/openapi
openapi_tools_dir=$iwd_top/.tools/openapi
openapi_proxy_pid=""
openapi_records=""

openapi_tools() {
    if cmp -s "$openapi_dir/package-lock.json" "$openapi_tools_dir/package-lock.json" &&
       [ -d "$openapi_tools_dir/node_modules/openapi-backend" ]; then
        return 0
    fi
    command -v npm >/dev/null || { echo "npm is not installed (scripts/deps.sh installs it)"; return 1; }
    mkdir -p "$openapi_tools_dir" &&
        cp "$openapi_dir/package.json" "$openapi_dir/package-lock.json" "$openapi_tools_dir/" || return 1
    if ! (cd "$openapi_tools_dir" && npm ci --no-audit --no-fund >npm.log 2>&1); then
        cat "$openapi_tools_dir/npm.log"; echo "npm ci of tests/openapi failed"; return 1
    fi
}

openapi_proxy_start() {
    local port
    openapi_records=$1
    openapi_tools || return 1
    mkdir -p "$openapi_records" && : >"$openapi_records/violations.log" && : >"$openapi_records/exchanges.log" ||
        return 1
    port=$(free_port)
    IWD_OPENAPI_TOOLS=$openapi_tools_dir node "$openapi_dir/proxy.mjs" "$iwd_top/sidecar/openapi.yaml" "$port" \
        "$openapi_records" >"$openapi_records/proxy.log" 2>&1 &
    openapi_proxy_pid=$!
    for _ in $(seq 1 600); do # at most 60 s: node reads the document first
        if grep -q '^listening' "$openapi_records/proxy.log"; then
            export IWD_OPENAPI_PROXY="http://127.0.0.1:$port"
            return 0
        fi
        kill -0 "$openapi_proxy_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "the OpenAPI proxy did not start:"; cat "$openapi_records/proxy.log"; return 1
}

openapi_proxy_check() {
    local exchanges violations
    # the checks run behind the traffic: wait (at most 10 minutes) until every exchange so far is checked
    curl -s --max-time 600 -o /dev/null "${IWD_OPENAPI_PROXY:-http://127.0.0.1:1}/flush" ||
        echo "the OpenAPI proxy did not finish its checks"
    exchanges=$(wc -l <"$openapi_records/exchanges.log")
    violations=$(wc -l <"$openapi_records/violations.log")
    echo "openapi: $exchanges exchanges checked against sidecar/openapi.yaml, $violations violations"
    if [ "$violations" -gt 0 ]; then
        head -c 20000 "$openapi_records/violations.log"
    fi
    check "the REST traffic of $suite went through the OpenAPI proxy" "yes" \
        "$([ "$exchanges" -gt 0 ] && echo yes || echo "no exchange")"
    check "the REST traffic of $suite matches sidecar/openapi.yaml" "0" "$violations"
}

openapi_proxy_stop() {
    [ -n "$openapi_proxy_pid" ] || return 0
    kill "$openapi_proxy_pid" 2>/dev/null
    wait "$openapi_proxy_pid" 2>/dev/null
    openapi_proxy_pid=""
    unset IWD_OPENAPI_PROXY
}
