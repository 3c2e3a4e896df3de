#!/usr/bin/env bash
# Generates the Python messages (protoc --python_out) and gRPC stubs (Debian's
# grpc_python_plugin) of the contracts in proto/ and the vendored ones they
# import, into OUT_DIR (default: clients/python/gen). Needs: protobuf-compiler,
# protobuf-compiler-grpc, libprotobuf-dev (the well-known types' .proto files).
#
# proto/grpc (health, reflection) is left out: generated here it would be a
# package named grpc beside grpcio's own; Python clients take those services
# from grpcio-health-checking and grpcio-reflection.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="$(mkdir -p "${1:-$root/clients/python/gen}" && cd "${1:-$root/clients/python/gen}" && pwd)"
plugin="${GRPC_PYTHON_PLUGIN:-$(command -v grpc_python_plugin || true)}"
if [ -z "$plugin" ]; then
  echo "grpc_python_plugin not found: apt-get install protobuf-compiler-grpc" >&2
  exit 1
fi
cd "$root/proto"
mapfile -t protos < <(find codegate buf google -name '*.proto' | sort)
# Packages without __init__.py are namespace packages, so the generated google/api
# joins the installed google.protobuf instead of hiding it.
protoc -I . -I /usr/include \
  --python_out="$out" \
  --grpc_out="$out" --plugin=protoc-gen-grpc="$plugin" \
  "${protos[@]}"
echo "generated ${#protos[@]} files' modules into $out"
