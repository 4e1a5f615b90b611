//! A2A over gRPC (`lf.a2a.v1.A2AService`, tonic): the same handler as the
//! HTTP bindings, through the official SDK's gRPC adapter (`a2a-grpc`), on a
//! listener of its own (`gateway.grpc_addr`).
//!
//! Every call must carry the token, when one is configured, as
//! `authorization: Bearer <token>` or `x-api-key: <token>` metadata; an
//! `a2a-version` other than 1.x is refused.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use a2a_pb::proto::a2a_service_server::A2aServiceServer;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::{Request, Status};

use crate::auth::{Guard, matches};
use crate::handler::A2aHandler;

fn check(guard: &Guard, req: Request<()>) -> Result<Request<()>, Status> {
    let md = req.metadata();
    if let Some(v) = md.get("a2a-version").and_then(|v| v.to_str().ok()) {
        let major = v.trim().split('.').next().unwrap_or("");
        if major != "1" {
            return Err(Status::failed_precondition(format!(
                "A2A version {v} is not supported over gRPC (1.0 is)"
            )));
        }
    }
    let Some(token) = &guard.token else {
        return Ok(req);
    };
    let ip = req
        .remote_addr()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
    if let Some(wait) = guard.failures.locked(ip) {
        return Err(Status::resource_exhausted(format!(
            "too many calls with a wrong or missing token from this address: try again in {} s",
            wait.as_secs().max(1)
        )));
    }
    let bearer = md
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    let key = md.get("x-api-key").and_then(|v| v.to_str().ok());
    if matches(token, [bearer, key]) {
        Ok(req)
    } else {
        guard.failures.record(ip);
        Err(Status::unauthenticated(
            "a token is required (metadata authorization: Bearer <token>, or x-api-key)",
        ))
    }
}

/// Serves A2A over gRPC on `listener`.
pub fn serve(
    listener: TcpListener,
    handler: Arc<A2aHandler>,
    guard: Guard,
    max_message_bytes: usize,
) -> Result<(SocketAddr, JoinHandle<()>), std::io::Error> {
    let addr = listener.local_addr()?;
    let svc = A2aServiceServer::new(a2a_grpc::GrpcHandler::new(handler))
        .max_decoding_message_size(max_message_bytes);
    let svc =
        tonic::service::interceptor::InterceptedService::new(svc, move |req| check(&guard, req));
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let handle = tokio::spawn(async move {
        if let Err(e) = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(incoming)
            .await
        {
            tracing::error!(error = %e, "the gateway's gRPC listener stopped");
        }
    });
    Ok((addr, handle))
}
