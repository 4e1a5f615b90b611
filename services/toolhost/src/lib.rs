//! The toolhost: an MCP client pool (rmcp) that starts the configured MCP
//! servers, publishes their tools on the bus as `server.tool`, and runs calls.
//!
//! Each server is a child process spoken to over stdio. A call has a
//! deadline; a server that has exited is started again on the next call,
//! and if that fails the call gets a clear `Unavailable` error. A tool that
//! runs and fails (a malformed expression, say) is a normal reply with
//! `is_error` set, so the agent can read why.

mod pool;

pub use pool::{McpPool, PoolError};

use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_mesh::clients::methods;
use hearth_mesh::config::McpServer;
use hearth_mesh::subjects::Service;
use hearth_mesh::{BusError, Config, SharedBus, rpc};
use hearth_proto::v1::toolhost_server::Toolhost;
use hearth_proto::v1::{CallToolRequest, CallToolResponse, ListToolsRequest, ListToolsResponse};
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

/// The toolhost service.
#[derive(Clone)]
pub struct ToolhostService {
    pool: Arc<McpPool>,
    call_timeout: Duration,
}

impl ToolhostService {
    /// A service over `pool`.
    pub fn new(pool: Arc<McpPool>, call_timeout: Duration) -> Self {
        Self { pool, call_timeout }
    }
}

#[tonic::async_trait]
impl Toolhost for ToolhostService {
    async fn list_tools(
        &self,
        _request: Request<ListToolsRequest>,
    ) -> Result<Response<ListToolsResponse>, Status> {
        Ok(Response::new(ListToolsResponse {
            tools: self.pool.tools().await,
        }))
    }

    async fn call_tool(
        &self,
        request: Request<CallToolRequest>,
    ) -> Result<Response<CallToolResponse>, Status> {
        let req = request.into_inner();
        let started = Instant::now();
        let result = self
            .pool
            .call(&req.name, &req.arguments_json, self.call_timeout)
            .await;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        match &result {
            Ok(r) => tracing::info!(
                tool = %req.name, agent = %req.agent, task_id = %req.task_id,
                is_error = r.is_error, duration_ms = ms, "tool call"
            ),
            Err(e) => tracing::warn!(
                tool = %req.name, agent = %req.agent, task_id = %req.task_id,
                error = %e, duration_ms = ms, "tool call failed"
            ),
        }
        let (content, is_error) = result.map_err(Status::from)?.into_parts();
        Ok(Response::new(CallToolResponse {
            content,
            is_error,
            duration_ms: ms,
        }))
    }
}

/// The servers to start: the built-in ones Hearth adds, then the configured ones.
pub fn servers(config: &Config, builtins: Vec<McpServer>) -> Vec<McpServer> {
    builtins
        .into_iter()
        .chain(config.toolhost.servers.iter().cloned())
        .collect()
}

/// Starts the MCP servers and serves the toolhost on the bus.
pub async fn run(
    config: &Config,
    bus: SharedBus,
    servers: Vec<McpServer>,
) -> Result<(Arc<McpPool>, Vec<JoinHandle<()>>), ToolhostError> {
    let pool = Arc::new(McpPool::start(servers).await?);
    let svc = ToolhostService::new(
        pool.clone(),
        Duration::from_millis(config.toolhost.call_timeout_ms),
    );
    let subjects = config.subjects();
    let queue = Some(Service::Toolhost.name().to_string());
    let list_svc = svc.clone();
    let list = rpc::serve_unary(
        bus.clone(),
        subjects.method(Service::Toolhost, methods::LIST_TOOLS),
        queue.clone(),
        move |req: ListToolsRequest| {
            let svc = list_svc.clone();
            async move {
                svc.list_tools(Request::new(req))
                    .await
                    .map(Response::into_inner)
            }
        },
    )
    .await?;
    let call = rpc::serve_unary(
        bus,
        subjects.method(Service::Toolhost, methods::CALL_TOOL),
        queue,
        move |req: CallToolRequest| {
            let svc = svc.clone();
            async move {
                svc.call_tool(Request::new(req))
                    .await
                    .map(Response::into_inner)
            }
        },
    )
    .await?;
    tracing::info!(tools = pool.tools().await.len(), "toolhost ready");
    Ok((pool, vec![list, call]))
}

/// Why the toolhost could not start.
#[derive(Debug, thiserror::Error)]
pub enum ToolhostError {
    /// An MCP server could not be started.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// It could not subscribe on the bus.
    #[error(transparent)]
    Bus(#[from] BusError),
}
