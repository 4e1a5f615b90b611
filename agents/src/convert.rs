//! Building and reading A2A messages and tasks (the `lf.a2a.v1` model).

use hearth_proto::a2a::{self, Message, Part, Role, Task, TaskState, TaskStatus, part};
use hearth_proto::prost_types::{self, Timestamp, value::Kind};

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

/// The text of a task's answer: its artifacts' text, else its status message.
pub fn answer_of(task: &Task) -> String {
    let from_artifacts: Vec<String> = task
        .artifacts
        .iter()
        .flat_map(|a| &a.parts)
        .filter_map(|p| match &p.content {
            Some(part::Content::Text(t)) => Some(t.clone()),
            _ => None,
        })
        .collect();
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
}
