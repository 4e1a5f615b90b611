//! `hearth.delegate`: hands a subtask to an operative and waits for its answer.

use hearth_agents::tools::{CallContext, LocalTool, ToolOutput};
use hearth_mesh::a2a::{RunError, text_message};
use hearth_mesh::clients::AgentClient;
use hearth_proto::a2a::Role;
use hearth_proto::v1::{CancelTaskRequest, SendTaskRequest, ToolSpec};
use serde_json::{Value, json};
use tonic::Status;

/// The argument schema of every tool that hands a task to another agent
/// (`hearth.delegate`, the remote A2A agents): one string, `task`.
pub(crate) fn task_schema() -> String {
    json!({
        "type": "object",
        "properties": { "task": { "type": "string", "description": "The task, stated completely." } },
        "required": ["task"],
    })
    .to_string()
}

/// The `task` of a hand-over call, or the tool error that answers a call
/// without one.
pub(crate) fn task_argument(arguments_json: &str) -> Result<String, Box<ToolOutput>> {
    let args: Value = serde_json::from_str(arguments_json).unwrap_or(Value::Null);
    args.get("task")
        .and_then(Value::as_str)
        .filter(|t| !t.trim().is_empty())
        .map(str::to_string)
        .ok_or_else(|| {
            Box::new(ToolOutput {
                content: "`task` must be a non-empty string".into(),
                is_error: true,
                usage: None,
            })
        })
}

/// The tool's bus name.
pub const DELEGATE_TOOL: &str = "hearth.delegate";

/// The delegate tool.
pub struct Delegate {
    operatives: AgentClient,
    agent: String,
}

impl Delegate {
    /// Delegates to `operatives`, running the spec `agent`.
    pub fn new(operatives: AgentClient, agent: String) -> Self {
        Self { operatives, agent }
    }
}

/// Cancels the subtask on its operative if the delegation is dropped early
/// (the parent task was canceled or timed out).
struct CancelOnDrop {
    client: AgentClient,
    worker: String,
    task_id: String,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.armed || self.worker.is_empty() {
            return;
        }
        let client = self.client.clone();
        let (worker, id) = (
            std::mem::take(&mut self.worker),
            std::mem::take(&mut self.task_id),
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = client
                    .cancel_task_on(&worker, &CancelTaskRequest { id })
                    .await;
            });
        }
    }
}

#[async_trait::async_trait]
impl LocalTool for Delegate {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: DELEGATE_TOOL.into(),
            description: "Hand a task to an operative agent, which does the work with tools (calculator and others), and get its answer back.".into(),
            input_schema_json: task_schema(),
        }
    }

    async fn call(&self, ctx: &CallContext, arguments_json: &str) -> Result<ToolOutput, Status> {
        let task = match task_argument(arguments_json) {
            Ok(task) => task,
            Err(refused) => return Ok(*refused),
        };
        let task = task.as_str();
        let sub_id = uuid::Uuid::now_v7().to_string();
        let mut message = text_message(Role::User, task, "", &ctx.context_id);
        message.reference_task_ids.push(ctx.task_id.clone());
        let req = SendTaskRequest {
            message: Some(message),
            agent: self.agent.clone(),
            task_id: sub_id.clone(),
            timeout_ms: 0,
            // Nobody is there to answer an operative's question.
            interactive: false,
        };
        let mut guard = CancelOnDrop {
            client: self.operatives.clone(),
            worker: String::new(),
            task_id: sub_id,
            armed: true,
        };
        let done = self
            .operatives
            .run_to_end(&req, |ev| {
                if guard.worker.is_empty() {
                    guard.worker = ev.worker.to_string();
                }
                if let (Some(text), Some(p)) = (ev.working, ctx.progress.as_ref()) {
                    p(format!("operative {}: {text}", ev.worker));
                }
            })
            .await;
        let done = match done {
            Ok(done) => done,
            Err(RunError::Ended) => {
                return Err(Status::unavailable(
                    "the operative's event stream ended before its task did",
                ));
            }
            Err(e) => return Err(e.into_status()),
        };
        guard.armed = false;
        let answer = done.answer();
        Ok(if done.completed() {
            ToolOutput {
                content: answer,
                is_error: false,
                usage: done.usage,
            }
        } else {
            ToolOutput {
                content: format!(
                    "the operative's task ended {}: {answer}",
                    done.state.as_str_name()
                ),
                is_error: true,
                usage: done.usage,
            }
        })
    }
}
