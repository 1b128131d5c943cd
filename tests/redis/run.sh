#!/usr/bin/env bash
# The Redis suite: the sidecar's cache on a real Redis Cluster and on a real TLS redis-server.
# Cluster: 6 redis-servers in cluster mode (3 masters, 3 replicas) made by redis-cli --cluster create; the
# sidecar, given one seed, routes every key to its slot's master (no MOVED in steady state, every master
# read), follows ASK during a slot migration and MOVED after it, and keeps serving while a master is killed
# (cache misses go to PostgreSQL) until its replica is promoted, when the cache works again.
# TLS: a test CA made with openssl; the cache works over TLS with the CA file; a wrong CA or a wrong server
# name is refused; a server that requires client certificates is used only with IWD_REDIS_CERT_FILE.
# Ends with "redis: N passed, M failed".
set -uo pipefail
suite=redis
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib.sh
. "$here/../lib.sh"
work=$(work_dir redis)
password="redis-secret-for-redis-tests"
redis_password=$password
traffic_pid=""

cleanup() {
    [ -n "$traffic_pid" ] && { touch "$work/stop"; wait "$traffic_pid" 2>/dev/null; }
    sidecar_stop
    for pidfile in "$work"/*/redis.pid; do
        [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null
    done
    cluster_stop immediate
    [ -z "${IWD_KEEP:-}" ] && rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

if [ -z "${IWD_SIDECAR_BIN:-}" ]; then build_sidecar || fail_setup "cannot build iwd-sidecar-asan"; fi
sidecar_bin=${IWD_SIDECAR_BIN:-$top/sidecar/iwd-sidecar-asan}
export IWD_SIDECAR_BIN=$sidecar_bin

# rcli PORT ARGS...: redis-cli on a node (over TLS with the test CA and client certificate when $cli_tls is
# set); tcli ARGS...: on the TLS server
cli_tls=""
rcli() {
    local port=$1; shift
    if [ -n "$cli_tls" ]; then
        redis-cli -p "$port" -a "$password" --no-auth-warning --tls --cacert "$work/pki/ca.crt" \
            --cert "$work/pki/client.crt" --key "$work/pki/client.key" "$@"
    else
        redis-cli -p "$port" -a "$password" --no-auth-warning "$@"
    fi
}
tcli() { cli_tls=yes rcli "$tls_port" "$@"; }
# info_field PORT SECTION FIELD: a number of INFO (0 when absent)
info_field() {
    rcli "$1" info "$2" | tr -d '\r' | awk -F: -v f="$3" '$1 == f {print $2; found = 1} END {if (!found) print 0}'
}
moved_errors() { rcli "$1" info errorstats | tr -d '\r' | sed -n 's/^errorstat_MOVED:count=//p' | grep . || echo 0; }
asking_calls() {
    rcli "$1" info commandstats | tr -d '\r' | sed -n 's/^cmdstat_asking:calls=\([0-9]*\).*/\1/p' | grep . || echo 0
}
entries() { rcli "$1" --scan --pattern 'iwd:key:*'; }
metric() { curl -s "$metrics_url" | awk -v m="$1" '$1 == m {print $2}'; }

# redis_node DIR PORT ARGS...: a redis-server in DIR (its pid file DIR/redis.pid), loopback only, no persistence
redis_node() {
    local dir=$1 port=$2; shift 2
    mkdir -p "$dir"
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --requirepass "$password" \
        --masterauth "$password" --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --dir "$dir" \
        "$@" >/dev/null || return 1
    for _ in $(seq 1 100); do [ -s "$dir/redis.pid" ] && return 0; sleep 0.1; done
    return 1
}

# tenant keys (provisioned below) and requests with them: each must be served whatever Redis does
keys=(redis-tenant-key-0000000001 redis-tenant-key-0000000002 redis-tenant-key-0000000003 redis-tenant-key-0000000004)
served() { # served: requests with every tenant key; the count answered 200
    local n=0
    for k in "${keys[@]}"; do req GET "/tasks?limit=1" "$k"; [ "$code" = 200 ] && n=$((n + 1)); done
    echo "$n"
}
unknown_refused() { # unknown_refused N: N requests with random unknown keys; the count answered 401
    local n=0
    for _ in $(seq 1 "$1"); do req GET "/tasks?limit=1" "unknown-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
        [ "$code" = 401 ] && n=$((n + 1)); done
    echo "$n"
}
forget_locally() { sleep 5.3; } # past the threads' own few-second memory of the keys: lookups read Redis again

hits_sum() { local s=0 p; for p in "$@"; do s=$((s + $(info_field "$p" stats keyspace_hits))); done; echo "$s"; }

# --- PostgreSQL, the cluster ------------------------------------------------------------------------
pg_init "" || fail_setup "initdb failed"
cluster_start || fail_setup "PostgreSQL did not start"
sql postgres -c "CREATE DATABASE control" || fail_setup "cannot create the control database"

cports=(); for i in 0 1 2 3 4 5; do
    cports+=("$(free_port)")
    redis_node "$work/c$i" "${cports[$i]}" --cluster-enabled yes --cluster-port "$(free_port)" \
        --cluster-config-file "$work/c$i/nodes.conf" --cluster-node-timeout 2000 ||
        fail_setup "redis-server $i (cluster mode) did not start"
done
rcli "${cports[0]}" --cluster create $(for p in "${cports[@]}"; do echo "127.0.0.1:$p"; done) --cluster-replicas 1 \
    --cluster-yes >"$work/cluster-create.log" 2>&1 ||
    { cat "$work/cluster-create.log"; fail_setup "cluster create failed"; }
# masters PORT: the ports of the cluster's live masters serving slots, as the node on PORT sees them
masters() {
    rcli "$1" cluster nodes |
        awk '$3 ~ /master/ && $3 !~ /fail/ && $9 != "" {split($2, a, "@"); n = split(a[1], b, ":"); print b[n]}' | sort
}
view() { # view PORT: what the node on PORT sees: its cluster state, masters serving slots, replicas
    echo "$(rcli "$1" cluster info | tr -d '\r' | grep '^cluster_state:') $(masters "$1" | wc -l) masters" \
        "$(rcli "$1" cluster nodes | awk '$3 ~ /slave/ && $3 !~ /fail/' | wc -l) replicas"
}
state=""
for _ in $(seq 1 600); do
    state=$(for p in "${cports[@]}"; do view "$p"; done | sort -u)
    [ "$state" = "cluster_state:ok 3 masters 3 replicas" ] && break
    sleep 0.1
done
check "the Redis Cluster is up: every node sees 3 masters and 3 replicas" "cluster_state:ok 3 masters 3 replicas" \
    "$state"
mapfile -t master_ports < <(masters "${cports[0]}")

# --- the sidecar on the cluster, given one seed -------------------------------------------------------
cluster_env=(IWD_REDIS_NODES="redis://127.0.0.1:${cports[0]}" IWD_REDIS_CLUSTER=true IWD_AUTH_FAILURE_LIMIT=0)
sidecar_start "${cluster_env[@]}" || fail_setup "the sidecar did not start"
for i in 1 2 3 4; do
    provision "r$i" "tenant_r$i" "${keys[$((i - 1))]}" || fail_setup "cannot provision tenant r$i"
done

check "requests with tenant keys are served" "4" "$(served)"
ready=""
for _ in $(seq 1 100); do   # until each thread has read the slot map and connected
    served >/dev/null; ready=$(metric iwd_redis_connections_ready); [ "$ready" = 2 ] && break; sleep 0.1
done
check "every thread holds a ready connection to the cluster" "2" "$ready"
for p in "${master_ports[@]}"; do rcli "$p" config resetstat >/dev/null; done
check "requests with unknown keys are refused" "30" "$(unknown_refused 30)"
stored=0; for p in "${master_ports[@]}"; do stored=$((stored + $(entries "$p" | wc -l))); done
check "the keys' entries are stored in the cluster" "yes" "$([ "$stored" -ge 4 ] && echo yes || echo "no: $stored")"
read_masters=0
for p in "${master_ports[@]}"; do
    [ "$(info_field "$p" stats keyspace_misses)" -gt 0 ] && read_masters=$((read_masters + 1))
done
check "the lookups are spread over every master (each was read)" "3" "$read_masters"
moved=0; for p in "${master_ports[@]}"; do moved=$((moved + $(moved_errors "$p"))); done
check "every command went to its slot's master (no MOVED answer: key slots computed as Redis does)" "0" "$moved"

hits0=$(hits_sum "${master_ports[@]}")
forget_locally
check "requests are served from the cached entries" "4" "$(served)"
hits=$(hits_sum "${master_ports[@]}")
check "the entries were read back from the cluster (cache hits)" "yes" \
    "$([ "$hits" -ge $((hits0 + 4)) ] && echo yes || echo "no: $hits0, then $hits")"

# --- a slot migration: ASK while it migrates, MOVED once it has moved ---------------------------------
src=""; entry=""
for p in "${master_ports[@]}"; do entry=$(entries "$p" | head -1); [ -n "$entry" ] && { src=$p; break; }; done
for p in "${master_ports[@]}"; do [ "$p" != "$src" ] && { dst=$p; break; }; done
slot=$(rcli "$src" cluster keyslot "$entry")
src_id=$(rcli "$src" cluster myid); dst_id=$(rcli "$dst" cluster myid)
rcli "$dst" cluster setslot "$slot" importing "$src_id" >/dev/null
rcli "$src" cluster setslot "$slot" migrating "$dst_id" >/dev/null
check "an entry's slot migrates to another master" "OK" \
    "$(rcli "$src" migrate 127.0.0.1 "$dst" "" 0 5000 AUTH "$password" KEYS "$entry")"
asks0=$(asking_calls "$dst"); dst_hits0=$(info_field "$dst" stats keyspace_hits)
forget_locally
check "during the migration requests are served" "4" "$(served)"
check "the sidecar followed ASK (ASKING sent to the importing master)" "yes" \
    "$([ "$(asking_calls "$dst")" -gt "$asks0" ] && echo yes || echo "no: $asks0, then $(asking_calls "$dst")")"
check "and read the migrated entry there" "yes" \
    "$([ "$(info_field "$dst" stats keyspace_hits)" -gt "$dst_hits0" ] && echo yes || echo no)"
for p in "${master_ports[@]}"; do rcli "$p" cluster setslot "$slot" node "$dst_id" >/dev/null; done
moved0=$(moved_errors "$src"); dst_hits0=$(info_field "$dst" stats keyspace_hits)
forget_locally
check "after the migration requests are served" "4" "$(served)"
check "the old owner answered MOVED" "yes" "$([ "$(moved_errors "$src")" -gt "$moved0" ] && echo yes || echo no)"
check "and the sidecar read the entry from its new master" "yes" \
    "$([ "$(info_field "$dst" stats keyspace_hits)" -gt "$dst_hits0" ] && echo yes || echo no)"
for _ in 1 2; do forget_locally; served >/dev/null; done
check "each thread followed MOVED at most once, then used the new map" "yes" \
    "$([ "$(moved_errors "$src")" -le $((moved0 + 2)) ] && echo yes || echo "no: $moved0, then $(moved_errors "$src")")"

# --- a master killed during traffic: served throughout, the cache back once its replica is promoted -----
victim=$dst
victim_id=$(rcli "$victim" cluster myid)
replica=$(rcli "$victim" cluster nodes |
    awk -v m="$victim_id" '$4 == m {split($2, a, "@"); n = split(a[1], b, ":"); print b[n]}' | head -1)
survivor=""; for p in "${master_ports[@]}"; do [ "$p" != "$victim" ] && { survivor=$p; break; }; done
traffic() { # until $work/stop: tenant and unknown keys, one answer code a line
    local end=$((SECONDS + 150)) k
    while [ ! -e "$work/stop" ] && [ "$SECONDS" -lt "$end" ]; do
        for k in "${keys[@]}"; do
            echo "known $(curl -s -m 10 -o /dev/null -w '%{http_code}' -H "x-api-key: $k" "$base/tasks?limit=1")"
        done
        echo "unknown $(curl -s -m 10 -o /dev/null -w '%{http_code}' -H "x-api-key: unknown-$RANDOM$RANDOM" \
            "$base/tasks?limit=1")"
        sleep 0.05
    done >>"$work/traffic.log"
}
errors0=$(metric iwd_redis_errors_total)
rm -f "$work/stop"; traffic & traffic_pid=$!
traffic_lines() { if [ -f "$work/traffic.log" ]; then wc -l <"$work/traffic.log"; else echo 0; fi; }
for _ in $(seq 1 600); do [ "$(traffic_lines)" -ge 10 ] && break; sleep 0.1; done
echo "mark killed" >>"$work/traffic.log"
kill -9 "$(cat "$work/c$(for i in 0 1 2 3 4 5; do [ "${cports[$i]}" = "$victim" ] && echo $i; done)/redis.pid")"
promoted=""
for _ in $(seq 1 600); do
    [ "$(rcli "$replica" role | head -1)" = master ] &&
        [ "$(rcli "$survivor" cluster info | tr -d '\r' | grep '^cluster_state:')" = "cluster_state:ok" ] &&
        { promoted=yes; break; }
    sleep 0.1
done
check "the killed master's replica is promoted" "yes" "$promoted"
echo "mark promoted" >>"$work/traffic.log"
cached=""
for _ in $(seq 1 120); do
    [ "$(info_field "$replica" stats keyspace_hits)" -gt 0 ] && { cached=yes; break; }
    sleep 0.5
done
check "the cache works again on the promoted replica (entries read there)" "yes" "$cached"
lines=$(traffic_lines)
for _ in $(seq 1 600); do [ "$(traffic_lines)" -ge $((lines + 10)) ] && break; sleep 0.1; done
touch "$work/stop"; wait "$traffic_pid"; traffic_pid=""
check "the sidecar kept running" "yes" "$(kill -0 "$sidecar_pid" 2>/dev/null && echo yes)"
check "every request with a tenant key was served during the failover" "" \
    "$(grep '^known' "$work/traffic.log" | grep -v ' 200$' | sort | uniq -c)"
check "every request with an unknown key was refused (401, never an error)" "" \
    "$(grep '^unknown' "$work/traffic.log" | grep -v ' 401$' | sort | uniq -c)"
check "the traffic ran across the failover (requests before the kill and after the promotion)" "yes yes" \
    "$(awk '/^mark killed/ {k = 1} /^mark promoted/ {p = 1} /^known/ {if (!k) b++; if (p) a++}
            END {print (b > 0 ? "yes" : "no"), (a > 0 ? "yes" : "no")}' "$work/traffic.log")"
check "the lost master was counted in iwd_redis_errors_total" "yes" \
    "$(awk -v a="${errors0:-0}" -v b="$(metric iwd_redis_errors_total)" 'BEGIN {print (b > a) ? "yes" : "no"}')"
ready=""
for _ in $(seq 1 100); do
    served >/dev/null; ready=$(metric iwd_redis_connections_ready); [ "$ready" = 2 ] && break; sleep 0.1
done
check "every thread holds a ready Redis connection after the failover" "2" "$ready"
sidecar_stop

# --- TLS ------------------------------------------------------------------------------------------
pki=$work/pki; mkdir -p "$pki"
cert() { # cert NAME CA SUBJECT-ALT-NAMES USAGE: an EC key and a certificate signed by CA
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$pki/$1.key" -out "$pki/$1.csr" \
        -subj "/CN=$1" 2>/dev/null &&
    openssl x509 -req -in "$pki/$1.csr" -CA "$pki/$2.crt" -CAkey "$pki/$2.key" -CAcreateserial -days 2 \
        -out "$pki/$1.crt" -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=%s\n' "$3" "$4") 2>/dev/null
}
for ca in ca other-ca; do
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$pki/$ca.key" \
        -out "$pki/$ca.crt" -days 2 -subj "/CN=iwd test $ca" 2>/dev/null || fail_setup "cannot make the test CA"
done
# the servers' certificate is also the cluster nodes' client certificate on the cluster bus
cert server ca "DNS:localhost,IP:127.0.0.1" serverAuth,clientAuth || fail_setup "cannot make the server certificate"
cert client ca "DNS:iwd-sidecar" clientAuth || fail_setup "cannot make the client certificate"
tls_port=$(free_port)
tls_server() { # tls_server AUTH-CLIENTS: the TLS redis-server (no plain port), client certificates required or not
    redis_node "$work/tls" 0 --tls-port "$tls_port" --tls-cert-file "$pki/server.crt" --tls-key-file "$pki/server.key" \
        --tls-ca-cert-file "$pki/ca.crt" --tls-auth-clients "$1"
}
tls_server no || fail_setup "the TLS redis-server did not start"
tls_env=(IWD_REDIS_NODES="rediss://127.0.0.1:$tls_port" IWD_REDIS_CLUSTER=false IWD_REDIS_CA_FILE="$pki/ca.crt")

help=$("$sidecar_bin" --help)
missing=""
for v in IWD_REDIS_NODES IWD_REDIS_PASSWORD IWD_REDIS_TLS IWD_REDIS_CA_FILE IWD_REDIS_CERT_FILE IWD_REDIS_KEY_FILE \
         IWD_REDIS_TLS_SERVER_NAME IWD_REDIS_CLUSTER; do
    grep -q "$v " <<<"$help" || missing="$missing $v"
done
check "--help documents every Redis setting" "" "$missing"
start_refused() { # start_refused ENV...: the sidecar refuses to start (status 2)
    env IWD_CONTROL_DB=x IWD_ADMIN_API_KEY=admin-key-for-redis IWD_SECRET_KEY="$secret_key" "$@" "$sidecar_bin" \
        >/dev/null 2>&1
    echo $?
}
check "a client certificate without its key is refused at start" "2" \
    "$(start_refused IWD_REDIS_TLS=true IWD_REDIS_CERT_FILE="$pki/client.crt")"
check "an unreadable CA file is refused at start" "2" \
    "$(start_refused IWD_REDIS_TLS=true IWD_REDIS_CA_FILE="$pki/none.crt")"
check "a key that is not the certificate's is refused at start" "2" \
    "$(start_refused IWD_REDIS_TLS=true IWD_REDIS_CERT_FILE="$pki/client.crt" IWD_REDIS_KEY_FILE="$pki/server.key")"
check "a CA file without TLS is refused at start" "2" \
    "$(start_refused IWD_REDIS_NODES=redis://127.0.0.1:1 IWD_REDIS_CA_FILE="$pki/ca.crt")"

sidecar_start "${tls_env[@]}" || fail_setup "the sidecar did not start with TLS"
check "over TLS: requests are served" "4" "$(served)"
check "over TLS: the keys' entries are stored" "yes" \
    "$([ "$(tcli --scan --pattern 'iwd:key:*' | wc -l)" -ge 4 ] && echo yes)"
tls_hits() { tcli info stats | tr -d '\r' | awk -F: '$1 == "keyspace_hits" {print $2}'; }
hits0=$(tls_hits)
forget_locally
check "over TLS: requests are served from the cache" "4" "$(served)"
check "over TLS: the entries were read back (cache hits)" "yes" \
    "$([ "$(tls_hits)" -ge $((hits0 + 4)) ] && echo yes)"
ready=""
for _ in $(seq 1 100); do
    served >/dev/null; ready=$(metric iwd_redis_connections_ready); [ "$ready" = 2 ] && break; sleep 0.1
done
check "over TLS: every thread holds a ready connection" "2" "$ready"
sidecar_stop

refused_run() { # refused_run LOG-PATTERN ENV...: the sidecar with these settings serves without storing anything
    local errors pattern=$1 lines; shift
    tcli flushall >/dev/null
    lines=$(wc -l <"$work/sidecar.log")
    sidecar_start "$@" || { echo "the sidecar did not start"; return; }
    served >/dev/null; forget_locally
    echo "served $(served), stored $(tcli --scan --pattern 'iwd:key:*' | wc -l)"
    errors=$(metric iwd_redis_errors_total)
    sidecar_stop
    tail -n +$((lines + 1)) "$work/sidecar.log" | grep -E -q -- "$pattern" ||
        echo "the log does not say: $pattern; it says: $(tail -n +$((lines + 1)) "$work/sidecar.log" |
            grep -i -m 2 redis | tr '\n' ' ')"
    [ "${errors:-0}" -gt 0 ] || echo "no Redis error counted"
}
check "a server certificate from another CA: refused, requests served from PostgreSQL" "served 4, stored 0" \
    "$(refused_run "certificate is not trusted" "${tls_env[@]}" IWD_REDIS_CA_FILE="$pki/other-ca.crt")"
check "a server certificate for another name: refused" "served 4, stored 0" \
    "$(refused_run "not trusted for redis.example.org" "${tls_env[@]}" IWD_REDIS_TLS_SERVER_NAME=redis.example.org)"

tcli shutdown nosave >/dev/null 2>&1
for _ in $(seq 1 50); do [ -e "/proc/$(cat "$work/tls/redis.pid" 2>/dev/null)" ] || break; sleep 0.1; done
rm -f "$work/tls/redis.pid"
tls_server yes || fail_setup "the TLS redis-server (client certificates required) did not start"
check "a server that requires a client certificate: without one, nothing is stored" "served 4, stored 0" \
    "$(refused_run "certificate required|closed the connection|unexpected eof|Broken pipe|reset by peer" "${tls_env[@]}")"
tcli flushall >/dev/null
sidecar_start "${tls_env[@]}" IWD_REDIS_CERT_FILE="$pki/client.crt" \
    IWD_REDIS_KEY_FILE="$pki/client.key" || fail_setup "the sidecar did not start with a client certificate"
check "with the client certificate: requests are served" "4" "$(served)"
check "with the client certificate: the entries are stored" "yes" \
    "$([ "$(tcli --scan --pattern 'iwd:key:*' | wc -l)" -ge 4 ] && echo yes)"
sidecar_stop

# --- a Redis Cluster over TLS (client certificates required, the cluster bus over TLS too) -------------
cli_tls=yes
tcports=(); for i in 0 1 2; do
    tcports+=("$(free_port)")
    redis_node "$work/t$i" 0 --tls-port "${tcports[$i]}" --tls-cert-file "$pki/server.crt" \
        --tls-key-file "$pki/server.key" --tls-ca-cert-file "$pki/ca.crt" --tls-cluster yes --tls-replication yes \
        --cluster-enabled yes --cluster-port "$(free_port)" --cluster-config-file "$work/t$i/nodes.conf" \
        --cluster-node-timeout 2000 || fail_setup "redis-server $i (TLS cluster mode) did not start"
done
rcli "${tcports[0]}" --cluster create $(for p in "${tcports[@]}"; do echo "127.0.0.1:$p"; done) \
    --cluster-replicas 0 --cluster-yes >"$work/tls-cluster-create.log" 2>&1 ||
    { cat "$work/tls-cluster-create.log"; fail_setup "TLS cluster create failed"; }
state=""
for _ in $(seq 1 600); do
    state=$(for p in "${tcports[@]}"; do view "$p"; done | sort -u)
    [ "$state" = "cluster_state:ok 3 masters 0 replicas" ] && break
    sleep 0.1
done
check "a Redis Cluster over TLS is up" "cluster_state:ok 3 masters 0 replicas" "$state"
sidecar_start IWD_REDIS_NODES="rediss://127.0.0.1:${tcports[0]}" IWD_REDIS_CLUSTER=true \
    IWD_REDIS_CA_FILE="$pki/ca.crt" IWD_REDIS_CERT_FILE="$pki/client.crt" IWD_REDIS_KEY_FILE="$pki/client.key" \
    IWD_AUTH_FAILURE_LIMIT=0 || fail_setup "the sidecar did not start on the TLS cluster"
check "TLS cluster: requests with tenant keys are served" "4" "$(served)"
check "TLS cluster: requests with unknown keys are refused" "30" "$(unknown_refused 30)"
stored=0; read_masters=0; moved=0
for p in "${tcports[@]}"; do
    stored=$((stored + $(entries "$p" | wc -l))); moved=$((moved + $(moved_errors "$p")))
    [ "$(info_field "$p" stats keyspace_misses)" -gt 0 ] && read_masters=$((read_masters + 1))
done
check "TLS cluster: the entries are stored, every master read, no MOVED answer" "yes 3 0" \
    "$([ "$stored" -ge 4 ] && echo yes || echo "no: $stored") $read_masters $moved"
hits0=$(hits_sum "${tcports[@]}")
forget_locally
check "TLS cluster: requests are served from the cache" "4" "$(served)"
check "TLS cluster: the entries were read back (cache hits)" "yes" \
    "$([ "$(hits_sum "${tcports[@]}")" -ge $((hits0 + 4)) ] && echo yes)"
sidecar_stop
cli_tls=""
check "no sanitizer report in the sidecar's log" "" \
    "$(grep -E 'AddressSanitizer|runtime error' "$work/sidecar.log" | head -3)"

summary
