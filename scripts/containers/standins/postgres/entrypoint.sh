#!/bin/sh
# The official postgres image's start-up, for the variables docker-compose.yml uses: on an empty
# PGDATA, create the cluster with POSTGRES_USER / POSTGRES_PASSWORD and the database POSTGRES_DB
# on a temporary server that listens on the Unix socket only (so a TCP health check cannot pass
# during initialisation), then run PostgreSQL listening on every address with password auth.
set -eu

if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA"
  chown postgres:postgres "$PGDATA"
  chmod 0700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ "$1" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?the official image refuses to start without POSTGRES_PASSWORD}"
  user=${POSTGRES_USER:-postgres}
  database=${POSTGRES_DB:-$user}
  password_file=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$password_file"
  initdb --username="$user" --pwfile="$password_file" --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$password_file"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
  pg_ctl --wait --options="-c listen_addresses=''" start >/dev/null
  if [ "$database" != postgres ]; then
    psql --quiet --set ON_ERROR_STOP=1 --username="$user" --dbname=postgres \
      --command="CREATE DATABASE \"$database\""
  fi
  pg_ctl --wait --mode=fast stop >/dev/null
  echo "PostgreSQL init process complete; ready for start up."
fi

exec "$@"
