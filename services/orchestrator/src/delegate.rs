//! `hearth.delegate`: hands a subtask to an operative and waits for its answer.

use futures::StreamExt;
use hearth_agents::convert::{self, answer_of, is_final, state_name, text_message};
use hearth_agents::tools::{CallContext, LocalTool, ToolOutput};
use hearth_mesh::clients::AgentClient;
use hearth_proto::a2a::{Role, TaskState, stream_response::Payload};
use hearth_proto::v1::{CancelTaskRequest, SendTaskRequest, ToolSpec};
use serde_json::{Value, json};
use tonic::Status;

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
            input_schema_json: json!({
                "type": "object",
                "properties": { "task": { "type": "string", "description": "The task, stated completely." } },
                "required": ["task"],
            })
            .to_string(),
        }
    }

    async fn call(&self, ctx: &CallContext, arguments_json: &str) -> Result<ToolOutput, Status> {
        let args: Value = serde_json::from_str(arguments_json).unwrap_or(Value::Null);
        let Some(task) = args
            .get("task")
            .and_then(Value::as_str)
            .filter(|t| !t.trim().is_empty())
        else {
            return Ok(ToolOutput {
                content: "`task` must be a non-empty string".into(),
                is_error: true,
                usage: None,
            });
        };
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
        let mut events = self.operatives.send_task(&req).await?;
        let mut guard = CancelOnDrop {
            client: self.operatives.clone(),
            worker: String::new(),
            task_id: sub_id,
            armed: true,
        };
        while let Some(ev) = events.next().await {
            let ev = ev?;
            if guard.worker.is_empty() {
                guard.worker.clone_from(&ev.worker);
            }
            match ev.event.and_then(|e| e.payload) {
                Some(Payload::StatusUpdate(u)) => {
                    let Some(st) = u.status else { continue };
                    if st.state == TaskState::Working as i32
                        && let (Some(m), Some(p)) = (st.message.as_ref(), ctx.progress.as_ref())
                    {
                        p(format!("operative {}: {}", ev.worker, convert::text_of(m)));
                    }
                }
                Some(Payload::Task(t)) => {
                    let state = t.status.as_ref().map_or(0, |s| s.state);
                    if !is_final(state) {
                        continue;
                    }
                    guard.armed = false;
                    let answer = answer_of(&t);
                    return Ok(if state == TaskState::Completed as i32 {
                        ToolOutput {
                            content: answer,
                            is_error: false,
                            usage: ev.usage,
                        }
                    } else {
                        ToolOutput {
                            content: format!(
                                "the operative's task ended {}: {answer}",
                                state_name(state)
                            ),
                            is_error: true,
                            usage: ev.usage,
                        }
                    });
                }
                _ => {}
            }
        }
        Err(Status::unavailable(
            "the operative's event stream ended before its task did",
        ))
    }
}
