//! WebChat: a conversation page the gateway serves at `GET /chat`, from the
//! binary (no CDN, no external font: it works offline). The page talks to
//! the gateway through its public faces only — the OpenAI-compatible API,
//! streamed, for questions, and A2A's `CancelTask` for its stop button — so
//! it has no private API. It keeps conversations in the browser
//! (`localStorage`) and the token, when the gateway has one, in
//! `sessionStorage` (gone when the tab closes).
//!
//! The page itself is outside the token (it holds nothing); every request
//! it makes carries the token. A browser's `GET /` is sent to `/chat`.

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

const INDEX: &str = include_str!("../webchat/index.html");
const SCRIPT: &str = include_str!("../webchat/chat.js");
const STYLE: &str = include_str!("../webchat/chat.css");

/// The page's routes (outside the token).
pub fn router() -> Router {
    Router::new()
        .route(
            "/chat",
            get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/chat/chat.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/chat/chat.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Only this page's own script, style and requests.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src data:; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// A browser's `GET /` (it asks for HTML) goes to the page; everything else
/// at `/` is A2A JSON-RPC as before.
pub async fn redirect_root(req: Request, next: axum::middleware::Next) -> Response {
    let wants_html = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if req.method() == Method::GET && req.uri().path() == "/" && wants_html {
        return Redirect::to("/chat").into_response();
    }
    next.run(req).await
}
