//! A2A beside the wire: building and reading A2A messages and tasks (the
//! `lf.a2a.v1` model), trimming a task's history, and running a task to its
//! end over the agent service's stream.
//!
//! Every service that speaks to agents uses these (the CLI, the
//! orchestrator's delegation, the gateway's A2A and MCP faces), so they live
//! here rather than in the agent runtime.

use hearth_proto::a2a::stream_response::Payload;
use hearth_proto::a2a::{self, Message, Part, Role, Task, TaskState, TaskStatus, part};
use hearth_proto::prost_types::{self, Timestamp, value::Kind};
use hearth_proto::v1::{SendTaskRequest, Usage};
use tokio_stream::StreamExt;
use tonic::Status;

use crate::clients::AgentClient;

/// The text a message carries: its text parts, then its data parts as JSON,
/// one per line. File parts are named, not inlined.
pub fn text_of(message: &Message) -> String {
    let mut out = Vec::new();
    for p in &message.parts {
        match &p.content {
            Some(part::Content::Text(t)) => out.push(t.clone()),
            Some(part::Content::Data(v)) => out.push(value_to_json(v).to_string()),
            Some(part::Content::Url(u)) => out.push(format!("[file: {u}]")),
            Some(part::Content::Raw(b)) => out.push(format!(
                "[file{}: {} bytes]",
                if p.filename.is_empty() {
                    String::new()
                } else {
                    format!(" {}", p.filename)
                },
                b.len()
            )),
            None => {}
        }
    }
    out.join("\n")
}

/// A one-part text message.
pub fn text_message(
    role: Role,
    text: impl Into<String>,
    task_id: &str,
    context_id: &str,
) -> Message {
    Message {
        message_id: uuid::Uuid::now_v7().to_string(),
        context_id: context_id.to_string(),
        task_id: task_id.to_string(),
        role: role as i32,
        parts: vec![text_part(text)],
        ..Default::default()
    }
}

/// Message metadata key: the task is sensitive (served only by local
/// backends, and so are its subtasks).
pub const META_SENSITIVE: &str = "hearth.sensitive";
/// Message metadata key: the task at the root of a delegation chain (its
/// budget and sensitivity are the subtask's).
pub const META_ROOT_TASK: &str = "hearth.root_task";

/// Message metadata key: the sampling temperature for every model call of
/// the task (a number from 0 to 2; its subtasks get it too).
pub const META_TEMPERATURE: &str = "hearth.temperature";

/// The number `message`'s metadata holds under `key`.
pub fn meta_number(message: &Message, key: &str) -> Option<f64> {
    match message.metadata.as_ref()?.fields.get(key)?.kind.as_ref()? {
        Kind::NumberValue(n) => Some(*n),
        _ => None,
    }
}

/// The task's temperature from `message`'s metadata, when it is a number
/// from 0 to 2 (anything else is ignored: the agent's own sampling).
pub fn temperature(message: &Message) -> Option<f32> {
    meta_number(message, META_TEMPERATURE)
        .filter(|t| (0.0..=2.0).contains(t))
        .map(|t| t as f32)
}

/// Whether `message`'s metadata sets `key` to `true`.
pub fn meta_flag(message: &Message, key: &str) -> bool {
    message
        .metadata
        .as_ref()
        .and_then(|m| m.fields.get(key))
        .is_some_and(|v| matches!(v.kind, Some(Kind::BoolValue(true))))
}

/// The string `message`'s metadata holds under `key`.
pub fn meta_text<'a>(message: &'a Message, key: &str) -> Option<&'a str> {
    match message.metadata.as_ref()?.fields.get(key)?.kind.as_ref()? {
        Kind::StringValue(s) => Some(s.as_str()),
        _ => None,
    }
}

/// Sets `key` in `message`'s metadata.
pub fn set_meta(message: &mut Message, key: &str, kind: Kind) {
    message
        .metadata
        .get_or_insert_with(Default::default)
        .fields
        .insert(key.to_string(), prost_types::Value { kind: Some(kind) });
}

/// A text part.
pub fn text_part(text: impl Into<String>) -> Part {
    Part {
        content: Some(part::Content::Text(text.into())),
        media_type: "text/plain".into(),
        ..Default::default()
    }
}

/// The current time as a protobuf timestamp.
pub fn now() -> Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// A status with the time set.
pub fn status(state: TaskState, message: Option<Message>) -> TaskStatus {
    TaskStatus {
        state: state as i32,
        message,
        timestamp: Some(now()),
    }
}

/// Whether a state ends the task (or pauses it for the caller).
pub fn is_final(state: i32) -> bool {
    matches!(
        TaskState::try_from(state),
        Ok(TaskState::Completed
            | TaskState::Failed
            | TaskState::Canceled
            | TaskState::Rejected
            | TaskState::InputRequired
            | TaskState::AuthRequired)
    )
}

/// Whether a state is the end of the task for good: it can be neither
/// continued nor canceled. (`INPUT_REQUIRED` and `AUTH_REQUIRED` only pause
/// it.)
pub fn is_terminal(state: i32) -> bool {
    matches!(
        TaskState::try_from(state),
        Ok(TaskState::Completed | TaskState::Failed | TaskState::Canceled | TaskState::Rejected)
    )
}

/// The A2A name of a state (`TASK_STATE_COMPLETED`, …).
pub fn state_name(state: i32) -> &'static str {
    TaskState::try_from(state)
        .map(|s| s.as_str_name())
        .unwrap_or("TASK_STATE_UNSPECIFIED")
}

/// The text parts among `parts`, in order.
pub fn text_parts<'a>(parts: impl IntoIterator<Item = &'a Part>) -> impl Iterator<Item = &'a str> {
    parts.into_iter().filter_map(|p| match &p.content {
        Some(part::Content::Text(t)) => Some(t.as_str()),
        _ => None,
    })
}

/// The text of a task's answer: its artifacts' text, else its status message.
pub fn answer_of(task: &Task) -> String {
    let from_artifacts: Vec<&str> =
        text_parts(task.artifacts.iter().flat_map(|a| &a.parts)).collect();
    if !from_artifacts.is_empty() {
        return from_artifacts.join("\n");
    }
    task.status
        .as_ref()
        .and_then(|s| s.message.as_ref())
        .map(text_of)
        .unwrap_or_default()
}

/// A protobuf `Value` as JSON.
pub fn value_to_json(v: &prost_types::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => J::Null,
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n)
            .map(J::Number)
            .unwrap_or(J::Null),
        Some(Kind::StringValue(s)) => J::String(s.clone()),
        Some(Kind::BoolValue(b)) => J::Bool(*b),
        Some(Kind::StructValue(s)) => J::Object(
            s.fields
                .iter()
                .map(|(k, v)| (k.clone(), value_to_json(v)))
                .collect(),
        ),
        Some(Kind::ListValue(l)) => J::Array(l.values.iter().map(value_to_json).collect()),
    }
}

/// Builds an A2A artifact holding one text part.
pub fn text_artifact(name: &str, text: impl Into<String>) -> a2a::Artifact {
    a2a::Artifact {
        artifact_id: uuid::Uuid::now_v7().to_string(),
        name: name.to_string(),
        parts: vec![text_part(text)],
        ..Default::default()
    }
}

/// `task` with only its last `history_length` messages (all of them when
/// `None`; a negative length keeps none).
pub fn trim_history(mut task: Task, history_length: Option<i32>) -> Task {
    if let Some(n) = history_length {
        let n = usize::try_from(n.max(0)).unwrap_or(0);
        let len = task.history.len();
        if len > n {
            task.history.drain(..len - n);
        }
    }
    task
}

/// A task that reached a final state (see [`is_final`]).
#[derive(Debug, Clone)]
pub struct Finished {
    /// The task as it ended.
    pub task: Task,
    /// Its final state.
    pub state: TaskState,
    /// What it cost, as the last event said.
    pub usage: Option<Usage>,
    /// The worker (service instance) that ran it.
    pub worker: String,
}

impl Finished {
    /// The answer's text (see [`answer_of`]).
    pub fn answer(&self) -> String {
        answer_of(&self.task)
    }

    /// Whether it completed (rather than failed, was canceled, or paused).
    pub fn completed(&self) -> bool {
        self.state == TaskState::Completed
    }
}

/// What [`AgentClient::run_to_end`] reports while the task runs.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// The worker running the task (known from the first event on).
    pub worker: &'a str,
    /// The text of a `WORKING` status message, if this event is one.
    pub working: Option<&'a str>,
}

/// Why a task was not followed to its end.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The agent service did not take the task.
    #[error("the task was not taken: {}", .0.message())]
    NotTaken(Status),
    /// The stream broke (a deadline, a dead worker).
    #[error("waiting for the task: {}", .0.message())]
    Lost(Status),
    /// The stream ended with the task not final.
    #[error("the task's event stream ended before the task did")]
    Ended,
}

impl RunError {
    /// As a gRPC status (for a caller that answers with one).
    pub fn into_status(self) -> Status {
        match self {
            RunError::NotTaken(s) | RunError::Lost(s) => s,
            RunError::Ended => Status::unavailable(RunError::Ended.to_string()),
        }
    }
}

impl AgentClient {
    /// Sends a task and follows its events until it is final: the one way
    /// every caller (the CLI, delegation, the gateway's MCP face) runs a
    /// task to its end. `on_event` hears each event as it comes.
    pub async fn run_to_end(
        &self,
        req: &SendTaskRequest,
        on_event: impl FnMut(Event<'_>),
    ) -> Result<Finished, RunError> {
        let events = self.send_task(req).await.map_err(RunError::NotTaken)?;
        follow_to_end(events, on_event).await
    }
}

/// Follows a task's events until it is final (see
/// [`AgentClient::run_to_end`]): the events of a task sent directly, or of
/// a subtask in the durable work queue.
pub async fn follow_to_end(
    mut events: crate::rpc::ReplyStream<hearth_proto::v1::TaskEvent>,
    mut on_event: impl FnMut(Event<'_>),
) -> Result<Finished, RunError> {
    while let Some(ev) = events.next().await {
        let ev = ev.map_err(RunError::Lost)?;
        match ev.event.and_then(|e| e.payload) {
            Some(Payload::StatusUpdate(u)) => {
                let working = u
                    .status
                    .as_ref()
                    .filter(|st| st.state == TaskState::Working as i32)
                    .and_then(|st| st.message.as_ref())
                    .map(text_of);
                on_event(Event {
                    worker: &ev.worker,
                    working: working.as_deref(),
                });
            }
            Some(Payload::Task(task)) => {
                on_event(Event {
                    worker: &ev.worker,
                    working: None,
                });
                let state = task.status.as_ref().map_or(0, |s| s.state);
                if is_final(state) {
                    return Ok(Finished {
                        state: TaskState::try_from(state).unwrap_or(TaskState::Unspecified),
                        task,
                        usage: ev.usage,
                        worker: ev.worker,
                    });
                }
            }
            _ => on_event(Event {
                worker: &ev.worker,
                working: None,
            }),
        }
    }
    Err(RunError::Ended)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_states_are_named_by_the_spec() {
        let m = text_message(Role::User, "What is 2+2?", "", "");
        assert_eq!(text_of(&m), "What is 2+2?");
        assert_eq!(
            state_name(TaskState::Completed as i32),
            "TASK_STATE_COMPLETED"
        );
        assert!(is_final(TaskState::Failed as i32));
        assert!(!is_final(TaskState::Working as i32));
    }

    #[test]
    fn history_is_trimmed_to_its_last_messages() {
        let task = Task {
            history: (0..5)
                .map(|i| text_message(Role::User, format!("m{i}"), "", ""))
                .collect(),
            ..Default::default()
        };
        let texts = |t: &Task| t.history.iter().map(text_of).collect::<Vec<_>>();
        assert_eq!(texts(&trim_history(task.clone(), Some(2))), ["m3", "m4"]);
        assert_eq!(trim_history(task.clone(), None).history.len(), 5);
        assert!(trim_history(task.clone(), Some(-1)).history.is_empty());
        assert_eq!(trim_history(task, Some(9)).history.len(), 5);
    }
}
