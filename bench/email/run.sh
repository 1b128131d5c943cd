#!/usr/bin/env bash
# Email capture benchmark: a mailbox of IWD_BENCH_MESSAGES unread messages (default 10,000; small MIME
# messages with a non-ASCII subject, appended over IMAP to a throwaway Dovecot, tests/email/servers.sh) is
# configured on a tenant, and iwd-sidecar captures it: every message fetched over IMAP, decoded by GMime,
# captured as a task and flagged \Seen. Reports the seconds from the mailbox's creation until the last
# message is captured and the messages captured per second, as a markdown table on stdout (progress on
# stderr); checks that each message is one task and none is left unread.
set -euo pipefail
cd "$(dirname "$0")/../.." || exit 1
# shellcheck source=../../scripts/lib.sh
. scripts/lib.sh
# shellcheck source=../../tests/email/servers.sh
. tests/email/servers.sh
messages=${IWD_BENCH_MESSAGES:-10000}
work=$(work_dir bench-email)
cleanup() {
    sidecar_stop
    mail_servers_stop
    cluster_stop fast
    rm -rf "$work"
}
trap cleanup EXIT
sql() { cluster_sql "$@"; }
mail_py() { /usr/bin/python3 tests/email/mail.py "$@"; }

cluster_init "$work/pg" "iwd_dm.suspend = on
shared_buffers = 256MB"
cluster_start
sql -d postgres -c "CREATE DATABASE control" -c "CREATE DATABASE tenant"
make -s -C sidecar >/dev/null
mail_servers_start "$work/mail" bulk:bench-password
echo "appending $messages messages" >&2
mail_py bulk "$imap_port" bulk bench-password "$messages" bench

http_port=$(free_port)
api="http://127.0.0.1:$http_port/iwd/v3"
sidecar_launch "$work/sidecar.log" "$api/health/ready" \
    env IWD_LISTEN=127.0.0.1 IWD_PORT="$http_port" IWD_ADMIN_API_KEY=bench-admin-key \
    IWD_SECRET_KEY=bench-server-secret-0123456789abcdef IWD_LOG_LEVEL=warn IWD_THREADS="$(nproc)" \
    IWD_CONTROL_DB="host=$pg_dir port=$pg_port dbname=control user=$pg_superuser" IWD_METRICS_PORT=0 \
    sidecar/iwd-sidecar
curl -s --fail-with-body -X POST "$api/provisioning" -H 'x-api-key: bench-admin-key' \
    -d "{\"tenant\": {\"id\": \"bench\", \"ccid\": \"bench\"}, \"iwd\": {\"db\": {\"host\": \"$pg_dir\",
         \"port\": $pg_port, \"database\": \"tenant\", \"user\": \"$pg_superuser\"},
         \"apiKeys\": {\"IWD_APIKEY_TENANT\": \"bench-tenant-key\"}}}" >/dev/null
start=$(date +%s.%N)
curl -s --fail-with-body -X PUT "$api/mailboxes/bulk" -H 'x-api-key: bench-tenant-key' \
    -d "{\"imap\": {\"host\": \"127.0.0.1\", \"port\": $imap_port, \"tls\": \"none\", \"user\": \"bulk\",
         \"password\": \"bench-password\"}, \"pollSeconds\": 1}" >/dev/null
captured=0
while [ "$captured" -lt "$messages" ]; do
    sleep 0.5
    captured=$(curl -s "$api/mailboxes/bulk" -H 'x-api-key: bench-tenant-key' | jq -r .messagesCaptured)
    if awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {exit !(b - a > 3600)}'; then
        echo "not captured within an hour" >&2; exit 1
    fi
done
end=$(date +%s.%N)
tasks=$(sql -d tenant -c "SELECT count(DISTINCT external_id) FROM iwd.task_all WHERE capture_point = 'email:bulk'")
unread=$(mail_py unseen "$imap_port" bulk bench-password)
[ "$tasks" = "$messages" ] || { echo "$tasks distinct tasks for $messages messages" >&2; exit 1; }
[ "$unread" = 0 ] || { echo "$unread messages left unread" >&2; exit 1; }
echo "| messages | seconds | messages/s |"
echo "|---:|---:|---:|"
awk -v n="$messages" -v a="$start" -v b="$end" 'BEGIN {printf "| %d | %.1f | %.0f |\n", n, b - a, n / (b - a)}'
