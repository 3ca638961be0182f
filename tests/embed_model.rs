//! The real model: loads from the pinned files, gives unit vectors, ranks paraphrases close.

mod common;

use ovs_port_agent::embed::{DIMENSION, ModelFiles, SentenceModel};

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn paraphrases_land_closer_than_unrelated_events() {
    let files = ModelFiles::locate(&common::model_config()).expect("run scripts/provision-model.sh first");
    let mut model = SentenceModel::load(&files, 256).unwrap();
    let v = model
        .embed(&[
            "interface eth0: link down. eth0 went down.",
            "interface eth0: link lost. carrier lost on eth0.",
            "connection office-wifi: added. new profile created.",
        ])
        .unwrap();
    assert_eq!(v[0].len(), DIMENSION);
    for x in &v {
        assert!((dot(x, x) - 1.0).abs() < 1e-3, "unit length");
    }
    let close = dot(&v[0], &v[1]);
    let far = dot(&v[0], &v[2]);
    assert!(close > far + 0.2, "paraphrase {close} vs unrelated {far}");
}

#[test]
fn missing_files_are_named_with_the_fix() {
    let mut config = common::model_config();
    config.model_dir = "/nonexistent/model".into();
    let err = ModelFiles::locate(&config).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/model/model.onnx") && err.contains("provision-model.sh"), "{err}");
}

#[test]
fn a_missing_runtime_library_is_an_error_not_a_panic() {
    let err = ovs_port_agent::embed::init_runtime(std::path::Path::new("/nonexistent/libonnxruntime.so")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/libonnxruntime.so"), "{err}");
}

#[test]
fn the_model_manifest_names_the_model_and_a_bad_one_is_refused() {
    let config = common::model_config();
    let files = ModelFiles::locate(&config).unwrap();
    assert!(files.model_id().starts_with("all-MiniLM-L6-v2-dynint8@"), "{}", files.model_id());
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&config.model_dir).unwrap() {
        let entry = entry.unwrap();
        std::os::unix::fs::symlink(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    std::fs::remove_file(tmp.path().join("model.json")).unwrap();
    std::fs::write(tmp.path().join("model.json"), r#"{"name": "x", "pooling": "cls"}"#).unwrap();
    let mut other = config.clone();
    other.model_dir = tmp.path().to_owned();
    let err = format!("{:#}", ModelFiles::locate(&other).unwrap_err());
    assert!(err.contains("model.json") && err.contains("unknown field"), "{err}");
    // A named output that the model does not have is an error when loading, not a panic.
    std::fs::write(tmp.path().join("model.json"), r#"{"name": "x", "output": "no_such_output"}"#).unwrap();
    let files = ModelFiles::locate(&other).unwrap();
    assert_eq!(files.model_id(), format!("x@{}", &files.model_sha256[..12]));
    let loaded = SentenceModel::load(&files, 256).and_then(|mut m| m.embed(&["link down"]));
    assert!(loaded.is_err(), "an output that is not there must fail clearly");
}
