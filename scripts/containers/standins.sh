#!/usr/bin/env bash
# The base images docker-compose.yml and the Dockerfile name, on a machine with no image registry.
#
#   eval "$(scripts/containers/engine.sh up)"; eval "$(scripts/containers/standins.sh)"
#
# For each image: if the engine has it, nothing to do; else `docker pull` it, so where a registry is
# reachable the real image is used. Only when the pull fails is a stand-in built: Debian 12
# (debootstrap --variant=minbase bookworm, from this machine's mirror, then `docker import`) with
# Debian's Python 3.11, PostgreSQL 15 or RabbitMQ (3.10) and an entrypoint that honours the official
# image's variables (standins/*/). A stand-in is labelled org.jobqueue.standin=true, and is replaced
# by the real image as soon as a pull succeeds.
#
# An image named by tag gets its stand-in under that same name, so the files build and run
# unchanged. An image pinned by digest (`ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:...`
# in the Dockerfile, or `image: ${SOME_IMAGE:-name@sha256:...}` in the compose file) cannot be
# imitated, since a digest names exact bytes: its stand-in is tagged with the name without the
# digest, and the variable that overrides the pin is printed on stdout (`export PYTHON_IMAGE=...`),
# for the caller to pass on (compose reads it, as a build argument or in `image:`). Nothing else is
# printed on stdout; progress goes to stderr.
#
# Only the Python stand-in carries this machine's CA certificates and pip configuration (pip.conf
# files and PIP_* variables), so the Dockerfile's `pip install` reaches the package index as pip on
# this machine does; the project's own images inherit that from the stand-in here and never otherwise.
#
# Cached: the debootstrap tree as a tarball in $CACHE/rootfs; the images in the engine.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CACHE=${JOBQUEUE_CONTAINER_CACHE:-/var/cache/jobqueue-containers}
BASE=jobqueue-standin/debian:bookworm-minbase
LABEL=org.jobqueue.standin

say() { echo "standins: $*" >&2; }

# The images our files name, read from them so that a new tag there needs no change here, one per
# line as `VARIABLE IMAGE` (VARIABLE is - where no variable overrides the name): the Dockerfile's
# `ARG *_IMAGE=` defaults, its FROM lines that name an image (not `${...}`, not an earlier stage),
# and the compose file's `image:` lines, plain or `${VARIABLE:-default}`.
wanted() {
  {
    awk 'toupper($1) == "ARG" && $2 ~ /^[A-Z_]+_IMAGE=/ { split($2, kv, "="); print kv[1], kv[2] }
         toupper($1) == "FROM" {
           image = $2; for (i = 2; i <= NF; i++) if ($i ~ /^--/) { image = $(i + 1) } else { image = $i; break }
           if (!(image in stages) && image != "scratch" && image !~ /^\$/) print "-", image
           if (toupper($(NF - 1)) == "AS") stages[$NF] = 1
         }' "$ROOT/Dockerfile"
    sed -n 's/^[[:space:]]*image:[[:space:]]*\${\([A-Z_]*\):-\([^}]*\)}.*/\1 \2/p;
            s/^[[:space:]]*image:[[:space:]]*\([^$[:space:]][^[:space:]]*\).*/- \1/p' "$ROOT/docker-compose.yml"
  } | sort -u
}

# Which stand-in folder builds an image of this name.
kind() {
  case $1 in
    python:*) echo python ;;
    postgres:*) echo postgres ;;
    rabbitmq:*) echo rabbitmq ;;
    *) return 1 ;;
  esac
}

is_standin() { [ "$(docker image inspect --format "{{index .Config.Labels \"$LABEL\"}}" "$1" 2>/dev/null)" = true ]; }

# shellcheck source=lib.sh
. "$HERE/lib.sh"

base_image() {
  docker image inspect "$BASE" >/dev/null 2>&1 && return
  local tarball=$CACHE/rootfs/bookworm-minbase.tar
  if [ ! -s "$tarball" ]; then
    local tree=$CACHE/rootfs/bookworm.tmp
    rm -rf "$tree"
    mkdir -p "$CACHE/rootfs"
    command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get -q -y install debootstrap >&2
    say "debootstrap --variant=minbase bookworm from $(mirror) (about 30 s)"
    debootstrap --variant=minbase bookworm "$tree" "$(mirror)" >"$CACHE/rootfs/debootstrap.log" 2>&1 ||
      { tail -n 20 "$CACHE/rootfs/debootstrap.log" >&2; return 1; }
    tar -C "$tree" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$tree"
  fi
  say "importing $tarball as $BASE"
  docker import --change "LABEL $LABEL=true" "$tarball" "$BASE" >&2
}

# This machine's pip settings as they apply to root: the config files, then PIP_* variables
# written as one more file that PIP_CONFIG_FILE loads last (variables override files in pip too).
machine_settings() {
  local into=$1 name value
  mkdir -p "$into/etc/ssl/certs" "$into/root/.config/pip"
  cp /etc/ssl/certs/ca-certificates.crt "$into/etc/ssl/certs/"
  [ -f /etc/pip.conf ] && cp /etc/pip.conf "$into/etc/pip.conf"
  [ -d /etc/xdg/pip ] && mkdir -p "$into/etc/xdg" && cp -r /etc/xdg/pip "$into/etc/xdg/"
  [ -f "$HOME/.config/pip/pip.conf" ] && cp "$HOME/.config/pip/pip.conf" "$into/root/.config/pip/"
  echo "[global]" >"$into/etc/pip-environment.conf"
  while IFS='=' read -r name value; do
    [ "$name" = PIP_CONFIG_FILE ] && continue
    name=${name#PIP_}
    name=${name,,}
    echo "${name//_/-} = $value" >>"$into/etc/pip-environment.conf"
  done < <(env | grep '^PIP_' || true)
}

build() {
  local image=$1 folder=$2 context status=0
  context=$(mktemp -d)
  cp -r "$HERE/standins/$folder/." "$context/"
  [ "$folder" = python ] && machine_settings "$context/machine"
  say "building the stand-in $image from standins/$folder"
  docker build --quiet --build-arg "BASE=$BASE" --label "$LABEL=true" -t "$image" "$context" >&2 || status=$?
  rm -rf "$context"
  return "$status"
}

# Makes $1 available in the engine: kept, pulled, or a stand-in built as $2.
provide() {
  local image=$1 name=$2 folder
  folder=$(kind "$name") || { say "no stand-in known for $image"; return 1; }
  if docker image inspect "$image" >/dev/null 2>&1 && ! is_standin "$image"; then
    return 0
  fi
  if timeout 120 docker pull --quiet "$image" >/dev/null 2>&1; then
    say "pulled the real $image"
    return 0
  fi
  is_standin "$name" && return 0
  base_image
  build "$name" "$folder"
}

names=()
while read -r variable image; do
  name=${image%@sha256:*}
  if [ "$name" != "$image" ] && [ "$variable" = - ]; then
    say "$image is pinned by digest with no variable to override it: only a registry can provide it"
    exit 1
  fi
  provide "$image" "$name"
  if [ "$name" != "$image" ] && is_standin "$name"; then
    say "$image is pinned by digest: using the stand-in $name through $variable"
    echo "export $variable=$name"
  fi
  names+=("$name")
done < <(wanted)
say "ready: ${names[*]}"
