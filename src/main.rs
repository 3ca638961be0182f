//! The `ovs-port-agent` binary: everything lives in the library; this only runs the CLI.

fn main() -> std::process::ExitCode {
    ovs_port_agent::cli::main()
}
