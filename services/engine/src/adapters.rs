//! Which LoRA adapter the local model runs with, and why.
//!
//! Precedence, highest first: the adapters in `[engine] lora` (the user's
//! explicit choice); the adapter `hearth learn` deployed for this model
//! (`<data dir>/learning/deployed.json`); the adapter Hearth ships for this
//! model. A deployed or shipped adapter is bound to its base model's SHA-256
//! and simply does not apply to another model; every adapter file is checked
//! against the SHA-256 it was recorded with before llama.cpp reads it, so a
//! changed or corrupt file is refused with a reason, never half-loaded.
//!
//! Not for loading: the llama backend applies what [`choose`] returns.

use std::io::Read;
use std::path::{Path, PathBuf};

use hearth_mesh::config::EngineConfig;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// An adapter Hearth ships, compiled into the binary.
pub struct Shipped {
    /// A name for reports.
    pub name: &'static str,
    /// The GGUF LoRA file's bytes.
    pub bytes: &'static [u8],
    /// Its pinned SHA-256 (hex).
    pub sha256: &'static str,
    /// The SHA-256 of the base model it was trained on.
    pub base_sha256: &'static str,
}

/// The adapters shipped in this build: the default model's, trained by
/// `scripts/train-default-adapter` (which also updates the pins).
pub fn shipped() -> &'static [Shipped] {
    &SHIPPED
}

static SHIPPED: [Shipped; 1] = [Shipped {
    name: "gemma-3-270m-hearth",
    bytes: include_bytes!("../../learning/adapters/gemma-3-270m-hearth.gguf"),
    sha256: include_str!("../../learning/adapters/gemma-3-270m-hearth.gguf.sha256"),
    base_sha256: include_str!("../../learning/adapters/gemma-3-270m-hearth.base.sha256"),
}];

/// Where an adapter came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `[engine] lora`.
    Config,
    /// `hearth learn … --deploy` / `hearth learn deploy`.
    Deployed,
    /// Shipped with Hearth.
    Shipped,
}

/// The adapter to apply.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Chosen {
    /// Its GGUF file.
    pub path: PathBuf,
    /// Its scale.
    pub scale: f32,
    /// Where it came from.
    pub source: Source,
    /// A name for reports.
    pub name: String,
}

/// Why an adapter cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file is not what was recorded.
    #[error(
        "the adapter {path} is not the one recorded (SHA-256 {actual}, expected {expected}): refused"
    )]
    Changed {
        /// The file.
        path: PathBuf,
        /// What it hashes to.
        actual: String,
        /// What it should.
        expected: String,
    },
    /// More than one adapter was configured.
    #[error("[engine] lora lists {0} adapters; llama.cpp here applies one at a time")]
    TooMany(usize),
    /// The deployment record is unreadable.
    #[error("the deployment record {path} is invalid: {reason}")]
    Record {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// What `hearth learn` deployed: `<data dir>/learning/deployed.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// The adapter's GGUF file.
    pub adapter: PathBuf,
    /// Its SHA-256.
    pub sha256: String,
    /// The base model's SHA-256 it applies to.
    pub base_sha256: String,
    /// Its scale.
    #[serde(default = "one")]
    pub scale: f32,
    /// When it was deployed (Unix ms).
    #[serde(default)]
    pub deployed_unix_ms: i64,
    /// The gate's report, kept beside it.
    #[serde(default)]
    pub report: Option<PathBuf>,
}

fn one() -> f32 {
    1.0
}

/// Where the deployment record lives.
pub fn deployment_path(data_dir: &Path) -> PathBuf {
    data_dir.join("learning").join("deployed.json")
}

/// Reads the deployment record, if there is one.
pub fn deployment(data_dir: &Path) -> Result<Option<Deployment>, AdapterError> {
    let path = deployment_path(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(AdapterError::Io { path, source }),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| AdapterError::Record {
            path,
            reason: e.to_string(),
        })
}

/// The SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String, AdapterError> {
    let io = |source| AdapterError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of the model file, remembered by path, size and
/// modification time in `<data dir>/models/sha256-cache.json` so the
/// 250 MB file is hashed once, not on every start.
pub fn model_sha256(model: &Path, data_dir: &Path) -> Result<String, AdapterError> {
    #[derive(Serialize, Deserialize, Default)]
    struct Cache {
        entries: Vec<(String, u64, u64, String)>,
    }
    let meta = std::fs::metadata(model).map_err(|source| AdapterError::Io {
        path: model.to_path_buf(),
        source,
    })?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let key = model.display().to_string();
    let cache_path = data_dir.join("models").join("sha256-cache.json");
    let mut cache: Cache = std::fs::read_to_string(&cache_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    if let Some((_, _, _, sha)) = cache
        .entries
        .iter()
        .find(|(p, len, t, _)| *p == key && *len == meta.len() && *t == mtime)
    {
        return Ok(sha.clone());
    }
    let sha = sha256_file(model)?;
    cache.entries.retain(|(p, ..)| *p != key);
    cache.entries.push((key, meta.len(), mtime, sha.clone()));
    if let Some(dir) = cache_path.parent()
        && std::fs::create_dir_all(dir).is_ok()
        && let Ok(text) = serde_json::to_string(&cache)
    {
        let _ = std::fs::write(&cache_path, text);
    }
    Ok(sha)
}

/// Checks a shipped adapter's bytes against its pin.
pub fn verify_shipped(bytes: &[u8], pinned: &str) -> Result<(), AdapterError> {
    let actual = hex(&Sha256::digest(bytes));
    if actual != pinned.trim() {
        return Err(AdapterError::Changed {
            path: PathBuf::from("<shipped adapter>"),
            actual,
            expected: pinned.trim().to_string(),
        });
    }
    Ok(())
}

/// Writes a shipped adapter where llama.cpp can read it (once), checked.
fn materialize(s: &Shipped, data_dir: &Path) -> Result<PathBuf, AdapterError> {
    verify_shipped(s.bytes, s.sha256)?;
    let dir = data_dir.join("models").join("adapters");
    let path = dir.join(format!("{}-{}.gguf", s.name, &s.sha256.trim()[..12]));
    if sha256_file(&path).is_ok_and(|h| h == s.sha256.trim()) {
        return Ok(path);
    }
    let io = |source| AdapterError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let part = path.with_extension("gguf.part");
    std::fs::write(&part, s.bytes).map_err(io)?;
    std::fs::rename(&part, &path).map_err(io)?;
    Ok(path)
}

/// Checks a file against the SHA-256 it was recorded with.
pub fn verify_file(path: &Path, expected: &str) -> Result<(), AdapterError> {
    let actual = sha256_file(path)?;
    if actual != expected.trim() {
        return Err(AdapterError::Changed {
            path: path.to_path_buf(),
            actual,
            expected: expected.trim().to_string(),
        });
    }
    Ok(())
}

/// The adapter for `model` under `cfg`, if any. A deployed adapter that no
/// longer matches its record is an error (it was chosen, and it changed);
/// one recorded for another base model is skipped.
pub fn choose(
    cfg: &EngineConfig,
    model: &Path,
    data_dir: &Path,
) -> Result<Option<Chosen>, AdapterError> {
    match cfg.lora.as_slice() {
        [] => {}
        [one] => {
            return Ok(Some(Chosen {
                path: one.path.clone(),
                scale: one.scale,
                source: Source::Config,
                name: one.path.display().to_string(),
            }));
        }
        many => return Err(AdapterError::TooMany(many.len())),
    }
    if !cfg.learned_adapter {
        return Ok(None);
    }
    let deployed = deployment(data_dir)?;
    if deployed.is_none() && shipped().is_empty() {
        return Ok(None);
    }
    let base = model_sha256(model, data_dir)?;
    if let Some(d) = deployed
        && d.base_sha256 == base
    {
        verify_file(&d.adapter, &d.sha256)?;
        return Ok(Some(Chosen {
            name: d.adapter.display().to_string(),
            path: d.adapter,
            scale: d.scale,
            source: Source::Deployed,
        }));
    }
    for s in shipped() {
        if s.base_sha256.trim() == base {
            return Ok(Some(Chosen {
                path: materialize(s, data_dir)?,
                scale: 1.0,
                source: Source::Shipped,
                name: s.name.to_string(),
            }));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_adapter_matches_its_pin_and_a_changed_one_is_refused() {
        for s in shipped() {
            verify_shipped(s.bytes, s.sha256).unwrap();
            let mut changed = s.bytes.to_vec();
            let last = changed.len() - 1;
            changed[last] ^= 1;
            assert!(matches!(
                verify_shipped(&changed, s.sha256),
                Err(AdapterError::Changed { .. })
            ));
        }
    }

    #[test]
    fn precedence_is_config_then_deployed_then_shipped_and_binding_is_by_base_sha() {
        let data = tempfile::tempdir().unwrap();
        let model = data.path().join("m.gguf");
        std::fs::write(&model, b"base model").unwrap();
        let base = sha256_file(&model).unwrap();
        let adapter = data.path().join("a.gguf");
        std::fs::write(&adapter, b"adapter").unwrap();
        let mut cfg = EngineConfig::default();
        // Nothing deployed, and this base is not the shipped one's.
        assert_eq!(choose(&cfg, &model, data.path()).unwrap(), None);
        // Deployed for this base: applies.
        let record = Deployment {
            adapter: adapter.clone(),
            sha256: sha256_file(&adapter).unwrap(),
            base_sha256: base.clone(),
            scale: 1.0,
            deployed_unix_ms: 0,
            report: None,
        };
        std::fs::create_dir_all(data.path().join("learning")).unwrap();
        std::fs::write(
            deployment_path(data.path()),
            serde_json::to_string(&record).unwrap(),
        )
        .unwrap();
        let c = choose(&cfg, &model, data.path()).unwrap().unwrap();
        assert_eq!(
            (c.source, c.path.clone()),
            (Source::Deployed, adapter.clone())
        );
        // Turned off: none.
        cfg.learned_adapter = false;
        assert_eq!(choose(&cfg, &model, data.path()).unwrap(), None);
        cfg.learned_adapter = true;
        // The configuration wins.
        cfg.lora = vec![hearth_mesh::config::LoraAdapter {
            path: "/x.gguf".into(),
            scale: 0.5,
        }];
        assert_eq!(
            choose(&cfg, &model, data.path()).unwrap().unwrap().source,
            Source::Config
        );
        cfg.lora.clear();
        // A changed deployed file is refused, with a reason.
        std::fs::write(&adapter, b"tampered").unwrap();
        let err = choose(&cfg, &model, data.path()).unwrap_err();
        assert!(err.to_string().contains("refused"), "{err}");
        // Another base model: the deployed adapter does not apply.
        let other = data.path().join("other.gguf");
        std::fs::write(&other, b"another model").unwrap();
        assert_eq!(choose(&cfg, &other, data.path()).unwrap(), None);
    }
}
