//! The launcher: starts any part of the mesh, or all of it, on a bus —
//! each through its crate's `start` — and sends tasks to it. The `hearth`
//! binary is a CLI over this; the benchmarks (`hearth-bench`) start the
//! mesh the same way.
//!
//! With no NATS URL configured everything runs in one process on the
//! in-process bus; with one, each part joins the mesh on NATS.
//!
//! - [`start`]: parts on a bus, dependencies first; [`Mesh`] holds them
//!   and drains them.
//! - [`Session`]: the mesh a command talks to (the running one over NATS,
//!   or the parts it needs started here).
//! - [`ask`]: one task to its end, with what it cost.
//! - [`builtins`]: the built-in MCP tool servers and their options.

pub mod builtins;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hearth_mesh::a2a::{RunError, text_message};
use hearth_mesh::clients::AgentClient;
use hearth_mesh::running::Running;
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
    /// Its service on the bus (the role it answers health under).
    pub fn service(self) -> Service {
        match self {
            Part::Engine => Service::Engine,
            Part::Toolhost => Service::Toolhost,
            Part::Orchestrator => Service::Orchestrator,
            Part::Operative => Service::Operative,
            Part::Gateway => Service::Gateway,
            Part::Memory => Service::Memory,
            Part::Learning => Service::Learning,
        }
    }

    /// What a task needs, in start-up order: every part but the gateway
    /// (what `hearth ask` and `hearth eval` start when embedded).
    pub const TASK: [Part; 6] = [
        Part::Engine,
        Part::Learning,
        Part::Memory,
        Part::Toolhost,
        Part::Operative,
        Part::Orchestrator,
    ];

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
            NatsBus::connect_with(url, &config.bus)
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
    /// Each part, as it started.
    running: Vec<Running>,
    /// Loops this process serves beside the parts (a metrics listener).
    extra: Vec<JoinHandle<()>>,
}

impl Mesh {
    /// The serving loops, for a caller that serves more beside them.
    pub fn handles_mut(&mut self) -> &mut Vec<JoinHandle<()>> {
        &mut self.extra
    }

    /// The parts running here.
    pub fn running(&self) -> &[Running] {
        &self.running
    }

    /// Drains: stops taking new tasks (over NATS a queue peer gets them),
    /// then waits up to `deadline` for the requests this process has
    /// already taken — the tasks it runs and the model and tool calls they
    /// make here — to finish. True when nothing was left in flight.
    pub async fn drain(&mut self, deadline: Duration) -> bool {
        hearth_mesh::running::drain(&mut self.running, deadline).await
    }

    /// Stops every part (its loops, its MCP servers).
    pub async fn shutdown(self) {
        hearth_mesh::running::stop_loops(self.extra).await;
        // The last started first: the front door before what it calls.
        for r in self.running.into_iter().rev() {
            r.shutdown().await;
        }
    }
}

/// The mesh a command talks to: over NATS the one already running (nothing
/// starts here); embedded, the `parts` it needs, started in this process.
/// The one start-up preamble of every command that calls the mesh.
pub struct Session {
    /// Where to call it.
    pub bus: SharedBus,
    mesh: Option<Mesh>,
}

impl Session {
    /// Joins the configured mesh, or starts `parts` here when none is.
    pub async fn open(config: &Config, parts: &[Part]) -> Result<Self> {
        let bus = connect_bus(config).await?;
        let mesh = match config.nats_url {
            None => Some(start(config, bus.clone(), parts).await?),
            Some(_) => None,
        };
        Ok(Self { bus, mesh })
    }

    /// Whether the parts run in this process.
    pub fn embedded(&self) -> bool {
        self.mesh.is_some()
    }

    /// Stops what was started here.
    pub async fn close(self) {
        if let Some(m) = self.mesh {
            m.shutdown().await;
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

/// Starts `parts` on `bus`, dependencies first, each through its crate's
/// `start` (configuration and bus in, a [`Running`] out).
pub async fn start(config: &Config, bus: SharedBus, parts: &[Part]) -> Result<Mesh> {
    let mut mesh = Mesh {
        bus: bus.clone(),
        gateway: None,
        gateway_grpc: None,
        running: Vec::new(),
        extra: Vec::new(),
    };
    for part in Part::ALL.iter().filter(|p| parts.contains(p)) {
        let running = match part {
            Part::Engine => hearth_engine::start(config, bus.clone())
                .await
                .context("starting the engine")?,
            Part::Learning => hearth_learning::start(config, bus.clone())
                .await
                .context("starting the learning service")?,
            Part::Memory => {
                let started =
                    hearth_memory::start(config, bus.clone(), &config.data_dir().join("memory"))
                        .await;
                match started {
                    Ok(r) => r,
                    // Agents answer without memory; only memory commands
                    // and `hearth serve memory` need it.
                    Err(e) if parts.contains(&Part::Operative) => {
                        tracing::warn!(error = %e, "running without agent memory");
                        continue;
                    }
                    Err(e) => return Err(e).context("starting the memory service"),
                }
            }
            Part::Toolhost => hearth_toolhost::start(
                config,
                bus.clone(),
                builtins::servers(config, bus.clone())?,
                builtins::checks(config),
            )
            .await
            .context("starting the toolhost")?,
            Part::Operative => hearth_operative::start(config, bus.clone())
                .await
                .context("starting an operative")?,
            Part::Orchestrator => hearth_orchestrator::start(config, bus.clone())
                .await
                .context("starting the orchestrator")?,
            Part::Gateway => {
                let r = hearth_gateway::start(config, bus.clone())
                    .await
                    .context("starting the gateway")?;
                mesh.gateway = r.listeners.get("http").copied();
                mesh.gateway_grpc = r.listeners.get("grpc").copied();
                r
            }
        };
        let mut running = running;
        // Over NATS, each service says it is alive (`hearth status` lists
        // every instance on every machine from these beats).
        if let Some(client) = bus.nats() {
            let instance = if running.worker.is_empty() {
                format!("{}-{}", hearth_mesh::heartbeat::host(), std::process::id())
            } else {
                running.worker.clone()
            };
            running.handles.push(hearth_mesh::heartbeat::start(
                client.clone(),
                &config.subjects(),
                running.service,
                instance,
                config.bus.replicas,
            ));
        }
        mesh.running.push(running);
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
    /// Which backend of the routing served the model calls, and why
    /// (`local: policy`, `cloud: policy; local: budget`).
    pub route: String,
    /// The task was served as sensitive: nothing of it left the machine.
    pub sensitive: bool,
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
        if !self.route.is_empty() && self.route != "local: policy" {
            parts.push(format!("route {}", self.route));
        }
        if self.sensitive {
            parts.push("sensitive: kept local".to_string());
        }
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
            backend: u.backend().name().to_string(),
            flops: u.flops,
            energy_joules: u.energy_joules,
            energy_meter: (u.energy_meter() != hearth_proto::v1::EnergyMeter::Unspecified)
                .then(|| u.energy_meter().name().to_string()),
            cost_usd: u.cost_usd,
            unmeasured: (!u.unmeasured.is_empty()).then(|| u.unmeasured.clone()),
            route: u.route.clone(),
            sensitive: u.sensitive,
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
    Door::open(config, bus)
        .await
        .run(&new_task(question), progress)
        .await
}

/// Sends a prepared task (a [`new_task`], marked sensitive, say) and waits
/// for the answer.
pub async fn ask_task(
    config: &Config,
    bus: SharedBus,
    task: &SendTaskRequest,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<Answer> {
    Door::open(config, bus).await.run(task, progress).await
}

/// Marks a task sensitive: its model calls, and its subtasks', are served
/// only by local backends, and its work is not handed to remote agents.
pub fn mark_sensitive(task: &mut SendTaskRequest) {
    if let Some(m) = task.message.as_mut() {
        hearth_mesh::a2a::set_meta(
            m,
            hearth_mesh::a2a::META_SENSITIVE,
            hearth_proto::prost_types::value::Kind::BoolValue(true),
        );
    }
}

/// A task for the orchestrator: `question`, with a new id.
pub fn new_task(question: &str) -> SendTaskRequest {
    SendTaskRequest {
        message: Some(text_message(Role::User, question, "", "")),
        task_id: uuid::Uuid::now_v7().to_string(),
        ..Default::default()
    }
}

/// How this client's tasks reach the orchestrator: over NATS with `[work]
/// durable` (the default), through the orchestrator's work queue, where a
/// task outlives the orchestrator that holds it and this client can
/// reattach to it by id; otherwise by a request to the orchestrators'
/// queue group (in process, `durable = false`, or a mesh whose queue no
/// service has laid out).
#[derive(Clone)]
pub struct Door {
    client: AgentClient,
    queue: Option<hearth_mesh::work::WorkQueue>,
    between: Duration,
}

impl Door {
    /// The door to the orchestrator of `config`'s mesh on `bus`.
    pub async fn open(config: &Config, bus: SharedBus) -> Self {
        let queue = match bus.nats() {
            Some(nats) if config.work.durable => {
                match hearth_mesh::work::WorkQueue::attach(
                    nats.clone(),
                    &config.subjects(),
                    hearth_mesh::work::WorkSettings::from_config(config),
                )
                .await
                {
                    Ok(q) => Some(q),
                    Err(e) => {
                        tracing::info!(error = %e, "no durable work queue on this mesh: sending by request");
                        None
                    }
                }
            }
            _ => None,
        };
        Self {
            client: AgentClient::new(
                bus,
                config.subjects(),
                Service::Orchestrator,
                config.task_timeout(),
            ),
            queue,
            between: config.task_timeout(),
        }
    }

    /// The door through `queue` (attached already) on `bus`.
    pub fn from_queue(
        config: &Config,
        bus: SharedBus,
        queue: hearth_mesh::work::WorkQueue,
    ) -> Self {
        Self {
            client: AgentClient::new(
                bus,
                config.subjects(),
                Service::Orchestrator,
                config.task_timeout(),
            ),
            queue: Some(queue),
            between: config.task_timeout(),
        }
    }

    /// Reattaches to the task `task_id` sent earlier (by anyone) and waits
    /// for its answer: its events are read from the first.
    pub async fn reattach(&self, task_id: &str) -> Result<Answer> {
        let Some(queue) = &self.queue else {
            anyhow::bail!("tasks are kept only by the durable mesh over NATS");
        };
        if !queue.kept(task_id).await? {
            anyhow::bail!("no task {task_id} is kept (`hearth tasks list` shows those that are)");
        }
        let started = Instant::now();
        let submitted = queue.reattach(Service::Orchestrator, task_id).await?;
        let done = hearth_mesh::a2a::follow_to_end(submitted.events(self.between), |_| {})
            .await
            .map_err(|e| anyhow::anyhow!("{e}").context("waiting for the task"))?;
        Ok(Answer {
            answer: done.answer(),
            task_id: done.task.id.clone(),
            state: done.state.as_str_name().to_string(),
            usage: UsageReport::from_usage(&done.usage.unwrap_or_default(), started.elapsed()),
            startup_ms: None,
            trace_id: None,
        })
    }

    /// The work queue behind it, when tasks go through one.
    pub fn queue(&self) -> Option<&hearth_mesh::work::WorkQueue> {
        self.queue.as_ref()
    }

    /// Runs `req` (its `task_id` set: through the queue, a task already
    /// under way with that id is followed, not sent again) to its end.
    pub async fn run(
        &self,
        req: &SendTaskRequest,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<Answer> {
        let started = Instant::now();
        let startup_ms = PROCESS_START
            .get()
            .map(|t| started.duration_since(*t).as_secs_f64() * 1e3);
        // The task's root span: with OTEL_* set, the trace every service adds to.
        let span = tracing::info_span!("ask", otel.name = "hearth ask", task_id = %req.task_id);
        let trace_id = hearth_mesh::telemetry::trace_id(&span);
        let on_event = |ev: hearth_mesh::a2a::Event<'_>| {
            if let Some(text) = ev.working {
                progress(text);
            }
        };
        let done = match &self.queue {
            Some(queue) => {
                let mut headers = hearth_mesh::Headers::new();
                hearth_mesh::telemetry::inject(&span, &mut headers);
                async {
                    // A task given a timeout must have ended by then,
                    // wherever it runs.
                    let deadline = (req.timeout_ms > 0).then(|| {
                        std::time::SystemTime::now()
                            + Duration::from_millis(u64::from(req.timeout_ms))
                    });
                    let submitted = queue
                        .submit_until(Service::Orchestrator, req.clone(), &headers, deadline)
                        .await
                        .map_err(|e| {
                            RunError::NotTaken(tonic::Status::unavailable(e.to_string()))
                        })?;
                    hearth_mesh::a2a::follow_to_end(submitted.events(self.between), on_event).await
                }
                .instrument(span)
                .await
            }
            None => self.client.run_to_end(req, on_event).instrument(span).await,
        }
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
}

/// This binary's path, for starting the built-in MCP servers.
pub fn current_exe() -> Result<PathBuf> {
    std::env::current_exe().context("finding the hearth binary's own path")
}
