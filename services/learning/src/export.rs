//! Traces into datasets.
//!
//! - [`select`] picks the traces that make training data, each marked with
//!   its source: synthesised and rejection-sampled trajectories that ended
//!   well with no tool error, and real tasks a person rated good (or
//!   corrected: the correction replaces the answer) — with the subtasks they
//!   delegated. Held-out cases, and the subtasks of held-out cases, never
//!   make it in.
//! - [`sft_row`] writes a trace in the OpenAI chat format (`messages` with
//!   `tool_calls` and `tool` messages, and the `tools` offered) that Hugging
//!   Face `datasets` and TRL read as they are.
//! - [`render_requests`] turns a trace into one engine request per model
//!   call; the engine's `render` makes each a row of exactly the text (and
//!   tokens) the model reads and writes.

use std::collections::HashSet;

use hearth_proto::v1::GenerateRequest;
use serde_json::{Value, json};

use crate::convert::{Rating, Source, TraceDoc, message_wire, tool_wire};

/// What to export.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only traces started at or after this (Unix ms).
    pub since_ms: Option<i64>,
    /// Only this agent's traces.
    pub agent: Option<String>,
    /// Prompts that must never appear (the held-out cases).
    pub exclude_prompts: Vec<String>,
}

fn task_of(doc: &TraceDoc) -> &str {
    doc.id.split('.').next().unwrap_or_default()
}

fn user_texts(doc: &TraceDoc) -> impl Iterator<Item = &str> {
    doc.messages
        .iter()
        .filter(|m| m.role == "user")
        .map(|m| m.content.as_str())
}

/// The traces of `all` that make training data, corrections applied.
pub fn select(all: &[TraceDoc], filter: &Filter) -> Vec<TraceDoc> {
    let excluded: HashSet<&str> = filter.exclude_prompts.iter().map(String::as_str).collect();
    // Tasks tainted by a held-out prompt, and everything below them.
    let mut tainted: HashSet<String> = all
        .iter()
        .filter(|d| user_texts(d).any(|t| excluded.contains(t.trim())))
        .map(|d| task_of(d).to_string())
        .collect();
    loop {
        let more: Vec<String> = all
            .iter()
            .filter(|d| tainted.contains(&d.parent_task_id) && !tainted.contains(task_of(d)))
            .map(|d| task_of(d).to_string())
            .collect();
        if more.is_empty() {
            break;
        }
        tainted.extend(more);
    }
    // Live roots a person rated: good ones, and corrections.
    let mut rated: Vec<(String, Option<String>, String)> = Vec::new();
    for d in all.iter().filter(|d| d.source == Source::Live) {
        match &d.feedback {
            Some(f) if f.rating == Rating::Good => {
                rated.push((task_of(d).to_string(), None, d.answer.clone()))
            }
            Some(f) => {
                if let Some(c) = &f.correction {
                    rated.push((task_of(d).to_string(), Some(c.clone()), d.answer.clone()))
                }
            }
            None => {}
        }
    }
    // Each rated root's tree.
    let root_of = |d: &TraceDoc| -> Option<usize> {
        let mut at = d.clone();
        for _ in 0..16 {
            if let Some(i) = rated.iter().position(|(t, ..)| t == task_of(&at)) {
                return Some(i);
            }
            at = all
                .iter()
                .find(|p| task_of(p) == at.parent_task_id)?
                .clone();
        }
        None
    };
    let mut out = Vec::new();
    for d in all {
        if tainted.contains(task_of(d)) {
            continue;
        }
        if filter.since_ms.is_some_and(|s| d.started_unix_ms < s) {
            continue;
        }
        if filter.agent.as_ref().is_some_and(|a| *a != d.agent) {
            continue;
        }
        let tool_failed = d.tool_runs.iter().any(|r| r.is_error);
        match d.source {
            Source::Synth | Source::Rejection => {
                if d.succeeded() && !tool_failed {
                    out.push(d.clone());
                }
            }
            Source::Eval => {}
            Source::Live => {
                let Some(i) = root_of(d) else { continue };
                let (_, correction, root_answer) = &rated[i];
                let mut doc = d.clone();
                if let Some(c) = correction {
                    let Some(last) = doc
                        .messages
                        .iter_mut()
                        .rev()
                        .find(|m| m.role == "assistant")
                    else {
                        continue;
                    };
                    // Only the run whose answer is the one corrected (a
                    // subtask's other answers are not known to be wrong).
                    if !(last.tool_calls.is_empty() && last.content == *root_answer) {
                        continue;
                    }
                    last.content.clone_from(c);
                    doc.answer.clone_from(c);
                } else if !d.succeeded() || tool_failed {
                    continue;
                }
                out.push(doc);
            }
        }
    }
    out
}

/// A trace in the OpenAI chat format, with the tools offered.
pub fn sft_row(doc: &TraceDoc) -> Value {
    let messages: Vec<Value> = doc
        .messages
        .iter()
        .map(|m| {
            let mut v = json!({ "role": m.role, "content": m.content });
            if !m.tool_calls.is_empty() {
                v["tool_calls"] = Value::Array(
                    m.tool_calls
                        .iter()
                        .map(|c| {
                            json!({
                                "id": c.id,
                                "type": "function",
                                "function": { "name": c.name, "arguments": c.arguments },
                            })
                        })
                        .collect(),
                );
            }
            if m.role == "tool" {
                v["tool_call_id"] = Value::String(m.tool_call_id.clone());
            }
            v
        })
        .collect();
    let tools: Vec<Value> = doc
        .tools
        .iter()
        .map(|t| {
            json!({
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.input_schema,
                },
            })
        })
        .collect();
    json!({
        "messages": messages,
        "tools": tools,
        "source": doc.source.as_str(),
        "agent": doc.agent,
        "trace": doc.id,
    })
}

/// One engine request per model call of the trace: the conversation up to
/// and including that call's reply (an assistant message), with the tools
/// offered, so the engine can render the prompt and the reply.
pub fn render_requests(doc: &TraceDoc) -> Vec<GenerateRequest> {
    let tools: Vec<_> = doc.tools.iter().map(tool_wire).collect();
    let mut out = Vec::new();
    let mut calls = doc.model_calls.iter();
    for (i, m) in doc.messages.iter().enumerate() {
        if m.role != "assistant" {
            continue;
        }
        let answer_now = calls.next().is_some_and(|c| c.answer_now);
        out.push(GenerateRequest {
            messages: doc.messages[..=i].iter().map(message_wire).collect(),
            tools: tools.clone(),
            answer_now,
            ..Default::default()
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::{Call, Feedback, Message, ToolRunDoc, UsageDoc};

    fn m(role: &str, content: &str) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
            tool_calls: vec![],
            tool_call_id: String::new(),
        }
    }

    fn trace(id: &str, parent: &str, source: Source, prompt: &str, answer: &str) -> TraceDoc {
        let mut call = m("assistant", "");
        call.tool_calls.push(Call {
            id: "c1".into(),
            name: "calculator.evaluate".into(),
            arguments: r#"{"expression":"2+2"}"#.into(),
        });
        let mut result = m("tool", "4");
        result.tool_call_id = "c1".into();
        TraceDoc {
            id: id.into(),
            parent_task_id: parent.into(),
            agent: "operative".into(),
            context_id: String::new(),
            worker: String::new(),
            started_unix_ms: 1,
            duration_ms: 1.0,
            messages: vec![
                m("system", "sys"),
                m("user", prompt),
                call,
                result,
                m("assistant", answer),
            ],
            tools: vec![],
            model_calls: vec![],
            tool_runs: vec![ToolRunDoc {
                name: "calculator.evaluate".into(),
                arguments: "{}".into(),
                result: "4".into(),
                is_error: false,
                duration_ms: 1.0,
            }],
            answer: answer.into(),
            error: String::new(),
            usage: UsageDoc::default(),
            source,
            feedback: None,
        }
    }

    #[test]
    fn held_out_cases_and_their_subtasks_never_appear_and_only_good_live_work_does() {
        let mut good = trace("live1", "", Source::Live, "What is 2+2?", "4");
        good.feedback = Some(Feedback {
            rating: Rating::Good,
            correction: None,
            at_unix_ms: 0,
        });
        let good_child = trace("live1sub", "live1", Source::Live, "What is 2+2?", "4");
        let unrated = trace("live2", "", Source::Live, "What is 3+3?", "6");
        let mut corrected = trace("live3", "", Source::Live, "What is 5+5?", "11");
        corrected.feedback = Some(Feedback {
            rating: Rating::Bad,
            correction: Some("10".into()),
            at_unix_ms: 0,
        });
        let synth = trace("s1", "", Source::Synth, "What is 7+7?", "14");
        let held = trace("s2", "", Source::Synth, "HELD OUT prompt", "x");
        let held_child = trace("s3", "s2", Source::Synth, "restated", "x");
        let eval = trace("e1", "", Source::Eval, "What is 9+9?", "18");
        let all = vec![
            good, good_child, unrated, corrected, synth, held, held_child, eval,
        ];
        let picked = select(
            &all,
            &Filter {
                exclude_prompts: vec!["HELD OUT prompt".into()],
                ..Default::default()
            },
        );
        let ids: Vec<&str> = picked.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["live1", "live1sub", "live3", "s1"]);
        let fixed = picked.iter().find(|d| d.id == "live3").unwrap();
        assert_eq!(fixed.messages.last().unwrap().content, "10");
        for d in &picked {
            let row = sft_row(d).to_string();
            assert!(!row.contains("HELD OUT"), "{row}");
        }
    }

    #[test]
    fn sft_rows_are_openai_chat_and_render_requests_end_at_each_reply() {
        let d = trace("s1", "", Source::Synth, "What is 2+2?", "4");
        let row = sft_row(&d);
        assert_eq!(row["messages"][2]["tool_calls"][0]["type"], "function");
        assert_eq!(row["messages"][3]["role"], "tool");
        assert_eq!(row["messages"][3]["tool_call_id"], "c1");
        let reqs = render_requests(&d);
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].messages.last().unwrap().tool_calls.len(), 1);
        assert_eq!(reqs[1].messages.last().unwrap().content, "4");
    }
}
