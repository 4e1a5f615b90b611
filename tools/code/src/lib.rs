//! The code tool: an MCP server (rmcp) with `run_python`, which runs
//! untrusted Python — a real CPython built for WASI — inside a wasmtime
//! sandbox, and `end_session`.
//!
//! - [`runtime`]: the interpreter's files, pinned by SHA-256.
//! - [`engine`]: compiling it once, caching the artifact (checked before
//!   use), the pooling allocator, the epoch ticker.
//! - [`sandbox`]: one run — the limits, the capped outputs, the scratch
//!   directory, and why a run stopped.
//!
//! Runs take one of a fixed number of slots; callers beyond that wait, up
//! to the queue deadline. Each run executes on a thread of its own, so
//! guest code never holds up the async runtime. A `session_id` keeps the
//! scratch directory (and the files in it) across calls until
//! `end_session`, or until it has been idle for the session timeout.

pub mod engine;
pub mod runtime;
pub mod sandbox;

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ServerHandler, tool, tool_handler, tool_router};
use serde::Deserialize;
use tokio::sync::{Semaphore, watch};

pub use engine::{Origin, PrepareError, Prepared};
pub use runtime::Runtime;
pub use sandbox::{Limits, RunInput, RunOutcome, Status};

/// Whether the sandbox's interpreter is there and compiled, as `hearth
/// doctor` and the toolhost's health say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interpreter {
    /// The interpreter is intact and compiled for this machine (the module
    /// cached at this path): a run starts warm.
    Ready(PathBuf),
    /// Intact but not compiled yet: the first run compiles it (minutes).
    NotCompiled,
    /// The interpreter is missing or does not match its pins.
    Broken(String),
}

/// Checks the interpreter under `opts` against its pinned digests and
/// looks for its compiled module. Blocking: it reads the files.
pub fn interpreter(opts: &CodeOptions) -> Interpreter {
    let rt = Runtime::new(&opts.runtime_dir);
    if let Err(e) = rt.verify() {
        return Interpreter::Broken(e.to_string());
    }
    match engine::cached_artifact(&rt, opts.slots, &opts.limits) {
        Ok((path, true)) => Interpreter::Ready(path),
        Ok((_, false)) => Interpreter::NotCompiled,
        Err(e) => Interpreter::Broken(e.to_string()),
    }
}

/// How the code tool behaves.
#[derive(Debug, Clone)]
pub struct CodeOptions {
    /// Where the interpreter's files (and the compiled cache) are.
    pub runtime_dir: PathBuf,
    /// Sandboxes running at once.
    pub slots: u32,
    /// How long a call may wait for a slot (or for the first preparation).
    pub queue_timeout: Duration,
    /// Limits of each run.
    pub limits: Limits,
    /// A session idle this long is deleted.
    pub session_idle: Duration,
    /// Most sessions kept at once.
    pub max_sessions: usize,
}

impl CodeOptions {
    /// Defaults for the runtime in `runtime_dir`: 4 slots, 30 s queue, 15
    /// minutes of session idleness, 64 sessions.
    pub fn new(runtime_dir: impl Into<PathBuf>) -> Self {
        Self {
            runtime_dir: runtime_dir.into(),
            slots: 4,
            queue_timeout: Duration::from_secs(30),
            limits: Limits::default(),
            session_idle: Duration::from_secs(15 * 60),
            max_sessions: 64,
        }
    }
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    /// The interpreter is not ready (missing, or being compiled).
    #[error("{0}")]
    NotReady(String),
    /// Every slot stayed busy past the queue deadline.
    #[error("every sandbox slot stayed busy for {0:?}; try again")]
    Busy(Duration),
    /// The request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The sandbox failed.
    #[error("the sandbox failed: {0}")]
    Failed(String),
}

#[derive(Clone)]
enum Readiness {
    Idle,
    Preparing,
    Ready(Arc<Prepared>),
    Failed(String),
}

struct Session {
    dir: tempfile::TempDir,
    used: Instant,
}

struct Inner {
    opts: CodeOptions,
    runtime: Runtime,
    ready: watch::Sender<Readiness>,
    slots: Semaphore,
    sessions: Mutex<HashMap<String, Session>>,
}

/// The sandbox pool (usable without MCP: the benchmark drives it directly).
#[derive(Clone)]
pub struct Sandboxes {
    inner: Arc<Inner>,
}

/// A file given to the code before it runs.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
pub struct InputFile {
    /// Path relative to the scratch directory (the code sees it at `/<path>`).
    pub path: String,
    /// Its text.
    #[serde(default)]
    pub text: Option<String>,
    /// Its bytes, base64.
    #[serde(default)]
    pub base64: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn valid_session(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
}

impl Sandboxes {
    /// A pool; nothing is loaded until the first run (or [`Self::prepare`]).
    pub fn new(opts: CodeOptions) -> Self {
        let runtime = Runtime::new(&opts.runtime_dir);
        Self {
            inner: Arc::new(Inner {
                slots: Semaphore::new(opts.slots.max(1) as usize),
                runtime,
                opts,
                ready: watch::channel(Readiness::Idle).0,
                sessions: Mutex::default(),
            }),
        }
    }

    /// The options in force.
    pub fn options(&self) -> &CodeOptions {
        &self.inner.opts
    }

    /// The interpreter's files.
    pub fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    /// Starts preparing the interpreter in the background if nobody has.
    fn start_preparing(&self) {
        let mut started = false;
        self.inner.ready.send_if_modified(|r| {
            if matches!(r, Readiness::Idle | Readiness::Failed(_)) {
                *r = Readiness::Preparing;
                started = true;
                true
            } else {
                false
            }
        });
        if !started {
            return;
        }
        let inner = self.inner.clone();
        std::thread::Builder::new()
            .name("wasm-prepare".into())
            .spawn(move || {
                let r = engine::prepare(&inner.runtime, inner.opts.slots.max(1), &inner.opts.limits);
                let state = match r {
                    Ok(p) => {
                        tracing::info!(origin = ?p.origin, took = ?p.took, "the Python sandbox is ready");
                        Readiness::Ready(Arc::new(p))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the Python sandbox could not be prepared");
                        Readiness::Failed(e.to_string())
                    }
                };
                inner.ready.send_replace(state);
            })
            .ok();
    }

    /// Waits (up to `wait`) for the interpreter.
    pub async fn prepared(&self, wait: Duration) -> Result<Arc<Prepared>, CodeError> {
        // A failure is retried (the files may have been installed since).
        self.start_preparing();
        let mut rx = self.inner.ready.subscribe();
        let waited = tokio::time::timeout(wait, async {
            loop {
                let state = rx.borrow_and_update().clone();
                match state {
                    Readiness::Ready(p) => return Ok(p),
                    Readiness::Failed(e) => return Err(CodeError::NotReady(e)),
                    Readiness::Idle | Readiness::Preparing => {}
                }
                if rx.changed().await.is_err() {
                    return Err(CodeError::NotReady("the sandbox pool is gone".into()));
                }
            }
        })
        .await;
        match waited {
            Ok(r) => r,
            Err(_) => Err(CodeError::NotReady(
                "the Python sandbox is still being prepared (CPython is compiled once and cached; minutes on a small machine); try again shortly — `hearth tool code --precompile` does it ahead of time"
                    .to_string(),
            )),
        }
    }

    /// Prepares the interpreter now (blocking the caller until done).
    pub async fn prepare(&self) -> Result<Arc<Prepared>, CodeError> {
        self.prepared(Duration::from_secs(24 * 3600)).await
    }

    fn sweep_sessions(&self) {
        let idle = self.inner.opts.session_idle;
        lock(&self.inner.sessions).retain(|_, s| s.used.elapsed() < idle);
    }

    /// Deletes a session's scratch directory; whether there was one.
    pub fn end_session(&self, id: &str) -> bool {
        lock(&self.inner.sessions).remove(id).is_some()
    }

    /// Runs `input` (with `files` placed first) in a fresh sandbox, in the
    /// session's scratch directory when `session` is given.
    pub async fn run(
        &self,
        input: RunInput,
        files: &[InputFile],
        session: Option<&str>,
    ) -> Result<RunOutcome, CodeError> {
        let opts = &self.inner.opts;
        let queue_deadline = Instant::now() + opts.queue_timeout;
        let prepared = self.prepared(opts.queue_timeout).await?;
        self.sweep_sessions();
        // The scratch directory: the session's, or a fresh one.
        let (dir, _fresh): (PathBuf, Option<tempfile::TempDir>) = match session {
            Some(id) => {
                if !valid_session(id) {
                    return Err(CodeError::Invalid(
                        "`session_id` must be 1-128 letters, digits or `-_.:`".into(),
                    ));
                }
                let mut sessions = lock(&self.inner.sessions);
                if !sessions.contains_key(id) && sessions.len() >= opts.max_sessions {
                    return Err(CodeError::Invalid(format!(
                        "{} sessions are open already; end one first",
                        opts.max_sessions
                    )));
                }
                let entry = match sessions.entry(id.to_string()) {
                    std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => v.insert(Session {
                        dir: tempfile::Builder::new()
                            .prefix("hearth-code-")
                            .tempdir()
                            .map_err(|e| CodeError::Failed(e.to_string()))?,
                        used: Instant::now(),
                    }),
                };
                entry.used = Instant::now();
                (entry.dir.path().to_path_buf(), None)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("hearth-code-")
                    .tempdir()
                    .map_err(|e| CodeError::Failed(e.to_string()))?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        place_files(&dir, files, opts.limits.scratch_bytes)?;
        let wait = queue_deadline.saturating_duration_since(Instant::now());
        let permit = tokio::time::timeout(wait, self.inner.slots.acquire())
            .await
            .map_err(|_| CodeError::Busy(opts.queue_timeout))?
            .map_err(|_| CodeError::Failed("the sandbox pool is closed".into()))?;
        let stdlib = self.inner.runtime.stdlib_dir();
        let limits = opts.limits.clone();
        let run_dir = dir.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| CodeError::Failed(e.to_string()))?;
            Ok::<_, CodeError>(
                rt.block_on(sandbox::run(&prepared, &stdlib, &run_dir, &input, &limits)),
            )
        })
        .await
        .map_err(|e| CodeError::Failed(e.to_string()))??;
        drop(permit);
        Ok(outcome)
    }
}

/// Writes the input files into the scratch directory.
fn place_files(dir: &Path, files: &[InputFile], cap: u64) -> Result<(), CodeError> {
    use base64::Engine as _;
    let mut total = 0u64;
    for f in files {
        let rel = Path::new(&f.path);
        if f.path.is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(CodeError::Invalid(format!(
                "input file `{}`: a relative path without `..` is needed",
                f.path
            )));
        }
        let bytes = match (&f.text, &f.base64) {
            (Some(t), None) => t.clone().into_bytes(),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| CodeError::Invalid(format!("input file `{}`: {e}", f.path)))?,
            _ => {
                return Err(CodeError::Invalid(format!(
                    "input file `{}`: give either `text` or `base64`",
                    f.path
                )));
            }
        };
        total += bytes.len() as u64;
        if total > cap {
            return Err(CodeError::Invalid(format!(
                "the input files pass the scratch cap of {cap} bytes"
            )));
        }
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| CodeError::Failed(e.to_string()))?;
        }
        std::fs::write(&path, bytes).map_err(|e| CodeError::Failed(e.to_string()))?;
    }
    Ok(())
}

/// `run_python`'s input.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct RunParams {
    /// Python source to run (CPython 3.15; numpy and pandas are available).
    pub code: String,
    /// Text on standard input.
    #[serde(default)]
    pub stdin: Option<String>,
    /// Files to place in the working directory first.
    #[serde(default)]
    pub files: Vec<InputFile>,
    /// Keep the working directory (and its files) for later calls with the
    /// same id, until `end_session`.
    #[serde(default)]
    pub session_id: Option<String>,
}

/// `end_session`'s input.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct EndParams {
    /// The session to delete.
    pub session_id: String,
}

/// The code MCP server.
#[derive(Clone)]
pub struct CodeServer {
    pool: Sandboxes,
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl CodeServer {
    /// A server over `pool`.
    pub fn new(pool: Sandboxes) -> Self {
        Self {
            pool,
            tool_router: Self::tool_router(),
        }
    }

    /// Run Python.
    #[tool(
        description = "Run Python code (CPython 3.15 with numpy and pandas) in a sandbox: no network, no host files; the working directory starts empty unless files are given. Returns the exit status, stdout, stderr, files the code wrote, wall time and instructions used. Pass session_id to keep files between calls.",
        annotations(read_only_hint = false, open_world_hint = false)
    )]
    async fn run_python(&self, Parameters(p): Parameters<RunParams>) -> CallToolResult {
        let input = RunInput {
            code: p.code,
            stdin: p.stdin.unwrap_or_default().into_bytes(),
        };
        match self
            .pool
            .run(input, &p.files, p.session_id.as_deref())
            .await
        {
            Ok(out) => {
                let text = serde_json::to_string_pretty(&out).unwrap_or_default();
                let mut r = if out.status == Status::Ok {
                    CallToolResult::success(vec![ContentBlock::text(text)])
                } else {
                    CallToolResult::error(vec![ContentBlock::text(text)])
                };
                r.structured_content = serde_json::to_value(&out).ok();
                r
            }
            Err(e) => CallToolResult::error(vec![ContentBlock::text(e.to_string())]),
        }
    }

    /// End a session.
    #[tool(
        description = "Delete a session's working directory and its files.",
        annotations(destructive_hint = true, open_world_hint = false)
    )]
    async fn end_session(&self, Parameters(p): Parameters<EndParams>) -> CallToolResult {
        if self.pool.end_session(&p.session_id) {
            CallToolResult::success(vec![ContentBlock::text(format!(
                "session {} ended",
                p.session_id
            ))])
        } else {
            CallToolResult::error(vec![ContentBlock::text(format!(
                "no session {}",
                p.session_id
            ))])
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for CodeServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "hearth-code",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions("Run Python in a sandbox with `run_python`.")
    }
}
