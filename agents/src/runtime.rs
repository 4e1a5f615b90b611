//! The agent loop.
//!
//! One task: the system prompt and the task go to the model with the tools
//! the agent may call; each tool call is checked (a known tool, arguments
//! that are a JSON object) and run, and its result goes back to the model;
//! the loop ends when the model answers in text. Malformed calls are
//! answered with what was wrong and retried a bounded number of times; the
//! number of model calls is capped; the context sent each step is kept
//! within a token budget by dropping the oldest whole turns (never the
//! system prompt or the task), in one deterministic pass, so compaction can
//! neither loop nor grow.

use std::sync::Arc;
use tracing::Instrument;

use hearth_proto::v1::{ChatMessage, ChatRole, GenerateRequest, ToolCall, ToolSpec, Usage};
use serde_json::Value;

use crate::memory::AgentMemory;
use crate::model::Model;
use crate::spec::AgentSpec;
use crate::tools::{CallContext, Tools};
use crate::trace::TraceSink;
use crate::usage;
use hearth_proto::v1::{ModelCall, ToolRun, Trace};

/// Largest tool result fed back to the model, in bytes.
pub const MAX_TOOL_RESULT_BYTES: usize = 16 * 1024;

/// Why a task could not be finished.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The model call failed (unreachable, timed out, or a reply that is not
    /// what its protocol says).
    #[error("the model call failed: {}", .0.message())]
    Model(tonic::Status),
    /// The tools could not be listed.
    #[error("the toolhost could not be reached: {0}")]
    Tools(tonic::Status),
    /// The step limit was reached without an answer.
    #[error("no answer after {0} model calls (the agent's step limit)")]
    StepLimit(u32),
    /// The model kept making malformed tool calls.
    #[error("the model made {count} malformed tool calls in a row; last: {last}")]
    MalformedCalls {
        /// How many.
        count: u32,
        /// What was wrong with the last one.
        last: String,
    },
    /// The model answered with nothing at all.
    #[error("the model returned an empty answer")]
    EmptyAnswer,
    /// A tool could not be run at all (its server is down, not permitted,
    /// timed out). Tool-level errors go back to the model; this ends the task.
    #[error("tool `{tool}` could not be run: {status}", status = .status.message())]
    ToolFailed {
        /// The tool.
        tool: String,
        /// Why.
        status: tonic::Status,
    },
}

impl AgentError {
    /// The gRPC status this error is reported as.
    pub fn status(&self) -> tonic::Status {
        match self {
            AgentError::Model(s)
            | AgentError::Tools(s)
            | AgentError::ToolFailed { status: s, .. } => {
                tonic::Status::new(s.code(), self.to_string())
            }
            AgentError::StepLimit(_)
            | AgentError::MalformedCalls { .. }
            | AgentError::EmptyAnswer => tonic::Status::aborted(self.to_string()),
        }
    }
}

/// A finished task.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The final answer.
    pub answer: String,
    /// What all model calls (and delegated subtasks) cost.
    pub usage: Usage,
    /// Model calls made.
    pub steps: u32,
    /// Tool calls made (successful or not).
    pub tool_calls: u32,
    /// The agent asked the caller a question (`answer` holds it) instead of
    /// answering: the task waits for input.
    pub input_required: bool,
}

/// The tool an agent calls to ask the caller a question; offered only when
/// the caller can answer (an interactive task).
pub const ASK_USER_TOOL: &str = "hearth.ask_user";

/// `hearth.ask_user`'s definition. The loop handles the call itself: the
/// question ends the turn and the task waits for the caller's reply.
pub fn ask_user_spec() -> ToolSpec {
    ToolSpec {
        name: ASK_USER_TOOL.into(),
        description: "Ask the user a question when the task cannot be done without their answer (a missing detail, a choice only they can make). The task pauses until they reply.".into(),
        input_schema_json: serde_json::json!({
            "type": "object",
            "properties": { "question": { "type": "string", "description": "The question, stated on its own." } },
            "required": ["question"],
        })
        .to_string(),
    }
}

/// The earlier messages of a continued task, for the system prompt, fitted
/// into `budget_bytes` (the newest kept).
fn conversation_section(
    prior: &[(hearth_proto::a2a::Role, String)],
    budget_bytes: usize,
) -> String {
    let mut lines: Vec<String> = Vec::new();
    let mut used = 0;
    for (role, text) in prior.iter().rev() {
        let who = if *role == hearth_proto::a2a::Role::Agent {
            "You"
        } else {
            "User"
        };
        let line = format!("{who}: {}\n", text.replace('\n', " "));
        if used + line.len() > budget_bytes {
            break;
        }
        used += line.len();
        lines.push(line);
    }
    if lines.is_empty() {
        return String::new();
    }
    lines.reverse();
    format!(
        "\n\nThis task is a conversation; what was said before the user's latest message (oldest first):\n{}",
        lines.concat()
    )
}

/// Something that happened during the loop, for progress reports.
#[derive(Debug, Clone)]
pub enum Progress {
    /// A tool is being called.
    ToolCall {
        /// Its name.
        name: String,
        /// Its arguments (JSON).
        arguments: String,
    },
    /// A tool answered.
    ToolResult {
        /// Its name.
        name: String,
        /// It reported an error.
        is_error: bool,
        /// What it answered.
        result: String,
    },
}

/// An agent ready to run tasks.
pub struct AgentLoop {
    spec: Arc<AgentSpec>,
    model: Arc<dyn Model>,
    tools: Arc<dyn Tools>,
    memory: Option<(Arc<dyn AgentMemory>, usize)>,
    traces: Option<Arc<dyn TraceSink>>,
}

/// What one run did, for its trace.
#[derive(Default)]
struct Run {
    messages: Vec<ChatMessage>,
    offered: Vec<ToolSpec>,
    model_calls: Vec<ModelCall>,
    tool_runs: Vec<ToolRun>,
}

/// The messages a task starts with. The spec's system prompt comes first
/// and alone: it is the same for every task, and the engine follows it with
/// the tool definitions, so that whole prefix stays in its cache from one
/// call to the next. What changes from task to task — the conversation so
/// far, recalled memories — follows as a second system message, then the
/// task itself.
pub fn initial_messages(
    spec: &AgentSpec,
    prior: &[(hearth_proto::a2a::Role, String)],
    recalled: &[String],
    task: &str,
) -> Vec<ChatMessage> {
    // The conversation so far takes at most a quarter of the budget
    // (tokens × 4 bytes ÷ 4); memories at most an eighth.
    let budget = spec.context_budget_tokens as usize;
    let mut variable = conversation_section(prior, budget);
    variable.push_str(&crate::memory::recalled_section(recalled, budget * 4 / 8));
    let mut messages = vec![ChatMessage {
        role: ChatRole::System.into(),
        content: spec.system_prompt.trim().to_string(),
        ..Default::default()
    }];
    let variable = variable.trim();
    if !variable.is_empty() {
        messages.push(ChatMessage {
            role: ChatRole::System.into(),
            content: variable.to_string(),
            ..Default::default()
        });
    }
    messages.push(ChatMessage {
        role: ChatRole::User.into(),
        content: task.to_string(),
        ..Default::default()
    });
    messages
}

fn millis(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Rough token count: about four bytes a token, plus a little per message.
/// Used only for the context budget, never reported as usage.
pub fn estimate_tokens(m: &ChatMessage) -> usize {
    let calls: usize = m
        .tool_calls
        .iter()
        .map(|c| c.name.len() + c.arguments_json.len())
        .sum();
    (m.content.len() + calls).div_ceil(4) + 4
}

/// Keeps `messages` within `budget` estimated tokens: the head (the system
/// messages and the task) always stays; the oldest turns after it go first, a
/// turn being an assistant message with the tool results that answer it. If
/// the kept messages alone are over budget, the longest tool results are cut.
pub fn fit_to_budget(messages: &[ChatMessage], budget: usize) -> Vec<ChatMessage> {
    let total = |ms: &[ChatMessage]| ms.iter().map(estimate_tokens).sum::<usize>();
    let head_len = messages
        .iter()
        .position(|m| m.role() != ChatRole::System)
        .map_or(messages.len(), |i| i + 1);
    if total(messages) <= budget || messages.len() <= head_len {
        return messages.to_vec();
    }
    let head = &messages[..head_len];
    // Split the rest into turns: each starts at a non-tool message.
    let mut turns: Vec<&[ChatMessage]> = Vec::new();
    let rest = &messages[head_len..];
    let mut start = 0;
    for i in 1..=rest.len() {
        if i == rest.len() || rest[i].role() != ChatRole::Tool {
            turns.push(&rest[start..i]);
            start = i;
        }
    }
    let head_cost = total(head);
    let mut kept: Vec<&[ChatMessage]> = Vec::new();
    let mut cost = head_cost;
    // Newest turns first; always keep the newest one.
    for (n, turn) in turns.iter().rev().enumerate() {
        let c = total(turn);
        if n > 0 && cost + c > budget {
            break;
        }
        cost += c;
        kept.push(turn);
    }
    kept.reverse();
    let mut out: Vec<ChatMessage> = head.to_vec();
    for t in kept {
        out.extend_from_slice(t);
    }
    // Still over: cut tool results, longest first, to what the budget allows.
    let mut over = total(&out).saturating_sub(budget);
    while over > 0 {
        let Some(longest) = out
            .iter_mut()
            .filter(|m| m.role() == ChatRole::Tool)
            .max_by_key(|m| m.content.len())
        else {
            break;
        };
        let keep_bytes = longest.content.len().saturating_sub(over * 4 + 64);
        if keep_bytes >= longest.content.len() || longest.content.len() < 128 {
            break;
        }
        let cut = longest.content.floor_char_boundary(keep_bytes);
        longest.content.truncate(cut);
        longest
            .content
            .push_str(" …[cut to fit the context budget]");
        over = total(&out).saturating_sub(budget);
    }
    out
}

/// A call's arguments in canonical form, so the same call written twice
/// (keys in another order, other spacing) compares equal.
fn canonical(arguments_json: &str) -> String {
    serde_json::from_str::<Value>(arguments_json)
        .map(|v| hearth_mesh::json::canonical(&v))
        .unwrap_or_else(|_| arguments_json.to_string())
}

/// Checks one tool call; returns the parsed arguments or what is wrong.
fn check_call(call: &ToolCall, offered: &[ToolSpec]) -> Result<(), String> {
    if !offered.iter().any(|t| t.name == call.name) {
        let names: Vec<&str> = offered.iter().map(|t| t.name.as_str()).collect();
        return Err(format!(
            "there is no tool `{}`; the tools are: {}",
            call.name,
            if names.is_empty() {
                "(none)".into()
            } else {
                names.join(", ")
            }
        ));
    }
    let args = if call.arguments_json.trim().is_empty() {
        "{}"
    } else {
        &call.arguments_json
    };
    match serde_json::from_str::<Value>(args) {
        Ok(Value::Object(_)) => Ok(()),
        Ok(other) => Err(format!(
            "the arguments must be a JSON object, not `{other}`"
        )),
        Err(e) => Err(format!("the arguments are not valid JSON ({e})")),
    }
}

impl AgentLoop {
    /// An agent following `spec`, asking `model`, calling `tools`.
    pub fn new(spec: Arc<AgentSpec>, model: Arc<dyn Model>, tools: Arc<dyn Tools>) -> Self {
        Self {
            spec,
            model,
            tools,
            memory: None,
            traces: None,
        }
    }

    /// The same agent, sending each run's trace to `sink`.
    pub fn with_traces(mut self, sink: Arc<dyn TraceSink>) -> Self {
        self.traces = Some(sink);
        self
    }

    /// The same agent, recalling up to `recall` memories into each task and
    /// remembering each task's outcome.
    pub fn with_memory(mut self, memory: Arc<dyn AgentMemory>, recall: usize) -> Self {
        self.memory = Some((memory, recall));
        self
    }

    /// The spec this loop follows.
    pub fn spec(&self) -> &AgentSpec {
        &self.spec
    }

    /// Runs one task to its answer. `progress` hears about each tool call.
    pub async fn run(
        &self,
        ctx: &CallContext,
        task: &str,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<Outcome, AgentError> {
        self.run_turn(ctx, &[], task, progress).await
    }

    /// Runs one turn of a task: `task` is the caller's latest message and
    /// `prior` what was said before it in the same task (empty for a new
    /// task). The turn ends with an answer, or with a question when the
    /// agent calls `hearth.ask_user` (offered only when the caller can reply).
    pub async fn run_turn(
        &self,
        ctx: &CallContext,
        prior: &[(hearth_proto::a2a::Role, String)],
        task: &str,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<Outcome, AgentError> {
        let started = std::time::Instant::now();
        let started_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut run = Run::default();
        let span = tracing::info_span!(
            "agent.turn",
            otel.name = %format_args!("agent {}", self.spec.name),
            agent = %self.spec.name,
            task_id = %ctx.task_id,
        );
        let result = self
            .turn_inner(ctx, prior, task, progress, &mut run)
            .instrument(span)
            .await;
        if let Some(sink) = &self.traces {
            let (answer, error, usage) = match &result {
                Ok(o) => (o.answer.clone(), String::new(), Some(o.usage.clone())),
                Err(e) => (String::new(), e.to_string(), None),
            };
            sink.record(Trace {
                task_id: ctx.task_id.clone(),
                parent_task_id: ctx.parent_task_id.clone(),
                agent: self.spec.name.clone(),
                context_id: ctx.context_id.clone(),
                worker: String::new(),
                started_unix_ms,
                duration_ms: millis(started.elapsed()),
                messages: run.messages,
                tools: run.offered,
                model_calls: run.model_calls,
                tool_runs: run.tool_runs,
                answer,
                error,
                usage,
            })
            .await;
        }
        result
    }

    async fn turn_inner(
        &self,
        ctx: &CallContext,
        prior: &[(hearth_proto::a2a::Role, String)],
        task: &str,
        progress: &(dyn Fn(Progress) + Send + Sync),
        run: &mut Run,
    ) -> Result<Outcome, AgentError> {
        let offered = self.tools.list(ctx).await.map_err(AgentError::Tools)?;
        run.offered.clone_from(&offered);
        let recalled = match &self.memory {
            Some((memory, recall)) if *recall > 0 => {
                memory.recall(&self.spec.name, task, *recall).await
            }
            _ => Vec::new(),
        };
        run.messages = initial_messages(&self.spec, prior, &recalled, task);
        let mut out = Outcome::default();
        let mut malformed_in_row = 0u32;
        // The grounding check (numbers in words) speaks once a task.
        let mut grounding_checked = false;
        let budget = self.spec.context_budget_tokens as usize;
        // Calls already run (name and canonical arguments): a model that
        // repeats one is looping, and is told to answer instead.
        let mut ran: std::collections::HashSet<(String, String)> = Default::default();
        let mut answer_next = false;
        while out.steps < self.spec.max_steps {
            out.steps += 1;
            // The last step, and the one after a repeated call, must answer.
            let answer_now = answer_next || out.steps == self.spec.max_steps;
            let sent = fit_to_budget(&run.messages, budget);
            let sent_len = sent.len() as u32;
            let req = GenerateRequest {
                model: self.spec.model.clone(),
                messages: sent,
                tools: offered.clone(),
                max_tokens: self.spec.max_tokens,
                temperature: ctx.temperature,
                task_id: ctx.task_id.clone(),
                answer_now,
                root_task_id: ctx.root_task_id.clone(),
                agent: self.spec.name.clone(),
                sensitive: ctx.is_sensitive(),
                // The last reply was a malformed call: under local-first
                // routing, the remote takes this one.
                escalate: malformed_in_row > 0,
                ..Default::default()
            };
            let called = std::time::Instant::now();
            let turn = self
                .model
                .turn(req)
                .instrument(tracing::info_span!(
                    "model.call",
                    step = run.model_calls.len()
                ))
                .await
                .map_err(AgentError::Model)?;
            run.model_calls.push(ModelCall {
                backend: turn.usage.backend,
                model: turn.usage.model.clone(),
                tokens_in: turn.usage.tokens_in,
                tokens_out: turn.usage.tokens_out,
                latency_ms: millis(called.elapsed()),
                answer_now,
                messages: sent_len,
                route: turn.usage.route.clone(),
            });
            if turn.usage.sensitive {
                ctx.sensitive
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            usage::add(&mut out.usage, &turn.usage);
            if turn.tool_calls.is_empty() {
                let answer = turn.text.trim();
                if answer.is_empty() {
                    return Err(AgentError::EmptyAnswer);
                }
                out.answer = answer.to_string();
                run.messages.push(ChatMessage {
                    role: ChatRole::Assistant.into(),
                    content: out.answer.clone(),
                    ..Default::default()
                });
                self.remember_outcome(ctx, task, &out.answer).await;
                return Ok(out);
            }
            run.messages.push(ChatMessage {
                role: ChatRole::Assistant.into(),
                content: turn.text.clone(),
                tool_calls: turn.tool_calls.clone(),
                ..Default::default()
            });
            // A question for the caller ends the turn.
            if let Some(question) = question_for_caller(&turn.tool_calls, &offered) {
                out.tool_calls += 1;
                out.answer = question;
                out.input_required = true;
                return Ok(out);
            }
            // A call that drops a number the task writes in words: the
            // call is not run, and the step is taken again with the task
            // written in digits (once a task).
            if !grounding_checked {
                grounding_checked = true;
                if let Some(problem) = turn
                    .tool_calls
                    .iter()
                    .find_map(|c| crate::grounding::problem(task, &c.name, &c.arguments_json))
                {
                    tracing::debug!(%problem, "the task is given again in digits");
                    run.messages.pop();
                    if let Some(m) = run
                        .messages
                        .iter_mut()
                        .rev()
                        .find(|m| m.role() == ChatRole::User)
                    {
                        m.content = crate::grounding::in_digits(&m.content);
                    }
                    continue;
                }
            }
            let mut any_malformed = None;
            // The result of a lone successful call of a `return_direct` tool.
            let mut direct: Option<String> = None;
            let lone = turn.tool_calls.len() == 1;
            for call in &turn.tool_calls {
                out.tool_calls += 1;
                let content = match check_call(call, &offered) {
                    Err(problem) => {
                        any_malformed = Some(problem.clone());
                        format!(
                            "error: your call was malformed: {problem}. Call a tool again with correct arguments, or answer in text."
                        )
                    }
                    Ok(()) if !ran.insert((call.name.clone(), canonical(&call.arguments_json))) => {
                        answer_next = true;
                        format!(
                            "error: you already called {} with these arguments, and its result is above. Do not call it again: answer now from what you have.",
                            call.name
                        )
                    }
                    Ok(()) => {
                        let (text, is_error) = self
                            .run_call(ctx, call, progress, run, &mut out.usage)
                            .await?;
                        if lone
                            && !is_error
                            && !text.trim().is_empty()
                            && self.spec.return_direct.iter().any(|t| t == &call.name)
                        {
                            direct = Some(text.trim().to_string());
                        }
                        text
                    }
                };
                run.messages.push(ChatMessage {
                    role: ChatRole::Tool.into(),
                    content,
                    tool_call_id: call.id.clone(),
                    ..Default::default()
                });
            }
            if let Some(answer) = direct {
                out.answer = answer;
                self.remember_outcome(ctx, task, &out.answer).await;
                return Ok(out);
            }
            match any_malformed {
                Some(last) => {
                    malformed_in_row += 1;
                    if malformed_in_row > self.spec.max_tool_retries {
                        return Err(AgentError::MalformedCalls {
                            count: malformed_in_row,
                            last,
                        });
                    }
                }
                None => malformed_in_row = 0,
            }
        }
        Err(AgentError::StepLimit(self.spec.max_steps))
    }

    /// Runs one well-formed call: the tool's text (an error marked as
    /// such, long output cut) and whether it was an error; the call is
    /// recorded in `run` and its cost added to `usage`.
    async fn run_call(
        &self,
        ctx: &CallContext,
        call: &ToolCall,
        progress: &(dyn Fn(Progress) + Send + Sync),
        run: &mut Run,
        usage: &mut Usage,
    ) -> Result<(String, bool), AgentError> {
        progress(Progress::ToolCall {
            name: call.name.clone(),
            arguments: call.arguments_json.clone(),
        });
        let called = std::time::Instant::now();
        let result = self
            .tools
            .call(ctx, &call.name, &call.arguments_json)
            .instrument(tracing::info_span!(
                "tool.call",
                otel.name = %format_args!("tool {}", call.name),
                tool = %call.name,
            ))
            .await;
        let (text, is_error) = match result {
            Ok(o) => {
                if let Some(u) = &o.usage {
                    usage::add(usage, u);
                }
                (o.content, o.is_error)
            }
            Err(status) => {
                return Err(AgentError::ToolFailed {
                    tool: call.name.clone(),
                    status,
                });
            }
        };
        progress(Progress::ToolResult {
            name: call.name.clone(),
            is_error,
            result: text.clone(),
        });
        let mut text = if is_error {
            format!("error: {text}")
        } else {
            text
        };
        if text.len() > MAX_TOOL_RESULT_BYTES {
            let cut = text.floor_char_boundary(MAX_TOOL_RESULT_BYTES);
            text.truncate(cut);
            text.push_str(" …[truncated]");
        }
        run.tool_runs.push(ToolRun {
            name: call.name.clone(),
            arguments_json: call.arguments_json.clone(),
            result: text.clone(),
            is_error,
            duration_ms: millis(called.elapsed()),
        });
        Ok((text, is_error))
    }

    async fn remember_outcome(&self, ctx: &CallContext, task: &str, answer: &str) {
        if let Some((memory, _)) = &self.memory {
            let text = crate::memory::outcome_text(task, answer);
            if let Err(e) = memory
                .remember(
                    &self.spec.name,
                    &ctx.task_id,
                    crate::memory::Kind::Outcome,
                    &text,
                )
                .await
            {
                tracing::debug!(error = %e, "the task's outcome was not remembered");
            }
        }
    }
}

/// The question of an `ask_user` call among `calls`, when that tool was
/// offered: asking the caller ends the turn.
fn question_for_caller(calls: &[ToolCall], offered: &[ToolSpec]) -> Option<String> {
    let ask = calls
        .iter()
        .find(|c| c.name == ASK_USER_TOOL && offered.iter().any(|t| t.name == ASK_USER_TOOL))?;
    Some(
        serde_json::from_str::<Value>(&ask.arguments_json)
            .ok()
            .and_then(|v| {
                v.get("question")?
                    .as_str()
                    .map(str::trim)
                    .map(str::to_string)
            })
            .filter(|q| !q.is_empty())
            .unwrap_or_else(|| "Could you tell me more about what you need?".into()),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::model::Turn;
    use crate::spec::Role;
    use crate::tools::ToolOutput;

    /// A model double that replays fixed turns (test-only).
    struct Replay(Mutex<Vec<Turn>>, Mutex<Vec<GenerateRequest>>);

    #[async_trait::async_trait]
    impl Model for Replay {
        async fn turn(&self, req: GenerateRequest) -> Result<Turn, tonic::Status> {
            self.1.lock().unwrap().push(req);
            let mut turns = self.0.lock().unwrap();
            if turns.is_empty() {
                return Ok(Turn {
                    text: "done".into(),
                    ..Default::default()
                });
            }
            Ok(turns.remove(0))
        }
    }

    struct Echo;

    #[async_trait::async_trait]
    impl Tools for Echo {
        async fn list(&self, _: &CallContext) -> Result<Vec<ToolSpec>, tonic::Status> {
            Ok(vec![ToolSpec {
                name: "t.echo".into(),
                ..Default::default()
            }])
        }
        async fn call(
            &self,
            _: &CallContext,
            _: &str,
            args: &str,
        ) -> Result<ToolOutput, tonic::Status> {
            Ok(ToolOutput {
                content: format!("echoed {args}"),
                ..Default::default()
            })
        }
    }

    fn spec(max_steps: u32) -> Arc<AgentSpec> {
        Arc::new(AgentSpec {
            name: "a".into(),
            role: Role::Operative,
            description: String::new(),
            model: String::new(),
            system_prompt: "sys".into(),
            tools: vec!["t.*".into()],
            max_steps,
            max_tool_retries: 1,
            context_budget_tokens: 6000,
            max_tokens: 0,
            return_direct: Vec::new(),
        })
    }

    fn call(name: &str, args: &str) -> Turn {
        Turn {
            tool_calls: vec![ToolCall {
                id: "c".into(),
                name: name.into(),
                arguments_json: args.into(),
            }],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn tool_results_are_fed_back_and_the_text_answer_ends_the_task() {
        let model = Arc::new(Replay(
            Mutex::new(vec![call("t.echo", "{\"x\":1}")]),
            Mutex::default(),
        ));
        let agent = AgentLoop::new(spec(4), model.clone(), Arc::new(Echo));
        let out = agent
            .run(&CallContext::default(), "task", &|_| {})
            .await
            .unwrap();
        assert_eq!(out.answer, "done");
        assert_eq!((out.steps, out.tool_calls), (2, 1));
        let seen = model.1.lock().unwrap();
        let last = seen.last().unwrap().messages.last().unwrap();
        assert_eq!(last.role(), ChatRole::Tool);
        assert_eq!(last.content, "echoed {\"x\":1}");
    }

    /// A calculator double (test-only): records the expressions it gets.
    #[derive(Default)]
    struct Calc(Mutex<Vec<String>>);

    #[async_trait::async_trait]
    impl Tools for Calc {
        async fn list(&self, _: &CallContext) -> Result<Vec<ToolSpec>, tonic::Status> {
            Ok(vec![ToolSpec {
                name: "calculator.evaluate".into(),
                ..Default::default()
            }])
        }
        async fn call(
            &self,
            _: &CallContext,
            _: &str,
            args: &str,
        ) -> Result<ToolOutput, tonic::Status> {
            self.0.lock().unwrap().push(args.to_string());
            Ok(ToolOutput {
                content: "42".into(),
                ..Default::default()
            })
        }
    }

    #[tokio::test]
    async fn a_call_that_drops_a_number_in_words_is_retaken_with_the_task_in_digits() {
        let model = Arc::new(Replay(
            Mutex::new(vec![
                call("calculator.evaluate", r#"{"expression":"12+3"}"#),
                call("calculator.evaluate", r#"{"expression":"12+30"}"#),
            ]),
            Mutex::default(),
        ));
        let mut s = (*spec(6)).clone();
        s.tools = vec!["calculator.*".into()];
        let calc = Arc::new(Calc::default());
        let agent = AgentLoop::new(Arc::new(s), model.clone(), calc.clone());
        let out = agent
            .run(
                &CallContext::default(),
                "What is twelve plus thirty?",
                &|_| {},
            )
            .await
            .unwrap();
        assert_eq!(out.answer, "done");
        // The misread call never ran; the right one did.
        assert_eq!(*calc.0.lock().unwrap(), [r#"{"expression":"12+30"}"#]);
        let seen = model.1.lock().unwrap();
        let task_of = |r: &GenerateRequest| {
            r.messages
                .iter()
                .rev()
                .find(|m| m.role() == ChatRole::User)
                .map(|m| m.content.clone())
                .unwrap()
        };
        assert_eq!(task_of(&seen[0]), "What is twelve plus thirty?");
        assert_eq!(task_of(&seen[1]), "What is 12 plus 30?");
        assert!(!seen[1].messages.iter().any(|m| {
            m.tool_calls
                .iter()
                .any(|c| c.arguments_json.contains("12+3\""))
        }));
    }

    /// Agent memory double (test-only): fixed recollections, and a record
    /// of what was kept.
    struct Notebook(Vec<String>, Mutex<Vec<(String, String, String)>>);

    #[async_trait::async_trait]
    impl AgentMemory for Notebook {
        async fn recall(&self, _agent: &str, _task: &str, limit: usize) -> Vec<String> {
            self.0.iter().take(limit).cloned().collect()
        }
        async fn remember(
            &self,
            agent: &str,
            _task_id: &str,
            kind: crate::memory::Kind,
            text: &str,
        ) -> Result<(), String> {
            self.1
                .lock()
                .unwrap()
                .push((agent.into(), kind.as_str().into(), text.into()));
            Ok(())
        }
    }

    #[tokio::test]
    async fn recalled_memories_reach_the_prompt_and_the_outcome_is_kept() {
        let model = Arc::new(Replay(Mutex::default(), Mutex::default()));
        let notes = Arc::new(Notebook(
            vec!["The user prefers metric units.".into(), "x".repeat(40_000)],
            Mutex::default(),
        ));
        let agent =
            AgentLoop::new(spec(4), model.clone(), Arc::new(Echo)).with_memory(notes.clone(), 3);
        let out = agent
            .run(&CallContext::default(), "How tall is it?", &|_| {})
            .await
            .unwrap();
        assert_eq!(out.answer, "done");
        let seen = model.1.lock().unwrap();
        // The spec's prompt alone first (a prefix the engine keeps cached),
        // then what this task recalled, then the task.
        let msgs = &seen[0].messages;
        assert_eq!(msgs[0].content, "sys");
        assert_eq!(
            (msgs[1].role().name(), msgs[2].role().name()),
            ("system", "user")
        );
        let recalled = &msgs[1].content;
        assert!(
            recalled.contains("The user prefers metric units."),
            "{recalled}"
        );
        // A memory that would blow the context budget is left out.
        assert!(!recalled.contains(&"x".repeat(100)), "{}", recalled.len());
        let kept = notes.1.lock().unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!((kept[0].0.as_str(), kept[0].1.as_str()), ("a", "outcome"));
        assert!(kept[0].2.contains("How tall is it?") && kept[0].2.contains("done"));
    }

    #[tokio::test]
    async fn a_repeated_call_is_not_run_again_and_the_next_turn_must_answer() {
        let model = Arc::new(Replay(
            Mutex::new(vec![
                call("t.echo", r#"{"x":1,"y":2}"#),
                call("t.echo", r#"{"y": 2, "x": 1}"#),
            ]),
            Mutex::default(),
        ));
        let agent = AgentLoop::new(spec(8), model.clone(), Arc::new(Echo));
        let out = agent
            .run(&CallContext::default(), "task", &|_| {})
            .await
            .unwrap();
        assert_eq!(out.answer, "done");
        let seen = model.1.lock().unwrap();
        assert_eq!(
            seen.iter().map(|r| r.answer_now).collect::<Vec<_>>(),
            [false, false, true]
        );
        let fed_back = &seen[2].messages.last().unwrap().content;
        assert!(fed_back.contains("already called t.echo"), "{fed_back}");
    }

    /// Trace sink double (test-only): keeps what it is given.
    #[derive(Default)]
    struct Keep(Mutex<Vec<Trace>>);

    #[async_trait::async_trait]
    impl TraceSink for Keep {
        async fn record(&self, trace: Trace) {
            self.0.lock().unwrap().push(trace);
        }
    }

    #[tokio::test]
    async fn a_return_direct_tool_ends_the_task_with_its_result_and_the_run_is_traced() {
        let model = Arc::new(Replay(
            Mutex::new(vec![call("t.echo", r#"{"x":1}"#)]),
            Mutex::default(),
        ));
        let mut s = (*spec(4)).clone();
        s.return_direct = vec!["t.echo".into()];
        let keep = Arc::new(Keep::default());
        let agent =
            AgentLoop::new(Arc::new(s), model.clone(), Arc::new(Echo)).with_traces(keep.clone());
        let ctx = CallContext {
            task_id: "t1".into(),
            parent_task_id: "p1".into(),
            ..Default::default()
        };
        let out = agent.run(&ctx, "task", &|_| {}).await.unwrap();
        assert_eq!(out.answer, r#"echoed {"x":1}"#);
        assert_eq!(out.steps, 1, "no second model call");
        let traces = keep.0.lock().unwrap();
        assert_eq!(traces.len(), 1);
        let t = &traces[0];
        assert_eq!(
            (t.task_id.as_str(), t.parent_task_id.as_str()),
            ("t1", "p1")
        );
        assert_eq!(t.model_calls.len(), 1);
        assert_eq!(t.tool_runs.len(), 1);
        assert_eq!(t.tool_runs[0].arguments_json, r#"{"x":1}"#);
        assert_eq!(t.answer, out.answer);
        assert_eq!(t.tools[0].name, "t.echo");
        assert_eq!(t.messages.last().unwrap().role(), ChatRole::Tool);
    }

    #[tokio::test]
    async fn the_last_step_asks_for_an_answer() {
        let model = Arc::new(Replay(
            Mutex::new(vec![call("t.echo", "{}")]),
            Mutex::default(),
        ));
        let agent = AgentLoop::new(spec(2), model.clone(), Arc::new(Echo));
        let out = agent
            .run(&CallContext::default(), "task", &|_| {})
            .await
            .unwrap();
        assert_eq!(out.answer, "done");
        let seen = model.1.lock().unwrap();
        assert!(!seen[0].answer_now && seen[1].answer_now);
    }

    #[tokio::test]
    async fn malformed_calls_are_explained_then_retried_then_fail() {
        let model = Arc::new(Replay(
            Mutex::new(vec![call("t.echo", "not json"), call("t.nope", "{}")]),
            Mutex::default(),
        ));
        let agent = AgentLoop::new(spec(8), model.clone(), Arc::new(Echo));
        let err = agent
            .run(&CallContext::default(), "task", &|_| {})
            .await
            .unwrap_err();
        assert!(
            matches!(err, AgentError::MalformedCalls { count: 2, .. }),
            "{err}"
        );
        let seen = model.1.lock().unwrap();
        let fed_back = &seen[1].messages.last().unwrap().content;
        assert!(fed_back.contains("not valid JSON"), "{fed_back}");
        assert!(err.to_string().contains("no tool `t.nope`"), "{err}");
    }

    #[tokio::test]
    async fn a_malformed_call_then_a_good_one_recovers() {
        let model = Arc::new(Replay(
            Mutex::new(vec![call("t.echo", "[1]"), call("t.echo", "{}")]),
            Mutex::default(),
        ));
        let agent = AgentLoop::new(spec(8), model, Arc::new(Echo));
        let out = agent
            .run(&CallContext::default(), "task", &|_| {})
            .await
            .unwrap();
        assert_eq!(out.answer, "done");
    }

    #[tokio::test]
    async fn the_step_limit_stops_a_model_that_never_answers() {
        let turns = (0..10).map(|_| call("t.echo", "{}")).collect();
        let model = Arc::new(Replay(Mutex::new(turns), Mutex::default()));
        let agent = AgentLoop::new(spec(3), model, Arc::new(Echo));
        let err = agent
            .run(&CallContext::default(), "task", &|_| {})
            .await
            .unwrap_err();
        assert!(matches!(err, AgentError::StepLimit(3)));
    }

    #[test]
    fn the_budget_keeps_prompt_task_and_newest_turns() {
        let msg = |role: &str, n: usize| ChatMessage {
            role: ChatRole::from_name(role).unwrap_or_default().into(),
            content: "x".repeat(n),
            ..Default::default()
        };
        let mut ms = vec![msg("system", 40), msg("user", 40)];
        for _ in 0..10 {
            ms.push(msg("assistant", 400));
            ms.push(msg("tool", 400));
        }
        let fitted = fit_to_budget(&ms, 500);
        assert_eq!(fitted[0].role(), ChatRole::System);
        assert_eq!(fitted[1].role(), ChatRole::User);
        assert!(fitted.len() < ms.len());
        assert_eq!(fitted.last().unwrap().role(), ChatRole::Tool);
        let total: usize = fitted.iter().map(estimate_tokens).sum();
        assert!(total <= 500, "{total}");
        // Fitting again changes nothing: compaction is a fixed point.
        assert_eq!(fit_to_budget(&fitted, 500).len(), fitted.len());
    }

    #[test]
    fn one_huge_tool_result_is_cut_to_fit() {
        let ms = vec![
            ChatMessage {
                role: ChatRole::System.into(),
                content: "s".into(),
                ..Default::default()
            },
            ChatMessage {
                role: ChatRole::User.into(),
                content: "u".into(),
                ..Default::default()
            },
            ChatMessage {
                role: ChatRole::Assistant.into(),
                content: String::new(),
                ..Default::default()
            },
            ChatMessage {
                role: ChatRole::Tool.into(),
                content: "y".repeat(100_000),
                ..Default::default()
            },
        ];
        let fitted = fit_to_budget(&ms, 1000);
        let total: usize = fitted.iter().map(estimate_tokens).sum();
        assert!(total <= 1000, "{total}");
        assert!(fitted[3].content.ends_with("budget]"));
    }
}
