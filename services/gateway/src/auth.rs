//! The token check for everything but the agent card: `Authorization:
//! Bearer <token>` or `X-API-Key: <token>` (both declared in the card).

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hearth_mesh::Secret;

/// Constant-time equality, so the token cannot be guessed byte by byte from timings.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuses requests without the configured token (when one is configured).
pub async fn require_token(
    State(token): State<Option<Secret>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(token) = token else {
        return next.run(req).await;
    };
    let headers = req.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    let ok = [bearer, key]
        .into_iter()
        .flatten()
        .any(|p| same(p.trim().as_bytes(), token.expose().as_bytes()));
    if ok {
        return next.run(req).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "a token is required (Authorization: Bearer <token>, or X-API-Key: <token>)",
    )
        .into_response()
}
