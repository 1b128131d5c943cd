#!/usr/bin/env bash
# The Workload Manager end to end: a real PostgreSQL (a throwaway cluster preloading iwd), a real
# redis-server and the sidecar built with AddressSanitizer serving /iwd/ui/; first its serving over HTTP
# with curl (content types, ETag revalidation, the security headers, no path outside the page), then the
# page itself in Debian's headless chromium driven by playwright-core (ui.test.mjs; installed by npm ci
# from this directory's package-lock.json into .tools/ui/, which downloads no browser).
# Screenshots go to tests/ui/artifacts/. Ends with "ui: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
top=$(pwd)
suite=ui
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
# shellcheck source=tests/openapi/proxy.sh
. tests/openapi/proxy.sh
work=$(work_dir ui-test)
admin_key="admin-key-for-ui-tests"
tenant_key="tenant-key-ui-0001"
reader_key="reader-key-ui-0001"
export IWD_SECRET_KEY="server-secret-for-ui-tests-0123456789abcdef"
http_port=$(free_port)
site="http://127.0.0.1:$http_port"
base="$site/iwd/v3"
tools=$top/.tools/ui

cleanup() {
    openapi_proxy_stop
    servers_stop immediate
    [ -z "${IWD_KEEP:-}" ] && rm -rf "$work"
}
trap cleanup EXIT

command -v chromium >/dev/null || fail_setup "chromium is not installed (scripts/deps.sh installs it)"
make -s -C sidecar asan >/dev/null || fail_setup "cannot build iwd-sidecar-asan"
# playwright-core at the version of package-lock.json, installed again only when the lock file changed
if ! cmp -s tests/ui/package-lock.json "$tools/package-lock.json" ||
   [ ! -d "$tools/node_modules/playwright-core" ]; then
    { mkdir -p "$tools" && cp tests/ui/package.json tests/ui/package-lock.json "$tools/"; } ||
        fail_setup "cannot copy tests/ui's package files to $tools"
    if ! (cd "$tools" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund >"$work/npm.log" 2>&1); then
        cat "$work/npm.log"; fail_setup "npm ci of tests/ui failed"
    fi
fi

# --- servers ---------------------------------------------------------------------------------------
cluster_init "$work/pg" "listen_addresses = '127.0.0.1'
iwd.max_workers = 0" || fail_setup "initdb failed"
cluster_start || fail_setup "PostgreSQL did not start"
for db in control tenant_ui; do cluster_client createdb "$db" || fail_setup "createdb $db failed"; done
redis_start "$work" redis-secret || fail_setup "redis-server did not start"
IWD_LISTEN=127.0.0.1 IWD_PORT=$http_port IWD_ADMIN_API_KEY=$admin_key IWD_METRICS_PORT=0 \
    IWD_CONTROL_DB="host=$work/pg port=$pg_port dbname=control user=postgres" \
    IWD_REDIS_NODES="redis://127.0.0.1:$redis_port" IWD_REDIS_PASSWORD=redis-secret IWD_THREADS=2 \
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
    sidecar_launch "$work/sidecar.log" "$base/health/live" sidecar/iwd-sidecar-asan || fail_setup "sidecar start failed"

# the page's REST traffic and the setup's below go through the proxy that checks it against openapi.yaml
openapi_proxy_start "$work/openapi" || fail_setup "the OpenAPI proxy did not start"
api() { # api METHOD PATH [BODY]: the answer's body; fails on a status >= 400
    curl -sf --proxy "$IWD_OPENAPI_PROXY" --noproxy '' -X "$1" -H "x-api-key: $tenant_key" \
        -H 'content-type: application/json' ${3:+--data-binary "$3"} "$base$2"
}
curl -sf --proxy "$IWD_OPENAPI_PROXY" --noproxy '' -X POST -H "x-api-key: $admin_key" \
    -H 'content-type: application/json' "$base/provisioning" --data-binary \
    "{\"tenant\": {\"id\": \"ui\", \"name\": \"UI tenant\", \"ccid\": \"ui\"},
      \"iwd\": {\"url\": \"http://iwd\", \"db\": {\"host\": \"127.0.0.1\", \"port\": $pg_port,
      \"database\": \"tenant_ui\", \"user\": \"postgres\", \"password\": \"x\", \"ssl\": false},
      \"apiKeys\": {\"IWD_APIKEY_TENANT\": \"$tenant_key\", \"IWD_APIKEY_IWDDM\": \"$reader_key\"}},
      \"iwdEmail\": {\"url\": \"http://mail\"}}" >/dev/null || fail_setup "provisioning the tenant failed"
for i in 1 2 3 4 5 6; do
    api POST /tasks "{\"externalId\": \"UI-$i\", \"capturePoint\": \"erp\", \"subject\": \"Invoice $i\",
                      \"priority\": $((i * 10)), \"attributes\": {\"amount\": $((i * 1000))}}" >/dev/null ||
        fail_setup "creating task UI-$i failed"
done
api PUT /agents/desk1 '{"name": "Desk Agent", "skills": {}, "capacity": {"workitem": 1}}' >/dev/null ||
    fail_setup "creating the agent desk1 failed"
api POST /agents/desk1/state '{"state": "ready"}' >/dev/null || fail_setup "setting desk1 ready failed"

# --- what a key may do (GET /key: the page offers a read-only key no action) -------------------------
check "GET /key with the tenant key: read-write" "ui read-write" "$(api GET /key | jq -r '"\(.tenant) \(.access)"')"
key_as() { curl -s --proxy "$IWD_OPENAPI_PROXY" --noproxy '' -w ' %{http_code}' ${1:+-H "x-api-key: $1"} "$base/key"; }
check "with the read-only key: read-only" '{"tenant":"ui","access":"read-only"} 200' "$(key_as "$reader_key")"
check_match "with an unknown key: 401" '"unknown x-api-key".* 401$' "$(key_as no-such-key-0000000)"
check_match "without a key: 401" '"missing x-api-key header".* 401$' "$(key_as "")"

# --- a supervisor's complete and reject record the key's tenant as the actor (an agent's, the agent) -------
for action in complete reject; do
    id=$(api POST /tasks "{\"externalId\": \"UI-$action\", \"capturePoint\": \"erp\"}" | jq -r .id)
    body='{}'
    [ "$action" = reject ] && body='{"reason": "by the supervisor"}'
    check "a supervisor's $action: the task is ${action%e}ed" "${action%e}ed" \
        "$(api POST "/tasks/$id/$action" "$body" | jq -r .status)"
    check "its history records the supervisor as the actor" "${action%e}ed ui" \
        "$(api GET "/tasks/$id/history" | jq -r '.[-1] | "\(.event) \(.actor)"')"
done

# --- the dashboard's reports: a category's service-level threshold, the Data Mart's intervals ---------------
answer_of() { # answer_of METHOD PATH [BODY]: "<status> <message>" of a call with the tenant key
    local code
    code=$(curl -s --proxy "$IWD_OPENAPI_PROXY" --noproxy '' -o "$work/answer" -w '%{http_code}' -X "$1" \
        -H "x-api-key: $tenant_key" -H 'content-type: application/json' ${3:+--data-binary "$3"} "$base$2")
    echo "$code $(jq -r '.status.message // empty' "$work/answer" 2>/dev/null)"
}
check "a category's serviceLevelSeconds is stored and returned" "30" \
    "$(api PUT /categories/Claims '{"serviceLevelSeconds": 30}' | jq -r .serviceLevelSeconds)"
check "without one, none is returned (the Data Mart's applies)" "null" \
    "$(api PUT /categories/Bills '{}' | jq -r .serviceLevelSeconds)"
for bad in 0 86401 '"20"' 1.5; do
    check_match "serviceLevelSeconds $bad: 400" '^400 .*serviceLevelSeconds' \
        "$(answer_of PUT /categories/Claims "{\"serviceLevelSeconds\": $bad}")"
done
check "a refused threshold leaves the stored one" "30" "$(api GET /categories/Claims | jq -r .serviceLevelSeconds)"
# a task of Claims reserved at once by an agent and completed: offered and within its 30 s
api PUT /agents/sl1 '{"name": "Service level agent", "skills": {}, "capacity": {"workitem": 1}}' >/dev/null
api POST /agents/sl1/state '{"state": "ready"}' >/dev/null
sl_task=$(api POST /tasks '{"externalId": "UI-SL", "capturePoint": "erp", "category": "Claims", "priority": 1000}' |
    jq -r .id)
check "the agent gets the Claims task" "$sl_task" "$(api POST /agents/sl1/next '{}' | jq -r .id)"
check "and completes it" "completed" "$(api POST "/tasks/$sl_task/complete" '{"agent": "sl1"}' | jq -r .status)"
api POST /agents/sl1/state '{"state": "notReady"}' >/dev/null
cluster_sql -d tenant_ui -c "SELECT iwd_dm.run('intraday')" >/dev/null ||
    fail_setup "the Data Mart's intraday run failed"
report=$(api GET /reports/intervals)
check "GET /reports/intervals: the last day by 15 minutes" "15min 86400" \
    "$(jq -r '"\(.level) \([.to, .from] | map(sub("\\.[0-9]+"; "") | fromdateiso8601) | .[0] - .[1])"' <<<"$report")"
check "entered: the tasks created (six, two finished by the supervisor, the Claims one)" "9" \
    "$(jq '[.intervals[].entered] | add' <<<"$report")"
check "completed: the supervisor's and the agent's" "2" "$(jq '[.intervals[].completed] | add' <<<"$report")"
check "the service level: three waits ended, one within its category's 30 s" "3 1" \
    "$(jq -r '"\([.intervals[].offered] | add) \([.intervals[].withinThreshold] | add)"' <<<"$report")"
check "by hour, in the queue general: the tasks of the default category (not the Claims one)" "8" \
    "$(api "GET" "/reports/intervals?level=hour&queue=general" | jq '[.intervals[].entered] | add')"
check "another queue: none" "[]" "$(api GET '/reports/intervals?queue=nowhere' | jq -c .intervals)"
check "the reporting key may read it" "200" "$(curl -s --proxy "$IWD_OPENAPI_PROXY" --noproxy '' -o /dev/null \
    -w '%{http_code}' -H "x-api-key: $reader_key" "$base/reports/intervals")"
check_match "level week: 400" '^400 unknown report level "week"' "$(answer_of GET '/reports/intervals?level=week')"
check_match "from after to: 400" '^400 a report needs a range from < to' \
    "$(answer_of GET '/reports/intervals?from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z')"
check_match "8 days of quarter hours: 400" '^400 a report of level 15min spans at most 7 days' \
    "$(answer_of GET '/reports/intervals?from=2026-11-01T00:00:00Z&to=2026-11-09T00:00:00Z')"
check "8 days by hour: 200" "200 " \
    "$(answer_of GET '/reports/intervals?level=hour&from=2026-11-01T00:00:00Z&to=2026-11-09T00:00:00Z')"
check_match "a time that is none: 400" '^400 .*"someday"' "$(answer_of GET '/reports/intervals?from=someday')"
check_match "an unknown parameter: 400" '^400 unknown query parameter "category"' \
    "$(answer_of GET '/reports/intervals?category=Claims')"
categories=$(api GET /reports/categories)
check "GET /reports/categories: Claims with its threshold and today's service level" "30 1 1 100" \
    "$(jq -r '.categories[] | select(.category == "Claims") | "\(.serviceLevelSeconds) \(.offered)
        \(.withinThreshold) \(.serviceLevelPct)"' <<<"$categories" | tr -s ' \n' ' ' | sed 's/ $//')"
check "Bills: the Data Mart's 20 s, nothing offered" "20 0 null" \
    "$(jq -r '.categories[] | select(.category == "Bills")
              | "\(.serviceLevelSeconds) \(.offered) \(.serviceLevelPct)"' <<<"$categories")"
check "General, the default category: the six open tasks queued" "6 0" \
    "$(jq -r '.categories[] | select(.category == "General") | "\(.queued) \(.assigned)"' <<<"$categories")"
check_match "GET /reports/categories takes no parameter: 400" '^400 unknown query parameter "x"' \
    "$(answer_of GET '/reports/categories?x=1')"

# --- serving ---------------------------------------------------------------------------------------
headers() { curl -s -D - -o "$work/page" "$@" | tr -d '\r'; }
header() { sed -n "s/^$1: //Ip" <<<"$2" | head -1; }
h=$(headers "$site/iwd/ui/")
check "GET /iwd/ui/ answers the page" "200" "$(sed -n '1s/^HTTP[^ ]* \([0-9]*\).*/\1/p' <<<"$h")"
check "as text/html" "text/html; charset=utf-8" "$(header content-type "$h")"
check_match "with a Content-Security-Policy without inline script" "^default-src 'self'; script-src 'self'; " \
    "$(header content-security-policy "$h")"
check "no sniffing" "nosniff" "$(header x-content-type-options "$h")"
check "no framing" "DENY" "$(header x-frame-options "$h")"
check "revalidated each time" "no-cache" "$(header cache-control "$h")"
etag=$(header etag "$h")
check_match "a strong ETag" '^"[0-9a-f]{32}"$' "$etag"
check "the body is sidecar/ui/index.html" "" "$(cmp "$work/page" sidecar/ui/index.html 2>&1)"
check "If-None-Match with the ETag: 304" "304" \
    "$(curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: $etag" "$site/iwd/ui/index.html")"
check "another ETag: 200" "200" "$(curl -s -o /dev/null -w '%{http_code}' -H 'If-None-Match: "x"' "$site/iwd/ui/")"
check "a module as JavaScript" "text/javascript; charset=utf-8" \
    "$(curl -s -o /dev/null -w '%{content_type}' "$site/iwd/ui/js/app.js")"
check "the style sheet as CSS" "text/css; charset=utf-8" \
    "$(curl -s -o /dev/null -w '%{content_type}' "$site/iwd/ui/app.css")"
check "HEAD: 200 without a body" "200 0" "$(curl -s -I -o /dev/null -w '%{http_code} %{size_download}' "$site/iwd/ui/")"
check "after a HEAD the connection serves the next request (no body was sent)" "200 0" \
    "$(curl -s -I -o /dev/null "$site/iwd/ui/" --next -s -o /dev/null -w '%{http_code} %{num_connects}' \
       "$site/iwd/ui/app.css")"
check "/iwd/ui redirects to /iwd/ui/" "301 $site/iwd/ui/" \
    "$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' "$site/iwd/ui")"
check "POST: 405 in JSON" "405 405" \
    "$(curl -s -o "$work/body" -w '%{http_code}' -X POST "$site/iwd/ui/") $(jq -r .status.code "$work/body")"
for path in '/iwd/ui/../v3/health/live' '/iwd/ui/%2e%2e/%2e%2e/etc/passwd' '/iwd/ui/..%2f..%2fetc%2fpasswd' \
            '/iwd/ui/js/../../../../etc/passwd' '/iwd/ui//etc/passwd' '/iwd/ui/js/' '/iwd/ui/index.html%00' \
            '/iwd/ui/.gitignore' '/iwd/ui/nope.js'; do
    code=$(curl -s --path-as-is -o "$work/body" -w '%{http_code}' "$site$path")
    check "$path: 404, nothing outside the page" "404 404" "$code $(jq -r .status.code "$work/body" 2>/dev/null)"
done
long=$(printf 'a%.0s' $(seq 1 300))
check "a path over 256 bytes: 414" "414" "$(curl -s -o /dev/null -w '%{http_code}' "$site/iwd/ui/$long")"
check "/iwd/uix is no page path (the API's 404)" "404 no such route" \
    "$(curl -s -o "$work/body" -w '%{http_code}' "$site/iwd/uix") $(jq -r .status.message "$work/body")"

# --- the page in chromium --------------------------------------------------------------------------
mkdir -p tests/ui/artifacts
IWD_TOOLS=$tools IWD_UI_URL="$site/iwd/ui/" IWD_TENANT_KEY=$tenant_key IWD_READER_KEY=$reader_key \
    IWD_ARTIFACTS=$top/tests/ui/artifacts node tests/ui/ui.test.mjs >"$work/browser.log" 2>&1
rc=$?
cat "$work/browser.log"
passed=$((passed + $(grep -c '^ok - ' "$work/browser.log")))
failed=$((failed + $(grep -c '^not ok - ' "$work/browser.log")))
if [ "$rc" -ne 0 ] && ! grep -q '^not ok - ' "$work/browser.log"; then
    failed=$((failed + 1)); echo "not ok - the browser test exited with status $rc"
fi
# --- a batch by full-text search (after the page's checks: it adds 1,001 tasks) ------------------------------
batch_of() { answer_of POST /tasks/batch "$1"; }
check_match "a batch by search with ids: 400" '^400 a batch action takes either "ids" or a search "q"' \
    "$(batch_of '{"action": "hold", "ids": [1], "q": "invoice"}')"
check_match "a search that is no string: 400" '^400 "q" must be a string' "$(batch_of '{"action": "hold", "q": 7}')"
check_match "a search without a word: 400" '^400 search query must contain at least one word' \
    "$(batch_of '{"action": "hold", "q": "-"}')"
cluster_sql -d tenant_ui -c "SELECT iwd.create_tasks((SELECT jsonb_agg(jsonb_build_object('externalId', 'OV-' || i,
    'capturePoint', 'bulk', 'subject', 'overflow ' || i)) FROM generate_series(1, 1001) i)) IS NOT NULL" >/dev/null ||
    fail_setup "creating 1,001 tasks failed"
check_match "a search matching 1,001 open tasks: 400, nothing done" \
    '^400 the search matches more than 1000 open tasks' \
    "$(batch_of '{"action": "hold", "q": "overflow", "args": {"reason": "too many"}}')"
check "none was held" "0" "$(api GET '/tasks?status=held&capturePoint=bulk' | jq '.tasks | length')"
check "a narrower search: its one task held, by the key's tenant" "1 1" \
    "$(api POST /tasks/batch '{"action": "hold", "q": "overflow 7", "args": {"reason": "by search"}}' |
       jq -r '"\(.matched) \(.changed)"')"
id=$(api GET '/tasks?status=held&capturePoint=bulk' | jq -r '.tasks[0].id')
check "its history records the batch and the actor" "held ui by search" \
    "$(api GET "/tasks/$id/history" | jq -r '.[-1] | "\(.event) \(.actor) \(.detail.reason)"')"
check "a search with a filter: 1,001 match the words, the filter keeps 1" "1 0 1" \
    "$(api POST /tasks/batch '{"action": "resume", "q": "overflow", "filter": {"status": "held"}, "dryRun": true}' |
       jq -r '"\(.matched) \(.changed) \(.wouldChange)"')"

check "the sidecar logged no sanitizer report" "0" "$(grep -c 'runtime error\|AddressSanitizer' "$work/sidecar.log")"
openapi_proxy_check
summary
