#!/usr/bin/env bash
# The hostile-input suite: what one tenant can send over REST (with its own key, another's, none or a
# forged one) and SQL, against a real PostgreSQL cluster preloading iwd, Redis and the sidecar built
# with AddressSanitizer. Each case must get a 4xx JSON error {"status":{"code","message"}} (or its
# documented success) over REST and a clean SQLSTATE over SQL: never a 5xx, never a crashed backend
# (the server log is read after every case), never a stall. At the end the sidecar's and the backends'
# memory stay under a bound and a bystander tenant is still served.
# Ends with "hostile: N passed, M failed".
set -uo pipefail
suite=hostile
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib.sh
. "$here/../lib.sh"
work=$(work_dir hostile)
key="hostile-tenant-key-0123456789"
bystander_key="bystander-tenant-key-0123456789"
dm_key="hostile-reporting-key-0123456789"
flood_source=127.0.0.2   # the forged-key flood comes from its own loopback address
max_body=$((4 * 1024 * 1024))
cleanup() {
    [ -n "${slow_pid:-}" ] && kill "$slow_pid" 2>/dev/null
    servers_stop immediate
    [ -z "${IWD_KEEP:-}" ] && rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

# req METHOD PATH KEY [BODY-FILE]: sets $code, $body and $secs (curl gives up after 60 s)
req() {
    local args=(-s -o "$work/body" -w '%{http_code} %{time_total}' --max-time 60 -X "$1" "$base$2")
    [ -n "$3" ] && args+=(-H "x-api-key: $3")
    [ $# -ge 4 ] && args+=(-H 'content-type: application/json' --data-binary "@$4")
    read -r code secs < <(curl "${args[@]}")
    body=$(cat "$work/body")
}
# reqs METHOD PATH KEY BODY: req with the body given inline
reqs() { printf '%s' "$4" > "$work/inline.json"; req "$1" "$2" "$3" "$work/inline.json"; }

crashes() { grep -c -E 'terminated by signal|was terminated by exception|terminating any other active server processes' "$pg_log"; }
crashes_before=0

# clean NAME: the last answer is a 2xx, or a 4xx whose body is the JSON error of that code; no backend
# crashed since the previous case
clean() {
    local ok=""
    if [[ "$code" =~ ^2 ]]; then ok=yes
    elif [[ "$code" =~ ^4 ]] &&
         [ "$(jq -r --argjson c "$code" 'if (.status.code == $c) and (.status.message | type == "string" and length > 0)
                                         then "yes" else "no" end' <<<"$body" 2>/dev/null)" = yes ]; then ok=yes
    fi
    check "$1: a 2xx or a 4xx JSON error" "yes" "${ok:-no (HTTP $code: ${body:0:200})}"
    no_crash "$1"
}
# refused NAME: the last answer is a 4xx JSON error
refused() {
    check_match "$1: refused with a 4xx" '^4' "$code"
    clean "$1"
}
no_crash() {
    local now; now=$(crashes)
    check "$1: no backend crashed" "0" "$((now - crashes_before))"
    crashes_before=$now
}

# sqlstate DB SQL: the SQLSTATE the statement fails with, "ok" when it succeeds (30 s statement timeout)
sqlstate() {
    local out
    out=$(sql "$1" -v VERBOSITY=verbose -c "SET statement_timeout = '30s'" -c "$2" 2>&1 >/dev/null)
    if [ -z "$out" ]; then echo ok; else sed -nE 's/^(psql:[^:]*:[0-9]+: )?ERROR: +([0-9A-Z]{5}):.*/\2/p' <<<"$out" | head -1; fi
}
# sql_refused NAME DB SQL: an error with a SQLSTATE of class 22 or 54 (a clean refusal), no crash
sql_refused() {
    local s; s=$(sqlstate "$2" "$3")
    check_match "$1: refused with SQLSTATE 22xxx/54xxx" '^(22|54)[0-9A-Z]{3}$' "$s"
    no_crash "$1"
}

# skills_json N: {"s1": 1, …, "sN": 1}
skills_json() { python3 -c "import json,sys; print(json.dumps({'s%d' % i: 1 for i in range(1, int(sys.argv[1]) + 1)}))" "$1"; }
long() { head -c "$1" /dev/zero | tr '\0' "${2:-x}"; }

# --- servers -----------------------------------------------------------------------------------------
build_sidecar || fail_setup "cannot build iwd-sidecar-asan"
pg_init "iwd.max_workers = 0
log_min_messages = warning" || fail_setup "initdb failed"
cluster_start || fail_setup "PostgreSQL did not start"
sql postgres -c "CREATE DATABASE control" || fail_setup "createdb control failed"
redis_start "$work" "$redis_password" || fail_setup "redis-server did not start"
sidecar_start IWD_MAX_BODY_BYTES=$max_body IWD_AUTH_FAILURE_LIMIT=100 IWD_METRICS_TTL_MS=500 ||
    fail_setup "sidecar start failed"
provision h tenant_h "$key" || fail_setup "provisioning tenant h failed"
provision b tenant_b "$bystander_key" || fail_setup "provisioning tenant b failed"
body=$(jq -n --arg k "$key" --arg d "$dm_key" --argjson p "$pg_port" \
    '{tenant: {id: "h", name: "Tenant h", ccid: "h"},
      iwd: {url: "http://iwd", db: {host: "127.0.0.1", port: $p, database: "tenant_h", user: "postgres", ssl: false},
            apiKeys: {IWD_APIKEY_TENANT: $k, IWD_APIKEY_IWDDM: $d}}, iwdEmail: {url: "http://mail"}}')
reqs PUT /provisioning "$admin_key" "$body"
[ "$code" = 200 ] || fail_setup "adding the reporting key failed: $code $body"
sidecar_rss0=$(rss_kb "$sidecar_pid")
reqs POST /tasks "$key" '{"externalId": "seed-1", "capturePoint": "hostile", "subject": "a seed task"}'
[ "$code" = 201 ] || fail_setup "the first task failed: $code $body"
seed_id=$(jq -r .id <<<"$body")
crashes_before=$(crashes)

# --- 1. an agent with many skills --------------------------------------------------------------------
printf '{"name": "many skills", "state": "ready", "skills": %s}' "$(skills_json 65536)" > "$work/skills65536.json"
req PUT /agents/x65536 "$key" "$work/skills65536.json"
refused "PUT an agent with 65,536 skills ($(($(stat -c %s "$work/skills65536.json") / 1024)) KB)"
req POST /agents/x65536/next "$key"
clean "next task for the 65,536-skill agent"
sql_refused "SQL: upsert_agent with 65,536 skills" tenant_h \
    "SELECT iwd.upsert_agent(jsonb_build_object('id', 'b', 'state', 'ready',
        'skills', (SELECT jsonb_object_agg('s' || g, 1) FROM generate_series(1, 65536) g)))"
check_match "SQL: next_task for it answers cleanly" '^(ok|22[0-9A-Z]{3}|P0002)$' "$(sqlstate tenant_h "SELECT iwd.next_task('b')")"
no_crash "SQL: next_task for the 65,536-skill agent"

# 10,000 skills: refused, or served fast and small; the largest agent accepted (10,000 skills, else the
# documented limit) claims fast from a queue of 3,000 tasks needing pairs of 300 skills
printf '{"name": "ten thousand", "state": "ready", "skills": %s}' "$(skills_json 10000)" > "$work/skills10000.json"
req PUT /agents/x10000 "$key" "$work/skills10000.json"
clean "PUT an agent with 10,000 skills"
wide=10000
[ "$code" = 200 ] || wide=256
printf '{"name": "wide", "state": "ready", "skills": %s}' "$(skills_json "$wide")" > "$work/skills-wide.json"
req PUT /agents/wide "$key" "$work/skills-wide.json"
check "PUT an agent with $wide skills (the largest accepted)" "200" "$code"
check "SQL: 3,000 tasks each needing two of 300 skills" "ok" "$(sqlstate tenant_h "SELECT iwd.create_tasks((SELECT jsonb_agg(jsonb_build_object(
    'externalId', 'pair-' || g, 'capturePoint', 'pairs', 'priority', 1 + g % 90,
    'skills', jsonb_build_object('s' || (1 + (g * 7) % 300), 1 + g % 3, 's' || (1 + (g * 13) % 300), 1)))
    FROM generate_series(1, 3000) g))")"
req POST /agents/wide/next "$key"
check "next task for the $wide-skill agent: a task it can do" "200" "$code"
check "next task for the $wide-skill agent: answered within 2 s" "yes" "$(awk -v s="$secs" 'BEGIN {print (s < 2) ? "yes" : "no (" s " s)"}')"
no_crash "next task for the $wide-skill agent"
# the same over SQL, measuring the backend's peak memory
sql tenant_h -c "SELECT iwd.upsert_agent(jsonb_build_object('id', 'q10000', 'state', 'ready',
                     'skills', (SELECT jsonb_object_agg('s' || g, 1) FROM generate_series(1, $wide) g)))" >/dev/null 2>&1
cat > "$work/q10000.sql" <<'SQL'
SELECT pg_backend_pid();
SET statement_timeout = '30s';
SELECT pg_sleep(0.5);
SELECT clock_timestamp() AS t0 \gset
SELECT iwd.next_task('q10000') IS NOT NULL AS got;
SELECT 'ms ' || round(extract(epoch FROM clock_timestamp() - :'t0') * 1000);
SELECT pg_sleep(1);
SQL
cluster_client psql -X -q -At -d tenant_h -f "$work/q10000.sql" >"$work/q10000.out" 2>&1 &
q_psql=$!
sleep 0.3
q_pid=$(head -1 "$work/q10000.out")
hwm=0
while kill -0 "$q_psql" 2>/dev/null; do
    h=$(awk '/^VmHWM:/ {print $2}' "/proc/$q_pid/status" 2>/dev/null)
    [ -n "$h" ] && hwm=$h
    sleep 0.1
done
q_ms=$(sed -n 's/^ms //p' "$work/q10000.out")
check "SQL: next_task for a $wide-skill agent within 2 s" "yes" \
    "$([ -n "$q_ms" ] && [ "$q_ms" -lt 2000 ] && echo yes || echo "no (${q_ms:-?} ms: $(grep -v '^[0-9]*$' "$work/q10000.out" | tr '\n' ' '))")"
check "SQL: its backend's peak memory under 256 MB" "yes" "$([ "$hwm" -lt 262144 ] && echo yes || echo "no ($((hwm / 1024)) MB)")"
check "SQL: …and it got a task" "t" "$(grep -x -E 't|f' "$work/q10000.out")"
no_crash "SQL: next_task for the $wide-skill agent"

# --- 6. over-long values -----------------------------------------------------------------------------
k3=$(long 3000 k)
for field in externalId capturePoint department process category queue customerSegment mediaType; do
    reqs POST /tasks "$key" "$(jq -nc --arg f "$field" --arg v "$k3" '{externalId: "long-1", capturePoint: "hostile"} + {($f): $v}')"
    clean "a task with a 3 KB $field"
done
for resource in agents departments processes categories calendars rules/classification; do
    case $resource in
        agents) doc='{"name": "x"}' ;;
        calendars) doc='{"timeZone": "UTC"}' ;;
        rules/classification) doc='{"order": 1, "when": {}, "set": {"queue": "q"}}' ;;
        *) doc='{}' ;;
    esac
    reqs PUT "/$resource/$k3" "$key" "$doc"
    refused "PUT /$resource/ with a 3 KB name"
done
reqs PUT /agents/long-name "$key" "$(jq -nc --arg v "$k3" '{name: $v, skills: {($v): 1}}')"
clean "an agent with a 3 KB skill name"
reqs PUT /categories/long-parent "$key" "$(jq -nc --arg v "$k3" '{department: $v, queue: $v}')"
clean "a category naming a 3 KB department and queue"
reqs PUT /calendars/long-holidays "$key" "$(jq -nc --arg v "$k3" '{timeZone: $v}')"
refused "a calendar with a 3 KB time zone"
req GET "/tasks?department=$k3&queue=$k3" "$key"
clean "a queue filter of 3 KB values"
sql_refused "SQL: a task with a 3 KB externalId" tenant_h \
    "SELECT iwd.create_task(jsonb_build_object('externalId', repeat('k', 3000), 'capturePoint', 'hostile'))"
sql_refused "SQL: a department with a 3 KB name" tenant_h "SELECT iwd.upsert_department(jsonb_build_object('name', repeat('d', 3000)))"

# a 2 MB description is captured and found
words=$(python3 -c "import random; r = random.Random(7); print(' '.join(''.join(r.choice('abcdefghij') for _ in range(8)) for _ in range(230000)))")
printf '{"externalId": "huge-1", "capturePoint": "hostile", "subject": "huge text", "description": "zanzibarquux %s"}' \
    "$words" > "$work/huge.json"
req POST /tasks "$key" "$work/huge.json"
check "a task with a $(($(stat -c %s "$work/huge.json") / 1024)) KB description is captured" "201" "$code"
no_crash "a 2 MB description"
req GET "/tasks?q=zanzibarquux" "$key"
check "it is found by a word at its start" "200 huge-1" "$code $(jq -r '.tasks[0].externalId' <<<"$body" 2>/dev/null)"
printf '{"externalId": "huge-2", "capturePoint": "hostile", "subject": "%s"}' "$(long 1000000 s)" > "$work/huge-subject.json"
req POST /tasks "$key" "$work/huge-subject.json"
clean "a task with a 1 MB one-word subject"
check "SQL: a task with a 2 MB description is captured" "ok" \
    "$(sqlstate tenant_h "SELECT iwd.create_task(jsonb_build_object('externalId', 'huge-sql', 'capturePoint', 'hostile',
                          'description', 'quokkazebra ' || (SELECT string_agg(md5(g::text), ' ') FROM generate_series(1, 60000) g)))")"
check "SQL: and searchable" "huge-sql" "$(sql tenant_h -c "SELECT t ->> 'externalId' FROM iwd.search_tasks('quokkazebra') t LIMIT 1" 2>&1)"
no_crash "SQL: a 2 MB description"

# --- deep nesting, huge arrays, many filters ---------------------------------------------------------
python3 -c "import sys; n = 100000; sys.stdout.write('{\"externalId\": \"deep-1\", \"capturePoint\": \"hostile\", \"attributes\": ' + '{\"a\": ' * n + '1' + '}' * n + '}')" > "$work/deep.json"
req POST /tasks "$key" "$work/deep.json"
refused "attributes nested 100,000 deep"
python3 -c "import sys; n = 500000; sys.stdout.write('[' * n + ']' * n)" > "$work/deep-array.json"
req POST /tasks/bulk "$key" "$work/deep-array.json"
refused "a bulk body of arrays nested 500,000 deep"
python3 -c "import sys; n = 20000; sys.stdout.write('{\"order\": 1, \"when\": ' + '{\"not\": ' * n + '{}' + '}' * n + ', \"set\": {\"queue\": \"q\"}}')" > "$work/deep-rule.json"
req PUT /rules/classification/deep "$key" "$work/deep-rule.json"
refused "a rule whose condition nests 20,000 deep"
python3 -c "import sys; n = 2000; sys.stdout.write('{\"order\": 1, \"when\": ' + '{\"all\": [' * n + '{}' + ']}' * n + ', \"set\": {\"queue\": \"q\"}}')" > "$work/deep-rule2.json"
req PUT /rules/classification/deep2 "$key" "$work/deep-rule2.json"
clean "a rule whose condition nests 2,000 deep"
reqs POST /tasks "$key" '{"externalId": "after-deep", "capturePoint": "hostile"}'
check "a task is still captured and classified after the deep rules" "201" "$code"
no_crash "classification after the deep rules"
sql_refused "SQL: a rule nesting 20,000 deep" tenant_h \
    "SELECT iwd.upsert_rule(jsonb_build_object('kind', 'classification', 'name', 'deep-sql', 'order', 1,
        'when', (repeat('{\"not\": ', 20000) || '{}' || repeat('}', 20000))::jsonb, 'set', '{\"queue\": \"q\"}'::jsonb))"
python3 -c "import json; print(json.dumps({'externalId': 'arr-1', 'capturePoint': 'hostile', 'attributes': {'list': list(range(300000))}}))" > "$work/array.json"
req POST /tasks "$key" "$work/array.json"
clean "a task with a 300,000-element attribute array"
python3 -c "import json; print(json.dumps([{'externalId': 'bulk-%d' % i, 'capturePoint': 'bulk'} for i in range(40000)]))" > "$work/bulk.json"
req POST /tasks/bulk "$key" "$work/bulk.json"
clean "a bulk of 40,000 tasks ($(($(stat -c %s "$work/bulk.json") / 1024)) KB)"
python3 -c "import json; print(json.dumps({'externalId': 'sk-arr', 'capturePoint': 'hostile', 'skills': {'s%d' % i: 1 for i in range(100000)}}))" > "$work/task-skills.json"
req POST /tasks "$key" "$work/task-skills.json"
refused "a task requiring 100,000 skills"
req GET "/tasks?$(python3 -c "print('&'.join('department=d%d' % i for i in range(2000)))")" "$key"
clean "2,000 repeated filters"
req GET "/tasks?status=$(python3 -c "print(','.join(['queued'] * 15000))")" "$key"
clean "a filter listing 15,000 values"
req GET "/tasks?$(python3 -c "print('&'.join('p%d=1' % i for i in range(3000)))")" "$key"
refused "3,000 unknown query parameters"
sql_refused "SQL: a queue filter nesting 10,000 arrays" tenant_h \
    "SELECT count(*) FROM iwd.queue(jsonb_build_object('department', (repeat('[', 10000) || repeat(']', 10000))::jsonb))"

# --- methods, bytes, paths ---------------------------------------------------------------------------
reqs PUT /agents/aA "$key" '{"name": "agent aA", "state": "ready"}'
reqs PUT /agents/a17 "$key" '{"name": "agent a17", "state": "ready"}'
for m in FOO PROPFIND TRACE OPTIONS CONNECT "$(long 2000 M)"; do
    req "$m" "/tasks/$seed_id" "$key"
    clean "method ${m:0:16}$([ ${#m} -gt 16 ] && echo "… (${#m} bytes)")"
done
for path in "/agents/a17%00zzz" "/agents/a17%" "/agents/a17%4" "/agents/a17%zz" "/agents/a%2541" "/tasks/$seed_id%00" \
            "/agents/%ff%fe" "/tasks/%" "/agents//a17"; do
    req GET "$path" "$key"
    clean "GET $path"
    [ "$code" = 200 ] && [[ "$path" == *%* ]] && check "GET $path does not reach another name" "not a17/aA" \
        "$(jq -r '.id // .name' <<<"$body" | sed -E 's/^(a17|aA|agent a17|agent aA)$/reached &/; t; s/.*/not a17\/aA/')"
done
printf '{"externalId": "utf-\xff\xfe", "capturePoint": "hostile", "subject": "bad \xc3\x28 bytes"}' > "$work/bad-utf8.json"
req POST /tasks "$key" "$work/bad-utf8.json"
refused "non-UTF-8 bytes in a task"
printf '{"name": "\xed\xa0\x80 surrogate"}' > "$work/surrogate.json"
req PUT /agents/surrogate "$key" "$work/surrogate.json"
refused "an encoded surrogate in an agent name"
reqs POST /tasks "$key" '{"externalId": "nul-\u0000", "capturePoint": "hostile"}'
refused "an escaped NUL in a task"
req GET /tasks $'\xff\xfe\x80'
clean "a key of non-UTF-8 bytes"
req GET /tasks $'a\x01\x7fkey'
check_match "a key with control characters: a 4xx (the HTTP parser refuses the header)" '^4' "$code"
no_crash "a key with control characters"
req GET "/tasks?department=%ff%fe" "$key"
clean "a filter of non-UTF-8 bytes"

# --- values at the edges of their types: an answer or a clean refusal, within 5 s ---------------------------
# sql_quick NAME SQL: succeeds or fails with a SQLSTATE of class 22, 54, 55 or P0, within 5 s
sql_quick() {
    local t0 s ms
    t0=$(date +%s%N)
    s=$(sqlstate tenant_h "$2")
    ms=$((($(date +%s%N) - t0) / 1000000))
    check_match "SQL: $1: answered cleanly" '^(ok|22[0-9A-Z]{3}|54[0-9A-Z]{3}|55[0-9A-Z]{3}|P0[0-9A-Z]{3})$' "$s"
    check "SQL: $1: within 5 s" "yes" "$([ "$ms" -lt 5000 ] && echo yes || echo "no ($ms ms)")"
    no_crash "SQL: $1"
}
holidays=$(python3 -c "import datetime; d = datetime.date(2026, 1, 5); print(','.join('\"%s\"' % (d + datetime.timedelta(weeks=i)) for i in range(1000)))")
sql_quick "a calendar of one minute a week and 1,000 holidays" \
    "SELECT iwd.upsert_calendar('{\"name\": \"sparse\", \"timeZone\": \"UTC\", \"workStart\": \"09:00\", \"workEnd\": \"09:01\",
                                \"workDays\": [1], \"holidays\": [$holidays]}')"
sql_quick "business time: 2^31-1 minutes in that calendar" "SELECT iwd.business_time_add(now(), 2147483647, 'sparse')"
sql_quick "a category due in 2^31-1 business minutes" \
    "SELECT iwd.upsert_category('{\"name\": \"forever\", \"slaMinutes\": 2147483647, \"calendar\": \"sparse\"}')"
sql_quick "a task in that category" "SELECT iwd.create_task('{\"externalId\": \"forever-1\", \"capturePoint\": \"hostile\", \"category\": \"forever\"}')"
sql_quick "aging by 1 every minute up to 2^31-1, from year 1" \
    "SELECT iwd.upsert_category('{\"name\": \"aging\", \"reprioritize\": {\"step\": 1, \"everyMinutes\": 1, \"max\": 2147483647}}');
     SELECT iwd.create_task('{\"externalId\": \"aging-1\", \"capturePoint\": \"hostile\", \"category\": \"aging\",
                             \"sourceCreatedDateTime\": \"0001-01-01T00:00:00Z\"}')"
sql_quick "a reservation of 2^31-1 seconds" "SELECT iwd.next_task('a17', 2147483647)"
sql_quick "timestamps in the year 294276" \
    "SELECT iwd.create_task('{\"externalId\": \"far-1\", \"capturePoint\": \"hostile\", \"dueAt\": \"294276-12-31T00:00:00Z\",
                             \"activationAt\": \"294276-12-30T00:00:00Z\", \"expiresAt\": \"294276-12-31T00:00:00Z\"}')"
sql_quick "a queue page of 2^31-1 tasks" "SELECT count(*) FROM iwd.queue('{}', 2147483647)"
sql_quick "a search of 1,000 OR-ed words" \
    "SELECT count(*) FROM iwd.search_tasks((SELECT string_agg('w' || g, ' or ') FROM generate_series(1, 1000) g))"

# --- keys: forged Redis entries, a forged-key flood ----------------------------------------------------
forged="forged-key-0123456789abcdef"
redis_cli --scan --pattern 'iwd:*' | xargs -r redis-cli -p "$redis_port" -a "$redis_password" --no-auth-warning del >/dev/null
sleep 5.5   # past the threads' own memory of the keys: the next lookups write Redis again
new_entry() { # new_entry KEY: the Redis entry a request with KEY writes
    local before; before=$(redis_cli --scan --pattern 'iwd:*' | sort)
    curl -s -o /dev/null -H "x-api-key: $1" "$base/tasks?limit=1"
    sleep 0.3
    comm -13 <(echo "$before") <(redis_cli --scan --pattern 'iwd:*' | sort) | head -1
}
tenant_entry=$(new_entry "$key")
dm_entry=$(new_entry "$dm_key")
check "the tenant's key and the reporting key are cached in Redis" "yes" \
    "$([ -n "$tenant_entry" ] && [ -n "$dm_entry" ] && echo yes || echo "no ($tenant_entry / $dm_entry)")"
if [ -n "$tenant_entry" ] && [ -n "$dm_entry" ]; then
    value=$(redis_cli --raw get "$tenant_entry")
    redis_cli set "$dm_entry" "$value" >/dev/null
    redis_cli set "iwd:key:$(printf '%s' "$forged" | sha256sum | cut -d' ' -f1)" "$value" >/dev/null
    forged_entry=$(new_entry "$forged")
    [ -n "$forged_entry" ] && redis_cli set "$forged_entry" "$value" >/dev/null
    sleep 5.5   # past the threads' own memory of the keys: the next lookups read Redis
    reqs POST /tasks "$dm_key" '{"externalId": "forged-1", "capturePoint": "hostile"}'
    check "the reporting key's Redis entry replaced by the tenant key's: still read-only (403)" "403" "$code"
    req GET /tasks "$forged" ""
    req GET /tasks "$forged"
    check "a forged key whose Redis entry copies the tenant key's: 401" "401" "$code"
    for e in $(redis_cli --scan --pattern 'iwd:*'); do
        redis_cli set "$e" '{"ccid": "b", "kind": "tenant", "host": "127.0.0.1", "port": 1}' >/dev/null
    done
    sleep 5.5
    req GET "/tasks/$seed_id" "$key"
    check "every Redis entry overwritten: the tenant key still reads its own task" "200 seed-1" \
        "$code $(jq -r .externalId <<<"$body" 2>/dev/null)"
    reqs POST /tasks "$dm_key" '{"externalId": "forged-2", "capturePoint": "hostile"}'
    check "every Redis entry overwritten: the reporting key still cannot write" "403" "$code"
fi
flood_codes=$(for i in $(seq 1 300); do
    curl -s -o /dev/null -w '%{http_code}\n' --interface "$flood_source" -H "x-api-key: random-$i-$RANDOM$RANDOM" "$base/tasks"
done | sort | uniq -c | awk '{printf "%s:%s ", $2, $1}')
check_match "300 random keys from one address: 401, then 429" '^401:[0-9]+ 429:[0-9]+ $' "$flood_codes"
t0=$(date +%s%N)
req GET "/tasks/$seed_id" "$key"
check "meanwhile another address's tenant is served" "200" "$code"
check "…at once" "yes" "$(awk -v s="$secs" 'BEGIN {print (s < 1) ? "yes" : "no (" s " s)"}')"

# --- provisioning: ccids and keys that do not fit ----------------------------------------------------------
prov_body() { jq -nc --arg c "$1" --arg k "$2" --argjson p "$pg_port" \
    '{tenant: {id: $c, name: "x", ccid: $c}, iwd: {url: "http://iwd", db: {host: "127.0.0.1", port: $p,
      database: "tenant_h", user: "postgres", ssl: false}, apiKeys: {IWD_APIKEY_TENANT: $k}}, iwdEmail: {url: "x"}}'; }
reqs POST /provisioning "$admin_key" "$(prov_body "$(long 300 c)" "a-long-enough-tenant-key-123")"
refused "a 300-byte ccid"
reqs POST /provisioning "$admin_key" "$(prov_body "short-key" "abc")"
refused "a 3-character tenant key"

# --- lifecycle: acting for an agent that does not hold the task ----------------------------------------------
reqs POST /tasks "$key" '{"externalId": "held-by-none", "capturePoint": "hostile"}'
free_id=$(jq -r .id <<<"$body")
reqs POST "/tasks/$free_id/complete" "$key" '{"agent": "ghost"}'
refused "completing a queued task as an agent that does not exist"
reqs POST "/tasks/$free_id/complete" "$key" '{"agent": "a17"}'
refused "completing a queued task as an agent that does not hold it"
check_match "SQL: complete_task by an agent that does not hold the task is refused" '^(22|55|P0)[0-9A-Z]{3}$' \
    "$(sqlstate tenant_h "SELECT iwd.complete_task($free_id, 'a17')")"

# --- the Data Mart's lock cannot be held by any login ---------------------------------------------------------
sql tenant_h -c "CREATE ROLE hostile_login LOGIN" 2>/dev/null
sql tenant_h -c "BEGIN" -c "SELECT iwd_dm.run('full') IS NOT NULL" -c "SELECT pg_sleep(3)" -c "COMMIT" >/dev/null 2>&1 &
dm_psql=$!
sleep 1
locks=$(sql tenant_h -c "SELECT string_agg(CASE objsubid WHEN 1 THEN format('pg_advisory_lock(%s::bigint)', (classid::bigint << 32) | objid::bigint)
                                                         ELSE format('pg_advisory_lock(%s, %s)', classid::int, objid::int) END, ', ')
                         FROM pg_locks WHERE locktype = 'advisory' AND granted
                           AND pid IN (SELECT pid FROM pg_stat_activity WHERE query LIKE '%pg_sleep(3)%')")
if [ -n "$locks" ]; then
    cluster_client psql -X -q -U hostile_login -d tenant_h \
        -c "SELECT $locks" -c "SELECT pg_sleep(20)" >"$work/lock-holder.out" 2>&1 &
    holder=$!
fi
wait "$dm_psql"
sleep 0.5
check "with a login holding the Data Mart's locks, a run still completes within 10 s" "succeeded" \
    "$(sql tenant_h -c "SET statement_timeout = '10s'" -c "SELECT iwd_dm.run('full') ->> 'status'" 2>&1 | tail -1)"
[ -n "${holder:-}" ] && kill "$holder" 2>/dev/null

# --- slow and many clients -----------------------------------------------------------------------------------
python3 - "$http_port" >"$work/slow.out" 2>&1 <<'PY' &
import socket, sys, time
port = int(sys.argv[1])
socks = []
for i in range(100):   # 100 connections that send their headers a byte at a time
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /iwd/v3/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n")
    socks.append(s)
end = time.time() + 8
while time.time() < end:
    for s in socks:
        try:
            s.send(b"X")
        except OSError:
            pass
    time.sleep(0.5)
PY
slow_pid=$!
sleep 1
worst=0
for i in $(seq 1 20); do
    req GET "/tasks/$seed_id" "$key"
    [ "$code" = 200 ] || worst=999
    worst=$(awk -v a="$worst" -v b="$secs" 'BEGIN {print (b > a) ? b : a}')
done
check "100 slow clients: every request of another client answered within 2 s" "yes" \
    "$(awk -v s="$worst" 'BEGIN {print (s < 2) ? "yes" : "no (" s " s)"}')"
wait "$slow_pid"; slow_pid=""
burst=$(seq 1 1000 | xargs -P 100 -I{} curl -s -o /dev/null --max-time 30 -w '%{http_code}\n' -H "x-api-key: $key" "$base/tasks/$seed_id" |
    sort | uniq -c | awk '{printf "%s:%s ", $2, $1}')
check_match "a burst of 1,000 requests, 100 at a time: every answer 200 or 503" '^(200:[0-9]+ )?(503:[0-9]+ )?$' "$burst"

# --- metrics: no key, no tenant data on the API port; bounded labels --------------------------------------------
for i in $(seq 1 300); do printf '{"externalId": "lbl-%s", "capturePoint": "hostile", "queue": "queue-%s"}\n' "$i" "$i"; done |
    jq -s . > "$work/labels.json"
req POST /tasks/bulk "$key" "$work/labels.json"
check "300 tasks in 300 queues" "201" "$code"
req GET /metrics ""
check "the API port's /metrics without a key: refused" "401" "$code"
check "…and names no tenant" "0" "$(grep -c 'ccid=' <<<"$body")"
sleep 1
metrics=$(curl -s "$metrics_url")
check_match "the metrics listener serves Prometheus text" 'iwd_request_total' "$metrics"
queues=$(grep -oE '^iwd_queue_tasks\{[^}]*queue="[^"]*"' <<<"$metrics" | sed -E 's/.*queue="([^"]*)"/\1/' | sort -u | wc -l)
check "the queue gauges' labels are bounded (300 queues created)" "yes" \
    "$([ "$queues" -lt 300 ] && echo yes || echo "no ($queues queue labels)")"
# (the HTTP method labels of the API's series; the database duration's method is the call's command)
methods=$(grep -E '^iwd_api_request' <<<"$metrics" | grep -oE 'method="[^"]*"' | sort -u | wc -l)
check "the method labels are bounded (6 odd methods sent)" "yes" "$([ "$methods" -le 12 ] && echo yes || echo "no ($methods)")"

# --- the end: memory and the bystander ------------------------------------------------------------------------
sidecar_rss=$(rss_kb "$sidecar_pid")
check "the sidecar's memory grew by less than 512 MB" "yes" \
    "$([ $((sidecar_rss - sidecar_rss0)) -lt 524288 ] && echo yes || echo "no ($(((sidecar_rss - sidecar_rss0) / 1024)) MB)")"
biggest=0
for p in $(children "$(postmaster_pid)"); do
    r=$(rss_kb "$p"); [ "${r:-0}" -gt "$biggest" ] && biggest=$r
done
check "every backend's memory under 512 MB" "yes" "$([ "$biggest" -lt 524288 ] && echo yes || echo "no ($((biggest / 1024)) MB)")"
reqs POST /tasks "$bystander_key" '{"externalId": "still-here", "capturePoint": "bystander"}'
check "the bystander tenant still captures" "201" "$code"
req GET "/tasks/$(jq -r .id <<<"$body")" "$bystander_key"
check "…and reads, at once" "200 yes" "$code $(awk -v s="$secs" 'BEGIN {print (s < 1) ? "yes" : "no (" s " s)"}')"
no_crash "the whole suite"
check "no 5xx answer but 503 (bounded waiting calls) in the sidecar's log" "0" \
    "$(grep -c -E '"status":5(0[0-24-9]|[1-9][0-9])' "$work/sidecar.log")"
kill "$sidecar_pid"; wait "$sidecar_pid" 2>/dev/null; sidecar_pid=""
check "no AddressSanitizer or UndefinedBehaviorSanitizer report" "0" \
    "$(grep -c -E 'AddressSanitizer|runtime error' "$work/sidecar.log")"
summary
