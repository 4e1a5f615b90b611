//! Ollama's native API: `POST /api/chat` streaming newline-delimited JSON,
//! with tool calls, and `POST /api/embed`.
//!
//! Ollama sends a tool call whole (arguments as a JSON object) in one line;
//! text arrives as `message.content` pieces; the last line has `done: true`
//! with `prompt_eval_count` and `eval_count`. Tool names travel as
//! `server__tool` (as with the OpenAI backend) and are mapped back.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use hearth_proto::v1::{
    ChatMessage, EmbedRequest, EmbedResponse, Embedding, GenerateChunk, GenerateRequest, ToolCall,
    Usage,
};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::http;
use super::http::wire_tool_name;
use crate::backend::{Backend, ChunkStream, EngineError};

/// Longest line accepted from the server.
const MAX_LINE_BYTES: usize = 8 << 20;

/// Ollama's native API.
#[derive(Clone)]
pub struct OllamaBackend {
    http: reqwest::Client,
    base_url: String,
    model: String,
    timeout: Duration,
    max_tokens: u32,
}

impl std::fmt::Debug for OllamaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OllamaBackend")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .finish()
    }
}

impl OllamaBackend {
    /// A backend for the Ollama server at `base_url` (its root, e.g.
    /// `http://127.0.0.1:11434`).
    pub fn new(
        base_url: &str,
        model: &str,
        timeout: Duration,
        max_tokens: u32,
    ) -> Result<Self, EngineError> {
        let base_url = http::check_url(base_url, "http://127.0.0.1:11434")?;
        if model.is_empty() {
            return Err(EngineError::NotConfigured(
                "the ollama backend needs a model name: set HEARTH_ENGINE_MODEL (e.g. llama3.2)"
                    .into(),
            ));
        }
        Ok(Self {
            http: http::client(timeout)?,
            base_url,
            model: model.to_string(),
            timeout,
            max_tokens,
        })
    }
}

fn message_json(m: &ChatMessage, messages: &[ChatMessage]) -> Value {
    let mut v = json!({ "role": m.role().name(), "content": m.content });
    if !m.tool_calls.is_empty() {
        v["tool_calls"] = m
            .tool_calls
            .iter()
            .map(|c| {
                let args =
                    serde_json::from_str::<Value>(&c.arguments_json).unwrap_or_else(|_| json!({}));
                json!({ "function": { "name": wire_tool_name(&c.name), "arguments": args } })
            })
            .collect();
    }
    if m.role() == hearth_proto::v1::ChatRole::Tool
        && let Some(call) = messages
            .iter()
            .flat_map(|x| &x.tool_calls)
            .find(|c| c.id == m.tool_call_id)
    {
        v["tool_name"] = json!(wire_tool_name(&call.name));
    }
    v
}

/// The request body and the map from wire tool names back to mesh names.
fn request_body(
    req: &GenerateRequest,
    model: &str,
    max_tokens: u32,
) -> Result<(Value, HashMap<String, String>), EngineError> {
    if req.messages.is_empty() {
        return Err(EngineError::InvalidRequest("no messages".into()));
    }
    let (tools, names) = http::function_tools(&req.tools)?;
    let mut options = json!({
        "num_predict": if req.max_tokens > 0 { req.max_tokens } else { max_tokens },
    });
    if let Some(t) = req.temperature {
        options["temperature"] = json!(t);
    }
    if !req.stop.is_empty() {
        options["stop"] = json!(req.stop);
    }
    let mut body = json!({
        "model": if req.model.is_empty() { model } else { &req.model },
        "messages": req.messages.iter().map(|m| message_json(m, &req.messages)).collect::<Vec<_>>(),
        "stream": true,
        "options": options,
    });
    // Ollama has no tool_choice: an answer-only turn offers no tools.
    if !tools.is_empty() && !req.answer_now {
        body["tools"] = Value::Array(tools);
    }
    Ok((body, names))
}

/// Reads one line of the stream: text, tool calls, and on the last line
/// the usage and finish reason.
fn chunk_of(v: &Value, names: &HashMap<String, String>, calls_so_far: usize) -> GenerateChunk {
    let mut chunk = GenerateChunk::default();
    if let Some(m) = v.get("message") {
        if let Some(c) = m.get("content").and_then(Value::as_str) {
            chunk.delta = c.to_string();
        }
        if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
            for (i, call) in calls.iter().enumerate() {
                let Some(f) = call.get("function") else {
                    continue;
                };
                let wire = f.get("name").and_then(Value::as_str).unwrap_or_default();
                let args = match f.get("arguments") {
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => "{}".into(),
                };
                chunk.tool_calls.push(ToolCall {
                    id: call
                        .get("id")
                        .and_then(Value::as_str)
                        .map_or_else(|| format!("call_{}", calls_so_far + i), str::to_string),
                    name: names.get(wire).cloned().unwrap_or_else(|| wire.to_string()),
                    arguments_json: args,
                });
            }
        }
    }
    if v.get("done").and_then(Value::as_bool) == Some(true) {
        chunk.finish_reason = v
            .get("done_reason")
            .and_then(Value::as_str)
            .and_then(hearth_proto::v1::FinishReason::from_name)
            .unwrap_or(hearth_proto::v1::FinishReason::Stop)
            .into();
        chunk.usage = Some(Usage {
            tokens_in: v
                .get("prompt_eval_count")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            tokens_out: v.get("eval_count").and_then(Value::as_u64).unwrap_or(0),
            backend: hearth_proto::v1::EngineBackend::Ollama.into(),
            calls: 1,
            ..Default::default()
        });
    }
    chunk
}

#[async_trait::async_trait]
impl Backend for OllamaBackend {
    fn kind(&self) -> hearth_proto::v1::EngineBackend {
        hearth_proto::v1::EngineBackend::Ollama
    }

    fn default_model(&self) -> &str {
        &self.model
    }

    async fn generate(&self, req: GenerateRequest) -> Result<ChunkStream, EngineError> {
        let (body, names) = request_body(&req, &self.model, self.max_tokens)?;
        let model = body["model"].as_str().unwrap_or_default().to_string();
        let url = format!("{}/api/chat", self.base_url);
        let resp = http::send(
            self.http.post(&url).json(&body),
            self.timeout,
            &self.base_url,
        )
        .await?;
        let (tx, rx) = mpsc::channel::<Result<GenerateChunk, EngineError>>(64);
        let timeout = self.timeout;
        tokio::spawn(async move {
            let mut bytes = resp.bytes_stream();
            let mut buf: Vec<u8> = Vec::new();
            let mut calls = 0usize;
            let mut any_call = false;
            loop {
                // Whole lines first; read more only when none is buffered.
                if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    let line = String::from_utf8_lossy(&line);
                    if line.trim().is_empty() {
                        continue;
                    }
                    let v = match http::stream_json(line.trim(), "a stream line") {
                        Ok(v) => v,
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    };
                    let mut chunk = chunk_of(&v, &names, calls);
                    calls += chunk.tool_calls.len();
                    any_call |= !chunk.tool_calls.is_empty();
                    let done = chunk.usage.is_some();
                    if let Some(u) = chunk.usage.as_mut() {
                        u.model = model.clone();
                        if any_call {
                            chunk.finish_reason = hearth_proto::v1::FinishReason::ToolCalls.into();
                        }
                    }
                    let empty = chunk.delta.is_empty() && chunk.tool_calls.is_empty() && !done;
                    if !empty && tx.send(Ok(chunk)).await.is_err() {
                        return; // the caller went away
                    }
                    if done {
                        return;
                    }
                    continue;
                }
                if buf.len() > MAX_LINE_BYTES {
                    let _ = tx
                        .send(Err(EngineError::Malformed(format!(
                            "a stream line is over {MAX_LINE_BYTES} bytes"
                        ))))
                        .await;
                    return;
                }
                match tokio::time::timeout(timeout, bytes.next()).await {
                    Err(_) => {
                        let _ = tx.send(Err(EngineError::Timeout(timeout))).await;
                        return;
                    }
                    Ok(None) => {
                        let _ = tx
                            .send(Err(EngineError::Malformed(
                                "the stream ended before its last (`done`) line".into(),
                            )))
                            .await;
                        return;
                    }
                    Ok(Some(Err(e))) => {
                        let _ = tx.send(Err(EngineError::Malformed(e.to_string()))).await;
                        return;
                    }
                    Ok(Some(Ok(b))) => buf.extend_from_slice(&b),
                }
            }
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
        let url = format!("{}/api/embed", self.base_url);
        let resp = http::send(
            self.http.post(&url).json(&body),
            self.timeout,
            &self.base_url,
        )
        .await?;
        let v: Value = tokio::time::timeout(self.timeout, resp.json())
            .await
            .map_err(|_| EngineError::Timeout(self.timeout))?
            .map_err(|e| EngineError::Malformed(e.to_string()))?;
        let rows = v
            .get("embeddings")
            .and_then(Value::as_array)
            .ok_or_else(|| EngineError::Malformed("no `embeddings` array in the reply".into()))?;
        let embeddings = rows
            .iter()
            .map(|r| Embedding {
                values: http::floats(r),
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
    fn tool_turns_carry_the_tool_name_and_object_arguments() {
        let call = ToolCall {
            id: "c1".into(),
            name: "calculator.evaluate".into(),
            arguments_json: r#"{"expression":"1+1"}"#.into(),
        };
        let msgs = vec![
            ChatMessage {
                role: hearth_proto::v1::ChatRole::Assistant.into(),
                tool_calls: vec![call],
                ..Default::default()
            },
            ChatMessage {
                role: hearth_proto::v1::ChatRole::Tool.into(),
                content: "2".into(),
                tool_call_id: "c1".into(),
                ..Default::default()
            },
        ];
        let req = GenerateRequest {
            messages: msgs,
            tools: vec![ToolSpec {
                name: "calculator.evaluate".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let (body, names) = request_body(&req, "m", 64).unwrap();
        assert_eq!(
            body["messages"][0]["tool_calls"][0]["function"]["arguments"]["expression"],
            "1+1"
        );
        assert_eq!(body["messages"][1]["tool_name"], "calculator__evaluate");
        assert_eq!(body["options"]["num_predict"], 64);
        assert_eq!(names["calculator__evaluate"], "calculator.evaluate");
    }

    #[test]
    fn the_last_line_carries_usage_and_calls_map_back() {
        let names = HashMap::from([(
            "calculator__evaluate".to_string(),
            "calculator.evaluate".to_string(),
        )]);
        let c = chunk_of(
            &json!({"message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"calculator__evaluate","arguments":{"expression":"2*3"}}}]},"done":false}),
            &names,
            0,
        );
        assert_eq!(c.tool_calls[0].name, "calculator.evaluate");
        assert_eq!(c.tool_calls[0].arguments_json, r#"{"expression":"2*3"}"#);
        let last = chunk_of(
            &json!({"message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","prompt_eval_count":12,"eval_count":3}),
            &names,
            1,
        );
        let u = last.usage.clone().unwrap();
        assert_eq!((u.tokens_in, u.tokens_out), (12, 3));
        assert_eq!(last.finish_reason(), hearth_proto::v1::FinishReason::Stop);
    }

    #[test]
    fn a_model_is_required() {
        assert!(
            OllamaBackend::new("http://127.0.0.1:11434", "", Duration::from_secs(1), 8).is_err()
        );
        assert!(OllamaBackend::new("127.0.0.1:11434", "m", Duration::from_secs(1), 8).is_err());
    }
}
