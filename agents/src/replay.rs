//! Replay of a redelivered subtask: the agent loop's model and tools behind
//! the subtask's [`StepLog`], so a step an earlier attempt recorded is
//! returned from the log instead of being run again — a tool with a side
//! effect (a file append, a web request) is not doubled by a crash — and a
//! step not yet recorded runs and is recorded.
//!
//! The loop is deterministic given the same model turns and tool results,
//! so a replayed attempt asks for the same steps in the same order.

use std::sync::Arc;

use hearth_mesh::work::StepLog;
use hearth_proto::v1::{GenerateRequest, RecordedTool, RecordedTurn, Step, ToolSpec, step};
use prost::Message as _;

use crate::model::{Model, Turn};
use crate::tools::{CallContext, ToolOutput, Tools};

/// A model whose turns are recorded in, and replayed from, a step log.
pub struct ReplayedModel {
    inner: Arc<dyn Model>,
    log: Arc<StepLog>,
}

impl ReplayedModel {
    /// `inner`, behind `log`.
    pub fn new(inner: Arc<dyn Model>, log: Arc<StepLog>) -> Self {
        Self { inner, log }
    }
}

#[async_trait::async_trait]
impl Model for ReplayedModel {
    async fn turn(&self, req: GenerateRequest) -> Result<Turn, tonic::Status> {
        let key = self.log.next_key();
        if let Some(bytes) = self.log.recorded(&key).await
            && let Ok(Step {
                kind: Some(step::Kind::Model(t)),
            }) = Step::decode(bytes)
        {
            tracing::debug!(%key, "model turn replayed");
            return Ok(Turn {
                text: t.text,
                tool_calls: t.tool_calls,
                usage: t.usage.unwrap_or_default(),
            });
        }
        let turn = self.inner.turn(req).await?;
        let step = Step {
            kind: Some(step::Kind::Model(RecordedTurn {
                text: turn.text.clone(),
                tool_calls: turn.tool_calls.clone(),
                usage: Some(turn.usage.clone()),
            })),
        };
        self.log.record(&key, step.encode_to_vec().into()).await;
        Ok(turn)
    }
}

/// Tools whose results are recorded in, and replayed from, a step log.
/// Listing them is not a step (it has no effect).
pub struct ReplayedTools {
    inner: Arc<dyn Tools>,
    log: Arc<StepLog>,
}

impl ReplayedTools {
    /// `inner`, behind `log`.
    pub fn new(inner: Arc<dyn Tools>, log: Arc<StepLog>) -> Self {
        Self { inner, log }
    }
}

#[async_trait::async_trait]
impl Tools for ReplayedTools {
    async fn list(&self, ctx: &CallContext) -> Result<Vec<ToolSpec>, tonic::Status> {
        self.inner.list(ctx).await
    }

    async fn call(
        &self,
        ctx: &CallContext,
        name: &str,
        arguments_json: &str,
    ) -> Result<ToolOutput, tonic::Status> {
        let key = self.log.next_key();
        if let Some(bytes) = self.log.recorded(&key).await
            && let Ok(Step {
                kind: Some(step::Kind::Tool(t)),
            }) = Step::decode(bytes)
            && t.name == name
            && t.arguments_json == arguments_json
        {
            tracing::info!(%key, tool = name, "tool result replayed: not called again");
            return Ok(ToolOutput {
                content: t.content,
                is_error: t.is_error,
                usage: t.usage,
            });
        }
        let mut keyed = ctx.clone();
        keyed.step = Some(key.clone());
        let out = self.inner.call(&keyed, name, arguments_json).await?;
        let step = Step {
            kind: Some(step::Kind::Tool(RecordedTool {
                name: name.to_string(),
                arguments_json: arguments_json.to_string(),
                content: out.content.clone(),
                is_error: out.is_error,
                usage: out.usage.clone(),
            })),
        };
        self.log.record(&key, step.encode_to_vec().into()).await;
        Ok(out)
    }
}
