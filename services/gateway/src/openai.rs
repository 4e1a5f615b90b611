//! The OpenAI-compatible face of the gateway: `GET /v1/models`,
//! `POST /v1/chat/completions`, plain and streamed (server-sent events), and
//! `POST /v1/embeddings` (the memory's embedding model), so
//! a chat UI or a script written against the official `openai` SDK reaches
//! the mesh on the same port and behind the same token as A2A.
//!
//! A chat completion is a mesh task for the orchestrator, started through
//! the same [`A2aHandler`] as an A2A `SendMessage` (so over NATS it goes
//! through the durable work queue too). The conversation's last message is
//! the task; earlier messages the client sends are taken at its word and
//! given to the task as the conversation so far. `user` (or the
//! `X-Hearth-Session` header) becomes the task's A2A `contextId`.
//! `temperature` reaches every model call of the task (A2A metadata
//! `hearth.temperature`, passed on to subtasks); `stop` and `max_tokens`
//! (or `max_completion_tokens`) cut the answer the client gets, counted in
//! the engine's own tokens.
//!
//! What Hearth adds travels where standard clients ignore it: `usage.hearth`
//! (latency, model calls, FLOPs, energy, dollars, backend, task and context
//! ids) and, in streamed chunks, a `hearth` object for progress (the task's
//! status updates as they happen). Errors are OpenAI's error object with the
//! matching HTTP status; [`openai_errors`] gives the token guard's 401 and
//! the body limit's 413 the same shape on `/v1/…`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use futures::StreamExt;
use hearth_mesh::a2a::{answer_of, is_final, state_name, text_message, text_of, text_parts};
use hearth_mesh::clients::EngineClient;
use hearth_proto::a2a::stream_response::Payload;
use hearth_proto::a2a::{Role, TaskState};
use hearth_proto::v1::{ChatMessage, ChatRole, EmbedRequest, GenerateRequest, Usage};
use serde_json::{Value, json};

use crate::A2aHandler;

/// Most texts in one embeddings request (the engine's own limit).
const MAX_EMBED_INPUTS: usize = 256;

/// The one model this face serves: the orchestrator, which plans and
/// delegates to the operatives and their tools.
pub const MODEL: &str = "hearth";

/// Longest `user` / session id taken as a conversation's id.
const MAX_SESSION_CHARS: usize = 200;

/// The name `/v1/embeddings` answers to besides the embedding model's own:
/// the memory's embedding model, whatever it is.
pub const EMBED_MODEL: &str = "hearth-embed";

/// Most stop sequences a request may give (OpenAI's limit).
const MAX_STOP: usize = 4;

/// What the face reaches: the orchestrator (through the A2A handler) and
/// the engine (embeddings, and counting an answer's tokens).
#[derive(Clone)]
struct Face {
    handler: Arc<A2aHandler>,
    engine: EngineClient,
}

/// The routes, for the token-guarded part of the gateway.
pub fn router(handler: Arc<A2aHandler>, engine: EngineClient) -> Router {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .with_state(Face { handler, engine })
}

/// OpenAI's error object with its HTTP status.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    kind: &'static str,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// `{"error": {message, type, param, code}}`: the body of an error
    /// answer, and an error event in a stream.
    fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": Value::Null,
            "code": self.code,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

fn error(
    status: StatusCode,
    kind: &'static str,
    code: &'static str,
    message: impl Into<String>,
) -> ApiError {
    ApiError {
        status,
        kind,
        code,
        message: message.into(),
    }
}

fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        code,
        message,
    )
}

fn model_json(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": "hearth"})
}

/// `GET /v1/models`: the mesh's addressable agents as models, and the
/// memory's embedding model.
async fn models() -> Response {
    axum::Json(json!({"object": "list", "data": [model_json(MODEL), model_json(EMBED_MODEL)]}))
        .into_response()
}

/// `GET /v1/models/{id}`.
async fn model(axum::extract::Path(id): axum::extract::Path<String>) -> Response {
    if id == MODEL || id == EMBED_MODEL {
        return axum::Json(model_json(&id)).into_response();
    }
    unknown_model(&id).into_response()
}

fn unknown_model(id: &str) -> ApiError {
    error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "model_not_found",
        format!(
            "the model `{id}` does not exist: this gateway serves `{MODEL}` (the orchestrator) and `{EMBED_MODEL}` (embeddings)"
        ),
    )
}

/// A chat completion request, read by hand so each mistake gets its own
/// clear message.
#[derive(Debug)]
struct ChatRequest {
    model: String,
    /// The task's text: the last user message, after the conversation so
    /// far when the client sent one.
    text: String,
    stream: bool,
    session: Option<String>,
    /// `X-Hearth-Sensitive: true`.
    sensitive: bool,
    /// Sampling temperature for every model call of the task.
    temperature: Option<f32>,
    /// The answer ends before the first of these.
    stop: Vec<String>,
    /// The answer is at most this many of the model's tokens.
    max_tokens: Option<u32>,
}

/// The text of one message's `content`: a string, or text parts.
fn content_text(content: &Value, i: usize) -> Result<String, ApiError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => {
            let mut out = Vec::new();
            for p in parts {
                match (
                    p.get("type").and_then(Value::as_str),
                    p.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => out.push(t),
                    (Some(other), _) => {
                        return Err(bad_request(
                            "unsupported_content",
                            format!(
                                "messages[{i}]: content parts of type `{other}` are not supported (only `text`)"
                            ),
                        ));
                    }
                    _ => {
                        return Err(bad_request(
                            "invalid_content",
                            format!("messages[{i}]: each content part needs a `type` (and `text`)"),
                        ));
                    }
                }
            }
            Ok(out.join("\n"))
        }
        _ => Err(bad_request(
            "invalid_content",
            format!("messages[{i}].content must be a string or an array of text parts"),
        )),
    }
}

fn parse(body: &[u8], headers: &HeaderMap) -> Result<ChatRequest, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        bad_request(
            "invalid_json",
            format!("the request body is not valid JSON: {e}"),
        )
    })?;
    let Some(obj) = v.as_object() else {
        return Err(bad_request(
            "invalid_request",
            "the request body must be a JSON object",
        ));
    };
    let model = match obj.get("model") {
        Some(Value::String(m)) => m.clone(),
        Some(_) => return Err(bad_request("invalid_type", "`model` must be a string")),
        None => return Err(bad_request("missing_model", "`model` is required")),
    };
    if model != MODEL {
        return Err(unknown_model(&model));
    }
    if obj
        .get("tools")
        .is_some_and(|t| !t.is_null() && t.as_array().is_none_or(|a| !a.is_empty()))
    {
        return Err(bad_request(
            "tools_not_supported",
            "client-side `tools` are not supported: Hearth's agents call the mesh's own tools (list them with `hearth tools list`)",
        ));
    }
    let temperature = match obj.get("temperature") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(t) if (0.0..=2.0).contains(&t) => Some(t as f32),
            _ => {
                return Err(bad_request(
                    "invalid_temperature",
                    "`temperature` must be a number from 0 to 2",
                ));
            }
        },
        Some(_) => {
            return Err(bad_request(
                "invalid_type",
                "`temperature` must be a number",
            ));
        }
    };
    let stop: Vec<String> = match obj.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                bad_request(
                    "invalid_type",
                    "`stop` must be a string or an array of strings",
                )
            })?,
        Some(_) => {
            return Err(bad_request(
                "invalid_type",
                "`stop` must be a string or an array of strings",
            ));
        }
    };
    if stop.len() > MAX_STOP || stop.iter().any(String::is_empty) {
        return Err(bad_request(
            "invalid_stop",
            format!("`stop` takes 1 to {MAX_STOP} non-empty sequences"),
        ));
    }
    // `max_completion_tokens` is the newer name of the same limit.
    let max_tokens = match obj
        .get("max_completion_tokens")
        .filter(|v| !v.is_null())
        .or_else(|| obj.get("max_tokens"))
    {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Some(u32::try_from(n).unwrap_or(u32::MAX)),
            _ => {
                return Err(bad_request(
                    "invalid_max_tokens",
                    "`max_tokens` must be a whole number of at least 1",
                ));
            }
        },
    };
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad_request("invalid_type", "`stream` must be a boolean")),
    };
    let Some(messages) = obj.get("messages").and_then(Value::as_array) else {
        return Err(bad_request(
            "missing_messages",
            "`messages` is required: an array of {role, content}",
        ));
    };
    let mut turns = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).ok_or_else(|| {
            bad_request(
                "invalid_message",
                format!("messages[{i}] needs a `role` string"),
            )
        })?;
        let label = match role {
            "user" => "User",
            "assistant" => "Assistant",
            "system" | "developer" => "Instructions",
            "tool" | "function" => "Tool result",
            other => {
                return Err(bad_request(
                    "invalid_role",
                    format!(
                        "messages[{i}].role `{other}` is not one of user, assistant, system, developer, tool"
                    ),
                ));
            }
        };
        let text = content_text(m.get("content").unwrap_or(&Value::Null), i)?;
        turns.push((role, label, text));
    }
    let Some((last_role, _, last)) = turns.last() else {
        return Err(bad_request(
            "missing_messages",
            "`messages` must hold at least one message",
        ));
    };
    if *last_role != "user" || last.trim().is_empty() {
        return Err(bad_request(
            "invalid_message",
            "the last message must be a non-empty `user` message: it is the task",
        ));
    }
    let text = if turns.len() == 1 {
        last.clone()
    } else {
        let mut s = String::from("The conversation so far:\n");
        for (_, label, t) in &turns[..turns.len() - 1] {
            s.push_str(&format!("{label}: {t}\n"));
        }
        s.push_str(&format!("\nNow: {last}"));
        s
    };
    let session = headers
        .get("x-hearth-session")
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| obj.get("user").and_then(Value::as_str).map(str::to_string))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    if session
        .as_ref()
        .is_some_and(|s| s.chars().count() > MAX_SESSION_CHARS)
    {
        return Err(bad_request(
            "invalid_user",
            format!("`user` (or X-Hearth-Session) is longer than {MAX_SESSION_CHARS} characters"),
        ));
    }
    // `X-Hearth-Sensitive: true`: only local backends serve it.
    let sensitive = match headers
        .get("x-hearth-sensitive")
        .map(|h| h.to_str().unwrap_or_default().trim().to_ascii_lowercase())
    {
        None => false,
        Some(v) if v == "true" || v == "1" => true,
        Some(v) if v == "false" || v == "0" => false,
        Some(v) => {
            return Err(bad_request(
                "invalid_header",
                format!("X-Hearth-Sensitive must be true or false, not {v:?}"),
            ));
        }
    };
    Ok(ChatRequest {
        model,
        text,
        stream,
        session,
        sensitive,
        temperature,
        stop,
        max_tokens,
    })
}

/// A conversation's A2A context id: the same `user` always maps to the same
/// id.
fn context_id(session: Option<&str>) -> String {
    match session {
        Some(s) => uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_URL,
            format!("hearth:openai:{s}").as_bytes(),
        )
        .to_string(),
        None => String::new(),
    }
}

/// `usage` in OpenAI's shape, with Hearth's figures under `hearth`.
fn usage_json(u: &Usage, task_id: &str, context_id: &str) -> Value {
    let backend = hearth_proto::v1::EngineBackend::try_from(u.backend)
        .map(|b| b.as_str_name())
        .unwrap_or("ENGINE_BACKEND_UNSPECIFIED");
    json!({
        "prompt_tokens": u.tokens_in,
        "completion_tokens": u.tokens_out,
        "total_tokens": u.tokens_in + u.tokens_out,
        "hearth": {
            "type": "hearth.usage",
            "latency_ms": u.latency_ms,
            "model_calls": u.calls,
            "model": u.model,
            "backend": backend,
            "cached_tokens": u.tokens_cached,
            "flops": u.flops,
            "energy_joules": u.energy_joules,
            "cost_usd": u.cost_usd,
            "unmeasured": (!u.unmeasured.is_empty()).then_some(&u.unmeasured),
            "route": u.route,
            "sensitive": u.sensitive,
            "task_id": task_id,
            "context_id": context_id,
        },
    })
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `POST /v1/chat/completions`.
async fn chat(State(face): State<Face>, headers: HeaderMap, body: Bytes) -> Response {
    let req = match parse(&body, &headers) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let ctx = context_id(req.session.as_deref());
    let mut message = text_message(Role::User, req.text.clone(), "", &ctx);
    if req.sensitive {
        hearth_mesh::a2a::set_meta(
            &mut message,
            hearth_mesh::a2a::META_SENSITIVE,
            hearth_proto::prost_types::value::Kind::BoolValue(true),
        );
    }
    if let Some(t) = req.temperature {
        hearth_mesh::a2a::set_meta(
            &mut message,
            hearth_mesh::a2a::META_TEMPERATURE,
            hearth_proto::prost_types::value::Kind::NumberValue(f64::from(t)),
        );
    }
    let limits = Limits {
        stop: req.stop.clone(),
        max_tokens: req.max_tokens,
        engine: face.engine.clone(),
    };
    let events = match face.handler.start_message(message, "", true).await {
        Ok(e) => e,
        Err(e) => {
            return error(
                StatusCode::BAD_GATEWAY,
                "api_error",
                "mesh_unavailable",
                format!("the mesh did not take the task: {e}"),
            )
            .into_response();
        }
    };
    if req.stream {
        stream(req.model, events, limits).into_response()
    } else {
        complete(req.model, events, limits).await
    }
}

/// `stop` and `max_tokens`, applied to the answer the task gave: it ends
/// before the first stop sequence (`finish_reason` `stop`), and is cut to
/// `max_tokens` of the engine's tokens (`finish_reason` `length`).
struct Limits {
    stop: Vec<String>,
    max_tokens: Option<u32>,
    engine: EngineClient,
}

impl Limits {
    fn any(&self) -> bool {
        !self.stop.is_empty() || self.max_tokens.is_some()
    }

    /// The answer as the client gets it, and why it ends.
    async fn apply(&self, answer: String) -> (String, &'static str) {
        let mut text = answer;
        if let Some(at) = self.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
            text.truncate(at);
        }
        let Some(max) = self.max_tokens else {
            return (text, "stop");
        };
        let mut n = self.count(&text).await;
        if n <= max as usize {
            return (text, "stop");
        }
        // Cut in proportion, then shrink until it fits: a few counts.
        let mut end = text.len() * max as usize / n.max(1);
        loop {
            end = text.floor_char_boundary(end);
            let candidate = &text[..end];
            n = self.count(candidate).await;
            if n <= max as usize || end == 0 {
                text.truncate(end);
                return (text, "length");
            }
            end = end * 9 / 10;
        }
    }

    /// How many tokens the engine's model reads `text` as (its tokenizer,
    /// through `Render`); about four characters a token when the engine's
    /// backend cannot say (a server backend).
    async fn count(&self, text: &str) -> usize {
        if text.is_empty() {
            return 0;
        }
        let req = GenerateRequest {
            messages: vec![
                ChatMessage {
                    role: ChatRole::User.into(),
                    content: String::new(),
                    ..Default::default()
                },
                ChatMessage {
                    role: ChatRole::Assistant.into(),
                    content: text.to_string(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        match self.engine.render(&req).await {
            // The reply's ids end with its end-of-turn marker.
            Ok(r) if !r.completion_ids.is_empty() => r.completion_ids.len() - 1,
            _ => text.len().div_ceil(4),
        }
    }
}

/// `POST /v1/embeddings`: the memory's embedding model, through the engine.
async fn embeddings(State(face): State<Face>, body: Bytes) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return bad_request(
                "invalid_json",
                format!("the request body is not valid JSON: {e}"),
            )
            .into_response();
        }
    };
    let Some(obj) = v.as_object() else {
        return bad_request("invalid_request", "the request body must be a JSON object")
            .into_response();
    };
    let model = match obj.get("model") {
        Some(Value::String(m)) => m.clone(),
        Some(_) => return bad_request("invalid_type", "`model` must be a string").into_response(),
        None => return bad_request("missing_model", "`model` is required").into_response(),
    };
    let inputs: Vec<String> = match obj.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if !a.is_empty() => {
            match a.iter().map(|x| x.as_str().map(str::to_string)).collect() {
                Some(v) => v,
                None => {
                    return bad_request(
                        "invalid_input",
                        "`input` must be a string or an array of strings (token arrays are not supported)",
                    )
                    .into_response();
                }
            }
        }
        _ => {
            return bad_request(
                "invalid_input",
                "`input` must be a non-empty string or array of strings",
            )
            .into_response();
        }
    };
    if inputs.len() > MAX_EMBED_INPUTS || inputs.iter().any(String::is_empty) {
        return bad_request(
            "invalid_input",
            format!("`input` takes 1 to {MAX_EMBED_INPUTS} non-empty strings"),
        )
        .into_response();
    }
    let base64 = match obj.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(f)) if f == "float" => false,
        Some(Value::String(f)) if f == "base64" => true,
        Some(_) => {
            return bad_request(
                "invalid_encoding_format",
                "`encoding_format` must be `float` or `base64`",
            )
            .into_response();
        }
    };
    let r = match face
        .engine
        .embed(&EmbedRequest {
            model: String::new(),
            inputs: inputs.clone(),
        })
        .await
    {
        Ok(r) => r,
        Err(s) => {
            return error(
                StatusCode::BAD_GATEWAY,
                "api_error",
                "embedding_failed",
                format!("the engine could not embed: {}", s.message()),
            )
            .into_response();
        }
    };
    if model != EMBED_MODEL && model != r.model {
        return unknown_model(&model).into_response();
    }
    let data: Vec<Value> = r
        .embeddings
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = e.values.iter().flat_map(|f| f.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(e.values)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    // Tokens are not counted for embeddings: about four characters a token.
    let tokens: usize = inputs.iter().map(|t| t.len().div_ceil(4)).sum();
    axum::Json(json!({
        "object": "list",
        "data": data,
        "model": r.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
    .into_response()
}

/// The final task of a run, with its usage.
async fn final_task(
    mut events: futures::stream::BoxStream<
        'static,
        Result<hearth_proto::v1::TaskEvent, tonic::Status>,
    >,
) -> Result<(hearth_proto::a2a::Task, Usage), ApiError> {
    while let Some(ev) = events.next().await {
        let ev = ev.map_err(|s| {
            error(
                StatusCode::BAD_GATEWAY,
                "api_error",
                "mesh_error",
                format!("the task broke off: {}", s.message()),
            )
        })?;
        if let Some(Payload::Task(t)) = ev.event.and_then(|e| e.payload)
            && t.status.as_ref().is_some_and(|s| is_final(s.state))
        {
            return Ok((t, ev.usage.unwrap_or_default()));
        }
    }
    Err(error(
        StatusCode::BAD_GATEWAY,
        "api_error",
        "mesh_error",
        "the orchestrator ended the task without a result",
    ))
}

fn state_of(task: &hearth_proto::a2a::Task) -> i32 {
    task.status.as_ref().map_or(0, |s| s.state)
}

/// A task that ended failed, rejected or canceled, as an error.
fn task_failed(state: i32, answer: &str) -> ApiError {
    error(
        StatusCode::BAD_GATEWAY,
        "api_error",
        "task_failed",
        format!("the task ended {}: {answer}", state_name(state)),
    )
}

fn failed(state: i32) -> bool {
    matches!(
        TaskState::try_from(state),
        Ok(TaskState::Failed | TaskState::Rejected | TaskState::Canceled)
    )
}

async fn complete(
    model: String,
    events: futures::stream::BoxStream<'static, Result<hearth_proto::v1::TaskEvent, tonic::Status>>,
    limits: Limits,
) -> Response {
    let (task, usage) = match final_task(events).await {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let state = state_of(&task);
    let answer = answer_of(&task);
    if failed(state) {
        return task_failed(state, &answer).into_response();
    }
    let (answer, finish) = limits.apply(answer).await;
    axum::Json(json!({
        "id": format!("chatcmpl-{}", task.id),
        "object": "chat.completion",
        "created": unix_now(),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": answer, "refusal": Value::Null},
            "finish_reason": finish,
            "logprobs": Value::Null,
        }],
        "usage": usage_json(&usage, &task.id, &task.context_id),
        "hearth": {"state": state_name(state), "task_id": task.id, "context_id": task.context_id},
    }))
    .into_response()
}

/// Writes one streamed completion's chunks to the client's channel.
struct Chunks {
    tx: tokio::sync::mpsc::Sender<Result<Event, Infallible>>,
    id: String,
    model: String,
    created: u64,
}

impl Chunks {
    /// One `chat.completion.chunk`.
    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": Value::Null}],
        })
    }

    /// Sends one event; false when the client has gone.
    async fn send(&self, v: &Value) -> bool {
        self.tx
            .send(Ok(Event::default().data(v.to_string())))
            .await
            .is_ok()
    }

    /// Sends a delta; false when the client has gone.
    async fn delta(&self, delta: Value) -> bool {
        self.send(&self.chunk(delta, None)).await
    }
}

/// The task's events as chunks: the answer's text as deltas as it is
/// produced, progress under `hearth`, then the finish, the usage and
/// `[DONE]`.
fn stream(
    model: String,
    mut events: futures::stream::BoxStream<
        'static,
        Result<hearth_proto::v1::TaskEvent, tonic::Status>,
    >,
    limits: Limits,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    // A task of its own writes the chunks; a client that goes away closes
    // the channel, and the task stops reading the mesh's events.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(64);
    let mut out = Chunks {
        tx,
        id: String::from("chatcmpl-hearth"),
        model,
        created: unix_now(),
    };
    tokio::spawn(async move {
        let mut started = false;
        let mut streamed_text = false;
        while let Some(ev) = events.next().await {
            let ev = match ev {
                Ok(ev) => ev,
                Err(s) => {
                    let e = error(
                        StatusCode::BAD_GATEWAY,
                        "api_error",
                        "mesh_error",
                        format!("the task broke off: {}", s.message()),
                    );
                    out.send(&e.body()).await;
                    break;
                }
            };
            let usage = ev.usage.clone();
            let Some(payload) = ev.event.and_then(|e| e.payload) else {
                continue;
            };
            if !started {
                let task_id = match &payload {
                    Payload::Task(t) => &t.id,
                    Payload::Message(m) => &m.task_id,
                    Payload::StatusUpdate(u) => &u.task_id,
                    Payload::ArtifactUpdate(u) => &u.task_id,
                };
                if !task_id.is_empty() {
                    out.id = format!("chatcmpl-{task_id}");
                }
                if !out.delta(json!({"role": "assistant", "content": ""})).await {
                    return;
                }
                started = true;
            }
            match payload {
                Payload::ArtifactUpdate(u) => {
                    let text: String =
                        text_parts(u.artifact.iter().flat_map(|a| &a.parts)).collect();
                    // With `stop` or `max_tokens`, the answer goes out whole
                    // at the end, cut as they say.
                    if !text.is_empty() && !limits.any() {
                        streamed_text = true;
                        if !out.delta(json!({"content": text})).await {
                            return;
                        }
                    }
                }
                Payload::StatusUpdate(u) => {
                    let Some(status) = u.status else { continue };
                    let mut c = out.chunk(json!({}), None);
                    c["hearth"] = json!({
                        "type": "hearth.status",
                        "state": state_name(status.state),
                        "text": status.message.as_ref().map(text_of).unwrap_or_default(),
                    });
                    if !out.send(&c).await {
                        return;
                    }
                }
                Payload::Message(_) => {}
                Payload::Task(t) => {
                    let state = state_of(&t);
                    if !is_final(state) {
                        continue;
                    }
                    let answer = answer_of(&t);
                    if failed(state) {
                        out.send(&task_failed(state, &answer).body()).await;
                        break;
                    }
                    let (answer, finish) = limits.apply(answer).await;
                    if !streamed_text
                        && !answer.is_empty()
                        && !out.delta(json!({"content": answer})).await
                    {
                        return;
                    }
                    let mut last = out.chunk(json!({}), Some(finish));
                    last["usage"] = usage_json(&usage.unwrap_or_default(), &t.id, &t.context_id);
                    last["hearth"] = json!({"type": "hearth.final", "state": state_name(state), "task_id": t.id, "context_id": t.context_id});
                    if !out.send(&last).await {
                        return;
                    }
                    break;
                }
            }
        }
        let _ = out.tx.send(Ok(Event::default().data("[DONE]"))).await;
    });
    Sse::new(tokio_stream::wrappers::ReceiverStream::new(rx)).keep_alive(KeepAlive::default())
}

/// On `/v1/…`, an error answered before the request reached this face (the
/// token guard's 401, the body limit's 413, too many failed tokens' 429) in
/// OpenAI's error shape, so an SDK reports it as it would OpenAI's.
pub async fn openai_errors(req: Request, next: axum::middleware::Next) -> Response {
    let on_face = req.uri().path().starts_with("/v1/");
    let resp = next.run(req).await;
    let status = resp.status();
    if !on_face || !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let (kind, code) = match status {
        StatusCode::UNAUTHORIZED => ("invalid_request_error", "invalid_api_key"),
        StatusCode::PAYLOAD_TOO_LARGE => ("invalid_request_error", "request_too_large"),
        StatusCode::TOO_MANY_REQUESTS => ("rate_limit_error", "rate_limit_exceeded"),
        StatusCode::NOT_FOUND => ("invalid_request_error", "not_found"),
        StatusCode::METHOD_NOT_ALLOWED => ("invalid_request_error", "method_not_allowed"),
        s if s.is_client_error() => ("invalid_request_error", "invalid_request"),
        _ => ("api_error", "internal_error"),
    };
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string()
    } else {
        text
    };
    let mut out = error(status, kind, code, message).into_response();
    for (name, value) in &parts.headers {
        if name == header::WWW_AUTHENTICATE || name == header::RETRY_AFTER {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(v: Value) -> Result<ChatRequest, StatusCode> {
        parse(v.to_string().as_bytes(), &HeaderMap::new()).map_err(|e| e.status)
    }

    #[test]
    fn a_request_is_read_and_each_mistake_is_a_clear_error() {
        let ok =
            parsed(json!({"model": "hearth", "messages": [{"role": "user", "content": "hi"}]}))
                .unwrap();
        assert_eq!(ok.text, "hi");
        assert!(!ok.stream);
        let with_history = parsed(
            json!({"model": "hearth", "stream": true, "user": "ann", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "my name is Ann"}]},
            {"role": "assistant", "content": "Hello Ann"},
            {"role": "user", "content": "what is my name?"}]}),
        )
        .unwrap();
        assert!(with_history.stream);
        assert_eq!(with_history.session.as_deref(), Some("ann"));
        assert!(
            with_history.text.contains("User: my name is Ann"),
            "{}",
            with_history.text
        );
        assert!(with_history.text.ends_with("Now: what is my name?"));
        assert_eq!(context_id(Some("ann")), context_id(Some("ann")));
        assert_ne!(context_id(Some("ann")), context_id(Some("bob")));

        assert_eq!(
            parse(b"{not json", &HeaderMap::new())
                .map_err(|e| e.status)
                .unwrap_err(),
            StatusCode::BAD_REQUEST
        );
        for (body, status) in [
            (json!([1]), StatusCode::BAD_REQUEST),
            (json!({"messages": []}), StatusCode::BAD_REQUEST),
            (
                json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}),
                StatusCode::NOT_FOUND,
            ),
            (json!({"model": "hearth"}), StatusCode::BAD_REQUEST),
            (
                json!({"model": "hearth", "messages": []}),
                StatusCode::BAD_REQUEST,
            ),
            (
                json!({"model": "hearth", "messages": [{"role": "assistant", "content": "x"}]}),
                StatusCode::BAD_REQUEST,
            ),
            (
                json!({"model": "hearth", "messages": [{"role": "robot", "content": "x"}]}),
                StatusCode::BAD_REQUEST,
            ),
            (
                json!({"model": "hearth", "messages": [{"role": "user", "content": 5}]}),
                StatusCode::BAD_REQUEST,
            ),
            (
                json!({"model": "hearth", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
                StatusCode::BAD_REQUEST,
            ),
            (
                json!({"model": "hearth", "stream": "yes", "messages": [{"role": "user", "content": "x"}]}),
                StatusCode::BAD_REQUEST,
            ),
            (
                json!({"model": "hearth", "tools": [{"type": "function"}], "messages": [{"role": "user", "content": "x"}]}),
                StatusCode::BAD_REQUEST,
            ),
            (
                json!({"model": "hearth", "user": "u".repeat(201), "messages": [{"role": "user", "content": "x"}]}),
                StatusCode::BAD_REQUEST,
            ),
        ] {
            assert_eq!(parsed(body.clone()).err(), Some(status), "{body}");
        }
        // An empty tools list is no tools.
        assert!(parsed(json!({"model": "hearth", "tools": [], "messages": [{"role": "user", "content": "x"}]})).is_ok());
    }
}
