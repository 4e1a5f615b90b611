//! Agent memory: durable facts and task outcomes an agent keeps, and the most
//! relevant of them recalled into its context when a task starts.
//!
//! [`BusMemory`] keeps them in the memory service's `agent_memory`
//! collection, one point per memory with the agent's name, the task, the
//! [`Kind`] and the time. A mesh without a memory service simply has none:
//! recall finds nothing and remembering is skipped (both are logged), never
//! a task failure.
//!
//! A remembered outcome can be wrong. When a person rates a task's answer
//! bad (`hearth traces feedback ID bad`), [`forget_outcome`] removes the
//! answers the task and its subtasks were remembered with, and a correction given with the rating
//! is kept in their place ([`Kind::Correction`]), so a wrong answer is not
//! recalled into later tasks and the right one is.

use std::time::{SystemTime, UNIX_EPOCH};

use hearth_mesh::clients::MemoryClient;
use hearth_proto::v1::{Chunk, DeleteRequest, Filter, SearchRequest, ToolSpec, UpsertRequest};
use serde_json::{Value, json};

use crate::tools::{CallContext, LocalTool, ToolOutput};

/// The collection agent memories live in.
pub const COLLECTION: &str = "agent_memory";

/// Least cosine similarity between a task and a memory for the memory to be
/// recalled: an unrelated memory is noise in a small model's context.
pub const MIN_RECALL_SCORE: f32 = 0.4;

/// What a memory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A task and the answer the agent gave it.
    Outcome,
    /// A fact the agent chose to keep (`hearth.remember`).
    Fact,
    /// A task and the answer a person said it should have had.
    Correction,
}

impl Kind {
    /// The name kept in the memory's payload (`kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Outcome => "outcome",
            Kind::Fact => "fact",
            Kind::Correction => "correction",
        }
    }
}

/// The text an outcome (or its correction) is remembered as.
pub fn outcome_text(task: &str, answer: &str) -> String {
    format!("Task: {task}\nAnswer: {answer}")
}

/// Forgets the answer the task `task_id` was remembered with — its outcome,
/// and a correction given before — through `client` (facts the task kept
/// with `hearth.remember` stay); how many memories went.
pub async fn forget_outcome(client: &MemoryClient, task_id: &str) -> Result<u64, String> {
    let mut deleted = 0;
    for kind in [Kind::Outcome, Kind::Correction] {
        deleted += client
            .delete(&DeleteRequest {
                collection: COLLECTION.into(),
                ids: vec![],
                filter: Some(Filter {
                    equals: [
                        ("task_id".to_string(), task_id.to_string()),
                        ("kind".to_string(), kind.as_str().to_string()),
                    ]
                    .into(),
                    since: None,
                    until: None,
                }),
            })
            .await
            .map(|r| r.deleted)
            .map_err(|s| s.message().to_string())?;
    }
    Ok(deleted)
}

/// What an agent remembers, and how it recalls.
#[async_trait::async_trait]
pub trait AgentMemory: Send + Sync {
    /// The memories of `agent` most relevant to `task`, best first.
    async fn recall(&self, agent: &str, task: &str, limit: usize) -> Vec<String>;
    /// Keeps `text` for `agent`, from its task `task_id`.
    async fn remember(
        &self,
        agent: &str,
        task_id: &str,
        kind: Kind,
        text: &str,
    ) -> Result<(), String>;
}

/// Memories in the memory service, over the bus.
#[derive(Clone)]
pub struct BusMemory {
    client: MemoryClient,
}

impl BusMemory {
    /// Memories through `client`.
    pub fn new(client: MemoryClient) -> Self {
        Self { client }
    }
}

#[async_trait::async_trait]
impl AgentMemory for BusMemory {
    async fn recall(&self, agent: &str, task: &str, limit: usize) -> Vec<String> {
        let req = SearchRequest {
            collection: COLLECTION.into(),
            query: task.chars().take(2000).collect(),
            limit: limit as u32,
            filter: Some(Filter {
                equals: [("agent".to_string(), agent.to_string())].into(),
                since: None,
                until: None,
            }),
            // By meaning, so the score is a cosine similarity that says
            // whether a memory is relevant at all.
            dense_only: true,
        };
        match self.client.search(&req).await {
            Ok(r) => r
                .hits
                .into_iter()
                .filter(|h| h.score >= MIN_RECALL_SCORE)
                .map(|h| h.text)
                .collect(),
            Err(s) => {
                tracing::debug!(%agent, error = %s.message(), "nothing recalled");
                Vec::new()
            }
        }
    }

    async fn remember(
        &self,
        agent: &str,
        task_id: &str,
        kind: Kind,
        text: &str,
    ) -> Result<(), String> {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let chunk = Chunk {
            id: uuid::Uuid::now_v7().to_string(),
            text: text.to_string(),
            payload_json:
                json!({ "agent": agent, "task_id": task_id, "kind": kind.as_str(), "ts": ts })
                    .to_string(),
        };
        self.client
            .upsert(&UpsertRequest {
                collection: COLLECTION.into(),
                chunks: vec![chunk],
            })
            .await
            .map(|_| ())
            .map_err(|s| s.message().to_string())
    }
}

/// Fits recalled memories into `budget_bytes`, as the lines added to the
/// system prompt (empty when there is nothing).
pub fn recalled_section(memories: &[String], budget_bytes: usize) -> String {
    let mut out = String::new();
    for m in memories {
        let line = format!("- {}\n", m.replace('\n', " "));
        if out.len() + line.len() > budget_bytes {
            break;
        }
        out.push_str(&line);
    }
    if out.is_empty() {
        return out;
    }
    format!("\n\nWhat you remember from earlier tasks (most relevant first):\n{out}")
}

/// The tool name agents keep facts with.
pub const REMEMBER_TOOL: &str = "hearth.remember";

/// `hearth.remember`: keeps a durable fact in the agent's memory.
pub struct Remember {
    memory: std::sync::Arc<dyn AgentMemory>,
}

impl Remember {
    /// The tool over `memory`.
    pub fn new(memory: std::sync::Arc<dyn AgentMemory>) -> Self {
        Self { memory }
    }
}

#[async_trait::async_trait]
impl LocalTool for Remember {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: REMEMBER_TOOL.into(),
            description: "Keep a durable fact for later tasks (a preference, a name, a decision); it is recalled when relevant.".into(),
            input_schema_json: json!({
                "type": "object",
                "properties": { "fact": { "type": "string", "description": "The fact, stated on its own." } },
                "required": ["fact"],
            })
            .to_string(),
        }
    }

    async fn call(
        &self,
        ctx: &CallContext,
        arguments_json: &str,
    ) -> Result<ToolOutput, tonic::Status> {
        let args: Value = serde_json::from_str(arguments_json).unwrap_or(Value::Null);
        let Some(fact) = args
            .get("fact")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|f| !f.is_empty() && f.len() <= 4000)
        else {
            return Ok(ToolOutput {
                content: "`fact` must be a non-empty string of at most 4000 bytes".into(),
                is_error: true,
                usage: None,
            });
        };
        Ok(
            match self
                .memory
                .remember(&ctx.agent, &ctx.task_id, Kind::Fact, fact)
                .await
            {
                Ok(()) => ToolOutput {
                    content: "remembered".into(),
                    is_error: false,
                    usage: None,
                },
                Err(e) => ToolOutput {
                    content: format!("could not remember it: {e}"),
                    is_error: true,
                    usage: None,
                },
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recalled_memories_fit_the_budget() {
        let ms = vec!["a".repeat(50), "b".repeat(50), "c".repeat(50)];
        let s = recalled_section(&ms, 120);
        assert!(s.contains(&"a".repeat(50)) && s.contains(&"b".repeat(50)));
        assert!(!s.contains('c'));
        assert_eq!(recalled_section(&[], 100), "");
        assert_eq!(recalled_section(&["x".repeat(500)], 100), "");
    }
}
