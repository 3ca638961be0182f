//! `doctor` on a broken set-up: each problem failed or warned with its fix, and exit 1.
//! (A healthy set-up with a replica that cosigns is checked in tests/anchoring.rs.)

mod common;

use common::{agent, model_config};
use serde_json::Value;

#[test]
fn a_broken_set_up_is_named_check_by_check_with_fixes() {
    let tmp = tempfile::tempdir().unwrap();
    let real = model_config();
    // A model whose config.json was changed after provisioning.
    let model = tmp.path().join("model");
    std::fs::create_dir(&model).unwrap();
    for entry in std::fs::read_dir(&real.model_dir).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), model.join(entry.file_name())).unwrap();
    }
    let mut changed = std::fs::read(model.join("config.json")).unwrap();
    changed.push(b' ');
    std::fs::write(model.join("config.json"), changed).unwrap();
    let config = tmp.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nrequire_btrfs = true\n\n[embedding]\nmodel_dir = \"{}\"\nruntime_library = \"{}\"\n",
            model.display(),
            real.runtime_library.display()
        ),
    )
    .unwrap();
    let state = tmp.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let on_btrfs = ovs_port_agent::btrfs::is_btrfs(&state).unwrap();
    let (code, out, err) = agent(&[
        "--config",
        config.to_str().unwrap(),
        "--json",
        "--bus",
        "unix:path=/nonexistent/bus",
        "doctor",
        "--data-dir",
        state.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}{err}");
    let checks: Vec<Value> = serde_json::from_str(&out).unwrap();
    let check = |name: &str| checks.iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("{name} in {out}")).clone();
    let model_check = check("model files");
    assert_eq!(model_check["level"], "fail");
    assert!(model_check["detail"].as_str().unwrap().contains("config.json does not match its pin"), "{model_check}");
    assert!(model_check["fix"].as_str().unwrap().starts_with("scripts/provision-model.sh"), "{model_check}");
    if !on_btrfs {
        let data = check("data directory");
        assert_eq!(data["level"], "fail", "{data}");
        assert!(data["fix"].as_str().unwrap().contains("Btrfs"), "{data}");
    }
    assert_eq!(check("daemon")["level"], "warn");
    assert_eq!(check("anchoring")["level"], "warn");
    assert!(check("anchoring")["detail"].as_str().unwrap().contains("not anchored outside this host"));
    assert!(checks.iter().all(|c| c["level"] == "ok" || c["fix"].is_string()), "every problem comes with a fix: {out}");
}

#[test]
fn doctor_checks_the_sources_and_each_replicas_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model_config();
    let key = tmp.path().join("replica_ed25519");
    std::fs::write(&key, "not really a key\n").unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let known_hosts = tmp.path().join("known_hosts");
    std::fs::write(&known_hosts, "other.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHhJ7vYhCgRkV0G4v1xqvJ1n0Kx0Gx1u8q9k3yQ0g8Zt\n")
        .unwrap();
    let config = tmp.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nrequire_btrfs = false\n\n[embedding]\nmodel_dir = \"{}\"\nruntime_library = \"{}\"\n\n\
             [sources]\novsdb_socket = \"{}\"\nnm_bus = \"unix:path=/nonexistent/bus\"\n\n\
             [[stream.replicas]]\nname = \"r1\"\ntransport = \"ssh\"\ndestination = \"root@replica1.example\"\n\
             remote_dir = \"/var/lib/ovs-port-agent-replica\"\nidentity = \"{}\"\nknown_hosts = \"{}\"\nssh_options = [\"-p\", \"2222\"]\n",
            model.model_dir.display(),
            model.runtime_library.display(),
            tmp.path().join("no-ovsdb.sock").display(),
            key.display(),
            known_hosts.display()
        ),
    )
    .unwrap();
    let state = tmp.path().join("state");
    let args = ["--config", config.to_str().unwrap(), "--json", "--bus", "unix:path=/nonexistent/bus", "doctor", "--data-dir"];
    let (code, out, err) = agent(&[&args[..], &[state.to_str().unwrap()]].concat());
    assert_eq!(code, 1, "{out}{err}");
    let checks: Vec<Value> = serde_json::from_str(&out).unwrap();
    let check = |name: &str| checks.iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("{name} in {out}")).clone();
    let identity = check("replica key");
    assert_eq!(identity["level"], "fail", "a key others can read: {identity}");
    assert_eq!(identity["fix"], format!("chmod 600 {}", key.display()));
    let host = check("host key");
    assert_eq!(host["level"], "fail", "{host}");
    assert!(host["detail"].as_str().unwrap().contains("[replica1.example]:2222 has no key"), "looked up as ssh would: {host}");
    assert!(host["fix"].as_str().unwrap().starts_with("ssh-keyscan -t ed25519 [replica1.example]:2222"), "{host}");
    assert_eq!(check("OVSDB")["level"], "warn");
    assert!(check("OVSDB")["fix"].as_str().unwrap().contains("sources.ovsdb = false"));
    assert_eq!(check("NetworkManager")["level"], "warn");
    assert_eq!(check("bus policy")["level"], "ok", "a private bus needs no policy");
    assert!(check("unit hardening")["level"].is_string());

    // The key fixed and the host key pinned: those checks pass.
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let pinned = "[replica1.example]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHhJ7vYhCgRkV0G4v1xqvJ1n0Kx0Gx1u8q9k3yQ0g8Zt\n";
    std::fs::write(&known_hosts, pinned).unwrap();
    let (_, out, _) = agent(&[&args[..], &[state.to_str().unwrap()]].concat());
    let checks: Vec<Value> = serde_json::from_str(&out).unwrap();
    for name in ["replica key", "host key"] {
        let c = checks.iter().find(|c| c["name"] == name).unwrap();
        assert_eq!(c["level"], "ok", "{c}");
    }
}
