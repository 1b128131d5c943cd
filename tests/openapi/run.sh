#!/usr/bin/env bash
# sidecar/openapi.yaml itself: linted by @redocly/cli with its recommended rules (the deliberate
# exceptions are in tests/openapi/redocly.yaml, each with its reason), and the validating proxy the
# sidecar and UI suites send their REST traffic through (proxy.mjs) shown to catch what it must: a
# stand-in upstream answers right and wrong documents, undeclared statuses and media types, and accepts
# a request the document refuses. The packages are npm ci'd from this directory's package-lock.json into
# .tools/openapi. Ends with "openapi: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
suite=openapi
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
# shellcheck source=tests/openapi/proxy.sh
. tests/openapi/proxy.sh
work=$(work_dir openapi-test)
upstream_pid=""

cleanup() {
    openapi_proxy_stop
    [ -n "$upstream_pid" ] && kill "$upstream_pid" 2>/dev/null
    [ -z "${IWD_KEEP:-}" ] && rm -rf "$work"
}
trap cleanup EXIT

command -v node >/dev/null || fail_setup "node is not installed (scripts/deps.sh installs npm, which brings it)"
openapi_tools || fail_setup "cannot install tests/openapi's npm packages"

# --- the lint ---------------------------------------------------------------------------------------
# no telemetry and no update check: the tests reach no host
REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true \
    "$openapi_tools_dir/node_modules/.bin/redocly" lint --config tests/openapi/redocly.yaml --format=stylish \
    sidecar/openapi.yaml >"$work/lint.log" 2>&1
lint_rc=$?
grep -v -e '║' -e '═' "$work/lint.log" | grep -E 'error|warning|valid' | head -40
check "sidecar/openapi.yaml passes Redocly's recommended rules" "0" "$lint_rc"
check "with no warning either" "0" "$(grep -c -E '(^| )warning( |$)' "$work/lint.log")"
operations=$(grep -c -E '^    (get|put|post|patch|delete):' sidecar/openapi.yaml)
with_id=$(grep -c -E '^      operationId: ' sidecar/openapi.yaml)
check "every operation has an operationId" "$operations" "$with_id"

# --- the page's API module against the document --------------------------------------------------------
IWD_OPENAPI_TOOLS=$openapi_tools_dir node tests/openapi/ui-operations.mjs >"$work/operations.js" 2>"$work/ops.err"
check "the page names only operations of the document (OP.<operationId>)" "" "$(cat "$work/ops.err")"
check "sidecar/ui/js/operations.js is what tests/openapi/ui-operations.mjs makes of the document" "" \
    "$(diff sidecar/ui/js/operations.js "$work/operations.js" | head -20)"
fields=$(IWD_OPENAPI_TOOLS=$openapi_tools_dir node tests/openapi/ui-fields.mjs 2>&1)
check_match "every member the page reads from an API document is declared by its schema" \
    "^[1-9][0-9]* reads of API documents checked, 0 undeclared$" "$fields"
# and the two checks fail when they must: a page naming an operation or a member the document lacks
mkdir -p "$work/drift/tests/openapi" "$work/drift/sidecar/ui/js"
cp tests/openapi/ui-operations.mjs tests/openapi/ui-fields.mjs "$work/drift/tests/openapi/"
cp sidecar/openapi.yaml "$work/drift/sidecar/"
printf 'OP.getTaskk;\nconst x = task.dueDate;\n' >"$work/drift/sidecar/ui/js/drift.js"
IWD_OPENAPI_TOOLS=$openapi_tools_dir node "$work/drift/tests/openapi/ui-operations.mjs" >/dev/null 2>"$work/drift.err"
check_match "an operation the document lacks is named" "drift.js: OP.getTaskk is no operationId" \
    "$(cat "$work/drift.err")"
check_match "a member no schema declares is named" "drift.js: task.dueDate is declared by no schema" \
    "$(IWD_OPENAPI_TOOLS=$openapi_tools_dir node "$work/drift/tests/openapi/ui-fields.mjs" 2>&1)"

# --- the proxy against a stand-in upstream ------------------------------------------------------------
# The stand-in answers GET /iwd/v3/tasks/{id} with the task document of case {id}, whatever the proxy then
# makes of it; POST /iwd/v3/tasks/{id}/hold with 200 and a task whatever the body.
upstream_port=$(free_port)
cat >"$work/upstream.py" <<'PY'
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

task = {"id": 1, "externalId": "E-1", "capturePoint": "erp", "mediaType": "workitem", "department": None,
        "process": None, "category": None, "queue": None, "customerSegment": None, "priority": 10,
        "businessValue": 0, "subject": "Invoice", "description": None, "skills": {}, "attributes": {},
        "status": "queued", "createdAt": "2026-11-30T22:30:00Z", "activationAt": None, "dueAt": None,
        "expiresAt": None, "assignedTo": None, "reservedUntil": None, "acceptedAt": None, "holdReason": None,
        "errorReason": None, "completedAt": None, "updatedAt": "2026-11-30T22:30:00.123456Z",
        "reprioritizeDateTime": None, "classifiedBy": None, "overdue": False}
cases = {
    "1": (200, "application/json", task),
    "2": (200, "application/json", {k: v for k, v in task.items() if k != "status"}),
    "3": (200, "application/json", dict(task, priority="high")),
    "4": (200, "application/json", dict(task, createdAt="yesterday")),
    "5": (418, "application/json", {"status": {"code": 418, "message": "teapot"}}),
    "6": (200, "text/html", task),
    "7": (404, "application/json", {"status": {"code": 404, "message": "task 7 does not exist"}}),
    "8": (404, "application/json", {"error": "not found"}),
    "9": (200, "application/json", dict(task, color="blue")),
}

class Handler(BaseHTTPRequestHandler):
    def answer(self, status, media_type, document):
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("content-type", media_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.startswith("/iwd/v3/tasks/"):
            self.answer(*cases[self.path.rsplit("/", 1)[1]])
        else:
            self.answer(404, "application/json", {"status": {"code": 404, "message": "no such route"}})

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.answer(200, "application/json", task)

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
PY
python3 "$work/upstream.py" "$upstream_port" >"$work/upstream.log" 2>&1 &
upstream_pid=$!
openapi_proxy_start "$work/records" || fail_setup "the OpenAPI proxy did not start"
base="http://127.0.0.1:$upstream_port/iwd/v3"
for _ in $(seq 1 100); do curl -s -o /dev/null "$base/nothing" && break; sleep 0.1; done

# the proxy checks behind the traffic: /flush answers once the exchanges so far are checked
violations() { curl -s --max-time 300 -o /dev/null "$IWD_OPENAPI_PROXY/flush"; wc -l <"$work/records/violations.log"; }
last_problem() { tail -1 "$work/records/violations.log" | jq -r .problem; }
expect_violation() { # expect_violation NAME PROBLEM-REGEX METHOD PATH [BODY]
    local before
    before=$(violations)
    req "$3" "$4" key "${5:-}"
    check "$1: answered through the proxy" "yes" "$([ -n "$code" ] && [ "$code" != 000 ] && echo yes)"
    check "$1: recorded" "$((before + 1))" "$(violations)"
    check_match "$1: the problem named" "$2" "$(last_problem)"
}
expect_clean() { # expect_clean NAME METHOD PATH [BODY]
    local before
    before=$(violations)
    req "$2" "$3" key "${4:-}"
    check "$1: passed on" "$5" "$code"
    check "$1: no violation" "$before" "$(violations)"
}

expect_clean "a task document as declared" GET /tasks/1 "" 200
check "the answer reaches the client whole" "E-1" "$(json .externalId)"
expect_clean "a declared 404" GET /tasks/7 "" 404
expect_clean "an unknown route answered 404" GET /no/such/route "" 404
expect_violation "a task without its status" "does not match getTask 200" GET /tasks/2
expect_violation "a priority of the wrong type" "does not match getTask 200" GET /tasks/3
expect_violation "a timestamp that is not date-time" "does not match getTask 200" GET /tasks/4
expect_violation "an undeclared status" "status 418 is not declared" GET /tasks/5
expect_violation "an undeclared media type" 'media type "text/html"' GET /tasks/6
expect_violation "an error answer without the error shape" "does not match getTask 404" GET /tasks/8
expect_violation "a member the document does not know" "does not match getTask 200" GET /tasks/9
expect_clean "an accepted request as declared" POST /tasks/1/hold '{"reason": "waiting"}' 200
expect_violation "an accepted request the document refuses" "accepted a request the document refuses" \
    POST /tasks/1/hold '{"reason": 42}'
check "the violation says which member" "yes" \
    "$(tail -1 "$work/records/violations.log" | jq -r '[.details.errors[].instancePath] | any(test("reason"))' |
       sed 's/true/yes/')"
code=$(curl -s -o /dev/null -w '%{http_code}' --proxy "$IWD_OPENAPI_PROXY" --noproxy '' http://192.0.2.1:1/x)
check "the proxy serves loopback targets only" "403" "$code"

summary
