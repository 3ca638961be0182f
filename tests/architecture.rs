//! The stages import one way: `scripts/module-graph.py` finds no cycle between the crate's
//! top-level modules (docs/ARCHITECTURE.md).

#[test]
fn no_module_imports_another_that_imports_it_back() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/module-graph.py");
    let out = std::process::Command::new("python3").arg(script).output().expect("running python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("no cycles"), "{stderr}");
    let graph = String::from_utf8_lossy(&out.stdout);
    let deps = |module: &str| graph.lines().find(|l| l.starts_with(&format!("{module} "))).unwrap_or_default().to_owned();
    assert!(!deps("engine").contains("stream") && !deps("engine").contains("dbus"), "{}", deps("engine"));
    assert!(!deps("vector").contains("index"), "{}", deps("vector"));
}
