//! The MCP client pool: one rmcp client per server — a child process over
//! stdio, a URL over streamable HTTP, or a built-in server in this process —
//! with their tools, kept current and checked.
//!
//! - Tools are listed at connection and again on `tools/list_changed`; each
//!   listing goes through the allow/deny lists, the description and schema
//!   caps, and the approvals book ([`crate::approvals`]) — a tool whose
//!   definition changed since it was approved is held, not offered (servers
//!   that ship inside the binary are not pinned: they change only with it).
//! - A server that is down (never started, crashed, closed) is started again
//!   on the next call, with exponential backoff between attempts; until then
//!   its calls get a clear `Unavailable` error saying when it retries.
//! - Every call has a deadline; a server that hangs costs its caller that
//!   long and no more.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use hearth_proto::v1::{ServerStatus, Tool, ToolStatus, Transport};
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, ClientJsonRpcMessage, Implementation,
    ProtocolVersion, ServerJsonRpcMessage,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{ConfigureCommandExt, StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::approvals::{Approvals, Hold};

/// Longest tool description kept; definitions are untrusted input.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;
/// Largest input schema accepted, in bytes of JSON.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;
/// Longest tool output returned, in bytes.
pub const MAX_OUTPUT_BYTES: usize = 256 * 1024;
/// Largest arguments sent, in bytes of JSON.
pub const MAX_ARGUMENT_BYTES: usize = 256 * 1024;
/// How long a server may take to start and answer `initialize`.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// First wait before restarting a failed server; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between restarts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The server's end of an in-process connection: typed MCP messages over
/// channels, nothing serialized (rmcp serves any sink and stream of them).
pub type ServerEnd = (
    futures::channel::mpsc::Sender<ServerJsonRpcMessage>,
    futures::channel::mpsc::Receiver<ClientJsonRpcMessage>,
);

/// The client's end of an in-process connection.
pub type ClientEnd = (
    futures::channel::mpsc::Sender<ClientJsonRpcMessage>,
    futures::channel::mpsc::Receiver<ServerJsonRpcMessage>,
);

/// A connected pair of in-process ends.
pub fn in_process_pair() -> (ServerEnd, ClientEnd) {
    let (to_server, from_client) = futures::channel::mpsc::channel(64);
    let (to_client, from_server) = futures::channel::mpsc::channel(64);
    ((to_client, from_client), (to_server, from_server))
}

/// Starts a built-in server on the server end of an in-process connection.
pub type InProcessFactory = Arc<dyn Fn(ServerEnd) + Send + Sync>;

/// How to reach a server.
#[derive(Clone)]
pub enum Endpoint {
    /// A program spoken to over its stdin and stdout.
    Stdio {
        /// The program.
        command: String,
        /// Its arguments.
        args: Vec<String>,
        /// Extra environment.
        env: BTreeMap<String, String>,
    },
    /// A streamable-HTTP URL.
    Http {
        /// The endpoint.
        url: String,
        /// Extra headers.
        headers: BTreeMap<String, String>,
        /// A bearer token (never logged).
        token: Option<String>,
    },
    /// A server in this process, over an in-memory pipe.
    InProcess(InProcessFactory),
}

impl Endpoint {
    fn transport(&self) -> Transport {
        match self {
            Endpoint::Stdio { .. } => Transport::Stdio,
            Endpoint::Http { .. } => Transport::Http,
            Endpoint::InProcess(_) => Transport::InProcess,
        }
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Stdio { command, args, .. } => {
                write!(f, "stdio `{command} {}`", args.join(" "))
            }
            Endpoint::Http { url, .. } => write!(f, "http {url}"),
            Endpoint::InProcess(_) => f.write_str("in-process"),
        }
    }
}

/// One server of the pool.
#[derive(Clone, Debug)]
pub struct ServerSpec {
    /// Its name: its tools are `<name>.<tool>` on the bus.
    pub name: String,
    /// How to reach it.
    pub endpoint: Endpoint,
    /// Only these tools (their own names; empty: all).
    pub allow: Vec<String>,
    /// Never these tools.
    pub deny: Vec<String>,
    /// Deadline for one call (default: the toolhost's).
    pub timeout: Option<Duration>,
    /// Ships inside this binary (a built-in tool server): its definitions
    /// change only when Hearth itself is upgraded, so they are not pinned
    /// by approvals (which guard third-party servers).
    pub shipped: bool,
}

impl ServerSpec {
    /// A server with no tool filters and the default deadline.
    pub fn new(name: impl Into<String>, endpoint: Endpoint) -> Self {
        Self {
            name: name.into(),
            endpoint,
            allow: Vec::new(),
            deny: Vec::new(),
            timeout: None,
            shipped: false,
        }
    }

    /// A built-in server that ships inside this binary (see
    /// [`ServerSpec::shipped`]).
    pub fn built_in(name: impl Into<String>, endpoint: Endpoint) -> Self {
        Self {
            shipped: true,
            ..Self::new(name, endpoint)
        }
    }

    fn offers(&self, tool: &str) -> bool {
        (self.allow.is_empty() || self.allow.iter().any(|a| a == tool))
            && !self.deny.iter().any(|d| d == tool)
    }
}

/// What went wrong with a server or a call.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The configuration is unusable.
    #[error("MCP server `{server}` is misconfigured: {reason}")]
    Config {
        /// Its name.
        server: String,
        /// Why.
        reason: String,
    },
    /// No such tool.
    #[error("unknown tool `{name}`; the tools are: {known}")]
    UnknownTool {
        /// The name asked for.
        name: String,
        /// The names there are.
        known: String,
    },
    /// The tool is held until re-approved.
    #[error("tool `{name}` is {reason}")]
    Held {
        /// The tool.
        name: String,
        /// Why (with the command that approves it).
        reason: String,
    },
    /// The arguments are not a JSON object, or too large.
    #[error("arguments for `{name}` are refused: {reason}")]
    BadArguments {
        /// The tool.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The server is not running and could not be (re)started.
    #[error("MCP server `{server}` is not running: {reason}")]
    Dead {
        /// Its name.
        server: String,
        /// Why.
        reason: String,
    },
    /// The call took too long.
    #[error("tool `{name}` did not answer within {timeout:?}")]
    Timeout {
        /// The tool.
        name: String,
        /// The deadline.
        timeout: Duration,
    },
    /// The server answered the call with a protocol error.
    #[error("tool `{name}` failed: {reason}")]
    Protocol {
        /// The tool.
        name: String,
        /// The server's error.
        reason: String,
    },
}

impl From<PoolError> for tonic::Status {
    fn from(e: PoolError) -> Self {
        use tonic::Code;
        let code = match &e {
            PoolError::Config { .. } => Code::FailedPrecondition,
            PoolError::Dead { .. } => Code::Unavailable,
            PoolError::UnknownTool { .. } => Code::NotFound,
            PoolError::Held { .. } => Code::PermissionDenied,
            PoolError::BadArguments { .. } => Code::InvalidArgument,
            PoolError::Timeout { .. } => Code::DeadlineExceeded,
            PoolError::Protocol { .. } => Code::Internal,
        };
        tonic::Status::new(code, e.to_string())
    }
}

/// A tool call's result.
#[derive(Debug, Clone)]
pub struct CallResult {
    /// Text content, joined.
    pub content: String,
    /// The tool reported an error.
    pub is_error: bool,
}

impl CallResult {
    /// `(content, is_error)`.
    pub fn into_parts(self) -> (String, bool) {
        (self.content, self.is_error)
    }
}

/// The client side of one connection: follows `tools/list_changed`.
#[derive(Clone)]
struct Watcher {
    server: Weak<Server>,
}

impl ClientHandler for Watcher {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("hearth-toolhost", env!("CARGO_PKG_VERSION")),
        )
        // A handshake-era version, so list_changed arrives on the session.
        .with_protocol_version(ProtocolVersion::V_2025_11_25)
    }

    async fn on_tool_list_changed(&self, context: NotificationContext<RoleClient>) {
        let Some(server) = self.server.upgrade() else {
            return;
        };
        match tokio::time::timeout(START_TIMEOUT, context.peer.list_all_tools()).await {
            Ok(Ok(tools)) => {
                tracing::info!(server = %server.spec.name, "tool list changed");
                server.set_listing(tools);
            }
            Ok(Err(e)) => {
                tracing::warn!(server = %server.spec.name, error = %e, "re-listing tools failed")
            }
            Err(_) => tracing::warn!(server = %server.spec.name, "re-listing tools timed out"),
        }
    }
}

type Client = RunningService<RoleClient, Watcher>;

#[derive(Default)]
struct Conn {
    client: Option<Client>,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<String>,
}

pub use hearth_proto::v1::ServerState;

#[derive(Default)]
struct Listing {
    /// The raw definitions the server last listed (after allow/deny).
    raw: Vec<rmcp::model::Tool>,
    /// Offered tools, by their own name, as the bus shows them.
    tools: Vec<(String, Tool)>,
    /// Held tools (by their own name) and why.
    held: BTreeMap<String, Hold>,
}

struct Server {
    spec: ServerSpec,
    approvals: Arc<Approvals>,
    conn: Mutex<Conn>,
    listing: RwLock<Listing>,
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        s.truncate(s.floor_char_boundary(max));
        s.push_str(" …[truncated]");
    }
    s
}

impl Server {
    fn read_listing(&self) -> std::sync::RwLockReadGuard<'_, Listing> {
        hearth_mesh::sync::read(&self.listing)
    }

    /// Takes a new listing through the filters, caps and approvals.
    fn set_listing(&self, listed: Vec<rmcp::model::Tool>) {
        let name = &self.spec.name;
        let mut raw = Vec::new();
        let mut tools = Vec::new();
        let mut held = BTreeMap::new();
        for t in listed {
            if !self.spec.offers(&t.name) {
                continue;
            }
            let schema = Value::Object((*t.input_schema).clone()).to_string();
            let bus_name = format!("{name}.{}", t.name);
            if schema.len() > MAX_SCHEMA_BYTES {
                held.insert(
                    t.name.to_string(),
                    Hold::SchemaTooLarge {
                        bytes: schema.len(),
                        limit: MAX_SCHEMA_BYTES,
                    },
                );
                continue;
            }
            let description: String = t
                .description
                .as_deref()
                .unwrap_or_default()
                .chars()
                .take(MAX_DESCRIPTION_CHARS)
                .collect();
            tools.push((
                t.name.to_string(),
                Tool {
                    name: bus_name,
                    description,
                    input_schema_json: schema,
                    server: name.clone(),
                    status: ToolStatus::Ready.into(),
                    status_detail: String::new(),
                },
            ));
            raw.push(t);
        }
        if !self.spec.shipped {
            for (tool, hold) in self.approvals.review(name, &raw) {
                held.insert(tool, hold);
            }
        }
        tools.retain(|(own, _)| !held.contains_key(own));
        let mut w = hearth_mesh::sync::write(&self.listing);
        *w = Listing { raw, tools, held };
    }

    async fn connect(self: &Arc<Self>) -> Result<Client, String> {
        let watcher = Watcher {
            server: Arc::downgrade(self),
        };
        let started = match &self.spec.endpoint {
            Endpoint::Stdio { command, args, env } => {
                let cmd = tokio::process::Command::new(command).configure(|c| {
                    c.args(args);
                    c.envs(env);
                    c.kill_on_drop(true);
                });
                let (transport, _stderr) = TokioChildProcess::builder(cmd)
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .map_err(|e| format!("{command}: {e}"))?;
                tokio::time::timeout(START_TIMEOUT, watcher.serve(transport)).await
            }
            Endpoint::Http {
                url,
                headers,
                token,
            } => {
                let mut map = HashMap::new();
                for (k, v) in headers {
                    let k = http::HeaderName::try_from(k.as_str())
                        .map_err(|e| format!("header `{k}`: {e}"))?;
                    let v = http::HeaderValue::try_from(v.as_str())
                        .map_err(|e| format!("header value: {e}"))?;
                    map.insert(k, v);
                }
                let mut cfg =
                    StreamableHttpClientTransportConfig::with_uri(url.clone()).custom_headers(map);
                if let Some(t) = token {
                    cfg = cfg.auth_header(t.clone());
                }
                let transport = StreamableHttpClientTransport::from_config(cfg);
                tokio::time::timeout(START_TIMEOUT, watcher.serve(transport)).await
            }
            Endpoint::InProcess(factory) => {
                let (server_end, client_end) = in_process_pair();
                factory(server_end);
                tokio::time::timeout(START_TIMEOUT, watcher.serve(client_end)).await
            }
        };
        let client = started
            .map_err(|_| format!("no answer to initialize within {START_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())?;
        let tools = tokio::time::timeout(START_TIMEOUT, client.list_all_tools())
            .await
            .map_err(|_| "tools/list timed out".to_string())?
            .map_err(|e| e.to_string())?;
        self.set_listing(tools);
        Ok(client)
    }

    /// A live client: the current one, or a new connection if the backoff
    /// allows one now.
    async fn client(self: &Arc<Self>) -> Result<rmcp::Peer<RoleClient>, PoolError> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.client.as_ref()
            && !c.is_closed()
        {
            return Ok(c.peer().clone());
        }
        let dead = |reason: String| PoolError::Dead {
            server: self.spec.name.clone(),
            reason,
        };
        if let Some(at) = conn.retry_at
            && Instant::now() < at
        {
            return Err(dead(format!(
                "{} (restarting in {:.1} s)",
                conn.last_error.as_deref().unwrap_or("it stopped"),
                (at - Instant::now()).as_secs_f64()
            )));
        }
        if conn.client.take().is_some() {
            tracing::warn!(server = %self.spec.name, "MCP server stopped; starting it again");
        }
        match self.connect().await {
            Ok(c) => {
                let peer = c.peer().clone();
                *conn = Conn {
                    client: Some(c),
                    ..Default::default()
                };
                Ok(peer)
            }
            Err(e) => {
                conn.failures += 1;
                let wait = FIRST_BACKOFF
                    .saturating_mul(1 << conn.failures.min(16).saturating_sub(1))
                    .min(MAX_BACKOFF);
                conn.retry_at = Some(Instant::now() + wait);
                conn.last_error = Some(e.clone());
                tracing::warn!(server = %self.spec.name, error = %e, failures = conn.failures, retry_in = ?wait, "MCP server could not be started");
                Err(dead(e))
            }
        }
    }

    /// Forgets a connection that broke, so the next call reconnects.
    async fn drop_client(&self) {
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.client.take() {
            let _ = c.cancel().await;
        }
        conn.last_error = Some("the connection broke off".into());
    }

    async fn status(&self) -> ServerStatus {
        let conn = self.conn.lock().await;
        let up = conn.client.as_ref().is_some_and(|c| !c.is_closed());
        let state = if up {
            ServerState::Up
        } else if conn.retry_at.is_some() {
            ServerState::Restarting
        } else {
            ServerState::Down
        };
        ServerStatus {
            name: self.spec.name.clone(),
            transport: self.spec.endpoint.transport().into(),
            state: state.into(),
            detail: if up {
                String::new()
            } else {
                conn.last_error
                    .clone()
                    .unwrap_or_else(|| "not running; it starts on the next call".into())
            },
            tools: self.read_listing().tools.len() as u32,
        }
    }
}

/// The pool.
pub struct McpPool {
    servers: BTreeMap<String, Arc<Server>>,
    default_timeout: Duration,
}

impl McpPool {
    /// Connects to every server (concurrently). A server that cannot be
    /// reached does not stop the others: it is reported down and retried on
    /// its next call. Only a configuration that can never work is an error.
    pub async fn start(
        specs: Vec<ServerSpec>,
        approvals: Arc<Approvals>,
        default_timeout: Duration,
    ) -> Result<Self, PoolError> {
        let mut servers = BTreeMap::new();
        for spec in specs {
            if spec.name.is_empty()
                || !spec
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(PoolError::Config {
                    server: spec.name.clone(),
                    reason: "a server name must be non-empty letters, digits, `-` or `_`".into(),
                });
            }
            if servers.contains_key(&spec.name) {
                return Err(PoolError::Config {
                    server: spec.name.clone(),
                    reason: "two servers have this name".into(),
                });
            }
            let server = Arc::new(Server {
                spec,
                approvals: approvals.clone(),
                conn: Mutex::default(),
                listing: RwLock::default(),
            });
            servers.insert(server.spec.name.clone(), server);
        }
        let connecting = servers.values().map(|s| {
            let s = s.clone();
            async move {
                match s.client().await {
                    Ok(_) => tracing::info!(server = %s.spec.name, transport = s.spec.endpoint.transport().name(), "MCP server connected"),
                    Err(e) => tracing::warn!(server = %s.spec.name, error = %e, "MCP server is down"),
                }
            }
        });
        futures::future::join_all(connecting).await;
        Ok(Self {
            servers,
            default_timeout,
        })
    }

    /// Every offered tool, by bus name; with `include_held`, held tools too
    /// (their status says why).
    pub fn tools(&self, include_held: bool) -> Vec<Tool> {
        let mut out = Vec::new();
        for s in self.servers.values() {
            let l = s.read_listing();
            out.extend(l.tools.iter().map(|(_, t)| t.clone()));
            if include_held {
                for t in &l.raw {
                    if let Some(hold) = l.held.get(t.name.as_ref()) {
                        let name = format!("{}.{}", s.spec.name, t.name);
                        out.push(Tool {
                            status: hold.status().into(),
                            status_detail: hold.reason(&name),
                            name,
                            description: t
                                .description
                                .as_deref()
                                .unwrap_or_default()
                                .chars()
                                .take(MAX_DESCRIPTION_CHARS)
                                .collect(),
                            input_schema_json: Value::Object((*t.input_schema).clone()).to_string(),
                            server: s.spec.name.clone(),
                        });
                    }
                }
            }
        }
        out
    }

    /// Each server's state.
    pub async fn status(&self) -> Vec<ServerStatus> {
        let mut out = Vec::new();
        for s in self.servers.values() {
            out.push(s.status().await);
        }
        out
    }

    fn known(&self) -> String {
        let names: Vec<String> = self.tools(false).into_iter().map(|t| t.name).collect();
        if names.is_empty() {
            "(none)".into()
        } else {
            names.join(", ")
        }
    }

    /// Approves the current definitions of `name` (`server` or `server.tool`).
    pub fn approve(&self, name: &str) -> Result<Vec<String>, PoolError> {
        let (server_name, tool) = match name.split_once('.') {
            Some((s, t)) => (s, Some(t)),
            None => (name, None),
        };
        let server = self
            .servers
            .get(server_name)
            .ok_or_else(|| PoolError::UnknownTool {
                name: name.to_string(),
                known: self.servers.keys().cloned().collect::<Vec<_>>().join(", "),
            })?;
        let raw = server.read_listing().raw.clone();
        if let Some(t) = tool
            && !raw.iter().any(|r| r.name == t)
        {
            return Err(PoolError::UnknownTool {
                name: name.to_string(),
                known: self.known(),
            });
        }
        let done = server.approvals.approve(server_name, tool, &raw);
        server.set_listing(raw);
        Ok(done)
    }

    /// Calls `name` (`server.tool`) with `arguments_json` (a JSON object).
    pub async fn call(&self, name: &str, arguments_json: &str) -> Result<CallResult, PoolError> {
        self.call_within(name, arguments_json, None).await
    }

    /// [`call`](Self::call), given at most `limit` (the time left to the
    /// calling task) besides the server's own timeout. A call that is
    /// dropped, or runs out of time, is canceled at the server (MCP's
    /// `notifications/cancelled`).
    pub async fn call_within(
        &self,
        name: &str,
        arguments_json: &str,
        limit: Option<Duration>,
    ) -> Result<CallResult, PoolError> {
        let unknown = || PoolError::UnknownTool {
            name: name.to_string(),
            known: self.known(),
        };
        let (server_name, tool) = name.split_once('.').ok_or_else(unknown)?;
        let server = self.servers.get(server_name).ok_or_else(unknown)?;
        let args = arguments_object(name, arguments_json)?;
        // A server that is down is started now (its listing comes with it).
        let peer = server.client().await?;
        {
            let l = server.read_listing();
            if let Some(hold) = l.held.get(tool) {
                return Err(PoolError::Held {
                    name: name.to_string(),
                    reason: hold.reason(name),
                });
            }
            if !l.tools.iter().any(|(own, _)| own == tool) {
                drop(l);
                return Err(unknown());
            }
        }
        let timeout = server.spec.timeout.unwrap_or(self.default_timeout);
        let timeout = limit.map_or(timeout, |l| l.min(timeout));
        let params = CallToolRequestParams::new(tool.to_string()).with_arguments(args);
        let result = tokio::time::timeout(timeout, peer.call_tool(params))
            .await
            .map_err(|_| PoolError::Timeout {
                name: name.to_string(),
                timeout,
            })?;
        let result = match result {
            Ok(r) => r,
            Err(rmcp::ServiceError::McpError(e)) => {
                return Err(PoolError::Protocol {
                    name: name.to_string(),
                    reason: e.message.to_string(),
                });
            }
            Err(e) => {
                // The connection is gone (the server exited or hung up): the
                // next call starts the server again.
                server.drop_client().await;
                return Err(PoolError::Dead {
                    server: server.spec.name.clone(),
                    reason: format!("the call broke off: {e}"),
                });
            }
        };
        Ok(CallResult {
            content: truncate(result_text(&result), MAX_OUTPUT_BYTES),
            is_error: result.is_error == Some(true),
        })
    }

    /// Stops every server.
    pub async fn shutdown(&self) {
        for s in self.servers.values() {
            if let Some(c) = s.conn.lock().await.client.take() {
                let _ = c.cancel().await;
            }
        }
    }
}

/// A call's arguments as the JSON object MCP sends (empty text is `{}`),
/// or why they are not one (too large, not JSON, not an object).
fn arguments_object(
    name: &str,
    arguments_json: &str,
) -> Result<serde_json::Map<String, Value>, PoolError> {
    if arguments_json.len() > MAX_ARGUMENT_BYTES {
        return Err(PoolError::BadArguments {
            name: name.to_string(),
            reason: format!(
                "{} bytes of arguments; the limit is {MAX_ARGUMENT_BYTES}",
                arguments_json.len()
            ),
        });
    }
    let args = if arguments_json.trim().is_empty() {
        "{}"
    } else {
        arguments_json
    };
    let args = match serde_json::from_str::<Value>(args) {
        Ok(Value::Object(map)) => map,
        Ok(other) => {
            return Err(PoolError::BadArguments {
                name: name.to_string(),
                reason: format!(
                    "they must be a JSON object, not `{}`",
                    truncate(other.to_string(), 80)
                ),
            });
        }
        Err(e) => {
            return Err(PoolError::BadArguments {
                name: name.to_string(),
                reason: e.to_string(),
            });
        }
    };
    Ok(args)
}

/// A tool result as text: its text blocks, other blocks named by type, or
/// its structured content when it has no blocks.
fn result_text(result: &rmcp::model::CallToolResult) -> String {
    let mut text: Vec<String> = result
        .content
        .iter()
        .map(|c| match c.as_text() {
            Some(t) => t.text.clone(),
            None => match serde_json::to_value(c) {
                Ok(v) => format!(
                    "[{} content]",
                    v.get("type").and_then(Value::as_str).unwrap_or("non-text")
                ),
                Err(_) => "[non-text content]".into(),
            },
        })
        .collect();
    if text.is_empty()
        && let Some(s) = &result.structured_content
    {
        text.push(s.to_string());
    }
    text.join("\n")
}
