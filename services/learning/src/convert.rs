//! Traces between their wire form (`hearth.v1.Trace`) and the JSON kept on
//! disk and printed by `hearth traces show --json`.

use hearth_proto::v1::{
    ChatMessage, ChatRole, EngineBackend, ModelCall, ToolCall, ToolRun, ToolSpec, Trace, Usage,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where a trace came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A real task.
    #[default]
    Live,
    /// A trajectory synthesised from a generator, with real tool results.
    Synth,
    /// A sampled trajectory the checker verified.
    Rejection,
    /// An evaluation run.
    Eval,
}

impl Source {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Live => "live",
            Source::Synth => "synth",
            Source::Rejection => "rejection",
            Source::Eval => "eval",
        }
    }
}

/// A person's verdict on an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rating {
    /// Right.
    Good,
    /// Wrong.
    Bad,
}

/// Feedback on a trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    /// The verdict.
    pub rating: Rating,
    /// What the answer should have been.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correction: Option<String>,
    /// When (Unix ms).
    pub at_unix_ms: i64,
}

/// One message, OpenAI chat style.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text.
    #[serde(default)]
    pub content: String,
    /// Calls the assistant made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<Call>,
    /// For `tool`: the call answered.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tool_call_id: String,
}

/// A tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    /// Its id.
    pub id: String,
    /// The tool.
    pub name: String,
    /// Its arguments (JSON text).
    pub arguments: String,
}

/// A tool offered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// Its bus name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// Its input schema.
    pub input_schema: Value,
}

/// One model call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCallDoc {
    /// Backend.
    pub backend: String,
    /// Model.
    pub model: String,
    /// Prompt tokens.
    pub tokens_in: u64,
    /// Reply tokens.
    pub tokens_out: u64,
    /// Wall time.
    pub latency_ms: f64,
    /// Had to answer.
    pub answer_now: bool,
    /// Messages sent.
    pub messages: u32,
    /// Which backend served it and why (empty in traces older than routing).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub route: String,
}

/// One tool run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolRunDoc {
    /// The tool.
    pub name: String,
    /// Its arguments.
    pub arguments: String,
    /// What it returned.
    pub result: String,
    /// It reported an error.
    pub is_error: bool,
    /// Wall time.
    pub duration_ms: f64,
}

/// What the run cost.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct UsageDoc {
    /// Prompt tokens.
    pub tokens_in: u64,
    /// Reply tokens.
    pub tokens_out: u64,
    /// Model calls.
    pub calls: u32,
    /// Model.
    pub model: String,
    /// FLOPs, when known.
    pub flops: Option<f64>,
    /// Joules, when measured.
    pub energy_joules: Option<f64>,
    /// Dollars, when known.
    pub cost_usd: Option<f64>,
}

/// A trace as kept on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceDoc {
    /// The task id (the trace's id).
    pub id: String,
    /// The delegating task.
    #[serde(default)]
    pub parent_task_id: String,
    /// Agent spec.
    pub agent: String,
    /// A2A context.
    #[serde(default)]
    pub context_id: String,
    /// Instance.
    #[serde(default)]
    pub worker: String,
    /// Start (Unix ms).
    pub started_unix_ms: i64,
    /// Duration.
    pub duration_ms: f64,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Tools offered.
    pub tools: Vec<Tool>,
    /// Model calls.
    pub model_calls: Vec<ModelCallDoc>,
    /// Tool runs.
    pub tool_runs: Vec<ToolRunDoc>,
    /// The answer.
    #[serde(default)]
    pub answer: String,
    /// Why it failed.
    #[serde(default)]
    pub error: String,
    /// Cost.
    #[serde(default)]
    pub usage: UsageDoc,
    /// Where it came from.
    #[serde(default)]
    pub source: Source,
    /// A person's verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<Feedback>,
}

impl TraceDoc {
    /// The wire trace as a document.
    pub fn from_wire(t: Trace, source: Source) -> Self {
        let u = t.usage.unwrap_or_default();
        TraceDoc {
            id: t.task_id,
            parent_task_id: t.parent_task_id,
            agent: t.agent,
            context_id: t.context_id,
            worker: t.worker,
            started_unix_ms: t.started_unix_ms,
            duration_ms: t.duration_ms,
            messages: t.messages.into_iter().map(message_doc).collect(),
            tools: t
                .tools
                .into_iter()
                .map(|s| Tool {
                    input_schema: serde_json::from_str(&s.input_schema_json)
                        .unwrap_or(Value::String(s.input_schema_json)),
                    name: s.name,
                    description: s.description,
                })
                .collect(),
            model_calls: t
                .model_calls
                .into_iter()
                .map(|c| ModelCallDoc {
                    backend: c.backend().name().to_string(),
                    model: c.model,
                    tokens_in: c.tokens_in,
                    tokens_out: c.tokens_out,
                    latency_ms: c.latency_ms,
                    answer_now: c.answer_now,
                    messages: c.messages,
                    route: c.route,
                })
                .collect(),
            tool_runs: t
                .tool_runs
                .into_iter()
                .map(|r| ToolRunDoc {
                    name: r.name,
                    arguments: r.arguments_json,
                    result: r.result,
                    is_error: r.is_error,
                    duration_ms: r.duration_ms,
                })
                .collect(),
            answer: t.answer,
            error: t.error,
            usage: UsageDoc {
                tokens_in: u.tokens_in,
                tokens_out: u.tokens_out,
                calls: u.calls,
                model: u.model,
                flops: u.flops,
                energy_joules: u.energy_joules,
                cost_usd: u.cost_usd,
            },
            source,
            feedback: None,
        }
    }

    /// The document as a wire trace.
    pub fn to_wire(&self) -> Trace {
        Trace {
            task_id: self.id.clone(),
            parent_task_id: self.parent_task_id.clone(),
            agent: self.agent.clone(),
            context_id: self.context_id.clone(),
            worker: self.worker.clone(),
            started_unix_ms: self.started_unix_ms,
            duration_ms: self.duration_ms,
            messages: self.messages.iter().map(message_wire).collect(),
            tools: self.tools.iter().map(tool_wire).collect(),
            model_calls: self
                .model_calls
                .iter()
                .map(|c| ModelCall {
                    backend: EngineBackend::from_name(&c.backend)
                        .unwrap_or_default()
                        .into(),
                    model: c.model.clone(),
                    tokens_in: c.tokens_in,
                    tokens_out: c.tokens_out,
                    latency_ms: c.latency_ms,
                    answer_now: c.answer_now,
                    messages: c.messages,
                    route: c.route.clone(),
                })
                .collect(),
            tool_runs: self
                .tool_runs
                .iter()
                .map(|r| ToolRun {
                    name: r.name.clone(),
                    arguments_json: r.arguments.clone(),
                    result: r.result.clone(),
                    is_error: r.is_error,
                    duration_ms: r.duration_ms,
                })
                .collect(),
            answer: self.answer.clone(),
            error: self.error.clone(),
            usage: Some(Usage {
                tokens_in: self.usage.tokens_in,
                tokens_out: self.usage.tokens_out,
                calls: self.usage.calls,
                model: self.usage.model.clone(),
                flops: self.usage.flops,
                energy_joules: self.usage.energy_joules,
                cost_usd: self.usage.cost_usd,
                ..Default::default()
            }),
        }
    }

    /// Whether the run ended with an answer.
    pub fn succeeded(&self) -> bool {
        self.error.is_empty() && !self.answer.is_empty()
    }
}

/// A wire message as a document.
pub fn message_doc(m: ChatMessage) -> Message {
    Message {
        role: m.role().name().to_string(),
        content: m.content,
        tool_calls: m
            .tool_calls
            .into_iter()
            .map(|c| Call {
                id: c.id,
                name: c.name,
                arguments: c.arguments_json,
            })
            .collect(),
        tool_call_id: m.tool_call_id,
    }
}

/// A document message on the wire.
pub fn message_wire(m: &Message) -> ChatMessage {
    ChatMessage {
        role: ChatRole::from_name(&m.role).unwrap_or_default().into(),
        content: m.content.clone(),
        tool_calls: m
            .tool_calls
            .iter()
            .map(|c| ToolCall {
                id: c.id.clone(),
                name: c.name.clone(),
                arguments_json: c.arguments.clone(),
            })
            .collect(),
        tool_call_id: m.tool_call_id.clone(),
    }
}

/// A document tool on the wire.
pub fn tool_wire(t: &Tool) -> ToolSpec {
    ToolSpec {
        name: t.name.clone(),
        description: t.description.clone(),
        input_schema_json: match &t.input_schema {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        },
    }
}
