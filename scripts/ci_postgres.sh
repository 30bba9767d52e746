#!/usr/bin/env bash
# Install (Debian's `postgresql`), configure and start a PostgreSQL server for the test suite:
# loopback-only, trust authentication on 127.0.0.1/::1, a database named `test` owned by `postgres`.
# Idempotent: safe to run on a machine where it already runs. Used by .ci/run; run it by hand for local tests.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
  apt-get update -qq
  apt-get install -y -qq postgresql >/dev/null
fi
version=$(ls /etc/postgresql | sort -V | tail -n1)
if [ ! -d "/etc/postgresql/$version/main" ]; then
  pg_createcluster "$version" main >/dev/null
fi
hba="/etc/postgresql/$version/main/pg_hba.conf"
# Tests connect over TCP as postgres without a password; only loopback is trusted, nothing listens elsewhere.
if ! grep -q '^# trialscreen-test' "$hba"; then
  tmp=$(mktemp)
  {
    echo '# trialscreen-test: trust loopback for the test suite'
    echo 'host    all   all   127.0.0.1/32   trust'
    echo 'host    all   all   ::1/128        trust'
    cat "$hba"
  } >"$tmp"
  cat "$tmp" >"$hba"
  rm -f "$tmp"
fi
conf="/etc/postgresql/$version/main/postgresql.conf"
grep -q "^listen_addresses = 'localhost'" "$conf" || echo "listen_addresses = 'localhost'" >>"$conf"
if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$version" main reload
else
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
fi
for _ in $(seq 1 60); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
pg_isready -h 127.0.0.1 -p 5432
if ! psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1; then
  psql -h 127.0.0.1 -U postgres -qc 'CREATE DATABASE test'
fi
