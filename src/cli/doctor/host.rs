//! `doctor`'s checks of what surrounds the daemon: the bus policy, the sources it records
//! from (NetworkManager, OVSDB), the ssh keys of each replica, and the installed unit's
//! hardening.

use super::Check;
use crate::config::{Config, ReplicaConfig, Transport};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Where the system bus reads policies from (the package and scripts/install put ours in
/// the first).
const POLICY_DIRS: &[&str] = &["/usr/share/dbus-1/system.d", "/etc/dbus-1/system.d"];
const POLICY_FILE: &str = "dev.ovs.PortAgent1.conf";
/// Where systemd finds the unit, most specific first.
const UNIT_DIRS: &[&str] = &["/etc/systemd/system", "/usr/local/lib/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system"];
const UNIT_FILE: &str = "ovs-port-agent.service";
/// The exposure the shipped unit is held to (tests/unit_hardening.rs).
const MAX_EXPOSURE: f64 = 2.5;

/// On the system bus, the daemon may own its name only with the shipped policy installed.
pub(super) fn bus_policy(bus: &str) -> Check {
    const NAME: &str = "bus policy";
    if bus != "system" {
        return Check::ok(NAME, format!("{bus} is not the system bus: no policy needed"));
    }
    match POLICY_DIRS.iter().map(|d| Path::new(d).join(POLICY_FILE)).find(|p| p.exists()) {
        Some(path) => Check::ok(NAME, format!("{} installed", path.display())),
        None => Check::fail(
            NAME,
            format!("{POLICY_FILE} is in neither {}: the daemon cannot own dev.ovs.PortAgent1", POLICY_DIRS.join(" nor ")),
            format!("install -m 0644 dbus/{POLICY_FILE} {}/ (or install the package)", POLICY_DIRS[0]),
        ),
    }
}

/// NetworkManager on its bus, when the NM source is on.
pub(super) fn network_manager(config: &Config, bus: &str) -> Check {
    const NAME: &str = "NetworkManager";
    if !config.sources.networkmanager {
        return Check::ok(NAME, "the NetworkManager source is off (sources.networkmanager = false)");
    }
    let nm_bus = if config.sources.nm_bus.is_empty() { bus } else { config.sources.nm_bus.as_str() };
    let owned = super::runtime().and_then(|rt| {
        rt.block_on(async {
            let conn = tokio::time::timeout(Duration::from_secs(5), crate::dbus::connect(nm_bus)).await??;
            let proxy = zbus::fdo::DBusProxy::new(&conn).await?;
            let name = zbus::names::BusName::try_from("org.freedesktop.NetworkManager")?;
            Ok::<_, anyhow::Error>(tokio::time::timeout(Duration::from_secs(5), proxy.name_has_owner(name)).await??)
        })
    });
    match owned {
        Ok(true) => Check::ok(NAME, format!("org.freedesktop.NetworkManager answers on {nm_bus}")),
        Ok(false) => Check::warn(
            NAME,
            format!("NetworkManager is not on {nm_bus}: the NM source waits for it, nothing of it is recorded"),
            "systemctl start NetworkManager, or set sources.networkmanager = false",
        ),
        Err(e) => Check::warn(
            NAME,
            format!("cannot ask {nm_bus} for NetworkManager: {e:#}"),
            "check the bus (sources.nm_bus), or set sources.networkmanager = false",
        ),
    }
}

/// The OVSDB socket accepts a connection, when the OVS source is on.
pub(super) fn ovsdb(config: &Config) -> Check {
    const NAME: &str = "OVSDB";
    if !config.sources.ovsdb {
        return Check::ok(NAME, "the Open vSwitch source is off (sources.ovsdb = false)");
    }
    let socket = config.sources.ovsdb_socket();
    match std::os::unix::net::UnixStream::connect(&socket) {
        Ok(_) => Check::ok(NAME, format!("{} accepts connections", socket.display())),
        Err(e) => Check::warn(
            NAME,
            format!("{}: {e}: the OVS source waits for it, nothing of Open vSwitch is recorded", socket.display()),
            "systemctl start openvswitch-switch (or set sources.ovsdb_socket), or set sources.ovsdb = false",
        ),
    }
}

/// Each ssh replica's private key (present, readable by root alone) and pinned host key;
/// a local replica where the hardened unit would run it.
pub(super) fn replica_keys(config: &Config) -> Vec<Check> {
    let mut checks: Vec<Check> =
        config.stream.replicas.iter().filter(|r| r.transport == Transport::Ssh).flat_map(|r| [identity(r), host_key(r)]).collect();
    let unit_installed = installed_unit().is_some();
    for r in config.stream.replicas.iter().filter(|r| r.transport == Transport::Local && unit_installed) {
        checks.push(Check::fail(
            "replica",
            format!("{}: a local replica cannot receive under the hardened unit (btrfs receive needs chroot and a mount namespace it forbids)", r.name),
            "use transport = \"ssh\" to a replica-receive on this or another host (docs/operations.md); local replicas are for tests and development",
        ));
    }
    checks
}

fn identity(replica: &ReplicaConfig) -> Check {
    const NAME: &str = "replica key";
    let name = &replica.name;
    let path = &replica.identity;
    if path.as_os_str().is_empty() {
        return Check::warn(
            NAME,
            format!("{name}: no identity: ssh offers whatever keys root has"),
            "give the replica a key of its own, restricted on the far side (docs/operations.md), and set identity",
        );
    }
    match std::fs::metadata(path) {
        Err(e) => {
            Check::fail(NAME, format!("{name}: {}: {e}", path.display()), format!("ssh-keygen -t ed25519 -N '' -f {}", path.display()))
        }
        Ok(meta) if meta.uid() != 0 => Check::fail(
            NAME,
            format!(
                "{name}: {} belongs to uid {}, not root; the daemon (root without DAC override) cannot read it",
                path.display(),
                meta.uid()
            ),
            format!("chown root:root {}", path.display()),
        ),
        Ok(_) if path.starts_with("/root") || path.starts_with("/home") => Check::fail(
            NAME,
            format!("{name}: {} is under a home directory, which the unit hides (ProtectHome=yes)", path.display()),
            "move it to /etc/ovs-port-agent/ (mode 600) and set identity to it",
        ),
        Ok(meta) if meta.permissions().mode() & 0o077 != 0 => Check::fail(
            NAME,
            format!(
                "{name}: {} is readable by others (mode {:o}); ssh refuses such a key",
                path.display(),
                meta.permissions().mode() & 0o777
            ),
            format!("chmod 600 {}", path.display()),
        ),
        Ok(_) => Check::ok(NAME, format!("{name}: {} (mode 600)", path.display())),
    }
}

fn host_key(replica: &ReplicaConfig) -> Check {
    const NAME: &str = "host key";
    let name = &replica.name;
    let host = ssh_host(replica);
    let file = &replica.known_hosts;
    let scan = format!("ssh-keyscan -t ed25519 {host} >> {} (then compare the fingerprint out of band)", display_or_default(file));
    if file.as_os_str().is_empty() {
        return Check::warn(
            NAME,
            format!("{name}: the host key is looked up in root's own ~/.ssh/known_hosts"),
            "pin it in a file of the agent's own (known_hosts = \"/etc/ovs-port-agent/known_hosts\"): the unit's ProtectHome hides ~/.ssh",
        );
    }
    if !file.exists() {
        return Check::fail(NAME, format!("{name}: {} does not exist", file.display()), scan);
    }
    let found = Command::new("ssh-keygen").arg("-F").arg(&host).arg("-f").arg(file).output();
    match found {
        Ok(out) if out.status.success() => Check::ok(NAME, format!("{name}: {host} is pinned in {}", file.display())),
        Ok(_) => Check::fail(NAME, format!("{name}: {host} has no key in {}: every session is refused", file.display()), scan),
        Err(e) => Check::warn(NAME, format!("{name}: cannot run ssh-keygen: {e}"), "apt install openssh-client"),
    }
}

fn display_or_default(file: &Path) -> String {
    if file.as_os_str().is_empty() { "~/.ssh/known_hosts".into() } else { file.display().to_string() }
}

/// The name ssh looks the host key up by: HostKeyAlias if set, else the destination's host,
/// as `[host]:port` when a port other than 22 is set.
fn ssh_host(replica: &ReplicaConfig) -> String {
    let options: Vec<(String, String)> = ssh_options(&replica.ssh_options);
    if let Some((_, alias)) = options.iter().find(|(k, _)| k == "hostkeyalias") {
        return alias.clone();
    }
    let host = replica.destination.rsplit('@').next().unwrap_or(&replica.destination).to_owned();
    match options.iter().find(|(k, _)| k == "port").map(|(_, v)| v.as_str()) {
        Some(port) if port != "22" => format!("[{host}]:{port}"),
        _ => host,
    }
}

/// `-o Name=value` and `-p PORT` pairs, names lowercased.
fn ssh_options(args: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-p" => out.extend(it.next().map(|p| ("port".to_owned(), p.clone()))),
            "-o" => out.extend(it.next().and_then(|o| o.split_once('=')).map(|(k, v)| (k.to_lowercase(), v.to_owned()))),
            _ => {}
        }
    }
    out
}

/// The unit file systemd would use, if one is installed.
fn installed_unit() -> Option<PathBuf> {
    UNIT_DIRS.iter().map(|d| PathBuf::from(d).join(UNIT_FILE)).find(|p| p.exists())
}

/// The installed unit's `systemd-analyze security` exposure (drop-ins included when systemd
/// runs): a drop-in that loosens it shows here.
pub(super) fn unit_hardening() -> Check {
    const NAME: &str = "unit hardening";
    let Some(unit) = installed_unit() else {
        return Check::ok(NAME, format!("no {UNIT_FILE} installed (not run by systemd here)"));
    };
    let systemd_runs = Path::new("/run/systemd/system").is_dir();
    let mut cmd = Command::new("systemd-analyze");
    cmd.arg("security").arg("--no-pager");
    if systemd_runs {
        cmd.arg(UNIT_FILE);
    } else {
        cmd.arg("--offline=yes").arg(&unit);
    }
    let exposure = cmd.output().ok().and_then(|out| {
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = text.lines().find(|l| l.contains("Overall exposure level"))?.to_owned();
        line.split(':').nth(1)?.split_whitespace().next()?.parse::<f64>().ok()
    });
    match exposure {
        Some(level) if level <= MAX_EXPOSURE => Check::ok(NAME, format!("{}: exposure {level} (at most {MAX_EXPOSURE})", unit.display())),
        Some(level) => Check::warn(
            NAME,
            format!("{}: exposure {level}, above the shipped {MAX_EXPOSURE}", unit.display()),
            "systemctl cat ovs-port-agent shows the drop-in that loosens it; docs/operations.md says what each setting costs",
        ),
        None => Check::warn(NAME, format!("cannot rate {}", unit.display()), "apt install systemd (systemd-analyze)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(destination: &str, options: &[&str]) -> ReplicaConfig {
        let text = format!(
            "[[stream.replicas]]\nname = \"r\"\ntransport = \"ssh\"\ndestination = \"{destination}\"\nremote_dir = \"/r\"\nssh_options = {options:?}\n"
        );
        toml::from_str::<Config>(&text).unwrap().stream.replicas.remove(0)
    }

    #[test]
    fn the_host_key_is_looked_up_as_ssh_would() {
        assert_eq!(ssh_host(&replica("root@replica1", &[])), "replica1");
        assert_eq!(ssh_host(&replica("root@replica1", &["-p", "2222"])), "[replica1]:2222");
        assert_eq!(ssh_host(&replica("root@10.0.0.5", &["-o", "Port=22"])), "10.0.0.5");
        assert_eq!(ssh_host(&replica("root@10.0.0.5", &["-o", "HostKeyAlias=rep"])), "rep");
    }
}
