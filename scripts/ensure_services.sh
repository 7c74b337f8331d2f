#!/usr/bin/env bash
# Start the local PostgreSQL and RabbitMQ if they are not answering, then wait for
# their ports. Never stops them: tests inject faults through their own proxies.
set -euo pipefail

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

if ! port_open 5432; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
fi
if ! port_open 5672; then
  echo "starting RabbitMQ"
  rabbitmq-server -detached
fi
wait_port PostgreSQL 5432
wait_port RabbitMQ 5672
