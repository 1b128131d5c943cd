#!/bin/sh
# First start of the iwd PostgreSQL image (docker-entrypoint-initdb.d): creates each database named in
# IWD_DATABASES with the iwd extension and lets the scheduler workers serve them (iwd.databases).
set -eu
if [ -n "${IWD_DATABASES:-}" ]; then
    for db in $(echo "$IWD_DATABASES" | tr ',' ' '); do
        psql -X -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres -v db="$db" <<'SQL'
SELECT format('CREATE DATABASE %I', :'db') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SQL
        psql -X -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname "$db" -c 'CREATE EXTENSION IF NOT EXISTS iwd'
    done
    psql -X -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres -v dbs="$IWD_DATABASES" <<'SQL'
SELECT format('ALTER SYSTEM SET iwd.databases = %L', :'dbs') \gexec
SELECT pg_reload_conf();
SQL
fi
