#!/usr/bin/env bash
# The base images docker-compose.yml and the Dockerfiles name, on a machine with no image registry.
#
#   eval "$(scripts/containers/engine.sh up)"; scripts/containers/standins.sh
#
# For each image: if the engine has it, nothing to do; else `docker pull` it, so where a registry is
# reachable the real image is used. Only when the pull fails is a stand-in built under the same name:
# Debian 12 (debootstrap --variant=minbase bookworm, from this machine's mirror, then `docker import`)
# with Debian's Python 3.11, PostgreSQL 15 or RabbitMQ (3.10) and an entrypoint that honours the
# official image's variables (standins/*/). The real Dockerfiles and docker-compose.yml then build and
# run unchanged. A stand-in is labelled org.jobqueue.standin=true, and is replaced by the real image
# as soon as a pull succeeds.
#
# Only the Python stand-in carries this machine's CA certificates and pip configuration (pip.conf
# files and PIP_* variables), so the Dockerfiles' `pip install` reaches the package index as pip on
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

# The images our files name, read from them so that a new tag there needs no change here: each
# FROM that is not an earlier build stage of the same Dockerfile (FROM x AS name), and each image:.
wanted() {
  {
    local dockerfile
    for dockerfile in "$ROOT"/*/Dockerfile; do
      awk 'toupper($1) == "FROM" {
             image = $2; for (i = 2; i <= NF; i++) if ($i ~ /^--/) { image = $(i + 1) } else { image = $i; break }
             if (!(image in stages) && image != "scratch") print image
             if (toupper($(NF - 1)) == "AS") stages[$NF] = 1
           }' "$dockerfile"
    done
    sed -n 's/^[[:space:]]*image:[[:space:]]*\([^[:space:]]\+\).*/\1/p' "$ROOT/docker-compose.yml"
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
  local image=$1 folder=$2 context
  context=$(mktemp -d)
  trap 'rm -rf "$context"' RETURN
  cp -r "$HERE/standins/$folder/." "$context/"
  [ "$folder" = python ] && machine_settings "$context/machine"
  say "building the stand-in $image from standins/$folder"
  docker build --quiet --build-arg "BASE=$BASE" --label "$LABEL=true" -t "$image" "$context" >&2
}

for image in $(wanted); do
  case $image in
    *@sha256:*) say "$image is pinned by digest: only a registry can provide it, no stand-in can"; exit 1 ;;
  esac
  folder=$(kind "$image") || { say "no stand-in known for $image"; exit 1; }
  if docker image inspect "$image" >/dev/null 2>&1 && ! is_standin "$image"; then
    continue
  fi
  if timeout 120 docker pull --quiet "$image" >/dev/null 2>&1; then
    say "pulled the real $image"
    continue
  fi
  if is_standin "$image"; then
    continue
  fi
  base_image
  build "$image" "$folder"
done
say "ready: $(wanted | tr '\n' ' ')"
