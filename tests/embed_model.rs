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
