#!/usr/bin/env bash
# Sets everything up on a fresh Debian 12 machine and runs the whole test suite against
# real parts (loop-mounted Btrfs, private dbus-daemons, the real model).
# Usage: scripts/test.sh [extra nextest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
bash scripts/provision-model.sh .dev/model .dev/lib/libonnxruntime.so.1.24.4
bash scripts/package-deb.sh --tools-only   # cargo-deb, for the package test

export OVS_PORT_AGENT_MODEL_DIR=$PWD/.dev/model
export OVS_PORT_AGENT_RUNTIME_LIBRARY=$PWD/.dev/lib/libonnxruntime.so.1.24.4
export CARGO_TERM_COLOR=never

# Build once (tests and binary share the target dir), then run.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast --locked "$@"
else
  echo "cargo-nextest not found; using cargo test"
  cargo test --no-fail-fast --locked "$@"
fi
