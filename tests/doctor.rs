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
