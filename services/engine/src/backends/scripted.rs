//! A scripted backend: a test double that follows fixed rules instead of
//! running a model. It exists for mesh tests and mesh benchmarks, where what
//! is under test is the path a task takes, not the model's judgement. It is
//! never a default: it runs only when `engine.backend = "scripted"`.
//!
//! Rules, in order, on the last message:
//! 0. the task's message contains `scripted:fail` → the call fails (a
//!    poison task: the work queue's tests retry and dead-letter it);
//! 1. a tool result → if the task's message holds more `call` directives
//!    than tool results so far, call the next one (rule 2); else answer
//!    `The answer is <result>.` (a result that is already such an answer is
//!    passed on as it is);
//! 2. a user message saying `call <tool> <json object>` with that tool
//!    offered → call it with those arguments (tests drive any tool this
//!    way; `call a {…} then call b {…}` calls them one after the other);
//! 3. a user message and a tool named `*.delegate` offered → delegate the
//!    whole message;
//! 4. a user message and a tool named `*.evaluate` offered → call it with the
//!    longest arithmetic expression found in the message;
//! 5. anything else → answer with the message echoed back.
//!
//! A user message with `scripted:temperature` and no `*.delegate` tool
//! offered is answered `temperature <t>` (`temperature none` when the
//! request set none): tests see the sampling temperature a task's model
//! calls were sent with.
//!
//! A request marked `answer_now` is answered (`The answer is <last message>.`).
//! `[engine] scripted_delay_ms` makes each call take that long.

use futures::StreamExt;
use hearth_proto::v1::{GenerateChunk, GenerateRequest, ToolCall, Usage};
use serde_json::json;

use crate::backend::{Backend, ChunkStream, EngineError};

/// Asks the double to say the temperature it was sent.
pub const TEMPERATURE_MARK: &str = "scripted:temperature";

/// The scripted test double.
#[derive(Debug, Default, Clone)]
pub struct ScriptedBackend {
    delay: std::time::Duration,
}

impl ScriptedBackend {
    /// The double, each call taking `delay` (a stand-in for model time).
    pub fn with_delay(delay: std::time::Duration) -> Self {
        Self { delay }
    }
}

/// The longest run of characters that can form an arithmetic expression.
pub fn find_expression(text: &str) -> Option<String> {
    let is_expr = |c: char| c.is_ascii_digit() || "+-*/^().% ".contains(c);
    text.split(|c: char| !is_expr(c))
        .map(str::trim)
        .filter(|s| s.chars().any(|c| c.is_ascii_digit()))
        .max_by_key(|s| s.len())
        .map(str::to_string)
}

/// `call <tool> {…}` in a message: the tool's name and the JSON arguments.
pub fn find_directive(text: &str) -> Option<(String, String)> {
    find_directives(text).into_iter().next()
}

/// Every `call <tool> {…}` in a message, in order.
pub fn find_directives(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("call ") {
        rest = &rest[at + 5..];
        let Some((name, after)) = rest.trim_start().split_once(char::is_whitespace) else {
            break;
        };
        let args = after.trim_start();
        let mut values = serde_json::Deserializer::from_str(args).into_iter::<serde_json::Value>();
        match values.next() {
            Some(Ok(v)) if v.is_object() => {
                let end = values.byte_offset();
                out.push((name.to_string(), args[..end].to_string()));
                rest = &args[end..];
            }
            _ => rest = after,
        }
    }
    out
}

/// What marks a poison task (rule 0).
pub const FAIL_MARK: &str = "scripted:fail";

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

#[async_trait::async_trait]
impl Backend for ScriptedBackend {
    fn kind(&self) -> hearth_proto::v1::EngineBackend {
        hearth_proto::v1::EngineBackend::Scripted
    }

    fn default_model(&self) -> &str {
        "scripted"
    }

    async fn generate(&self, req: GenerateRequest) -> Result<ChunkStream, EngineError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let last = req
            .messages
            .last()
            .ok_or_else(|| EngineError::InvalidRequest("no messages".into()))?;
        let tool = |suffix: &str| req.tools.iter().find(|t| t.name.ends_with(suffix));
        let user_at = req
            .messages
            .iter()
            .rposition(|m| m.role() == hearth_proto::v1::ChatRole::User);
        let user = user_at.map(|i| &req.messages[i]);
        let results = user_at.map_or(0, |i| {
            req.messages[i + 1..]
                .iter()
                .filter(|m| m.role() == hearth_proto::v1::ChatRole::Tool)
                .count()
        });
        let directives: Vec<(String, String)> = user
            .map(|u| find_directives(&u.content))
            .unwrap_or_default()
            .into_iter()
            .filter(|(n, _)| req.tools.iter().any(|t| &t.name == n))
            .collect();
        if user.is_some_and(|u| u.content.contains(FAIL_MARK)) {
            return Err(EngineError::Backend {
                status: 500,
                body: format!("the task says `{FAIL_MARK}` (a poison task)"),
            });
        }
        let mut chunk = GenerateChunk::default();
        let says_temperature = user.is_some_and(|u| u.content.contains(TEMPERATURE_MARK))
            && tool(".delegate").is_none()
            && last.role() == hearth_proto::v1::ChatRole::User;
        let next_directive = directives.get(results).filter(|_| {
            matches!(
                last.role(),
                hearth_proto::v1::ChatRole::Tool | hearth_proto::v1::ChatRole::User
            )
        });
        if req.answer_now {
            chunk.delta = format!("The answer is {}.", last.content.trim());
        } else if says_temperature {
            chunk.delta = match req.temperature {
                Some(t) => format!("temperature {t}"),
                None => "temperature none".into(),
            };
        } else if let Some((name, args)) = next_directive {
            chunk.tool_calls.push(ToolCall {
                id: format!("call_{results}"),
                name: name.clone(),
                arguments_json: args.clone(),
            });
        } else if last.role() == hearth_proto::v1::ChatRole::Tool {
            let result = last.content.trim();
            chunk.delta = if result.starts_with("The answer is") {
                result.to_string()
            } else {
                format!("The answer is {result}.")
            };
        } else if let Some(t) =
            tool(".delegate").filter(|_| last.role() == hearth_proto::v1::ChatRole::User)
        {
            chunk.tool_calls.push(ToolCall {
                id: "call_0".into(),
                name: t.name.clone(),
                arguments_json: json!({ "task": last.content }).to_string(),
            });
        } else if let (Some(t), Some(expr)) = (tool(".evaluate"), find_expression(&last.content)) {
            chunk.tool_calls.push(ToolCall {
                id: "call_0".into(),
                name: t.name.clone(),
                arguments_json: json!({ "expression": expr }).to_string(),
            });
        } else {
            chunk.delta = last.content.clone();
        }
        chunk.finish_reason = if chunk.tool_calls.is_empty() {
            hearth_proto::v1::FinishReason::Stop
        } else {
            hearth_proto::v1::FinishReason::ToolCalls
        }
        .into();
        chunk.usage = Some(Usage {
            tokens_in: req.messages.iter().map(|m| words(&m.content)).sum(),
            tokens_out: words(&chunk.delta) + chunk.tool_calls.len() as u64,
            model: "scripted".into(),
            backend: hearth_proto::v1::EngineBackend::Scripted.into(),
            calls: 1,
            ..Default::default()
        });
        Ok(futures::stream::iter([Ok(chunk)]).boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_arithmetic_in_a_question() {
        assert_eq!(
            find_expression("What is 17*23+4?").as_deref(),
            Some("17*23+4")
        );
        assert_eq!(find_expression("no numbers here"), None);
    }

    #[test]
    fn finds_a_call_directive() {
        assert_eq!(
            find_directive(r#"Please call time.get_current_time {"timezone": "UTC"} now"#),
            Some((
                "time.get_current_time".into(),
                r#"{"timezone": "UTC"}"#.into()
            ))
        );
        assert_eq!(find_directive("call x not-json"), None);
        assert_eq!(
            find_directives(r#"call a.b {"x": 1} then call c.d {"y": "}"} and stop"#),
            vec![
                ("a.b".to_string(), r#"{"x": 1}"#.to_string()),
                ("c.d".to_string(), r#"{"y": "}"}"#.to_string()),
            ]
        );
    }
}
