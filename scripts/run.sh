#!/usr/bin/env bash
# make run / make stop: an embedded local PostgreSQL cluster with a demo tenant database, and iwd-sidecar
# when it is built.
#   scripts/run.sh start    start (or restart) everything; safe to re-run
#   scripts/run.sh stop     stop everything
#   scripts/run.sh remove   stop everything and delete the cluster and ./.iwd/ (the next start begins afresh)
# The cluster (data, socket, server log) lives in .iwd/cluster/ when the invoking user runs it. PostgreSQL
# refuses to run as root, so as root it runs as the postgres user, which may not be able to enter the
# checkout (a clone under /root): its files are then in /var/lib/iwd/<checkout name>-<hash of its path>/
# and .iwd/cluster is a link to them. .iwd/ keeps what only the invoking user reads: the server secret,
# the sidecar's log and pid. A cluster made by an older make run in .iwd/pgdata is used as it is.
# Environment: IWD_PG_PORT (default 54320), IWD_DB (default iwd_demo), IWD_PORT (sidecar, 4024),
#              IWD_METRICS_PORT (the sidecar's metrics listener, 9102),
#              IWD_ADMIN_API_KEY (default demo-admin-key), IWD_TENANT_API_KEY (default demo-tenant-api-key),
#              IWD_SECRET_KEY (default: made once at random and kept in .iwd/secret-key).
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd -P)
# shellcheck source=lib.sh
. scripts/lib.sh
state="$top/.iwd"
pg_port=${IWD_PG_PORT:-54320}
db=${IWD_DB:-iwd_demo}
sidecar_port=${IWD_PORT:-4024}
metrics_port=${IWD_METRICS_PORT:-9102}
admin_key=${IWD_ADMIN_API_KEY:-demo-admin-key}
tenant_key=${IWD_TENANT_API_KEY:-demo-tenant-api-key}

# the cluster's directory: .iwd/cluster, which as root links to a directory postgres can reach
if [ -f "$state/pgdata/PG_VERSION" ]; then
    pg_dir="$state/run"; pg_data="$state/pgdata"; pg_log="$state/postgresql.log"
elif [ "$(id -u)" -eq 0 ]; then
    checkout_name=$(basename "$top" | tr -c 'A-Za-z0-9._\n-' _ | cut -c1-24)
    pg_dir="/var/lib/iwd/$checkout_name-$(printf %s "$top" | sha256sum | cut -c1-8)"
    pg_data="$pg_dir/data"; pg_log="$pg_dir/log"
else
    pg_dir="$state/cluster"; pg_data="$pg_dir/data"; pg_log="$pg_dir/log"
fi

psql_db() { cluster_client psql -X -q -v ON_ERROR_STOP=1 "$@"; }

stop_all() {
    if [ -f "$state/sidecar.pid" ]; then
        pid=$(cat "$state/sidecar.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        rm -f "$state/sidecar.pid"
    fi
    cluster_stop fast
}

init_cluster() {
    mkdir -p "$state"
    if [ "$(id -u)" -eq 0 ]; then
        mkdir -p /var/lib/iwd
        chmod 755 /var/lib/iwd
        ln -sfn "$pg_dir" "$state/cluster"
    fi
    cluster_init "$pg_dir" "listen_addresses = 'localhost'
timezone = 'UTC'" -E UTF8 >/dev/null
}

start_all() {
    [ -f "$pg_data/PG_VERSION" ] || init_cluster
    stop_all
    cluster_start -o "-p $pg_port"
    # the demo database is rebuilt when the extension's install script changed since it was loaded
    script_sum=$(sha256sum sql/iwd--*.sql | sha256sum | cut -c1-16)
    if [ "$(cat "$state/extension.sum" 2>/dev/null)" != "$script_sum" ] &&
       [ -n "$(psql_db -d postgres -At -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]; then
        echo "The extension changed since the demo was loaded: rebuilding $db."
        psql_db -d postgres -c "DROP DATABASE $db WITH (FORCE)"
    fi
    echo "$script_sum" > "$state/extension.sum"
    if [ -z "$(psql_db -d postgres -At -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]; then
        psql_db -d postgres -c "CREATE DATABASE $db"
    fi
    psql_db -d "$db" -c "CREATE EXTENSION IF NOT EXISTS iwd" -c "ALTER EXTENSION iwd UPDATE" 2>/dev/null
    # the demo loads in one transaction: either it is all there or it is loaded again
    if [ "$(psql_db -d "$db" -At -c "SELECT count(*) FROM iwd.agent")" = 0 ]; then
        echo "Loading the demo configuration and 10,000 tasks..."
        psql_db -d "$db" -1 -f scripts/demo.sql >/dev/null
    fi
    if [ -x sidecar/iwd-sidecar ]; then
        psql_db -d postgres -At -c "SELECT 1 FROM pg_database WHERE datname = 'iwd_control'" | grep -q 1 ||
            psql_db -d postgres -c "CREATE DATABASE iwd_control"
        # the server secret seals the stored database passwords: the same one at every start
        [ -s "$state/secret-key" ] || (umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$state/secret-key")
        IWD_PORT=$sidecar_port IWD_LISTEN=127.0.0.1 IWD_ADMIN_API_KEY=$admin_key \
        IWD_METRICS_LISTEN=127.0.0.1 IWD_METRICS_PORT=$metrics_port \
        IWD_SECRET_KEY=${IWD_SECRET_KEY:-$(cat "$state/secret-key")} \
        IWD_CONTROL_DB="host=$pg_dir port=$pg_port dbname=iwd_control user=postgres" \
            nohup sidecar/iwd-sidecar >"$state/sidecar.log" 2>&1 &
        echo $! > "$state/sidecar.pid"
        for _ in $(seq 1 50); do
            curl -sf "http://127.0.0.1:$sidecar_port/iwd/v3/health/ready" >/dev/null && break
            sleep 0.1
        done
        curl -sf -X POST "http://127.0.0.1:$sidecar_port/iwd/v3/provisioning" \
            -H "x-api-key: $admin_key" -H 'content-type: application/json' \
            -d "{\"tenant\": {\"id\": \"demo\", \"name\": \"Demo\", \"ccid\": \"demo\"},
                 \"iwd\": {\"url\": \"http://127.0.0.1:$sidecar_port\",
                           \"db\": {\"host\": \"$pg_dir\", \"port\": $pg_port, \"database\": \"$db\",
                                    \"user\": \"postgres\", \"password\": \"\", \"ssl\": false},
                           \"apiKeys\": {\"IWD_APIKEY_TENANT\": \"$tenant_key\"}}}" >/dev/null ||
            echo "note: provisioning the demo tenant through the sidecar failed; see $state/sidecar.log"
    fi

    echo
    echo "iwd is running: PostgreSQL on port $pg_port (socket and files in $pg_dir), tenant database $db."
    echo
    echo "The head of the universal queue:"
    psql_db -d "$db" -c "SELECT t->>'id' AS id, t->>'externalId' AS external_id, t->>'category' AS category,
                                t->>'priority' AS priority, t->>'businessValue' AS business_value,
                                t->>'dueAt' AS due_at FROM iwd.queue('{}', 10) t"
    psql_db -d "$db" -At -c "SELECT iwd_dm.run('full')" >/dev/null
    echo "The Data Mart (iwd_dm.run('full') just ran; the worker repeats it every 15 minutes), queue activity today:"
    psql_db -d "$db" -c "SELECT queue, entered, assigned, completed, pending, pending_overdue,
                                round(avg_finish_s) AS avg_finish_s FROM iwd_dm.queue_activity
                         WHERE day = iwd_dm.interval_start('day', now()) ORDER BY queue"
    cat <<TRY
Try, in psql ("$bindir/psql -h $pg_dir -p $pg_port -U $pg_superuser $db"):
  SELECT iwd.next_task('agent01');                        -- reserve the next best task for an agent
  SELECT iwd.accept_task(<id>, 'agent01');                -- confirm it
  SELECT iwd.complete_task(<id>, 'agent01');              -- finish it
  SELECT * FROM iwd.queue('{"department": "Claims"}', 5); -- the queue, filtered
  SELECT * FROM iwd.search_tasks('complaint 42');         -- full-text search
  SELECT * FROM iwd.task_history(<id>);                   -- what happened to a task
  SELECT iwd.queue_stats();
  SELECT * FROM iwd_dm.intraday_backlog ORDER BY interval_start DESC LIMIT 10;  -- the Data Mart
TRY
    if [ -f "$state/sidecar.pid" ]; then
        api="http://127.0.0.1:$sidecar_port/iwd/v3"
        cat <<CURL
Try the REST API (iwd-sidecar on port $sidecar_port, tenant key $tenant_key):
  curl -H 'x-api-key: $tenant_key' '$api/tasks?limit=5'
  curl -H 'x-api-key: $tenant_key' -X POST $api/tasks \\
       -d '{"externalId": "TRY-1", "capturePoint": "erp", "attributes": {"documentType": "invoice", "amount": 15000}}'
  curl -H 'x-api-key: $tenant_key' -X POST $api/agents/agent01/next
  curl -H 'x-api-key: $tenant_key' '$api/tasks?q=complaint'
  curl http://127.0.0.1:$metrics_port/metrics
Open the Workload Manager: http://127.0.0.1:$sidecar_port/iwd/ui/ (sign in with the key $tenant_key)
CURL
    fi
    echo "Stop with: make stop"
}

# remove_all: stops everything and deletes the cluster (where the link points) and .iwd/
remove_all() {
    stop_all
    [ -e "$pg_data" ] && rm -rf "$pg_dir"
    rm -rf "$state"
    echo "iwd removed: the cluster ($pg_dir) and $state are deleted."
}

case "${1:-start}" in
    start) start_all ;;
    stop) stop_all; echo "iwd stopped." ;;
    remove) remove_all ;;
    *) echo "usage: $0 start|stop|remove" >&2; exit 2 ;;
esac
