//! What the HTTP backends share: one way to send a request with a deadline
//! and turn transport failures and error statuses into [`EngineError`]s.

use std::collections::HashMap;
use std::time::Duration;

use hearth_proto::v1::ToolSpec;
use serde_json::{Value, json};

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
        body.truncate(body.floor_char_boundary(ERROR_BODY_BYTES));
        return Err(EngineError::Backend { status, body });
    }
    Ok(resp)
}

/// One JSON object of a streamed reply (an NDJSON line, an SSE event's
/// data): parsed, and an `error` object in it turned into the backend's
/// error. `what` names the unit in the message (`"a stream line"`).
pub fn stream_json(text: &str, what: &str) -> Result<Value, EngineError> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| EngineError::Malformed(format!("{what} is not JSON: {e}")))?;
    match v.get("error") {
        Some(err) => Err(EngineError::Backend {
            status: 200,
            body: err.to_string(),
        }),
        None => Ok(v),
    }
}

/// `server.tool` → `server__tool` (OpenAI and Ollama function names allow
/// `[A-Za-z0-9_-]`).
pub fn wire_tool_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c.to_string()
            } else {
                "__".into()
            }
        })
        .collect()
}

/// The tools as OpenAI-style `function` entries (Ollama takes the same),
/// and the map from wire names back to mesh names. An empty schema is an
/// object; a malformed one is the caller's error.
pub fn function_tools(
    tools: &[ToolSpec],
) -> Result<(Vec<Value>, HashMap<String, String>), EngineError> {
    let mut names = HashMap::new();
    let mut out = Vec::with_capacity(tools.len());
    for t in tools {
        let schema = if t.input_schema_json.trim().is_empty() {
            json!({ "type": "object" })
        } else {
            serde_json::from_str::<Value>(&t.input_schema_json).map_err(|e| {
                EngineError::InvalidRequest(format!(
                    "tool `{}` has a malformed schema: {e}",
                    t.name
                ))
            })?
        };
        let wire = wire_tool_name(&t.name);
        names.insert(wire.clone(), t.name.clone());
        out.push(json!({
            "type": "function",
            "function": { "name": wire, "description": t.description, "parameters": schema },
        }));
    }
    Ok((out, names))
}

/// A JSON array of numbers as `f32`s (anything else: empty).
pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_f64)
                .map(|x| x as f32)
                .collect()
        })
        .unwrap_or_default()
}
