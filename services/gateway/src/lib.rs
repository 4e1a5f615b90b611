//! The gateway: Hearth's front door over HTTP.
//!
//! It serves A2A v1.0 (`lf.a2a.v1`) JSON-RPC 2.0 at `/` (the official A2A
//! Rust SDK's server does the protocol work: method dispatch, JSON-RPC and
//! A2A error codes, SSE for streaming) and the agent card at
//! `/.well-known/agent-card.json`. Every task goes to the orchestrator over
//! the bus; the gateway keeps no task state of its own.
//!
//! It also serves the mesh as an MCP server at `/mcp` (streamable HTTP; see
//! [`mcp`]).
//!
//! Binds to loopback unless configured otherwise. When a token is
//! configured, every request but the agent card must carry it as
//! `Authorization: Bearer <token>`.

mod auth;
mod handler;
pub mod mcp;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use hearth_mesh::{Config, SharedBus};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use handler::{A2aHandler, agent_card};

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
    Spec(#[from] hearth_agents::SpecError),
}

/// A running gateway.
pub struct Running {
    /// The address it listens on (with the real port when 0 was asked for).
    pub addr: SocketAddr,
    /// The server task.
    pub handle: JoinHandle<()>,
}

/// Builds the gateway's router.
pub fn router(config: &Config, bus: SharedBus, public_url: &str) -> Result<Router, GatewayError> {
    let specs = hearth_agents::Specs::load(config.agents.dir.as_deref())?;
    let card = agent_card(config, &specs, public_url);
    let handler = Arc::new(A2aHandler::new(config, bus.clone()));
    let token = (!config.gateway.token.is_empty()).then(|| config.gateway.token.clone());
    // Beyond loopback the MCP endpoint is reached by whatever name the
    // machine has; the token, not the Host header, guards it then.
    let beyond_loopback = !config
        .gateway
        .addr
        .parse::<SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback());
    let protected = a2a_server_lf_router(handler)
        .merge(mcp::http_router(
            mcp::MeshMcp::new(config, bus),
            beyond_loopback && token.is_some(),
        ))
        .layer(axum::middleware::from_fn_with_state(
            token,
            auth::require_token,
        ));
    Ok(Router::new()
        .merge(a2a_server::agent_card::agent_card_router(Arc::new(
            a2a_server::StaticAgentCard::new(card),
        )))
        .merge(protected)
        // The SDK's router allows 10 MiB itself; this outer limit is the
        // configured one, and answers 413 before a byte more is read.
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            config.gateway.max_body_bytes,
        ))
        .layer(DefaultBodyLimit::disable()))
}

fn a2a_server_lf_router(handler: Arc<A2aHandler>) -> Router {
    a2a_server::jsonrpc::jsonrpc_router(handler)
}

/// Binds and serves the gateway.
pub async fn run(config: &Config, bus: SharedBus) -> Result<Running, GatewayError> {
    let addr: SocketAddr = config
        .gateway
        .addr
        .parse()
        .map_err(|e: std::net::AddrParseError| GatewayError::Addr {
            addr: config.gateway.addr.clone(),
            reason: e.to_string(),
        })?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| GatewayError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| GatewayError::Bind { addr, source })?;
    if !addr.ip().is_loopback() {
        if config.gateway.token.is_empty() {
            tracing::warn!(%addr, "the gateway listens beyond loopback WITHOUT a token: set HEARTH_GATEWAY_TOKEN");
        } else {
            tracing::info!(%addr, "the gateway listens beyond loopback; a token is required");
        }
    }
    let app = router(config, bus, &format!("http://{addr}"))?;
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "gateway stopped");
        }
    });
    tracing::info!(%addr, "gateway ready");
    Ok(Running { addr, handle })
}
