#!/usr/bin/env bash
# Fail if the committed generated code differs from what `make gen` produces now.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
scripts/gen_protos.sh "$tmp"
status=0
for file in $(cd "$tmp" && find jobqueue -name '*_pb2*' -not -path '*/__pycache__/*' | LC_ALL=C sort); do
  if ! diff -q "$tmp/$file" "gen/$file" >/dev/null 2>&1; then
    echo "gen/$file is out of date: run 'make gen' and commit the result" >&2
    status=1
  fi
done
for file in $(cd gen && find jobqueue -name '*_pb2*' -not -path '*/__pycache__/*' | LC_ALL=C sort); do
  [ -e "$tmp/$file" ] || { echo "gen/$file has no .proto any more: run 'make gen'" >&2; status=1; }
done
[ $status -eq 0 ] && echo "generated code is up to date"
exit $status
