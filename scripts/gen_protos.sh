#!/usr/bin/env bash
# Regenerates the Python gRPC code for every .proto under protos/ into control_plane/_proto/ (or $1),
# with .pyi stubs. Imports between generated modules are rewritten to the package path so the code
# imports as control_plane._proto.<package>.<name>_pb2 without touching sys.path.
# tests/control_plane/test_proto_drift.py runs this into a temp dir and fails when the result differs
# from the committed code.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
OUT=${1:-control_plane/_proto}
PKG_PREFIX=control_plane._proto

mapfile -t PROTOS < <(cd protos && find . -name '*.proto' | sed 's|^\./||' | LC_ALL=C sort)
[ ${#PROTOS[@]} -gt 0 ] || { echo "gen_protos: no .proto files under protos/" >&2; exit 1; }

rm -rf "$OUT"
mkdir -p "$OUT"
"$PY" -m grpc_tools.protoc -I protos --python_out="$OUT" --pyi_out="$OUT" --grpc_python_out="$OUT" \
  "${PROTOS[@]}"

# Every directory of generated code is a package; top-level proto packages get rewritten imports.
find "$OUT" -type d -exec sh -c 'touch "$1/__init__.py"' _ {} \;
mapfile -t TOPS < <(cd protos && find . -mindepth 1 -maxdepth 1 -type d | sed 's|^\./||' | LC_ALL=C sort)
for top in "${TOPS[@]}"; do
  find "$OUT" \( -name '*_pb2.py' -o -name '*_pb2.pyi' -o -name '*_pb2_grpc.py' \) -print0 |
    xargs -0 sed -i -E "s/^from ${top}(\.[A-Za-z0-9_.]*)? import /from ${PKG_PREFIX}.${top}\1 import /"
done
echo "gen_protos: ${#PROTOS[@]} proto file(s) → $OUT"
