#!/usr/bin/env bash
# The one benchmark command. Sets up what the benchmarks use (Debian packages with btrbk, the
# model and runtime, ChromaDB in a venv of its own), builds in release once, runs
# the sections on real parts (loop-mounted Btrfs, private buses, replica namespaces with sshd)
# and prints one table, writing bench-results/report.json (and one JSON per section).
#
# Usage: scripts/bench.sh [--quick]
#   --quick   about ten minutes on 2 cores: the ledger, embedding, search quality (ours vs
#             BM25), the peers' vector search at 20k (ours, usearch, ChromaDB), our streaming
#             beside btrbk, D-Bus at 10k with the flood, replication latency
#   (none)    everything: vector search and the peers at 100k and 1M, btrbk beside our
#             streaming, the 1M variants, ingestion, incremental bytes at 1k/100k/1M,
#             analytics, the fleet, and the fault suite's long variant (20 SIGKILLs); hours
set -euo pipefail
cd "$(dirname "$0")/.."

quick=no
case "${1:-}" in
  --quick) quick=yes ;;
  "") ;;
  -h | --help)
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "unknown option: $1 (scripts/bench.sh --help)" >&2
    exit 2
    ;;
esac

bash scripts/install-deps.sh
bash scripts/provision-model.sh .dev/model .dev/lib/libonnxruntime.so.1.24.4

# ChromaDB, embedded, from its package, in a venv of the bench's own (btrbk and python3-venv
# come with install-deps.sh).
venv=.dev/peers-venv
chromadb_version=1.5.9
if ! "$venv/bin/python" -c "import chromadb, sys; sys.exit(chromadb.__version__ != '$chromadb_version')" 2>/dev/null; then
  echo "installing chromadb $chromadb_version into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "chromadb==$chromadb_version"
fi

export OVS_PORT_AGENT_MODEL_DIR=$PWD/.dev/model
export OVS_PORT_AGENT_RUNTIME_LIBRARY=$PWD/.dev/lib/libonnxruntime.so.1.24.4
export PEERS_PYTHON=$PWD/$venv/bin/python
export CARGO_TERM_COLOR=never

if [ "$quick" = yes ]; then
  sections=(ledger embed quality peers-20k peers-replication dbus replicate)
else
  sections=(ledger embed quality search search-1m peers peers-1m peers-replication dbus dbus-1m ingest replicate
    replicate-bytes analytics analytics-1m fleet fanout)
fi
rm -f bench-results/report.json
cargo bench --locked --features peers --bench harness -- "${sections[@]}" --report="$([ "$quick" = yes ] && echo quick || echo full)"

if [ "$quick" = no ]; then
  # The fault suite's long variant: twenty SIGKILLs instead of five.
  OVS_PORT_AGENT_LONG_FAULTS=1 cargo nextest run --locked --test daemon_sigkill --no-capture
fi
