//! The `ovs-port-agent` binary: everything lives in the library; this only runs the CLI.

/// mimalloc instead of the system allocator: the HNSW graph is millions of small
/// allocations, and glibc's 16-byte chunk header on each 32-byte edge costs ~0.4 GiB at a
/// million events (docs/decisions.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ovs_port_agent::cli::main()
}
