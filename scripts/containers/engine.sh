#!/usr/bin/env bash
# A Docker engine with Compose v2 for the container tests, on a machine that may have none.
#
#   scripts/containers/engine.sh up     # use a running engine, or install and start one; prints its settings
#   scripts/containers/engine.sh down   # stop the engine `up` started (never one it found running)
#   eval "$(scripts/containers/engine.sh up)"   # then `docker compose ...` talks to it
#
# `up` prints shell assignments on stdout (DOCKER_HOST, JOBQUEUE_ENGINE_STARTED=1 when it started
# the engine itself) and says what it does on stderr. Idempotent: with the engine running it only
# checks it (well under a second).
#
# Where no engine runs (our CI machines: Debian 12, only package registries reachable), it installs
# Debian 13's docker.io, docker-cli, docker-compose (Compose v2) and docker-buildx: Debian 12's own
# (20.10 and Compose 1.29) reject the compose file's `start_interval` and the Dockerfiles'
# `--start-interval`. They are fetched with `apt-get download` through a private apt configuration
# that lists Debian 13 from the mirror the machine is configured with, so the system's sources are
# never changed; their dependencies (containerd, runc, iptables, tini) come from Debian 12. Then
# dockerd is started by hand (no systemd here) with its own data root, exec root, pid file and
# socket, so it shares nothing with any other engine on the machine.
set -euo pipefail

CACHE=${JOBQUEUE_CONTAINER_CACHE:-/var/cache/jobqueue-containers}
DATA_ROOT=${JOBQUEUE_DOCKER_DATA:-/var/lib/jobqueue-docker}
RUN_DIR=/run/jobqueue-docker
SOCKET=$RUN_DIR/docker.sock
PIDFILE=$RUN_DIR/dockerd.pid
LOG=/var/log/jobqueue-dockerd.log
# The oldest engine and Compose that run this project: HEALTHCHECK --start-interval needs
# Engine 25; the tests' `!override` in a compose override file needs Compose 2.24.4.
MIN_ENGINE=25.0
MIN_COMPOSE=2.24.4
PACKAGES=(docker.io docker-cli docker-compose docker-buildx)

say() { echo "engine: $*" >&2; }

# True when version $1 >= $2 (dotted numbers; a suffix such as +dfsg1 is ignored).
at_least() { [ "$(printf '%s\n%s\n' "${1%%[+~-]*}" "$2" | sort -V | head -n1)" = "$2" ]; }

# An engine answers on DOCKER_HOST ($1) and is recent enough, with a recent enough Compose.
usable() {
  local engine compose
  engine=$(DOCKER_HOST=$1 timeout 10 docker version --format '{{.Server.Version}}' 2>/dev/null) || return 1
  compose=$(DOCKER_HOST=$1 timeout 10 docker compose version --short 2>/dev/null) || return 1
  at_least "$engine" "$MIN_ENGINE" && at_least "${compose#v}" "$MIN_COMPOSE"
}

installed() {
  [ -x /usr/sbin/dockerd ] && [ -x /usr/libexec/docker/cli-plugins/docker-compose ] || return 1
  at_least "$(/usr/sbin/dockerd --version | awk '{print $3}' | tr -d ,)" "$MIN_ENGINE"
}

# shellcheck source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

install_engine() {
  local apt_dir=$CACHE/apt repo
  repo=$(mirror)
  [ -n "$repo" ] || { say "cannot tell which Debian mirror apt uses (apt-get update first?)"; return 1; }
  mkdir -p "$apt_dir"/{lists/partial,cache/archives/partial,sources.list.d,debs}
  printf 'Types: deb\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: %s\n' \
    "$repo" /usr/share/keyrings/debian-archive-keyring.gpg >"$apt_dir/sources.list.d/trixie.sources"
  # Only this configuration: Debian 13 alone, its own lists and cache, no preferences.
  local private=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt_dir/sources.list.d"
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
    -o "Dir::Etc::Preferences=/dev/null" -o "Dir::Etc::PreferencesParts=/dev/null" -q)
  say "fetching ${PACKAGES[*]} from Debian 13 into $apt_dir/debs"
  apt-get "${private[@]}" update >&2
  (cd "$apt_dir/debs" && rm -f ./*.deb && apt-get "${private[@]}" download "${PACKAGES[@]}" >&2)
  say "installing them, with their dependencies from this machine's Debian 12, and debootstrap"
  apt-get -q update >&2
  DEBIAN_FRONTEND=noninteractive apt-get -q -y install --no-install-recommends \
    "$apt_dir"/debs/*.deb debootstrap >&2
}

start_engine() {
  mkdir -p "$RUN_DIR" "$DATA_ROOT"
  say "starting dockerd (data $DATA_ROOT, socket $SOCKET, log $LOG)"
  # setsid: the engine outlives this script and the shell or test that ran it, until `down`;
  # without our lock's descriptor, or it would hold the lock for as long as it runs.
  setsid /usr/sbin/dockerd --storage-driver=overlay2 --data-root="$DATA_ROOT" --exec-root="$RUN_DIR/exec" \
    --pidfile="$PIDFILE" --host="unix://$SOCKET" >>"$LOG" 2>&1 </dev/null 9>&- &
  for _ in $(seq 1 120); do
    usable "unix://$SOCKET" && return 0
    sleep 0.5
  done
  say "dockerd did not answer within 60 s; the end of $LOG:"
  tail -n 20 "$LOG" >&2
  return 1
}

up() {
  local found=${DOCKER_HOST:-unix:///var/run/docker.sock}
  if [ "$found" != "unix://$SOCKET" ] && usable "$found"; then
    say "using the engine already running at $found"
    echo "export DOCKER_HOST=$found JOBQUEUE_ENGINE_STARTED=0"
    return
  fi
  if usable "unix://$SOCKET"; then
    say "using the engine this script started earlier"
    echo "export DOCKER_HOST=unix://$SOCKET JOBQUEUE_ENGINE_STARTED=0"
    return
  fi
  installed || install_engine
  start_engine
  echo "export DOCKER_HOST=unix://$SOCKET JOBQUEUE_ENGINE_STARTED=1"
}

down() {
  local pid
  pid=$(cat "$PIDFILE" 2>/dev/null) || { say "no engine of ours is running"; return 0; }
  kill -0 "$pid" 2>/dev/null || { say "no engine of ours is running"; return 0; }
  say "stopping dockerd $pid"
  kill -TERM "$pid"
  # dockerd stops its containers first (each gets its stop timeout), so allow for that.
  for _ in $(seq 1 240); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.5
  done
  say "dockerd $pid did not stop within 120 s"
  return 1
}

# One `up` or `down` at a time: two test runs starting together must not both start a dockerd.
mkdir -p "$RUN_DIR"
exec 9>"$RUN_DIR/lock"
flock 9

case ${1:-} in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
