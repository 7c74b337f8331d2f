#!/usr/bin/env bash
# Fail if gen/ is not exactly what `make gen` produces plus the hand-written files
# listed below (gen/README.md has the same table): a stale or hand-edited
# generated file, a generated file with no .proto any more, or any other file
# in the package all fail, so nothing in gen/jobqueue/ can be owned by neither.
set -euo pipefail
cd "$(dirname "$0")/.."
# The hand-written files of the package; everything else in gen/jobqueue/ is make gen's.
hand_written=(__init__.py client.py py.typed)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
scripts/gen_protos.sh "$tmp"
for file in "${hand_written[@]}"; do
  [ ! -e "$tmp/jobqueue/$file" ] || { echo "make gen writes gen/jobqueue/$file, which is hand-written" >&2; exit 1; }
  [ -e "gen/jobqueue/$file" ] || { echo "gen/jobqueue/$file is missing" >&2; exit 1; }
  cp "gen/jobqueue/$file" "$tmp/jobqueue/$file"
done
# Bytecode caches are the only files allowed beyond those two sets.
if ! diff -r -q -x __pycache__ "$tmp/jobqueue" gen/jobqueue >"$tmp/report" 2>&1; then
  sed -e "s|$tmp/|(make gen) |g" "$tmp/report" >&2
  echo "gen/jobqueue differs from what make gen writes plus the hand-written files (${hand_written[*]}):" \
    "run 'make gen', and keep hand-written code out of the area folders" >&2
  exit 1
fi
echo "generated code is up to date"
