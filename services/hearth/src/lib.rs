//! The launcher: starts any part of the mesh, or all of it, on a bus, and
//! sends tasks to it. The `hearth` binary is a thin CLI over this.
//!
//! With no NATS URL configured everything runs in one process on the
//! in-process bus; with one, each part joins the mesh on NATS.

pub mod agents_cli;
pub mod bench;
pub mod bench_a2a;
pub mod bench_code;
pub mod bench_engine;
pub mod bench_memory;
pub mod bench_tools;
pub mod builtins;
pub mod config_cli;
pub mod doctor;
pub mod init;
pub mod learn_cli;
pub mod memory_cli;
pub mod models;
pub mod tools_cli;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hearth_mesh::a2a::{RunError, text_message};
use hearth_mesh::clients::AgentClient;
use hearth_mesh::subjects::Service;
use hearth_mesh::{Config, LocalBus, NatsBus, SharedBus};
use hearth_proto::a2a::{Role, TaskState};
use hearth_proto::v1::{SendTaskRequest, Usage};
use serde::Serialize;
use tokio::task::JoinHandle;
use tracing::Instrument;

/// A part of the mesh that `hearth serve` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Inference.
    Engine,
    /// MCP tools.
    Toolhost,
    /// Receives tasks, delegates to operatives.
    Orchestrator,
    /// Runs subtasks (start several to share work).
    Operative,
    /// HTTP front door (A2A).
    Gateway,
    /// The vector store (qdrant-edge here, or a Qdrant server).
    Memory,
    /// Traces of every agent run (redacted), for evaluation and training.
    Learning,
}

impl Part {
    /// Every part, in start-up order (dependencies first).
    pub const ALL: [Part; 7] = [
        Part::Engine,
        Part::Learning,
        Part::Memory,
        Part::Toolhost,
        Part::Operative,
        Part::Orchestrator,
        Part::Gateway,
    ];
}

/// The bus the configuration asks for: NATS if a URL is set, else in-process.
pub async fn connect_bus(config: &Config) -> Result<SharedBus> {
    Ok(match &config.nats_url {
        Some(url) => Arc::new(
            NatsBus::connect(url)
                .await
                .with_context(|| format!("joining the mesh at {url} (is nats-server running?)"))?,
        ),
        None => Arc::new(LocalBus::default()),
    })
}

/// The parts of a mesh running in this process.
pub struct Mesh {
    /// The bus they are on.
    pub bus: SharedBus,
    /// Where the gateway listens, if it runs here.
    pub gateway: Option<SocketAddr>,
    /// Where its gRPC listener is, if it has one.
    pub gateway_grpc: Option<SocketAddr>,
    handles: Vec<JoinHandle<()>>,
    /// The loops where new tasks come in (the agent services' role
    /// subjects): the first to stop when the mesh drains.
    intake: Vec<JoinHandle<()>>,
    pool: Option<Arc<hearth_toolhost::McpPool>>,
}

impl Mesh {
    /// The serving loops, for a caller that serves more beside them.
    pub fn handles_mut(&mut self) -> &mut Vec<JoinHandle<()>> {
        &mut self.handles
    }

    /// Drains: stops taking new tasks (over NATS a queue peer gets them),
    /// then waits up to `deadline` for the requests this process has
    /// already taken — the tasks it runs and the model and tool calls they
    /// make here — to finish. True when nothing was left in flight.
    pub async fn drain(&mut self, deadline: Duration) -> bool {
        for h in self.intake.drain(..) {
            h.abort();
        }
        hearth_mesh::rpc::drained(deadline).await
    }

    /// Stops the serving loops and the MCP servers.
    pub async fn shutdown(self) {
        for h in self.intake.iter().chain(&self.handles) {
            h.abort();
        }
        if let Some(pool) = self.pool {
            pool.shutdown().await;
        }
    }
}

/// Serves `GET /metrics` (this process's Prometheus metrics, the whole
/// mesh when it runs here) at `addr`; returns where it listens. Metrics
/// name tools and services but carry no secret; beyond loopback a
/// warning says so anyway.
pub async fn serve_metrics(addr: SocketAddr) -> Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics listener at {addr}"))?;
    let bound = listener
        .local_addr()
        .context("the metrics listener's address")?;
    if !bound.ip().is_loopback() {
        tracing::warn!(addr = %bound, "metrics are served beyond loopback, without a token");
    }
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    hearth_mesh::metrics::CONTENT_TYPE,
                )],
                hearth_mesh::metrics::render(),
            )
        }),
    );
    let h = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the metrics listener stopped");
        }
    });
    Ok((bound, h))
}

/// Starts `parts` on `bus`.
pub async fn start(config: &Config, bus: SharedBus, parts: &[Part]) -> Result<Mesh> {
    let subjects = config.subjects();
    let mut mesh = Mesh {
        bus: bus.clone(),
        gateway: None,
        gateway_grpc: None,
        handles: Vec::new(),
        intake: Vec::new(),
        pool: None,
    };
    for part in Part::ALL.iter().filter(|p| parts.contains(p)) {
        match part {
            Part::Engine => {
                // Loading a local model reads the whole file: off the runtime.
                let (engine_cfg, data_dir) = (config.engine.clone(), config.data_dir());
                let backend = tokio::task::spawn_blocking(move || {
                    hearth_engine::backend_from_config(&engine_cfg, &data_dir)
                })
                .await
                .context("starting the engine")?
                .context("starting the engine")?;
                let metering = hearth_engine::metering_for(&config.engine, backend.default_model());
                let svc = hearth_engine::EngineService::new(backend, metering).with_embeddings(
                    hearth_engine::embeddings_for(&config.engine, &config.data_dir()),
                );
                mesh.handles
                    .extend(hearth_engine::serve(svc, bus.clone(), &subjects).await?);
            }
            Part::Learning => {
                let data_dir = config.data_dir();
                let svc = hearth_learning::LearningService::new(
                    config,
                    hearth_learning::traces_dir(config, &data_dir),
                    hearth_learning::convert::Source::Live,
                );
                mesh.handles
                    .extend(hearth_learning::serve(svc, bus.clone(), config).await?);
            }
            Part::Memory => {
                let started =
                    hearth_memory::run(config, bus.clone(), &config.data_dir().join("memory"))
                        .await;
                match started {
                    Ok(handles) => mesh.handles.extend(handles),
                    // Agents answer without memory; only memory commands
                    // and `hearth serve memory` need it.
                    Err(e) if parts.contains(&Part::Operative) => {
                        tracing::warn!(error = %e, "running without agent memory");
                    }
                    Err(e) => return Err(e).context("starting the memory service"),
                }
            }
            Part::Toolhost => {
                let builtins = builtins::servers(config, bus.clone())?;
                let (pool, handles) =
                    hearth_toolhost::run(config, bus.clone(), builtins, &config.data_dir())
                        .await
                        .context("starting the toolhost")?;
                mesh.pool = Some(pool);
                mesh.handles.extend(handles);
            }
            Part::Operative => {
                let r = hearth_operative::run(config, bus.clone())
                    .await
                    .context("starting an operative")?;
                mesh.intake.extend(r.intake);
                mesh.handles.extend(r.handles);
            }
            Part::Orchestrator => {
                let r = hearth_orchestrator::run(config, bus.clone())
                    .await
                    .context("starting the orchestrator")?;
                mesh.intake.extend(r.intake);
                mesh.handles.extend(r.handles);
            }
            Part::Gateway => {
                let r = hearth_gateway::run(config, bus.clone())
                    .await
                    .context("starting the gateway")?;
                mesh.gateway = Some(r.addr);
                mesh.gateway_grpc = r.grpc_addr;
                mesh.handles.extend(r.handles);
            }
        }
    }
    Ok(mesh)
}

/// What a task cost, as `hearth ask --json` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct UsageReport {
    /// Wall time from sending the task to its final event, in ms.
    pub latency_ms: f64,
    /// Time to the first token of the first model call, in ms.
    pub ttft_ms: f64,
    /// Prompt tokens, all model calls.
    pub tokens_in: u64,
    /// Of those, found in the engine's prompt cache (not computed again).
    pub tokens_cached: u64,
    /// Completion tokens, all model calls.
    pub tokens_out: u64,
    /// Completion tokens per second of wall time.
    pub tokens_per_s: Option<f64>,
    /// Model calls made.
    pub model_calls: u32,
    /// The model that answered.
    pub model: String,
    /// The backend that served it.
    pub backend: String,
    /// Estimated FLOPs (2 × parameters × tokens); null when the model's size is unknown.
    pub flops: Option<f64>,
    /// Energy in joules; null when no meter exists (never invented).
    pub energy_joules: Option<f64>,
    /// The meter it was read from (`nvml`, `rapl`); null when unmeasured.
    pub energy_meter: Option<String>,
    /// Cost in dollars (catalog price for a cloud model; measured energy ×
    /// the electricity price for a local one); null when unknown.
    pub cost_usd: Option<f64>,
    /// Why energy or cost is null, when it is.
    pub unmeasured: Option<String>,
}

impl UsageReport {
    /// One line for people: time, tokens, FLOPs, energy, dollars.
    pub fn summary(&self) -> String {
        let mut parts = vec![
            format!("{:.1} ms", self.latency_ms),
            format!(
                "{} tokens in ({} cached) / {} out",
                self.tokens_in, self.tokens_cached, self.tokens_out
            ),
            format!("{} model call(s)", self.model_calls),
            if self.model.is_empty() {
                "?".to_string()
            } else {
                self.model.clone()
            },
        ];
        if let Some(f) = self.flops {
            parts.push(format!("{f:.2e} FLOPs"));
        }
        parts.push(match (self.energy_joules, &self.energy_meter) {
            (Some(j), Some(m)) => format!("{j:.2} J ({m})"),
            _ => "energy unmeasured".to_string(),
        });
        parts.push(match self.cost_usd {
            Some(c) => format!("${c:.6}"),
            None => "cost unknown".to_string(),
        });
        let mut line = parts.join(" · ");
        if let Some(why) = &self.unmeasured {
            line.push_str(&format!(" ({why})"));
        }
        line
    }

    fn from_usage(u: &Usage, wall: Duration) -> Self {
        let latency_ms = wall.as_secs_f64() * 1e3;
        Self {
            latency_ms,
            ttft_ms: u.ttft_ms,
            tokens_in: u.tokens_in,
            tokens_cached: u.tokens_cached,
            tokens_out: u.tokens_out,
            tokens_per_s: (u.tokens_out > 0 && latency_ms > 0.0)
                .then(|| u.tokens_out as f64 / (latency_ms / 1e3)),
            model_calls: u.calls,
            model: u.model.clone(),
            backend: u.backend.clone(),
            flops: u.flops,
            energy_joules: u.energy_joules,
            energy_meter: (!u.energy_meter.is_empty()).then(|| u.energy_meter.clone()),
            cost_usd: u.cost_usd,
            unmeasured: (!u.unmeasured.is_empty()).then(|| u.unmeasured.clone()),
        }
    }
}

/// The outcome of `hearth ask`.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    /// The answer text (or why the task failed).
    pub answer: String,
    /// The task's id.
    pub task_id: String,
    /// Its final A2A state.
    pub state: String,
    /// What it cost.
    pub usage: UsageReport,
    /// Milliseconds from this process's start to the task being sent (the
    /// in-process mesh starting, the model loading); null when the caller
    /// did not mark the process start.
    pub startup_ms: Option<f64>,
    /// The OpenTelemetry trace id of the task (32 hex digits), when spans
    /// are exported (`OTEL_EXPORTER_OTLP_ENDPOINT` set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

static PROCESS_START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// Marks the process's start (the binary calls it first thing), so `hearth
/// ask` can report how long starting up took.
pub fn mark_process_start() {
    let _ = PROCESS_START.set(Instant::now());
}

/// Time since the process's start, if it was marked.
pub fn process_elapsed() -> Option<Duration> {
    PROCESS_START.get().map(Instant::elapsed)
}

impl Answer {
    /// Whether the task completed.
    pub fn completed(&self) -> bool {
        self.state == TaskState::Completed.as_str_name()
    }
}

/// Sends `question` to the orchestrator on `bus` and waits for the answer.
/// `progress` hears each status message along the way.
pub async fn ask(
    config: &Config,
    bus: SharedBus,
    question: &str,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<Answer> {
    let started = Instant::now();
    let startup_ms = PROCESS_START
        .get()
        .map(|t| started.duration_since(*t).as_secs_f64() * 1e3);
    let client = AgentClient::new(
        bus,
        config.subjects(),
        Service::Orchestrator,
        config.task_timeout(),
    );
    let req = SendTaskRequest {
        message: Some(text_message(Role::User, question, "", "")),
        ..Default::default()
    };
    // The task's root span: with OTEL_* set, the trace every service adds to.
    let span = tracing::info_span!("ask", otel.name = "hearth ask");
    let trace_id = hearth_mesh::telemetry::trace_id(&span);
    let done = client
        .run_to_end(&req, |ev| {
            if let Some(text) = ev.working {
                progress(text);
            }
        })
        .instrument(span)
        .await
        .map_err(|e| match e {
            RunError::NotTaken(s) => {
                anyhow::anyhow!("{}", s.message()).context("sending the task to the orchestrator")
            }
            RunError::Lost(s) => anyhow::anyhow!("{}", s.message()).context("waiting for the task"),
            RunError::Ended => {
                anyhow::anyhow!("the orchestrator's event stream ended before the task did")
            }
        })?;
    Ok(Answer {
        answer: done.answer(),
        task_id: done.task.id.clone(),
        state: done.state.as_str_name().to_string(),
        usage: UsageReport::from_usage(&done.usage.unwrap_or_default(), started.elapsed()),
        startup_ms,
        trace_id,
    })
}

/// This binary's path, for starting the built-in MCP servers.
pub fn current_exe() -> Result<PathBuf> {
    std::env::current_exe().context("finding the hearth binary's own path")
}
