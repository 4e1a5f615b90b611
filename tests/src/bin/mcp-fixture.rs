//! A misbehaving MCP server for the toolhost's adversarial tests (a test
//! double; never shipped): over stdio, or streamable HTTP with `--http`.
//!
//! Tools:
//! - `echo {text}`: returns the text (its description can be changed);
//! - `slow {}`: never answers (a server that hangs);
//! - `wait {ms}`: answers `waited` after that long (work in flight);
//! - `crash {}`: the process exits mid-call (a server that crashes);
//! - `big {bytes}`: returns that many bytes;
//! - `mutate {description}`: changes `echo`'s description and tells every
//!   client `tools/list_changed` (a server that changes its definitions).
//!
//! `ECHO_DESCRIPTION` sets `echo`'s description at start.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fixture: a failure should panic

use std::sync::{Arc, Mutex};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData,
    Implementation, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig,
    Tool,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{Peer, RoleServer, ServerHandler, ServiceExt};
use serde_json::json;

#[derive(Clone)]
struct Fixture {
    echo_description: Arc<Mutex<String>>,
    peers: Arc<Mutex<Vec<Peer<RoleServer>>>>,
}

fn tool(name: &str, description: &str, schema: serde_json::Value) -> Tool {
    Tool::new(
        name.to_string(),
        description.to_string(),
        Arc::new(rmcp::model::object(schema)),
    )
}

impl Fixture {
    fn tools(&self) -> Vec<Tool> {
        let d = self.echo_description.lock().unwrap().clone();
        vec![
            tool(
                "echo",
                &d,
                json!({"type":"object","properties":{"text":{"type":"string"}},"required":["text"]}),
            ),
            tool("slow", "Never answers.", json!({"type":"object"})),
            tool(
                "wait",
                "Answers `waited` after `ms` milliseconds.",
                json!({"type":"object","properties":{"ms":{"type":"integer"}}}),
            ),
            tool(
                "tally",
                "Appends `line` and a newline to the file `path`, then answers `tallied` after `ms` milliseconds: a side effect still running when its caller dies.",
                json!({"type":"object","properties":{"path":{"type":"string"},"line":{"type":"string"},"ms":{"type":"integer"}},"required":["path","line"]}),
            ),
            tool("crash", "Exits mid-call.", json!({"type":"object"})),
            tool(
                "big",
                "Returns `bytes` bytes.",
                json!({"type":"object","properties":{"bytes":{"type":"integer"}}}),
            ),
            tool(
                "mutate",
                "Changes echo's description.",
                json!({"type":"object","properties":{"description":{"type":"string"}}}),
            ),
        ]
    }
}

fn text(t: impl Into<String>) -> CallToolResponse {
    CallToolResult::success(vec![ContentBlock::text(t.into())]).into()
}

impl ServerHandler for Fixture {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new("mcp-fixture", "0.0.0"))
    }

    async fn list_tools(
        &self,
        _r: Option<PaginatedRequestParams>,
        _c: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools()))
    }

    async fn call_tool(
        &self,
        req: CallToolRequestParams,
        _c: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = req.arguments.unwrap_or_default();
        let s = |k: &str| {
            args.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        match req.name.as_ref() {
            "echo" => Ok(text(s("text"))),
            "slow" => {
                std::future::pending::<()>().await;
                Ok(text("unreachable"))
            }
            "wait" => {
                let ms = args.get("ms").and_then(|v| v.as_u64()).unwrap_or(0);
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                Ok(text("waited"))
            }
            "tally" => {
                use std::io::Write as _;
                let failed = |e: std::io::Error| ErrorData::internal_error(e.to_string(), None);
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(s("path"))
                    .map_err(failed)?;
                writeln!(f, "{}", s("line")).map_err(failed)?;
                let ms = args.get("ms").and_then(|v| v.as_u64()).unwrap_or(0);
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                Ok(text("tallied"))
            }
            "crash" => std::process::exit(3),
            "big" => {
                let n = args.get("bytes").and_then(|v| v.as_u64()).unwrap_or(0) as usize;
                Ok(text("x".repeat(n)))
            }
            "mutate" => {
                *self.echo_description.lock().unwrap() = s("description");
                let peers = self.peers.lock().unwrap().clone();
                for p in peers {
                    let _ = p.notify_tool_list_changed().await;
                }
                Ok(text("mutated"))
            }
            other => Err(ErrorData::invalid_params(format!("no tool {other}"), None)),
        }
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        self.peers.lock().unwrap().push(context.peer);
    }
}

#[tokio::main]
async fn main() {
    let fixture = Fixture {
        echo_description: Arc::new(Mutex::new(
            std::env::var("ECHO_DESCRIPTION").unwrap_or_else(|_| "Echoes text.".into()),
        )),
        peers: Arc::default(),
    };
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--http") {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("http://{}/mcp", listener.local_addr().unwrap());
        let service: rmcp::transport::StreamableHttpService<
            Fixture,
            rmcp::transport::streamable_http_server::session::local::LocalSessionManager,
        > = rmcp::transport::StreamableHttpService::new(
            move || Ok(fixture.clone()),
            Arc::default(),
            rmcp::transport::StreamableHttpServerConfig::default(),
        );
        let app = axum::Router::new().nest_service("/mcp", service);
        axum::serve(listener, app).await.unwrap();
    } else {
        let running = fixture.serve(rmcp::transport::stdio()).await.unwrap();
        let _ = running.waiting().await;
    }
}
