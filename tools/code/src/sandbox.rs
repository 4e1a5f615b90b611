//! One run of untrusted Python: a fresh store, the limits, and what came
//! out.
//!
//! What the guest gets: argv (`python -c <code>`), a sanitized environment
//! (`HOME`, `TMPDIR`, `LANG` and nothing of the host's), stdin, a private
//! scratch directory preopened at `/` (the only writable path; a planted
//! symlink out of it is refused by the capability layer) and the standard
//! library read-only at `/usr/local/lib`. No sockets (WASI preview 1 cannot
//! open one; the network is off in the context too), no host path, no
//! processes.
//!
//! What stops it: the epoch deadline (wall clock) and a timeout around the
//! whole call (so a guest asleep in a host call is stopped too); fuel (the
//! CPU budget); the memory cap (growth past it fails — Python's
//! `MemoryError` — and is reported as the memory limit); table, instance
//! and memory counts; a byte cap on stdout and stderr (the rest is dropped
//! and counted, never an error to the guest); and the scratch cap, checked
//! in front of every write (`fd_write`, `fd_pwrite`, `fd_filestat_set_size`)
//! — past it the write fails with `ENOSPC`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::io::AsyncWrite;
use wasmtime::{Caller, Extern, Linker, ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p1::{WasiP1Ctx, wasi_snapshot_preview1};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use crate::engine::{EPOCH_TICK, Prepared};

/// Table elements allowed (the interpreter's table has 47,157).
pub const TABLE_ELEMENTS: usize = 64 * 1024;
/// WASI's `ENOSPC`.
const ERRNO_NOSPC: i32 = 51;

/// What one run may use.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall-clock deadline.
    pub deadline: Duration,
    /// Instructions (fuel units).
    pub fuel: u64,
    /// Linear memory, in bytes (the interpreter starts at 40 MiB).
    pub memory_bytes: usize,
    /// Bytes the scratch directory may hold.
    pub scratch_bytes: u64,
    /// Bytes kept of stdout, and of stderr.
    pub output_bytes: usize,
    /// Bytes of files returned, in all.
    pub files_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(10),
            fuel: 40_000_000_000,
            memory_bytes: 512 << 20,
            scratch_bytes: 64 << 20,
            output_bytes: 64 << 10,
            files_bytes: 512 << 10,
        }
    }
}

/// A stdout or stderr that keeps the first `cap` bytes and counts the rest.
#[derive(Clone)]
struct Capped(Arc<Mutex<CappedBuf>>);

struct CappedBuf {
    data: Vec<u8>,
    cap: usize,
    dropped: u64,
}

impl Capped {
    fn new(cap: usize) -> Self {
        Self(Arc::new(Mutex::new(CappedBuf {
            data: Vec::new(),
            cap,
            dropped: 0,
        })))
    }

    fn take(&self) -> (String, u64) {
        let b = match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        (String::from_utf8_lossy(&b.data).into_owned(), b.dropped)
    }
}

impl AsyncWrite for Capped {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut b = match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let room = b.cap.saturating_sub(b.data.len());
        let keep = room.min(buf.len());
        b.data.extend_from_slice(&buf[..keep]);
        b.dropped += (buf.len() - keep) as u64;
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl wasmtime_wasi::cli::IsTerminal for Capped {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for Capped {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

/// The memory limiter: the store's limits, remembering a refused growth.
struct Limiter {
    inner: StoreLimits,
    memory_refused: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = self.inner.memory_growing(current, desired, maximum)?;
        if !ok {
            self.memory_refused = true;
        }
        Ok(ok)
    }
    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }
    fn instances(&self) -> usize {
        self.inner.instances()
    }
    fn tables(&self) -> usize {
        self.inner.tables()
    }
    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// What a store holds.
pub struct Ctx {
    /// WASI's state.
    pub wasi: WasiP1Ctx,
    limiter: Limiter,
    scratch: PathBuf,
    scratch_cap: u64,
    scratch_used: u64,
    scratch_full: bool,
}

/// Bytes under `dir` (files only; symlinks not followed).
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.len();
            }
        }
    }
    total
}

/// The bytes a write of `iovs_len` iovecs at `iovs` would write.
fn iovec_total(caller: &mut Caller<'_, Ctx>, iovs: i32, iovs_len: i32) -> Option<u64> {
    let Some(Extern::Memory(mem)) = caller.get_export("memory") else {
        return None;
    };
    let data = mem.data(&*caller);
    let (base, n) = (iovs as u32 as usize, (iovs_len as u32 as usize).min(1024));
    let mut total = 0u64;
    for i in 0..n {
        let at = base.checked_add(i * 8)?;
        let len = data.get(at + 4..at + 8)?;
        total += u64::from(u32::from_le_bytes(len.try_into().ok()?));
    }
    Some(total)
}

/// Whether `more` bytes fit in the scratch cap; refuses (and remembers)
/// when they do not.
fn scratch_admits(ctx: &mut Ctx, more: u64) -> bool {
    if ctx.scratch_used + more <= ctx.scratch_cap {
        ctx.scratch_used += more;
        return true;
    }
    // The running count over-estimates (overwrites count twice): measure.
    ctx.scratch_used = dir_size(&ctx.scratch);
    if ctx.scratch_used + more <= ctx.scratch_cap {
        ctx.scratch_used += more;
        true
    } else {
        ctx.scratch_full = true;
        false
    }
}

/// Runs WASI's own implementation of a function on the calling instance's
/// memory and this store's WASI context (what the linker's generated
/// wrappers do), after the checks in front of it.
macro_rules! wasi_call {
    ($caller:expr, $func:ident ( $($arg:expr),* )) => {{
        let caller = $caller;
        let fuel = wasmtime::AsContextMut::as_context_mut(&mut *caller).hostcall_fuel();
        let Some(Extern::Memory(mem)) = caller.get_export("memory") else {
            wasmtime::bail!("missing required memory export");
        };
        let (data, ctx) = mem.data_and_store_mut(&mut *caller);
        wasi_snapshot_preview1::WasiSnapshotPreview1::set_hostcall_fuel(&mut ctx.wasi, fuel);
        let mut memory = wiggle::GuestMemory::Unshared(data);
        let errno = wasi_snapshot_preview1::$func(&mut ctx.wasi, &mut memory, $($arg),*).await?;
        Ok(errno)
    }};
}

/// Puts the scratch-size checks in front of the WASI calls that grow files.
pub fn guard_writes(l: &mut Linker<Ctx>) -> wasmtime::Result<()> {
    l.allow_shadowing(true);
    l.func_wrap_async(
        "wasi_snapshot_preview1",
        "fd_write",
        |mut caller: Caller<'_, Ctx>, (fd, iovs, n, nwritten): (i32, i32, i32, i32)| {
            Box::new(async move {
                if fd > 2 {
                    let more = iovec_total(&mut caller, iovs, n).unwrap_or(0);
                    if !scratch_admits(caller.data_mut(), more) {
                        return Ok(ERRNO_NOSPC);
                    }
                }
                wasi_call!(&mut caller, fd_write(fd, iovs, n, nwritten))
            })
        },
    )?;
    l.func_wrap_async(
        "wasi_snapshot_preview1",
        "fd_pwrite",
        |mut caller: Caller<'_, Ctx>,
         (fd, iovs, n, offset, nwritten): (i32, i32, i32, i64, i32)| {
            Box::new(async move {
                let more = iovec_total(&mut caller, iovs, n).unwrap_or(0);
                if !scratch_admits(caller.data_mut(), more) {
                    return Ok(ERRNO_NOSPC);
                }
                wasi_call!(&mut caller, fd_pwrite(fd, iovs, n, offset, nwritten))
            })
        },
    )?;
    l.func_wrap_async(
        "wasi_snapshot_preview1",
        "fd_filestat_set_size",
        |mut caller: Caller<'_, Ctx>, (fd, size): (i32, i64)| {
            Box::new(async move {
                let cap = caller.data().scratch_cap;
                if size < 0 || size as u64 > cap {
                    caller.data_mut().scratch_full = true;
                    return Ok(ERRNO_NOSPC);
                }
                wasi_call!(&mut caller, fd_filestat_set_size(fd, size))
            })
        },
    )?;
    Ok(())
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Exit status 0.
    Ok,
    /// A non-zero exit status (an uncaught exception is 1).
    Exited,
    /// The wall-clock deadline passed.
    Timeout,
    /// The CPU budget (fuel) ran out.
    OutOfFuel,
    /// Memory growth past the cap was refused.
    MemoryLimit,
    /// The wasm stack overflowed.
    StackOverflow,
    /// A write would have passed the scratch directory's cap.
    ScratchFull,
    /// Another trap.
    Trap,
    /// The sandbox itself failed (a host error).
    Error,
}

/// A file the code left in the scratch directory.
#[derive(Debug, Clone, Serialize)]
pub struct OutFile {
    /// Path relative to the scratch directory.
    pub path: String,
    /// Its size.
    pub size: u64,
    /// Its text (UTF-8), if it is text and fit in the cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Its bytes as base64, if it is not text and fit in the cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
    /// Left out: over the cap for returned files.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub omitted: bool,
}

/// What a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    /// How it ended.
    pub status: Status,
    /// Python's exit status, when it exited.
    pub exit_code: Option<i32>,
    /// Standard output (capped).
    pub stdout: String,
    /// Bytes of stdout dropped past the cap.
    pub stdout_truncated: u64,
    /// Standard error (capped).
    pub stderr: String,
    /// Bytes of stderr dropped past the cap.
    pub stderr_truncated: u64,
    /// Files written or changed in the scratch directory.
    pub files: Vec<OutFile>,
    /// Wall time of the run, ms.
    pub wall_ms: f64,
    /// Fuel consumed (about one unit per wasm instruction); absent when the
    /// deadline stopped the run (the counter is not brought up to date then).
    pub fuel_used: Option<u64>,
    /// What went wrong, in words, when something did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// One run's input.
#[derive(Debug, Clone, Default)]
pub struct RunInput {
    /// The Python source.
    pub code: String,
    /// Bytes on stdin.
    pub stdin: Vec<u8>,
}

type Snapshot = BTreeMap<PathBuf, (u64, Option<SystemTime>)>;

fn snapshot(dir: &Path) -> Snapshot {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() {
                let rel = e
                    .path()
                    .strip_prefix(dir)
                    .map(Path::to_path_buf)
                    .unwrap_or_default();
                out.insert(rel, (m.len(), m.modified().ok()));
            }
        }
    }
    out
}

fn changed_files(dir: &Path, before: &Snapshot, cap: usize) -> Vec<OutFile> {
    use base64::Engine as _;
    let mut budget = cap;
    snapshot(dir)
        .into_iter()
        .filter(|(p, v)| before.get(p) != Some(v))
        .map(|(p, (size, _))| {
            let mut f = OutFile {
                path: p.display().to_string(),
                size,
                text: None,
                base64: None,
                omitted: true,
            };
            if (size as usize) <= budget
                && let Ok(bytes) = std::fs::read(dir.join(&p))
            {
                budget -= bytes.len().min(budget);
                f.omitted = false;
                match String::from_utf8(bytes) {
                    Ok(t) => f.text = Some(t),
                    Err(e) => {
                        f.base64 =
                            Some(base64::engine::general_purpose::STANDARD.encode(e.into_bytes()))
                    }
                }
            }
            f
        })
        .collect()
}

/// The guest's WASI context: python.wasm running `input.code`, the scratch
/// directory as `/` (read-write), the standard library read-only at
/// `/usr/local/lib`, output into the capped pipes, and no sockets and no
/// name lookups. Nothing else of the host is there.
fn guest_ctx(
    input: &RunInput,
    stdlib_dir: &Path,
    scratch: &Path,
    stdout: &Capped,
    stderr: &Capped,
) -> Result<WasiP1Ctx, String> {
    let mut b = WasiCtxBuilder::new();
    b.args(&["/usr/local/bin/python.wasm", "-c", input.code.as_str()])
        .env("HOME", "/tmp")
        .env("TMPDIR", "/tmp")
        .env("LANG", "C.UTF-8")
        .env("PYTHONTZPATH", "")
        .stdin(wasmtime_wasi::p2::pipe::MemoryInputPipe::new(
            input.stdin.clone(),
        ))
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    b.preopened_dir(scratch, "/", FsPerms::ReadWrite)
        .map_err(|e| format!("preopening the scratch directory: {e}"))?;
    b.preopened_dir(stdlib_dir, "/usr/local/lib", FsPerms::ReadOnly)
        .map_err(|e| format!("preopening the standard library: {e}"))?;
    Ok(b.build_p1())
}

/// Runs `input` in a fresh store with the scratch directory `scratch`.
/// Async; call it where a tokio runtime runs (the server runs each on a
/// thread of its own, so the guest never holds up the runtime's workers).
pub async fn run(
    p: &Prepared,
    stdlib_dir: &Path,
    scratch: &Path,
    input: &RunInput,
    limits: &Limits,
) -> RunOutcome {
    let t0 = Instant::now();
    let before = snapshot(scratch);
    let stdout = Capped::new(limits.output_bytes);
    let stderr = Capped::new(limits.output_bytes);
    let finish =
        |status: Status, exit_code: Option<i32>, fuel_used: Option<u64>, detail: Option<String>| {
            let (out, out_t) = stdout.take();
            let (err, err_t) = stderr.take();
            RunOutcome {
                status,
                exit_code,
                stdout: out,
                stdout_truncated: out_t,
                stderr: err,
                stderr_truncated: err_t,
                files: changed_files(scratch, &before, limits.files_bytes),
                wall_ms: t0.elapsed().as_secs_f64() * 1e3,
                fuel_used,
                detail,
            }
        };
    let wasi = match guest_ctx(input, stdlib_dir, scratch, &stdout, &stderr) {
        Ok(w) => w,
        Err(detail) => return finish(Status::Error, None, None, Some(detail)),
    };
    let _ = std::fs::create_dir_all(scratch.join("tmp"));
    let limiter = Limiter {
        inner: StoreLimitsBuilder::new()
            .memory_size(limits.memory_bytes)
            .table_elements(TABLE_ELEMENTS)
            .instances(1)
            .tables(2)
            .memories(2)
            .build(),
        memory_refused: false,
    };
    let mut store = wasmtime::Store::new(
        &p.engine,
        Ctx {
            wasi,
            limiter,
            scratch: scratch.to_path_buf(),
            scratch_cap: limits.scratch_bytes,
            scratch_used: dir_size(scratch),
            scratch_full: false,
        },
    );
    store.limiter(|c| &mut c.limiter);
    if let Err(e) = store.set_fuel(limits.fuel) {
        return finish(Status::Error, None, None, Some(e.to_string()));
    }
    let ticks = (limits.deadline.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
    store.set_epoch_deadline(ticks);
    store.epoch_deadline_trap();
    // The epoch stops running wasm; the timeout also stops a guest that is
    // blocked in a host call (asleep) when the deadline passes.
    let fut = async {
        let instance = p.pre.instantiate_async(&mut store).await?;
        let entry = instance.get_typed_func::<(), i32>(&mut store, "run")?;
        entry.call_async(&mut store, ()).await
    };
    let outcome = tokio::time::timeout(limits.deadline + Duration::from_millis(250), fut).await;
    let fuel_used = store
        .get_fuel()
        .ok()
        .map(|left| limits.fuel.saturating_sub(left));
    let ctx = store.data();
    let (memory_refused, scratch_full) = (ctx.limiter.memory_refused, ctx.scratch_full);
    let result = match outcome {
        Err(_) => {
            return finish(
                Status::Timeout,
                None,
                None,
                Some(format!("stopped at the deadline of {:?}", limits.deadline)),
            );
        }
        Ok(r) => r,
    };
    match result {
        Ok(0) => finish(
            if scratch_full {
                Status::ScratchFull
            } else {
                Status::Ok
            },
            Some(0),
            fuel_used,
            scratch_full.then(|| {
                format!(
                    "a write past the scratch cap of {} bytes was refused",
                    limits.scratch_bytes
                )
            }),
        ),
        Ok(code) => exited(
            code,
            memory_refused,
            scratch_full,
            limits,
            fuel_used,
            finish,
        ),
        Err(e) => {
            if let Some(x) = e.downcast_ref::<I32Exit>() {
                return exited(x.0, memory_refused, scratch_full, limits, fuel_used, finish);
            }
            match e.downcast_ref::<wasmtime::Trap>() {
                Some(wasmtime::Trap::Interrupt) => finish(
                    Status::Timeout,
                    None,
                    None,
                    Some(format!("stopped at the deadline of {:?}", limits.deadline)),
                ),
                Some(wasmtime::Trap::OutOfFuel) => finish(
                    Status::OutOfFuel,
                    None,
                    Some(limits.fuel),
                    Some(format!("the CPU budget of {} fuel ran out", limits.fuel)),
                ),
                Some(wasmtime::Trap::StackOverflow) => finish(
                    Status::StackOverflow,
                    None,
                    fuel_used,
                    Some("the wasm stack overflowed (unbounded recursion)".into()),
                ),
                Some(t) => finish(Status::Trap, None, fuel_used, Some(format!("trap: {t}"))),
                None if memory_refused => finish(
                    Status::MemoryLimit,
                    None,
                    fuel_used,
                    Some(format!(
                        "memory past the cap of {} bytes was refused",
                        limits.memory_bytes
                    )),
                ),
                None => finish(Status::Error, None, fuel_used, Some(format!("{e:#}"))),
            }
        }
    }
}

fn exited(
    code: i32,
    memory_refused: bool,
    scratch_full: bool,
    limits: &Limits,
    fuel_used: Option<u64>,
    finish: impl FnOnce(Status, Option<i32>, Option<u64>, Option<String>) -> RunOutcome,
) -> RunOutcome {
    if code == 0 {
        return finish(Status::Ok, Some(0), fuel_used, None);
    }
    if memory_refused {
        return finish(
            Status::MemoryLimit,
            Some(code),
            fuel_used,
            Some(format!(
                "memory past the cap of {} bytes was refused (MemoryError)",
                limits.memory_bytes
            )),
        );
    }
    if scratch_full {
        return finish(
            Status::ScratchFull,
            Some(code),
            fuel_used,
            Some(format!(
                "a write past the scratch cap of {} bytes was refused",
                limits.scratch_bytes
            )),
        );
    }
    finish(Status::Exited, Some(code), fuel_used, None)
}
