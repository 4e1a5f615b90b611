//! Any OpenAI-compatible chat-completions server: vLLM, SGLang, llama.cpp's
//! server, LM Studio, Ollama's `/v1`, and cloud APIs.
//!
//! Requests stream (`stream: true`, with usage requested); text deltas are
//! passed on as they arrive, tool-call fragments are assembled by index and
//! sent once complete, on the last chunk with the usage. A server that
//! ignores `stream` and answers with one JSON body is accepted too.
//!
//! Tool names on the mesh are `server.tool`; OpenAI function names may not
//! contain dots, so they are sent as `server__tool` and mapped back.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use hearth_proto::v1::{
    ChatMessage, EmbedRequest, EmbedResponse, Embedding, EngineBackend, FinishReason,
    GenerateChunk, GenerateRequest, ToolCall, Usage,
};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::http;
use crate::backend::{Backend, ChunkStream, EngineError};

/// An OpenAI-compatible backend.
#[derive(Clone)]
pub struct OpenAiBackend {
    http: reqwest::Client,
    base_url: String,
    model: String,
    api_key: Option<String>,
    timeout: Duration,
    max_tokens: u32,
}

impl std::fmt::Debug for OpenAiBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiBackend")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl OpenAiBackend {
    /// A backend for the API at `base_url` (ending in `/v1`).
    pub fn new(
        base_url: &str,
        model: &str,
        api_key: Option<String>,
        timeout: Duration,
        max_tokens: u32,
    ) -> Result<Self, EngineError> {
        let base_url = http::check_url(base_url, "http://127.0.0.1:8080/v1")?;
        let http = http::client(timeout)?;
        Ok(Self {
            http,
            base_url,
            model: model.to_string(),
            api_key: api_key.filter(|k| !k.is_empty()),
            timeout,
            max_tokens,
        })
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        let rb = self.http.post(format!("{}{path}", self.base_url));
        match &self.api_key {
            Some(k) => rb.bearer_auth(k),
            None => rb,
        }
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<reqwest::Response, EngineError> {
        http::send(rb, self.timeout, &self.base_url).await
    }
}

pub use super::http::wire_tool_name;

fn message_json(m: &ChatMessage) -> Value {
    let mut v = json!({ "role": m.role().name(), "content": m.content });
    if !m.tool_calls.is_empty() {
        v["tool_calls"] = m
            .tool_calls
            .iter()
            .map(|c| {
                json!({
                    "id": c.id,
                    "type": "function",
                    "function": { "name": wire_tool_name(&c.name), "arguments": c.arguments_json },
                })
            })
            .collect();
    }
    if !m.tool_call_id.is_empty() {
        v["tool_call_id"] = json!(m.tool_call_id);
    }
    v
}

/// Builds the request body and the map from wire tool names back to mesh names.
fn request_body(
    req: &GenerateRequest,
    model: &str,
    max_tokens: u32,
) -> Result<(Value, HashMap<String, String>), EngineError> {
    if req.messages.is_empty() {
        return Err(EngineError::InvalidRequest("no messages".into()));
    }
    let (tools, names) = http::function_tools(&req.tools)?;
    let mut body = json!({
        "model": if req.model.is_empty() { model } else { &req.model },
        "messages": req.messages.iter().map(message_json).collect::<Vec<_>>(),
        "stream": true,
        "stream_options": { "include_usage": true },
        "max_tokens": if req.max_tokens > 0 { req.max_tokens } else { max_tokens },
    });
    if !tools.is_empty() {
        body["tools"] = Value::Array(tools);
        if req.answer_now {
            body["tool_choice"] = json!("none");
        }
    }
    if let Some(t) = req.temperature {
        body["temperature"] = json!(t);
    }
    if !req.stop.is_empty() {
        body["stop"] = json!(req.stop);
    }
    Ok((body, names))
}

/// Tool-call fragments being assembled, by their index in the choice.
#[derive(Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

#[derive(Default)]
struct Assembler {
    calls: BTreeMap<u64, PartialCall>,
    finish_reason: Option<FinishReason>,
    usage: Option<Usage>,
}

impl Assembler {
    /// Takes one parsed chunk (or a whole non-streamed completion); returns
    /// the text it adds.
    fn absorb(&mut self, v: &Value) -> String {
        let mut text = String::new();
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(Usage {
                tokens_in: u.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0),
                tokens_out: u
                    .get("completion_tokens")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
                ..Default::default()
            });
        }
        let Some(choices) = v.get("choices").and_then(Value::as_array) else {
            return text;
        };
        for choice in choices {
            // Streamed chunks carry `delta`; a whole completion carries `message`.
            let part = choice.get("delta").or_else(|| choice.get("message"));
            if let Some(part) = part {
                if let Some(c) = part.get("content").and_then(Value::as_str) {
                    text.push_str(c);
                }
                if let Some(calls) = part.get("tool_calls").and_then(Value::as_array) {
                    for (pos, call) in calls.iter().enumerate() {
                        let idx = call
                            .get("index")
                            .and_then(Value::as_u64)
                            .unwrap_or(pos as u64);
                        let entry = self.calls.entry(idx).or_default();
                        if let Some(id) = call.get("id").and_then(Value::as_str) {
                            entry.id.push_str(id);
                        }
                        if let Some(f) = call.get("function") {
                            if let Some(n) = f.get("name").and_then(Value::as_str) {
                                entry.name.push_str(n);
                            }
                            match f.get("arguments") {
                                Some(Value::String(a)) => entry.arguments.push_str(a),
                                // Some servers send the arguments as an object.
                                Some(obj @ Value::Object(_)) => {
                                    entry.arguments.push_str(&obj.to_string())
                                }
                                _ => {}
                            }
                        }
                    }
                }
            }
            if let Some(r) = choice.get("finish_reason").and_then(Value::as_str) {
                // A reason outside the closed set (a provider's own) ends
                // the turn like `stop`.
                self.finish_reason = Some(FinishReason::from_name(r).unwrap_or(FinishReason::Stop));
            }
        }
        text
    }

    fn finish(self, names: &HashMap<String, String>, backend: EngineBackend) -> GenerateChunk {
        let tool_calls = self
            .calls
            .into_iter()
            .enumerate()
            .map(|(i, (_, c))| ToolCall {
                id: if c.id.is_empty() {
                    format!("call_{i}")
                } else {
                    c.id
                },
                name: names.get(&c.name).cloned().unwrap_or(c.name),
                arguments_json: c.arguments,
            })
            .collect::<Vec<_>>();
        let finish_reason = self.finish_reason.unwrap_or(if tool_calls.is_empty() {
            FinishReason::Stop
        } else {
            FinishReason::ToolCalls
        });
        let mut usage = self.usage.unwrap_or_default();
        usage.backend = backend.into();
        usage.calls = 1;
        GenerateChunk {
            delta: String::new(),
            tool_calls,
            finish_reason: finish_reason.into(),
            usage: Some(usage),
        }
    }
}

#[async_trait::async_trait]
impl Backend for OpenAiBackend {
    fn kind(&self) -> hearth_proto::v1::EngineBackend {
        hearth_proto::v1::EngineBackend::Openai
    }

    fn default_model(&self) -> &str {
        &self.model
    }

    async fn generate(&self, req: GenerateRequest) -> Result<ChunkStream, EngineError> {
        let (body, names) = request_body(&req, &self.model, self.max_tokens)?;
        let resp = self
            .send(self.post("/chat/completions").json(&body))
            .await?;
        let model = body["model"].as_str().unwrap_or_default().to_string();
        let (tx, rx) = mpsc::channel::<Result<GenerateChunk, EngineError>>(64);
        let timeout = self.timeout;
        let is_sse = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        tokio::spawn(async move {
            let mut asm = Assembler::default();
            if is_sse {
                let mut events = resp.bytes_stream().eventsource();
                loop {
                    let ev = match tokio::time::timeout(timeout, events.next()).await {
                        Err(_) => {
                            let _ = tx.send(Err(EngineError::Timeout(timeout))).await;
                            return;
                        }
                        Ok(None) => break,
                        Ok(Some(Err(e))) => {
                            let _ = tx.send(Err(EngineError::Malformed(e.to_string()))).await;
                            return;
                        }
                        Ok(Some(Ok(ev))) => ev,
                    };
                    if ev.data.trim() == "[DONE]" {
                        break;
                    }
                    let v = match http::stream_json(&ev.data, "an SSE event") {
                        Ok(v) => v,
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    };
                    let text = asm.absorb(&v);
                    if !text.is_empty()
                        && tx
                            .send(Ok(GenerateChunk {
                                delta: text,
                                ..Default::default()
                            }))
                            .await
                            .is_err()
                    {
                        return; // the caller went away
                    }
                }
            } else {
                let body = match tokio::time::timeout(timeout, resp.json::<Value>()).await {
                    Err(_) => {
                        let _ = tx.send(Err(EngineError::Timeout(timeout))).await;
                        return;
                    }
                    Ok(Err(e)) => {
                        let _ = tx.send(Err(EngineError::Malformed(e.to_string()))).await;
                        return;
                    }
                    Ok(Ok(v)) => v,
                };
                let text = asm.absorb(&body);
                if !text.is_empty() {
                    let _ = tx
                        .send(Ok(GenerateChunk {
                            delta: text,
                            ..Default::default()
                        }))
                        .await;
                }
            }
            let mut last = asm.finish(&names, EngineBackend::Openai);
            if let Some(u) = last.usage.as_mut() {
                u.model = model;
            }
            let _ = tx.send(Ok(last)).await;
        });
        Ok(ReceiverStream::new(rx).boxed())
    }

    async fn embed(&self, req: EmbedRequest) -> Result<EmbedResponse, EngineError> {
        let model = if req.model.is_empty() {
            self.model.clone()
        } else {
            req.model
        };
        let body = json!({ "model": model, "input": req.inputs });
        let resp = self.send(self.post("/embeddings").json(&body)).await?;
        let v: Value = tokio::time::timeout(self.timeout, resp.json())
            .await
            .map_err(|_| EngineError::Timeout(self.timeout))?
            .map_err(|e| EngineError::Malformed(e.to_string()))?;
        let data = v.get("data").and_then(Value::as_array).ok_or_else(|| {
            EngineError::Malformed("no `data` array in the embeddings reply".into())
        })?;
        let embeddings = data
            .iter()
            .map(|d| Embedding {
                values: d.get("embedding").map(http::floats).unwrap_or_default(),
            })
            .collect();
        Ok(EmbedResponse { embeddings, model })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_proto::v1::ToolSpec;

    #[test]
    fn tool_names_are_made_wire_safe_and_mapped_back() {
        assert_eq!(
            wire_tool_name("calculator.evaluate"),
            "calculator__evaluate"
        );
        let req = GenerateRequest {
            messages: vec![ChatMessage {
                role: hearth_proto::v1::ChatRole::User.into(),
                content: "hi".into(),
                ..Default::default()
            }],
            tools: vec![ToolSpec {
                name: "calculator.evaluate".into(),
                description: "d".into(),
                input_schema_json: r#"{"type":"object"}"#.into(),
            }],
            ..Default::default()
        };
        let (body, names) = request_body(&req, "m", 64).unwrap();
        assert_eq!(body["tools"][0]["function"]["name"], "calculator__evaluate");
        assert_eq!(names["calculator__evaluate"], "calculator.evaluate");
        assert_eq!(body["stream"], true);
    }

    #[test]
    fn streamed_tool_call_fragments_assemble() {
        let mut a = Assembler::default();
        a.absorb(&json!({"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c1","function":{"name":"calculator__evaluate","arguments":"{\"expr"}}]}}]}));
        a.absorb(&json!({"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ession\":\"1+1\"}"}}]},"finish_reason":"tool_calls"}]}));
        a.absorb(&json!({"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":7}}));
        let names = HashMap::from([(
            "calculator__evaluate".to_string(),
            "calculator.evaluate".to_string(),
        )]);
        let last = a.finish(&names, EngineBackend::Openai);
        assert_eq!(last.tool_calls.len(), 1);
        assert_eq!(last.tool_calls[0].name, "calculator.evaluate");
        assert_eq!(last.tool_calls[0].arguments_json, r#"{"expression":"1+1"}"#);
        assert_eq!(
            last.finish_reason(),
            hearth_proto::v1::FinishReason::ToolCalls
        );
        let u = last.usage.unwrap();
        assert_eq!((u.tokens_in, u.tokens_out), (12, 7));
    }

    #[test]
    fn a_non_url_is_a_configuration_error() {
        let e = OpenAiBackend::new("localhost:8080", "m", None, Duration::from_secs(1), 16)
            .unwrap_err();
        assert!(matches!(e, EngineError::NotConfigured(_)));
    }
}
