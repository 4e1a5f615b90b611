//! A model server for tests: a test double that follows fixed rules (like
//! the scripted engine) but speaks the real HTTP wires — OpenAI's chat
//! completions (SSE chunks with tool-call fragments split across events) at
//! `/v1/chat/completions` and Ollama's native `/api/chat` (NDJSON lines) —
//! so Hearth's HTTP backends are exercised for real.
//!
//! Rules on the last message: a tool result → a text answer; a user message
//! with a `*delegate` tool offered → delegate; with an `*evaluate` tool →
//! call it with the arithmetic in the message; otherwise echo.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// How the double behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Follow the rules.
    Normal,
    /// Accept the request and never answer.
    Hang,
    /// Follow the rules, but call the calculator with arguments that are
    /// not a JSON object (a small model's malformed tool call).
    Malformed,
}

#[derive(Clone)]
struct Shared {
    mode: Mode,
    seen: Arc<Mutex<Vec<Value>>>,
}

/// A running double.
pub struct OpenAiDouble {
    /// `http://127.0.0.1:<port>/v1` (the OpenAI-compatible base).
    pub base_url: String,
    /// `http://127.0.0.1:<port>` (Ollama's base).
    pub root_url: String,
    seen: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OpenAiDouble {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl OpenAiDouble {
    /// Starts one on a free loopback port.
    pub async fn start(mode: Mode) -> anyhow::Result<Self> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .route("/api/chat", post(ollama_chat))
            .with_state(Shared {
                mode,
                seen: seen.clone(),
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            base_url: format!("http://{addr}/v1"),
            root_url: format!("http://{addr}"),
            seen,
            task,
        })
    }

    /// Every request body received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

fn expression(text: &str) -> Option<String> {
    let is_expr = |c: char| c.is_ascii_digit() || "+-*/^().% ".contains(c);
    text.split(|c: char| !is_expr(c))
        .map(str::trim)
        .filter(|s| s.chars().any(|c| c.is_ascii_digit()))
        .max_by_key(|s| s.len())
        .map(str::to_string)
}

fn sse(events: &[Value]) -> String {
    let mut out = String::new();
    for e in events {
        out.push_str(&format!("data: {e}\n\n"));
    }
    out.push_str("data: [DONE]\n\n");
    out
}

fn chunk(delta: Value, finish: Option<&str>) -> Value {
    json!({ "id": "x", "object": "chat.completion.chunk", "model": "double",
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }] })
}

/// What the rules decide for a request (tools named as the wire names them).
enum Decision {
    Answer(String),
    Call { name: String, args: Value },
}

async fn decide(s: &Shared, body: &str) -> Result<Decision, Response> {
    let Ok(req) = serde_json::from_str::<Value>(body) else {
        return Err((StatusCode::BAD_REQUEST, "body is not JSON").into_response());
    };
    if let Ok(mut seen) = s.seen.lock() {
        seen.push(req.clone());
    }
    if s.mode == Mode::Hang {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let messages = req["messages"].as_array().cloned().unwrap_or_default();
    let last = messages.last().cloned().unwrap_or(Value::Null);
    let role = last["role"].as_str().unwrap_or_default();
    let content = last["content"].as_str().unwrap_or_default().to_string();
    let tool = |suffix: &str| {
        req["tools"].as_array().and_then(|ts| {
            ts.iter()
                .filter_map(|t| t["function"]["name"].as_str())
                .find(|n| n.ends_with(suffix))
                .map(str::to_string)
        })
    };
    Ok(if role == "tool" {
        Decision::Answer(if content.starts_with("The answer is") {
            content
        } else {
            format!("The answer is {content}.")
        })
    } else if let Some(name) = tool("delegate").filter(|_| role == "user") {
        Decision::Call {
            name,
            args: json!({ "task": content }),
        }
    } else if let (Some(name), Some(expr)) = (tool("evaluate"), expression(&content)) {
        Decision::Call {
            name,
            args: if s.mode == Mode::Malformed {
                json!(expr)
            } else {
                json!({ "expression": expr })
            },
        }
    } else {
        Decision::Answer(content)
    })
}

/// Ollama's `/api/chat`: one JSON object per line, the last with `done`.
async fn ollama_chat(State(s): State<Shared>, body: String) -> Response {
    let decision = match decide(&s, &body).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let msg = |m: Value| json!({ "model": "double", "message": m, "done": false });
    let mut lines = match decision {
        Decision::Answer(text) => {
            let mid = text
                .char_indices()
                .nth(text.chars().count() / 2)
                .map_or(0, |(i, _)| i);
            let (a, b) = text.split_at(mid);
            vec![
                msg(json!({ "role": "assistant", "content": a })),
                msg(json!({ "role": "assistant", "content": b })),
            ]
        }
        Decision::Call { name, args } => vec![msg(json!({
            "role": "assistant", "content": "",
            "tool_calls": [{ "function": { "name": name, "arguments": args } }],
        }))],
    };
    lines.push(json!({ "model": "double", "message": { "role": "assistant", "content": "" },
                       "done": true, "done_reason": "stop", "prompt_eval_count": 13, "eval_count": 6 }));
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn completions(State(s): State<Shared>, body: String) -> Response {
    let decision = match decide(&s, &body).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let usage = json!({ "id": "x", "object": "chat.completion.chunk", "model": "double", "choices": [],
                        "usage": { "prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16 } });
    let events = match decision {
        Decision::Call { name, args } => {
            let args = args.to_string();
            let (a, b) = args.split_at(args.len() / 2);
            vec![
                chunk(
                    json!({ "role": "assistant", "tool_calls": [{ "index": 0, "id": "call_1", "type": "function",
                                                                     "function": { "name": name, "arguments": "" } }] }),
                    None,
                ),
                chunk(
                    json!({ "tool_calls": [{ "index": 0, "function": { "arguments": a } }] }),
                    None,
                ),
                chunk(
                    json!({ "tool_calls": [{ "index": 0, "function": { "arguments": b } }] }),
                    Some("tool_calls"),
                ),
                usage,
            ]
        }
        Decision::Answer(answer) => {
            let mid = answer
                .char_indices()
                .nth(answer.chars().count() / 2)
                .map_or(0, |(i, _)| i);
            let (a, b) = answer.split_at(mid);
            vec![
                chunk(json!({ "role": "assistant", "content": a }), None),
                chunk(json!({ "content": b }), Some("stop")),
                usage,
            ]
        }
    };
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from(sse(&events)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
