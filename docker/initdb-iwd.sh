#!/bin/sh
# First start of the iwd PostgreSQL image (docker-entrypoint-initdb.d): creates each database named in
# IWD_DATABASES with the iwd extension; the scheduler's launcher serves every database with the
# extension (iwd.databases stays empty: a tenant provisioned later is served too).
set -eu
if [ -n "${IWD_DATABASES:-}" ]; then
    for db in $(echo "$IWD_DATABASES" | tr ',' ' '); do
        psql -X -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres -v db="$db" <<'SQL'
SELECT format('CREATE DATABASE %I', :'db') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SQL
        psql -X -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname "$db" -c 'CREATE EXTENSION IF NOT EXISTS iwd'
    done
fi
