//! The mesh as an MCP server, for MCP clients (IDEs, desktop assistants):
//! an `ask` tool that hands a task to the orchestrator and returns its
//! answer, and — when `mcp.expose_tools` is set — the toolhost's ready tools
//! themselves, called through the toolhost (so its approvals, limits and
//! audit log apply).
//!
//! Served over stdio by `hearth mcp` and over streamable HTTP at the
//! gateway's `/mcp` (behind its token). [`http_router`] serves any rmcp
//! handler over streamable HTTP; the built-in tool servers use it too.

use std::sync::Arc;
use std::time::Duration;

use hearth_mesh::a2a::{RunError, text_message};
use hearth_mesh::clients::{AgentClient, ToolhostClient};
use hearth_mesh::subjects::Service;
use hearth_mesh::{Config, SharedBus};
use hearth_proto::a2a::Role;
use hearth_proto::v1::{CallToolRequest, ListToolsRequest, SendTaskRequest};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData,
    Implementation, JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities,
    ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{RoleServer, ServerHandler};
use serde_json::{Value, json};

/// Serves `handler` over MCP streamable HTTP at `/mcp` (stateful sessions;
/// Host headers other than loopback names are refused unless
/// `allow_any_host`, which a listener beyond loopback needs).
pub fn http_router<H>(handler: H, allow_any_host: bool) -> axum::Router
where
    H: ServerHandler + Clone,
{
    let mut config = StreamableHttpServerConfig::default();
    if allow_any_host {
        config = config.disable_allowed_hosts();
    }
    let service: StreamableHttpService<H, LocalSessionManager> = StreamableHttpService::new(
        move || Ok(handler.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    axum::Router::new().nest_service("/mcp", service)
}

/// The mesh's MCP server.
#[derive(Clone)]
pub struct MeshMcp {
    orchestrator: AgentClient,
    toolhost: ToolhostClient,
    expose_tools: bool,
    task_timeout: Duration,
}

const ASK: &str = "ask";

fn ask_tool() -> Tool {
    let schema: JsonObject = rmcp::model::object(json!({
        "type": "object",
        "properties": {
            "question": {
                "type": "string",
                "description": "The question or task, stated completely."
            }
        },
        "required": ["question"],
    }));
    Tool::new(
        ASK,
        "Ask Hearth, a local-first agent mesh: the task goes to its orchestrator, which delegates to operatives with tools, and the answer comes back.",
        Arc::new(schema),
    )
}

fn text_result(text: impl Into<String>, is_error: bool) -> CallToolResponse {
    let content = vec![ContentBlock::text(text.into())];
    if is_error {
        CallToolResult::error(content).into()
    } else {
        CallToolResult::success(content).into()
    }
}

impl MeshMcp {
    /// The mesh on `bus`.
    pub fn new(config: &Config, bus: SharedBus) -> Self {
        Self {
            orchestrator: AgentClient::new(
                bus.clone(),
                config.subjects(),
                Service::Orchestrator,
                config.task_timeout(),
            ),
            toolhost: ToolhostClient::new(bus, config.subjects(), config.request_timeout()),
            expose_tools: config.mcp.expose_tools,
            task_timeout: config.task_timeout(),
        }
    }

    async fn mesh_tools(&self) -> Vec<Tool> {
        if !self.expose_tools {
            return Vec::new();
        }
        let Ok(resp) = self.toolhost.list_tools(&ListToolsRequest::default()).await else {
            return Vec::new();
        };
        resp.tools
            .into_iter()
            .filter(|t| t.status() == hearth_proto::v1::ToolStatus::Ready)
            .filter_map(|t| {
                let schema = match serde_json::from_str::<Value>(&t.input_schema_json) {
                    Ok(Value::Object(m)) => m,
                    _ => return None,
                };
                let description = if t.description.trim().is_empty() {
                    format!("The `{}` tool of the {} server.", t.name, t.server)
                } else {
                    t.description
                };
                Some(Tool::new(t.name, description, Arc::new(schema)))
            })
            .collect()
    }

    async fn ask(&self, question: &str) -> CallToolResponse {
        let req = SendTaskRequest {
            message: Some(text_message(Role::User, question, "", "")),
            timeout_ms: u32::try_from(self.task_timeout.as_millis()).unwrap_or(u32::MAX),
            ..Default::default()
        };
        match self.orchestrator.run_to_end(&req, |_| {}).await {
            Ok(done) if done.completed() => text_result(done.answer(), false),
            Ok(done) => text_result(
                format!(
                    "the task ended {}: {}",
                    done.state.as_str_name(),
                    done.answer()
                ),
                true,
            ),
            Err(RunError::NotTaken(s)) => text_result(
                format!("the mesh could not take the task: {}", s.message()),
                true,
            ),
            Err(RunError::Lost(s)) => {
                text_result(format!("the task failed: {}", s.message()), true)
            }
            Err(e @ RunError::Ended) => text_result(e.to_string(), true),
        }
    }
}

impl ServerHandler for MeshMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("hearth", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Hearth: call `ask` with a task; its agents work on it with their tools and answer.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let mut tools = vec![ask_tool()];
        tools.extend(self.mesh_tools().await);
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments.unwrap_or_default();
        if request.name == ASK {
            let Some(q) = args
                .get("question")
                .and_then(Value::as_str)
                .filter(|q| !q.trim().is_empty())
            else {
                return Ok(text_result("`question` must be a non-empty string", true));
            };
            return Ok(self.ask(q).await);
        }
        if !self.expose_tools || !request.name.contains('.') {
            return Ok(text_result(
                format!("unknown tool `{}`; this server offers `ask`", request.name),
                true,
            ));
        }
        let call = CallToolRequest {
            name: request.name.to_string(),
            arguments_json: Value::Object(args).to_string(),
            agent: String::new(),
            task_id: String::new(),
            deadline_unix_ms: 0,
            idempotency_key: String::new(),
        };
        Ok(match self.toolhost.call_tool(&call).await {
            Ok(r) => text_result(r.content, r.is_error),
            Err(s) => text_result(s.message().to_string(), true),
        })
    }
}
