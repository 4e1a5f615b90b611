//! What the HTTP backends share: one way to send a request with a deadline
//! and turn transport failures and error statuses into [`EngineError`]s.

use std::time::Duration;

use crate::backend::EngineError;

/// How much of an error body is quoted back.
const ERROR_BODY_BYTES: usize = 512;

/// A client with a connect timeout no longer than `timeout` (or 10 s).
pub fn client(timeout: Duration) -> Result<reqwest::Client, EngineError> {
    reqwest::Client::builder()
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .build()
        .map_err(|e| EngineError::NotConfigured(e.to_string()))
}

/// Checks that `url` is an http(s) URL, with `example` in the error.
pub fn check_url(url: &str, example: &str) -> Result<String, EngineError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(url.trim_end_matches('/').to_string())
    } else {
        Err(EngineError::NotConfigured(format!(
            "engine URL `{url}` is not an http(s) URL (expected e.g. {example})"
        )))
    }
}

/// Sends `rb`; an error status becomes [`EngineError::Backend`] quoting the
/// start of the body, a transport failure [`EngineError::Unreachable`].
pub async fn send(
    rb: reqwest::RequestBuilder,
    timeout: Duration,
    base_url: &str,
) -> Result<reqwest::Response, EngineError> {
    let resp = tokio::time::timeout(timeout, rb.send())
        .await
        .map_err(|_| EngineError::Timeout(timeout))?
        .map_err(|e| EngineError::Unreachable {
            url: base_url.to_string(),
            reason: e.to_string(),
        })?;
    if !resp.status().is_success() {
        let status = resp.status().as_u16();
        let mut body = resp.text().await.unwrap_or_default();
        body.truncate(floor_char_boundary(&body, ERROR_BODY_BYTES));
        return Err(EngineError::Backend { status, body });
    }
    Ok(resp)
}

/// The largest char boundary of `s` at or below `max`.
pub fn floor_char_boundary(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    (0..=max)
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}

/// A tool's input schema as JSON (`{"type":"object"}` when empty).
pub fn tool_schema(name: &str, schema: &str) -> Result<serde_json::Value, EngineError> {
    if schema.trim().is_empty() {
        return Ok(serde_json::json!({ "type": "object" }));
    }
    serde_json::from_str(schema).map_err(|e| {
        EngineError::InvalidRequest(format!("tool `{name}` has a malformed schema: {e}"))
    })
}
