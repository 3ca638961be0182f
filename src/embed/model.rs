//! The local sentence model: checking its files, loading ONNX Runtime from a pinned library
//! (an error, never a panic, when it is missing), and embedding texts.

use crate::config::EmbeddingConfig;
use anyhow::{Context, Result, anyhow, bail};
use fastembed::{InitOptionsUserDefined, OutputKey, Pooling, QuantizationMode, TextEmbedding, TokenizerFiles, UserDefinedEmbeddingModel};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use crate::vector::DIMENSION;

/// The model's name when its directory has no `model.json` (the first model we shipped).
pub const MODEL_NAME: &str = "all-MiniLM-L6-v2-int8";

const MODEL_FILES: [&str; 5] = ["model.onnx", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json"];

/// `model.json` beside the model: its name, and which output holds the token states to
/// mean-pool (models exported with several outputs). Written by `scripts/provision-model.sh`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    name: Option<String>,
    output: Option<String>,
}

/// The files a model needs, checked to exist, with the model's identity.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub model_dir: PathBuf,
    pub runtime_library: PathBuf,
    /// SHA-256 of `model.onnx`, hex.
    pub model_sha256: String,
    /// The model's name (recorded with every vector, with the SHA-256).
    pub name: String,
    /// The output holding token states, if the model has several.
    output: Option<&'static str>,
}

impl ModelFiles {
    /// Checks that every file is there; the error says which is missing and how to get it.
    pub fn locate(config: &EmbeddingConfig) -> Result<Self> {
        let mut missing: Vec<String> =
            MODEL_FILES.iter().map(|f| config.model_dir.join(f)).filter(|p| !p.is_file()).map(|p| p.display().to_string()).collect();
        if !config.runtime_library.is_file() {
            missing.push(config.runtime_library.display().to_string());
        }
        if !missing.is_empty() {
            bail!(
                "embedding model files missing: {}\n  install them with: scripts/provision-model.sh {} {}\n  (or point [embedding] model_dir / runtime_library in the config at them)",
                missing.join(", "),
                config.model_dir.display(),
                config.runtime_library.display()
            );
        }
        let model = std::fs::read(config.model_dir.join("model.onnx")).context("reading model.onnx")?;
        let manifest_path = config.model_dir.join("model.json");
        let manifest: Manifest = match std::fs::read(&manifest_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("reading {}", manifest_path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Manifest::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", manifest_path.display())),
        };
        Ok(Self {
            model_dir: config.model_dir.clone(),
            runtime_library: config.runtime_library.clone(),
            model_sha256: hex::encode(Sha256::digest(&model)),
            name: manifest.name.unwrap_or_else(|| MODEL_NAME.to_owned()),
            output: manifest.output.map(interned),
        })
    }

    /// `<name>@<first 12 hex of the model's SHA-256>`.
    pub fn model_id(&self) -> String {
        format!("{}@{}", self.name, &self.model_sha256[..12])
    }
}

/// The process's ONNX Runtime environment, kept alive for every session made after it.
static RUNTIME: Mutex<Option<ort::environment::Environment>> = Mutex::new(None);

/// Loads ONNX Runtime from `library` once per process (a failed attempt may be retried).
pub fn init_runtime(library: &Path) -> Result<()> {
    runtime(library).map(drop)
}

fn runtime(library: &Path) -> Result<ort::environment::Environment> {
    let mut runtime = RUNTIME.lock().expect("runtime lock");
    if runtime.is_none() {
        let env = ort::init_from(library)
            .map_err(|e| anyhow!("loading ONNX Runtime from {}: {e}", library.display()))?
            .with_name("ovs-port-agent")
            .with_telemetry(false)
            .build()
            .map_err(|e| anyhow!("starting ONNX Runtime from {}: {e}", library.display()))?;
        *runtime = Some(env);
    }
    Ok(runtime.clone().expect("set above"))
}

/// One loaded model; `embed` needs `&mut self`, so each worker thread owns one.
pub struct SentenceModel {
    inner: TextEmbedding,
}

impl SentenceModel {
    pub fn load(files: &ModelFiles, max_length: usize) -> Result<Self> {
        // Each model is one thread's, by design: tokenizing on rayon's pool would run that
        // part outside the priority chosen for the thread (nice +5, or idle for a flood's
        // search), wake a pool thread for every text, and a pool first started from an idle
        // thread would stay idle for good.
        tokenizers::utils::parallelism::set_parallelism(false);
        let environment = runtime(&files.runtime_library)?;
        let read = |name: &str| -> Result<Vec<u8>> {
            let path = files.model_dir.join(name);
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
        };
        let tokenizer = TokenizerFiles {
            tokenizer_file: read("tokenizer.json")?,
            config_file: read("config.json")?,
            special_tokens_map_file: read("special_tokens_map.json")?,
            tokenizer_config_file: read("tokenizer_config.json")?,
        };
        // Sentence-transformers models are mean-pooled. The model files come quantized (or
        // not) as they are: fastembed's own dynamic mode rejects batches smaller than the input.
        let mut model = UserDefinedEmbeddingModel::new(read("model.onnx")?, tokenizer)
            .with_pooling(Pooling::Mean)
            .with_quantization(QuantizationMode::None);
        model.output_key = files.output.map(OutputKey::ByName);
        let options = InitOptionsUserDefined::new().with_environment(environment).with_max_length(max_length).with_intra_threads(1);
        let inner = TextEmbedding::try_new_from_user_defined(model, options).map_err(|e| anyhow!("loading the model: {e}"))?;
        Ok(Self { inner })
    }

    /// L2-normalised embeddings, one per text.
    pub fn embed(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut vectors = self.inner.embed(texts, Some(texts.len().max(1))).map_err(|e| anyhow!("embedding: {e}"))?;
        for v in &mut vectors {
            if v.len() != DIMENSION {
                bail!("the model returned {} dimensions, expected {DIMENSION}", v.len());
            }
            normalize(v);
        }
        Ok(vectors)
    }
}

/// A static copy of an output name (the runtime's API wants one), made once per name.
fn interned(name: String) -> &'static str {
    static NAMES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut names = NAMES.lock().expect("names lock");
    if let Some(known) = names.iter().find(|n| **n == name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.into_boxed_str());
    names.push(leaked);
    leaked
}

/// Scales a vector to unit length, so that a dot product ranks like cosine similarity.
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}
