#!/bin/sh
# The official rabbitmq image's start-up, for the variables docker-compose.yml uses:
# RABBITMQ_DEFAULT_USER / RABBITMQ_DEFAULT_PASS (applied when the data is first created, by
# RabbitMQ itself), AMQP on 5672 and the management UI on 15672 for every address, the default
# user allowed from other hosts (RabbitMQ admits guest from localhost only), and
# RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS (read by rabbitmq-server itself).
set -eu

{
  echo "loopback_users = none"
  echo "listeners.tcp.default = 5672"
  echo "management.tcp.port = 15672"
  [ -z "${RABBITMQ_DEFAULT_USER:-}" ] || echo "default_user = $RABBITMQ_DEFAULT_USER"
  [ -z "${RABBITMQ_DEFAULT_PASS:-}" ] || echo "default_pass = $RABBITMQ_DEFAULT_PASS"
} >/etc/rabbitmq/rabbitmq.conf
chown -R rabbitmq:rabbitmq /var/lib/rabbitmq
export HOME=/var/lib/rabbitmq
exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups /usr/lib/rabbitmq/bin/rabbitmq-server
