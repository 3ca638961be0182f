//! The benchmark harness: `cargo bench --bench harness -- SECTION…` with sections
//! `ledger`, `embed`, `quality`, `search`, `search-1m`, `dbus`, `dbus-1m`, `ingest`, `replicate`, `replicate-bytes`,
//! `analytics`, `analytics-1m`, `fleet`, `fleet-50`, `fleet-kept` (BENCH_FLEET_DIR), `fanout`, `peers-20k`, `peers`, `peers-1m`, `peers-replication` (default: ledger, embed, quality, search, dbus, ingest). Prints a table per
//! section and writes `bench-results/<section>.json`. Set BENCH_DIR to choose where data
//! goes (default: a fresh loop-mounted Btrfs image, as in production).

mod analytics;
mod btrbk;
mod dbus;
mod embed;
mod fleet;
mod ingest;
mod ledger;
mod peers;
mod quality;
mod replicate;
mod report;
mod search;
mod texts;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The daemon's allocator, so memory figures match production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // RUST_LOG=ovs_port_agent=debug shows what the daemon parts log while they are measured.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_writer(std::io::stderr).init();
    }
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let sections: Vec<&str> = if args.is_empty() {
        vec!["ledger", "embed", "quality", "search", "dbus", "ingest"]
    } else {
        args.iter().map(String::as_str).collect()
    };
    // `--report=MODE` (scripts/bench.sh): the whole run in bench-results/report.json too.
    let report_mode = std::env::args().find_map(|a| a.strip_prefix("--report=").map(str::to_owned));
    let (dir, _mount) = bench_dir();
    for section in sections {
        println!("\n== {section} ==");
        match section {
            "ledger" => ledger::run(&dir),
            "embed" => embed::run(),
            "search" => search::run(&dir, &[100_000]),
            "search-1m" => search::run(&dir, &[1_000_000]),
            "dbus" => dbus::run(&dir, 10_000),
            "flood" => dbus::flood_only(&dir, 10_000),
            "ingest" => ingest::run(&dir),
            "quality" => quality::run(),
            "replicate" => replicate::latency(),
            "replicate-bytes" => replicate::incremental_bytes(),
            "dbus-1m" => dbus::run(&dir, 1_000_000),
            "analytics" => analytics::run(&dir, 100_000),
            "analytics-1m" => analytics::run(&dir, 1_000_000),
            "fleet" => fleet::aggregating_replica(10, 20_000),
            "fleet-50" => fleet::aggregating_replica(50, 20_000),
            "fanout" => fleet::fan_out(),
            "fleet-kept" => fleet::kept_fleet(),
            "peers-20k" => peers::vectors(&dir, 20_000),
            "peers" => peers::vectors(&dir, 100_000),
            "peers-1m" => peers::vectors(&dir, 1_000_000),
            "peers-replication" => btrbk::run(),
            other => {
                eprintln!(
                    "unknown section {other} (ledger, embed, quality, search, search-1m, dbus, flood, dbus-1m, ingest, replicate, replicate-bytes, analytics, analytics-1m, fleet, fleet-50, fleet-kept, fanout, peers-20k, peers, peers-1m, peers-replication)"
                )
            }
        }
    }
    if let Some(mode) = report_mode {
        report::write_run(&mode);
    }
}

/// A loop-mounted Btrfs for the data (unmounted at the end), unless BENCH_DIR says otherwise.
fn bench_dir() -> (PathBuf, Option<Mount>) {
    if let Ok(dir) = std::env::var("BENCH_DIR") {
        std::fs::create_dir_all(&dir).unwrap();
        return (PathBuf::from(dir), None);
    }
    let base = std::env::temp_dir().join(format!("ovs-port-agent-bench-{}", std::process::id()));
    std::fs::create_dir_all(base.join("mnt")).unwrap();
    let image = base.join("fs.img");
    std::fs::File::create(&image).unwrap().set_len(8 << 30).unwrap();
    let ok = Command::new("mkfs.btrfs").arg("-q").arg(&image).status().map(|s| s.success()).unwrap_or(false)
        && Command::new("mount").args(["-o", "loop"]).arg(&image).arg(base.join("mnt")).status().map(|s| s.success()).unwrap_or(false);
    if !ok {
        eprintln!("could not mount a Btrfs image; using {}", base.display());
        return (base, None);
    }
    (base.join("mnt"), Some(Mount(base)))
}

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.join("mnt")).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// "100k", "1m": a size as section names spell it.
pub fn size_name(n: usize) -> String {
    if n >= 1_000_000 { format!("{}m", n / 1_000_000) } else { format!("{}k", n / 1000) }
}

pub fn fs_type(dir: &Path) -> String {
    let out = Command::new("stat").args(["-f", "-c", "%T"]).arg(dir).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Embedding settings: the project's provisioned model.
pub fn model_config() -> ovs_port_agent::config::EmbeddingConfig {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut c = ovs_port_agent::config::EmbeddingConfig::default();
    c.model_dir = std::env::var_os("OVS_PORT_AGENT_MODEL_DIR").map(PathBuf::from).unwrap_or_else(|| root.join(".dev/model"));
    c.runtime_library = std::env::var_os("OVS_PORT_AGENT_RUNTIME_LIBRARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".dev/lib/libonnxruntime.so.1.24.4"));
    c
}
