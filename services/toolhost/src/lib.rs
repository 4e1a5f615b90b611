//! The toolhost: an MCP client pool (rmcp) that reaches the built-in tool
//! servers (in this process) and the configured third-party ones (stdio or
//! streamable HTTP), publishes their tools on the bus as `server.tool`, and
//! runs calls.
//!
//! Every call is checked here, whoever makes it: the calling agent's spec
//! must allow the tool; a tool whose definition changed since it was
//! approved is held ([`approvals`]); the arguments must be a JSON object of
//! bounded size. Every call is written to the audit log ([`audit`]). A tool
//! that runs and fails (a malformed expression, say) is a normal reply with
//! `is_error` set, so the agent can read why; one that cannot run is a typed
//! error (not found, permission denied, unavailable, deadline exceeded).

pub mod approvals;
pub mod audit;
pub mod once;
mod pool;

pub use pool::{
    CallResult, ClientEnd, Endpoint, InProcessFactory, MAX_DESCRIPTION_CHARS, MAX_OUTPUT_BYTES,
    McpPool, PoolError, ServerEnd, ServerSpec, in_process_pair,
};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hearth_mesh::config::McpServer;
use hearth_mesh::rpc::ServeAt;
use hearth_mesh::running::{Checks, Running, check};
use hearth_mesh::subjects::{Service, Subjects};
use hearth_mesh::telemetry::annotate;
use hearth_mesh::{BusError, Config, SharedBus};
use hearth_proto::v1::toolhost_server::Toolhost;
use hearth_proto::v1::{
    ApproveToolsRequest, ApproveToolsResponse, CallToolRequest, CallToolResponse, CheckOutcome,
    HealthCheck, ListToolsRequest, ListToolsResponse, ServerState, ToolStatus,
};
use hearth_specs::Specs;
use tonic::{Request, Response, Status};

use crate::approvals::Approvals;
use crate::audit::{AuditLog, Outcome, Record};
use crate::once::{Answered, Once};

/// The toolhost service.
#[derive(Clone)]
pub struct ToolhostService {
    pool: Arc<McpPool>,
    specs: Arc<Specs>,
    audit: AuditLog,
    /// Over NATS, where a task's cancel is heard (`work.cancel.<task>`):
    /// a call of a canceled task is canceled at its server.
    cancels: Option<(async_nats::Client, Subjects)>,
    /// Calls with an idempotency key, run at most once each.
    once: Arc<Once>,
}

impl ToolhostService {
    /// A service over `pool`, enforcing `specs`' tool permissions and
    /// recording calls in `audit`.
    pub fn new(pool: Arc<McpPool>, specs: Specs, audit: AuditLog) -> Self {
        Self {
            pool,
            specs: Arc::new(specs),
            audit,
            cancels: None,
            once: Arc::new(Once::new(Duration::from_secs(24 * 3600))),
        }
    }

    /// Keeps the answers of keyed calls for `keep` (the step log's
    /// lifetime: a step is not replayed after it).
    pub fn keeping_answers_for(mut self, keep: Duration) -> Self {
        self.once = Arc::new(Once::new(keep));
        self
    }

    /// Hears tasks' cancels on `client`, under `subjects`.
    pub fn with_cancels(mut self, client: async_nats::Client, subjects: Subjects) -> Self {
        self.cancels = Some((client, subjects));
        self
    }

    /// Waits until the task `task_id` is canceled (forever when nothing
    /// can say so); returns why.
    async fn canceled(&self, task_id: &str) -> String {
        let sub = match &self.cancels {
            Some((client, subjects)) if !task_id.is_empty() => client
                .subscribe(subjects.work_cancel(&hearth_mesh::work::token(task_id)))
                .await
                .ok(),
            _ => None,
        };
        match sub {
            Some(mut sub) => match sub.next().await {
                Some(msg) => String::from_utf8_lossy(&msg.payload).into_owned(),
                None => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }

    /// Runs one call: permission, the task's deadline and cancel, the
    /// audit record.
    async fn run_call(&self, req: &CallToolRequest) -> Result<CallToolResponse, Status> {
        let started = Instant::now();
        let record = |outcome, detail: Option<String>| {
            Record::new(
                &req.agent,
                &req.task_id,
                &req.name,
                &req.arguments_json,
                outcome,
                detail,
                started.elapsed().as_secs_f64() * 1e3,
            )
        };
        if let Err(s) = self.permit(&req.agent, &req.name) {
            hearth_mesh::metrics::tool_call(&req.name, "refused");
            self.audit
                .record(record(Outcome::Refused, Some(s.message().to_string())));
            return Err(s);
        }
        let span = tracing::Span::current();
        annotate(&span, "hearth.tool", req.name.clone());
        annotate(&span, "hearth.agent", req.agent.clone());
        annotate(&span, "hearth.task_id", req.task_id.clone());
        // The calling task's deadline bounds the call.
        let limit = u64::try_from(req.deadline_unix_ms)
            .ok()
            .filter(|ms| *ms > 0)
            .map(|ms| {
                (std::time::UNIX_EPOCH + Duration::from_millis(ms))
                    .duration_since(std::time::SystemTime::now())
                    .unwrap_or_default()
            });
        if limit.is_some_and(|l| l.is_zero()) {
            let why = "the calling task's deadline has passed".to_string();
            self.audit
                .record(record(Outcome::Refused, Some(why.clone())));
            return Err(Status::deadline_exceeded(why));
        }
        let call = self.pool.call_within(&req.name, &req.arguments_json, limit);
        let result = tokio::select! {
            r = call => r,
            why = self.canceled(&req.task_id) => {
                // Dropping the call cancels it at the server.
                hearth_mesh::metrics::tool_call(&req.name, "canceled");
                let why = format!("the task was canceled: {why}");
                tracing::info!(tool = %req.name, task_id = %req.task_id, "{why}");
                self.audit.record(record(Outcome::Canceled, Some(why.clone())));
                return Err(Status::cancelled(why));
            }
        };
        let outcome = match &result {
            Ok(r) if r.is_error => "tool_error",
            Ok(_) => "ok",
            Err(_) => "failed",
        };
        annotate(&span, "hearth.tool.outcome", outcome);
        hearth_mesh::metrics::tool_call(&req.name, outcome);
        let ms = started.elapsed().as_secs_f64() * 1e3;
        match result {
            Ok(r) => {
                self.audit.record(record(
                    if r.is_error {
                        Outcome::ToolError
                    } else {
                        Outcome::Ok
                    },
                    None,
                ));
                let (content, is_error) = r.into_parts();
                Ok(CallToolResponse {
                    content,
                    is_error,
                    duration_ms: ms,
                })
            }
            Err(e) => {
                let outcome = match e {
                    PoolError::UnknownTool { .. }
                    | PoolError::Held { .. }
                    | PoolError::BadArguments { .. }
                    | PoolError::Config { .. } => Outcome::Refused,
                    _ => Outcome::Failed,
                };
                self.audit.record(record(outcome, Some(e.to_string())));
                Err(e.into())
            }
        }
    }

    /// Whether `agent` may call `tool`; an empty agent is a person calling
    /// directly (`hearth tools call`), which the local user may.
    fn permit(&self, agent: &str, tool: &str) -> Result<(), Status> {
        if agent.is_empty() {
            return Ok(());
        }
        let spec = self.specs.get(agent).map_err(|_| {
            Status::permission_denied(format!("unknown agent `{agent}` may call no tools"))
        })?;
        if spec.allows_tool(tool) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "agent `{agent}` may not call `{tool}` (its spec allows: {})",
                if spec.tools.is_empty() {
                    "no tools".to_string()
                } else {
                    spec.tools.join(", ")
                }
            )))
        }
    }
}

#[tonic::async_trait]
impl Toolhost for ToolhostService {
    async fn list_tools(
        &self,
        request: Request<ListToolsRequest>,
    ) -> Result<Response<ListToolsResponse>, Status> {
        let agent = request.into_inner().agent;
        let tools = if agent.is_empty() {
            self.pool.tools(true)
        } else {
            self.pool
                .tools(false)
                .into_iter()
                .filter(|t| self.permit(&agent, &t.name).is_ok())
                .collect()
        };
        Ok(Response::new(ListToolsResponse {
            tools,
            servers: self.pool.status().await,
        }))
    }

    async fn call_tool(
        &self,
        request: Request<CallToolRequest>,
    ) -> Result<Response<CallToolResponse>, Status> {
        let req = request.into_inner();
        if req.idempotency_key.is_empty() {
            return self.run_call(&req).await.map(Response::new);
        }
        let call = format!(
            "{}\0{}\0{}\0{}",
            req.agent, req.task_id, req.name, req.arguments_json
        );
        let (answer, how) = self
            .once
            .call(&req.idempotency_key, call, || self.run_call(&req))
            .await?;
        if how == Answered::Replayed {
            hearth_mesh::metrics::tool_call(&req.name, "replayed");
            self.audit.record(Record::new(
                &req.agent,
                &req.task_id,
                &req.name,
                &req.arguments_json,
                Outcome::Replayed,
                Some(format!("idempotency key {}", req.idempotency_key)),
                0.0,
            ));
            tracing::info!(
                tool = %req.name,
                task_id = %req.task_id,
                key = %req.idempotency_key,
                "a step asked again: answered from its first call, the tool not run again"
            );
        }
        Ok(Response::new(answer))
    }

    async fn approve_tools(
        &self,
        request: Request<ApproveToolsRequest>,
    ) -> Result<Response<ApproveToolsResponse>, Status> {
        let approved = self.pool.approve(&request.get_ref().name)?;
        Ok(Response::new(ApproveToolsResponse { approved }))
    }
}

/// The configured third-party servers (`[[mcp.servers]]`) as pool entries.
pub fn configured_servers(config: &Config) -> Result<Vec<ServerSpec>, PoolError> {
    config.mcp.servers.iter().map(server_spec).collect()
}

fn server_spec(s: &McpServer) -> Result<ServerSpec, PoolError> {
    let endpoint = match (&s.url, s.command.is_empty()) {
        (Some(url), true) => Endpoint::Http {
            url: url.clone(),
            headers: s.headers.clone(),
            token: (!s.token.is_empty()).then(|| s.token.expose().to_string()),
        },
        (None, false) => Endpoint::Stdio {
            command: s.command.clone(),
            args: s.args.clone(),
            env: s.env.clone(),
        },
        (Some(_), false) => {
            return Err(PoolError::Config {
                server: s.name.clone(),
                reason: "give either `command` (stdio) or `url` (streamable HTTP), not both".into(),
            });
        }
        (None, true) => {
            return Err(PoolError::Config {
                server: s.name.clone(),
                reason: "give `command` (stdio) or `url` (streamable HTTP)".into(),
            });
        }
    };
    Ok(ServerSpec {
        name: s.name.clone(),
        endpoint,
        allow: s.allow.clone(),
        deny: s.deny.clone(),
        timeout: s.timeout_ms.map(Duration::from_millis),
        shipped: false,
    })
}

/// Where approvals are kept: configured, else the data dir's.
pub fn approvals_path(config: &Config, data_dir: &std::path::Path) -> PathBuf {
    config
        .toolhost
        .approvals
        .clone()
        .unwrap_or_else(|| data_dir.join("tool-approvals.json"))
}

/// Where the audit log goes: configured, else the data dir's.
pub fn audit_path(config: &Config, data_dir: &std::path::Path) -> PathBuf {
    config
        .toolhost
        .audit_log
        .clone()
        .unwrap_or_else(|| data_dir.join("audit").join("tool-calls.jsonl"))
}

/// What the running toolhost says of itself: each MCP server's state and
/// tools, held tools, and whatever its built-in servers add (the sandbox's
/// interpreter, say).
struct ToolhostChecks {
    pool: Arc<McpPool>,
    extra: Vec<Arc<dyn Checks>>,
}

#[async_trait::async_trait]
impl Checks for ToolhostChecks {
    async fn checks(&self) -> Vec<HealthCheck> {
        let tools = self.pool.tools(true);
        let mut out = Vec::new();
        for s in self.pool.status().await {
            let name = format!("MCP server {}", s.name);
            let ready = tools
                .iter()
                .filter(|t| t.server == s.name && t.status() == ToolStatus::Ready)
                .count();
            let held: Vec<&str> = tools
                .iter()
                .filter(|t| t.server == s.name && t.status() != ToolStatus::Ready)
                .map(|t| t.name.as_str())
                .collect();
            out.push(match s.state() {
                ServerState::Up if held.is_empty() => check(
                    name,
                    CheckOutcome::Ok,
                    format!("{} · {ready} tool(s)", s.transport()),
                    None,
                ),
                ServerState::Up => check(
                    name,
                    CheckOutcome::Warn,
                    format!("{} · {ready} tool(s); held: {}", s.transport(), held.join(", ")),
                    Some(format!("review, then hearth tools approve {}", s.name)),
                ),
                ServerState::Restarting => check(
                    name,
                    CheckOutcome::Warn,
                    format!("restarting: {}", s.detail),
                    None,
                ),
                state => check(
                    name,
                    CheckOutcome::Fail,
                    format!("{state}: {}", s.detail),
                    Some(
                        "check that the server starts on its own, and its [[mcp.servers]] entry in hearth.toml"
                            .into(),
                    ),
                ),
            });
        }
        for e in &self.extra {
            out.extend(e.checks().await);
        }
        out
    }
}

/// Starts the pool over `builtins` and the configured servers, and serves
/// the toolhost on the bus, as every service starts; `extra` adds the
/// built-in servers' own checks to its health. Its MCP servers stop with it.
pub async fn start(
    config: &Config,
    bus: SharedBus,
    builtins: Vec<ServerSpec>,
    extra: Vec<Arc<dyn Checks>>,
) -> Result<Running, ToolhostError> {
    let data_dir = &config.data_dir();
    let mut servers = builtins;
    servers.extend(configured_servers(config)?);
    let approvals = Arc::new(Approvals::load(Some(approvals_path(config, data_dir))));
    let pool = Arc::new(
        McpPool::start(
            servers,
            approvals,
            Duration::from_millis(config.toolhost.call_timeout_ms),
        )
        .await?,
    );
    let specs = Specs::load(config.agents.dir.as_deref())?;
    let mut svc = ToolhostService::new(
        pool.clone(),
        specs,
        AuditLog::open(Some(audit_path(config, data_dir))),
    )
    .keeping_answers_for(Duration::from_secs(
        config.work.step_log_hours.max(1) * 3600,
    ));
    let subjects = config.subjects();
    if let Some(client) = bus.nats() {
        svc = svc.with_cancels(client.clone(), subjects.clone());
    }
    let at = ServeAt::role(bus.clone(), subjects.clone(), Service::Toolhost);
    let handles = hearth_mesh::bindings::toolhost_bus::serve(Arc::new(svc), &at).await?;
    tracing::info!(tools = pool.tools(false).len(), "toolhost ready");
    let checks = Arc::new(ToolhostChecks {
        pool: pool.clone(),
        extra,
    });
    Ok(Running::new(Service::Toolhost)
        .handles(handles)
        .on_stop(async move { pool.shutdown().await })
        .with_health(bus, &subjects, checks)
        .await?)
}

/// Why the toolhost could not start.
#[derive(Debug, thiserror::Error)]
pub enum ToolhostError {
    /// The pool's configuration is unusable.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// Agent specs (for permissions) could not be loaded.
    #[error(transparent)]
    Spec(#[from] hearth_specs::SpecError),
    /// It could not subscribe on the bus.
    #[error(transparent)]
    Bus(#[from] BusError),
}
