//! The MCP client pool: one rmcp client per configured server.

use std::collections::BTreeMap;
use std::time::Duration;

use hearth_mesh::config::McpServer;
use hearth_proto::v1::Tool;
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;
use tokio::sync::Mutex;

/// Longest tool description kept; definitions are untrusted input.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;
/// Longest tool output returned, in bytes.
pub const MAX_OUTPUT_BYTES: usize = 256 * 1024;
/// How long a server may take to start and answer `initialize`.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// What went wrong with a server or a call.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The server could not be started or initialized.
    #[error("MCP server `{server}` could not be started: {reason}")]
    Start {
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
    /// The arguments are not a JSON object.
    #[error("arguments for `{name}` must be a JSON object: {reason}")]
    BadArguments {
        /// The tool.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The server is not running and could not be restarted.
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
            PoolError::Start { .. } | PoolError::Dead { .. } => Code::Unavailable,
            PoolError::UnknownTool { .. } => Code::NotFound,
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

struct Server {
    spec: McpServer,
    client: Mutex<Option<RunningService<RoleClient, ()>>>,
    tools: Vec<Tool>,
}

/// The pool.
pub struct McpPool {
    servers: BTreeMap<String, Server>,
}

async fn connect(spec: &McpServer) -> Result<RunningService<RoleClient, ()>, PoolError> {
    let fail = |reason: String| PoolError::Start {
        server: spec.name.clone(),
        reason,
    };
    let cmd = tokio::process::Command::new(&spec.command).configure(|c| {
        c.args(&spec.args);
        c.envs(&spec.env);
        c.kill_on_drop(true);
    });
    let transport =
        TokioChildProcess::new(cmd).map_err(|e| fail(format!("{}: {e}", spec.command)))?;
    tokio::time::timeout(START_TIMEOUT, ().serve(transport))
        .await
        .map_err(|_| fail(format!("no answer to initialize within {START_TIMEOUT:?}")))?
        .map_err(|e| fail(e.to_string()))
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let cut = (0..=max)
            .rev()
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(0);
        s.truncate(cut);
        s.push_str(" …[truncated]");
    }
    s
}

impl McpPool {
    /// Starts every server and lists its tools.
    pub async fn start(specs: Vec<McpServer>) -> Result<Self, PoolError> {
        let mut servers = BTreeMap::new();
        for spec in specs {
            if spec.name.is_empty() || spec.name.contains('.') {
                return Err(PoolError::Start {
                    server: spec.name.clone(),
                    reason: "a server name must be non-empty and contain no `.`".into(),
                });
            }
            let client = connect(&spec).await?;
            let listed = tokio::time::timeout(START_TIMEOUT, client.list_all_tools())
                .await
                .map_err(|_| PoolError::Start {
                    server: spec.name.clone(),
                    reason: "tools/list timed out".into(),
                })?
                .map_err(|e| PoolError::Start {
                    server: spec.name.clone(),
                    reason: e.to_string(),
                })?;
            let tools = listed
                .into_iter()
                .map(|t| Tool {
                    name: format!("{}.{}", spec.name, t.name),
                    description: t
                        .description
                        .map(|d| d.chars().take(MAX_DESCRIPTION_CHARS).collect())
                        .unwrap_or_default(),
                    input_schema_json: Value::Object((*t.input_schema).clone()).to_string(),
                    server: spec.name.clone(),
                })
                .collect();
            tracing::info!(server = %spec.name, "MCP server started");
            servers.insert(
                spec.name.clone(),
                Server {
                    spec,
                    client: Mutex::new(Some(client)),
                    tools,
                },
            );
        }
        Ok(Self { servers })
    }

    /// Every tool, by bus name.
    pub async fn tools(&self) -> Vec<Tool> {
        self.servers
            .values()
            .flat_map(|s| s.tools.iter().cloned())
            .collect()
    }

    fn known(&self) -> String {
        let names: Vec<String> = self
            .servers
            .values()
            .flat_map(|s| s.tools.iter().map(|t| t.name.clone()))
            .collect();
        if names.is_empty() {
            "(none)".into()
        } else {
            names.join(", ")
        }
    }

    /// Calls `name` (`server.tool`) with `arguments_json` (a JSON object).
    pub async fn call(
        &self,
        name: &str,
        arguments_json: &str,
        timeout: Duration,
    ) -> Result<CallResult, PoolError> {
        let unknown = || PoolError::UnknownTool {
            name: name.to_string(),
            known: self.known(),
        };
        let (server_name, tool) = name.split_once('.').ok_or_else(unknown)?;
        let server = self.servers.get(server_name).ok_or_else(unknown)?;
        if !server.tools.iter().any(|t| t.name == name) {
            return Err(unknown());
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
                    reason: format!("got `{other}`"),
                });
            }
            Err(e) => {
                return Err(PoolError::BadArguments {
                    name: name.to_string(),
                    reason: e.to_string(),
                });
            }
        };
        let peer = {
            let mut guard = server.client.lock().await;
            let alive = guard.as_ref().is_some_and(|c| !c.is_closed());
            if !alive {
                tracing::warn!(server = %server.spec.name, "MCP server is not running; starting it again");
                *guard = Some(connect(&server.spec).await.map_err(|e| PoolError::Dead {
                    server: server.spec.name.clone(),
                    reason: e.to_string(),
                })?);
            }
            match guard.as_ref() {
                Some(c) => c.peer().clone(),
                None => {
                    return Err(PoolError::Dead {
                        server: server.spec.name.clone(),
                        reason: "no client".into(),
                    });
                }
            }
        };
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
                return Err(PoolError::Dead {
                    server: server.spec.name.clone(),
                    reason: e.to_string(),
                });
            }
        };
        let mut text: Vec<String> = result
            .content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.clone()))
            .collect();
        if text.is_empty()
            && let Some(s) = &result.structured_content
        {
            text.push(s.to_string());
        }
        Ok(CallResult {
            content: truncate(text.join("\n"), MAX_OUTPUT_BYTES),
            is_error: result.is_error == Some(true),
        })
    }

    /// Stops every server.
    pub async fn shutdown(&self) {
        for s in self.servers.values() {
            if let Some(c) = s.client.lock().await.take() {
                let _ = c.cancel().await;
            }
        }
    }
}
