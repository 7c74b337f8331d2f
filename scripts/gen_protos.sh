#!/usr/bin/env bash
# Generate the Python code for every .proto under protos/ into the folder given
# (default gen/): messages, gRPC stubs, and mypy-protobuf's .pyi stubs.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-gen}
venv_bin=$PWD/.venv/bin
mapfile -t protos < <(cd protos && find jobqueue -name '*.proto' | LC_ALL=C sort)
# protoc finds the mypy plugins on PATH.
PATH=$venv_bin:$PATH "$venv_bin/python" -m grpc_tools.protoc -I protos \
  --python_out="$out" --grpc_python_out="$out" --mypy_out="$out" --mypy_grpc_out="$out" \
  "${protos[@]}" 2> >(grep -v "^Writing mypy" >&2 || true)
# Python packages need an __init__.py in every folder protoc wrote to.
for proto in "${protos[@]}"; do
  dir=$(dirname "$proto")
  while [ "$dir" != "." ] && [ "$dir" != "jobqueue" ]; do
    [ -e "$out/$dir/__init__.py" ] || : > "$out/$dir/__init__.py"
    dir=$(dirname "$dir")
  done
done
