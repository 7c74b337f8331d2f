#!/usr/bin/env bash
# Make sure PostgreSQL and RabbitMQ answer where DATABASE_URL and RABBITMQ_URL point (the services'
# defaults when unset). A server on this machine that is down is started if it is Debian's packaged
# one (pg_ctlcluster, rabbitmq-server); on any other system we say what to start and stop. A server
# elsewhere is not ours to start: we only say which one will be used. Never stops anything: tests
# inject faults through their own proxies.
set -euo pipefail

DATABASE_URL=${DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/jobqueue}
RABBITMQ_URL=${RABBITMQ_URL:-amqp://guest:guest@127.0.0.1:5672/}

# "host port" of a URL (default port if it names none); python3 parses what a regex would not
# (user:password@, [IPv6], ?query).
host_port() {
  python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(p.hostname or "", p.port or sys.argv[2])' "$1" "$2"
}

is_local() {
  case $1 in
    "" | localhost | 127.* | ::1 | "$(hostname)") return 0 ;;
    *) return 1 ;;
  esac
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local name=$1 port=$2
  for _ in $(seq 1 120); do
    port_open "$port" && return 0
    sleep 0.5
  done
  echo "$name did not open port $port within 60 s" >&2
  return 1
}

# ensure NAME URL_VARIABLE HOST PORT DEBIAN_TOOL START_COMMAND ELSEWHERE
ensure() {
  local name=$1 variable=$2 host=$3 port=$4 tool=$5 start=$6 elsewhere=$7
  if ! is_local "$host"; then
    echo "using the $name at $host:$port ($variable); not starting a local one"
    return 0
  fi
  port_open "$port" && return 0
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "$name is not answering on 127.0.0.1:$port, and this machine has no $tool (Debian's way to" \
      "start it, the only one this script knows). Start $name yourself ($elsewhere), or point" \
      "$variable at one that runs, then try again." >&2
    return 1
  fi
  echo "starting $name"
  eval "$start"
  wait_port "$name" "$port"
}

# Assigned first, so that set -e sees a failure to parse.
pg=$(host_port "$DATABASE_URL" 5432)
mq=$(host_port "$RABBITMQ_URL" 5672)
read -r pg_host pg_port <<<"$pg"
read -r mq_host mq_port <<<"$mq"
ensure PostgreSQL DATABASE_URL "$pg_host" "$pg_port" pg_ctlcluster \
  'pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start' \
  "e.g. 'brew services start postgresql' on macOS, 'sudo systemctl start postgresql' on most Linux"
ensure RabbitMQ RABBITMQ_URL "$mq_host" "$mq_port" rabbitmq-server 'rabbitmq-server -detached' \
  "e.g. 'brew services start rabbitmq' on macOS, 'sudo systemctl start rabbitmq-server' on most Linux"
