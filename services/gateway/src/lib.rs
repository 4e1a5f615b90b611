//! The gateway: Hearth's front door.
//!
//! It serves A2A v1.0 (`lf.a2a.v1`) over all three bindings from one
//! handler ([`A2aHandler`], which sends every task to the orchestrator over
//! the bus; the gateway keeps no task state of its own beyond push
//! configurations): JSON-RPC 2.0 at `/` (with SSE for streaming), HTTP+JSON
//! (`/message:send`, `/tasks/{id}`, …) and gRPC on a listener of its own.
//! The official A2A Rust SDK does the protocol work (`a2a-server-lf` for
//! JSON-RPC and HTTP+JSON, `a2a-grpc` for gRPC); the v0.3 JSON-RPC method
//! names are translated in [`v03`]. The agent card is public at
//! `/.well-known/agent-card.json`.
//!
//! It also serves the mesh as an MCP server at `/mcp` (streamable HTTP; see
//! [`mcp`]), as an OpenAI-compatible API at `/v1/models`,
//! `/v1/chat/completions` and `/v1/embeddings` (see [`openai`]), and a
//! conversation page at `/chat` ([`webchat`]).
//!
//! Binds to loopback unless configured otherwise. When a token is
//! configured, every request but the agent card must carry it. Requests
//! with a foreign `Host` or a web page's foreign `Origin` are refused
//! ([`hosts`]).

mod auth;
pub mod card;
mod grpc;
mod handler;
pub mod hooks;
mod hosts;
pub mod mcp;
pub mod openai;
pub mod push;
pub mod v03;
pub mod webchat;

use std::net::SocketAddr;
use std::sync::Arc;

use a2a_server::ServiceParams;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hearth_mesh::{Config, SharedBus};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tower::ServiceExt;

pub use card::{Endpoints, agent_card};
pub use handler::A2aHandler;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The address is not an address.
    #[error("gateway address `{addr}` is invalid: {reason}")]
    Addr {
        /// What was configured.
        addr: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// Agent specs could not be loaded for the card.
    #[error(transparent)]
    Spec(#[from] hearth_specs::SpecError),
    /// A webhook is configured wrong.
    #[error(transparent)]
    Hook(#[from] hooks::HookError),
    /// Its health could not be served on the bus.
    #[error(transparent)]
    Bus(#[from] hearth_mesh::BusError),
}

/// A running gateway: its listeners are `http` (with the real port when 0
/// was asked for) and, when gRPC runs, `grpc`. Its accept loops are its
/// intake: on a drain it takes no new connection, and the requests it has
/// finish.
pub use hearth_mesh::running::Running;

/// What the running gateway says of itself: where it listens and whether
/// a token guards it.
struct GatewayChecks {
    addr: SocketAddr,
    grpc: Option<SocketAddr>,
    token: bool,
}

#[async_trait::async_trait]
impl hearth_mesh::running::Checks for GatewayChecks {
    async fn checks(&self) -> Vec<hearth_proto::v1::HealthCheck> {
        use hearth_mesh::running::check;
        use hearth_proto::v1::CheckOutcome;
        let grpc = self
            .grpc
            .map_or_else(String::new, |g| format!(", gRPC at {g}"));
        let (outcome, guard, fix) = match (self.token, self.addr.ip().is_loopback()) {
            (true, _) => (CheckOutcome::Ok, "a token is required", None),
            (false, true) => (CheckOutcome::Ok, "loopback only, no token", None),
            (false, false) => (
                CheckOutcome::Warn,
                "beyond loopback WITHOUT a token",
                Some("set HEARTH_GATEWAY_TOKEN".to_string()),
            ),
        };
        vec![check(
            "listening",
            outcome,
            format!("http://{}{grpc} · {guard}", self.addr),
            fix,
        )]
    }
}

#[derive(Clone)]
struct Front {
    handler: Arc<A2aHandler>,
    sdk: Router,
    extended: Arc<Value>,
}

fn rpc_error(id: Value, code: i32, message: &str) -> Response {
    axum::Json(json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}))
        .into_response()
}

/// `POST /`: v0.3 method names go to [`v03`], everything else to the SDK's
/// v1.0 JSON-RPC router (which answers parse errors, invalid requests,
/// unknown methods and versions by the book).
async fn jsonrpc(State(f): State<Front>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(_) => {
            return (
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is larger than gateway.max_body_bytes",
            )
                .into_response();
        }
    };
    if let Ok(v) = serde_json::from_slice::<Value>(&bytes)
        && let Some(method) = v.get("method").and_then(Value::as_str)
        && v03::is_v03(method)
    {
        let id = v.get("id").cloned().unwrap_or(Value::Null);
        if v.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return rpc_error(id, -32600, "invalid request: jsonrpc must be \"2.0\"");
        }
        let params = v.get("params").cloned().unwrap_or_else(|| json!({}));
        if !params.is_object() {
            return rpc_error(id, -32602, "invalid params: params must be an object");
        }
        let mut sp = ServiceParams::new();
        for (k, val) in &parts.headers {
            if let Ok(s) = val.to_str() {
                sp.entry(k.as_str().to_ascii_lowercase())
                    .or_default()
                    .push(s.to_string());
            }
        }
        return v03::handle(
            f.handler.clone(),
            sp,
            id,
            method,
            params,
            f.extended.clone(),
        )
        .await;
    }
    match f
        .sdk
        .clone()
        .oneshot(Request::from_parts(parts, Body::from(bytes)))
        .await
    {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

/// HTTP+JSON answers a successful DELETE with an empty body; A2A clients
/// (the Python SDK's among them) read every answer as JSON, and the proto
/// answer is `google.protobuf.Empty`, whose JSON is `{}`.
async fn empty_is_json(req: Request, next: axum::middleware::Next) -> Response {
    let delete = req.method() == axum::http::Method::DELETE;
    let resp = next.run(req).await;
    let empty = {
        use axum::body::HttpBody;
        resp.body().size_hint().exact() == Some(0)
    };
    if delete && resp.status().is_success() && empty {
        return (
            resp.status(),
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            "{}",
        )
            .into_response();
    }
    resp
}

/// HTTP+JSON honours `A2A-Version` as the SDK's JSON-RPC router does: a
/// major version other than 1 is refused with A2A's VersionNotSupported
/// error, and an absent header means 0.3 (whose HTTP+JSON paths were not
/// these), so it is refused too.
async fn rest_version(req: Request, next: axum::middleware::Next) -> Response {
    let requested = req
        .headers()
        .get("a2a-version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("0.3")
        .trim()
        .to_string();
    if requested.split('.').next() == Some("1") {
        return next.run(req).await;
    }
    let code = a2a::errors::error_code::VERSION_NOT_SUPPORTED;
    let body = json!({"error": {
        "code": 400,
        "status": "FAILED_PRECONDITION",
        "message": format!("A2A version {requested} is not supported: this gateway speaks 1.0 over HTTP+JSON (send A2A-Version: 1.0)"),
        "details": [{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": a2a::errors::error_reason(code),
            "domain": a2a::errordetails::PROTOCOL_DOMAIN,
            "metadata": {"requestedVersion": requested},
        }],
    }});
    (
        axum::http::StatusCode::BAD_REQUEST,
        [(axum::http::header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

/// `GET /metrics`: Prometheus metrics of this process (behind the token
/// when one is set).
async fn metrics() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            hearth_mesh::metrics::CONTENT_TYPE,
        )],
        hearth_mesh::metrics::render(),
    )
        .into_response()
}

/// Builds the gateway's HTTP router for a gateway reached at `at`.
pub fn router(
    config: &Config,
    bus: SharedBus,
    at: &Endpoints,
) -> Result<(Router, Arc<A2aHandler>), GatewayError> {
    let specs = hearth_specs::Specs::load(config.agents.dir.as_deref())?;
    let public = agent_card(config, &specs, at, false);
    let extended = agent_card(config, &specs, at, true);
    let extended_json = Arc::new(card::card_json(&extended, at));
    let handler = Arc::new(A2aHandler::new(config, bus.clone(), extended));
    let token = (!config.gateway.token.is_empty()).then(|| config.gateway.token.clone());
    let failures = Arc::new(auth::Failures::new(
        config.gateway.max_auth_failures_per_minute,
    ));
    // Beyond loopback the MCP endpoint is reached by whatever name the
    // machine has; the token, not the Host header, guards it then.
    let beyond_loopback = !config
        .gateway
        .addr
        .parse::<SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback());
    let front = Front {
        handler: handler.clone(),
        sdk: a2a_server::jsonrpc::jsonrpc_router(handler.clone()),
        extended: extended_json,
    };
    let protected = Router::new()
        .route("/", post(jsonrpc))
        // This process's metrics: in the embedded default, the whole mesh.
        .route("/metrics", axum::routing::get(metrics))
        .with_state(front)
        .merge(
            a2a_server::rest::rest_router(handler.clone())
                .layer(axum::middleware::from_fn(empty_is_json))
                .layer(axum::middleware::from_fn(rest_version)),
        )
        .merge(if config.gateway.openai_api {
            openai::router(
                handler.clone(),
                hearth_mesh::clients::EngineClient::new(
                    bus.clone(),
                    config.subjects(),
                    config.engine_timeout(),
                ),
            )
        } else {
            Router::new()
        })
        .merge(mcp::http_router(
            mcp::MeshMcp::new(config, bus),
            beyond_loopback && token.is_some(),
        ))
        .layer(axum::middleware::from_fn_with_state(
            auth::Guard {
                token,
                failures: failures.clone(),
            },
            auth::require_token,
        ));
    let mut router = Router::new()
        .merge(card::router(Arc::new(card::card_json(&public, at))))
        .merge(protected);
    let hooks = Arc::new(hooks::Hooks::new(config, handler.clone(), &at.http)?);
    if !hooks.is_empty() {
        router = router.merge(hooks.router());
    }
    if config.gateway.webchat {
        router = router
            .merge(webchat::router())
            .layer(axum::middleware::from_fn(webchat::redirect_root));
    }
    let router = router
        // The SDK's routers allow 10 MiB themselves; this outer limit is the
        // configured one, and answers 413 before a byte more is read.
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            config.gateway.max_body_bytes,
        ))
        .layer(DefaultBodyLimit::disable())
        // Foreign Host and Origin headers are refused before anything else
        // (the agent card included: it is public, not browsable by any page).
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(hosts::Allowed::from_config(config)),
            hosts::check,
        ))
        // Outermost: the OpenAI face's errors keep OpenAI's shape, whoever
        // answered them.
        .layer(axum::middleware::from_fn(openai::openai_errors));
    Ok((router, handler))
}

fn parse_addr(addr: &str) -> Result<SocketAddr, GatewayError> {
    addr.parse()
        .map_err(|e: std::net::AddrParseError| GatewayError::Addr {
            addr: addr.to_string(),
            reason: e.to_string(),
        })
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), GatewayError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| GatewayError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| GatewayError::Bind { addr, source })?;
    if !bound.ip().is_loopback() {
        tracing::warn!(addr = %bound, "the gateway listens beyond loopback: make sure a token is set (HEARTH_GATEWAY_TOKEN)");
    }
    Ok((listener, bound))
}

/// Binds and serves the gateway, as every service starts: HTTP (JSON-RPC,
/// HTTP+JSON, MCP, the card) and, unless `gateway.grpc_addr` is empty,
/// gRPC, with its health on the bus.
pub async fn start(config: &Config, bus: SharedBus) -> Result<Running, GatewayError> {
    let (listener, addr) = bind(parse_addr(&config.gateway.addr)?).await?;
    let grpc_listener = match config.gateway.grpc_addr.trim() {
        "" => None,
        a => Some(bind(parse_addr(a)?).await?),
    };
    if !addr.ip().is_loopback() && config.gateway.token.is_empty() {
        tracing::warn!(%addr, "the gateway listens beyond loopback WITHOUT a token: set HEARTH_GATEWAY_TOKEN");
    }
    let at = Endpoints {
        http: config
            .gateway
            .public_url
            .clone()
            .map(|u| u.trim_end_matches('/').to_string())
            .unwrap_or_else(|| format!("http://{addr}")),
        grpc: grpc_listener.as_ref().map(|(_, a)| a.to_string()),
    };
    let (app, handler) = router(config, bus.clone(), &at)?;
    let mut handles = vec![tokio::spawn(async move {
        // The client's address, for counting its failed token attempts.
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "gateway stopped");
        }
    })];
    let mut grpc_addr = None;
    if let Some((l, a)) = grpc_listener {
        let token = (!config.gateway.token.is_empty()).then(|| config.gateway.token.clone());
        let guard = auth::Guard {
            token,
            failures: Arc::new(auth::Failures::new(
                config.gateway.max_auth_failures_per_minute,
            )),
        };
        let (_, h) = grpc::serve(l, handler, guard, config.gateway.max_body_bytes)
            .map_err(|source| GatewayError::Bind { addr: a, source })?;
        handles.push(h);
        grpc_addr = Some(a);
    }
    tracing::info!(%addr, grpc = ?grpc_addr, "gateway ready");
    let checks = std::sync::Arc::new(GatewayChecks {
        addr,
        grpc: grpc_addr,
        token: !config.gateway.token.is_empty(),
    });
    let mut running = Running::new(hearth_mesh::subjects::Service::Gateway)
        .intake(handles)
        .listener("http", addr);
    if let Some(g) = grpc_addr {
        running = running.listener("grpc", g);
    }
    Ok(running.with_health(bus, &config.subjects(), checks).await?)
}
