//! A2A tasks as an agent service runs them: ids, the event stream (status
//! updates, the answer artifact, the final task), lookup, listing,
//! subscription, cancel, and multi-turn tasks.
//!
//! A task whose agent asked a question ends its turn in
//! `TASK_STATE_INPUT_REQUIRED`; the next message sent with the same task id
//! continues it (its earlier messages go to the agent with it). Anyone may
//! subscribe to a task that has not reached a terminal state and hear its
//! events from then on.
//!
//! Records are kept in memory, bounded: past [`MAX_RECORDS`] the oldest
//! finished tasks are forgotten.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hearth_mesh::a2a::trim_history;
use hearth_mesh::rpc::ReplyStream;
use hearth_mesh::sync::lock;
use hearth_proto::a2a::{
    ListTasksRequest, ListTasksResponse, Message, Role, StreamResponse, Task,
    TaskArtifactUpdateEvent, TaskState, TaskStatusUpdateEvent, stream_response::Payload,
};
use hearth_proto::v1::{GetTaskRequest, SendTaskRequest, TaskEvent, TaskRecord, Usage};
use tokio::sync::{broadcast, mpsc};
use tokio::task::AbortHandle;
use tokio_stream::wrappers::{BroadcastStream, ReceiverStream};
use tonic::Status;
use tracing::Instrument;

use crate::convert::{self, is_final, is_terminal, status, text_artifact, text_message};
use crate::runtime::{AgentError, Outcome};

/// How many task records one service keeps.
pub const MAX_RECORDS: usize = 10_000;
/// How many events may wait for a slow reader before progress events are dropped.
const EVENT_QUEUE: usize = 64;
/// Tasks one ListTasks page holds by default, and at most.
const PAGE_DEFAULT: usize = 50;
const PAGE_MAX: usize = 100;

/// The work a task does.
pub type Work = Pin<Box<dyn Future<Output = Result<Outcome, AgentError>> + Send>>;

/// A task's subscribers. The broadcast channel is made on the first
/// subscription, so a task nobody watches (most of them) allocates nothing
/// for it and clones no event.
#[derive(Clone, Default)]
struct Watchers(Arc<std::sync::OnceLock<broadcast::Sender<TaskEvent>>>);

impl Watchers {
    fn send(&self, ev: &TaskEvent) {
        if let Some(tx) = self.0.get()
            && tx.receiver_count() > 0
        {
            let _ = tx.send(ev.clone());
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<TaskEvent> {
        self.0
            .get_or_init(|| broadcast::channel(EVENT_QUEUE).0)
            .subscribe()
    }
}

struct Slot {
    record: TaskRecord,
    abort: Option<AbortHandle>,
    /// The caller's stream for the current turn.
    events: Option<mpsc::Sender<Result<TaskEvent, Status>>>,
    /// Subscribers.
    watchers: Watchers,
    started: Instant,
}

#[derive(Default)]
struct Store {
    slots: HashMap<String, Slot>,
    order: VecDeque<String>,
}

/// Runs and remembers the tasks of one service instance.
#[derive(Clone)]
pub struct TaskHost {
    worker: String,
    store: Arc<Mutex<Store>>,
}

/// What a running task can see and say.
#[derive(Clone)]
pub struct TaskHandle {
    /// The task's id.
    pub task_id: String,
    /// Its A2A context.
    pub context_id: String,
    /// The text of the message that started this turn.
    pub text: String,
    /// The task's earlier messages (on a continued task): role and text,
    /// oldest first.
    pub prior: Vec<(Role, String)>,
    /// The task that delegated this one (its message's first reference),
    /// empty for a task from outside.
    pub parent_task_id: String,
    /// The root of the delegation chain (`hearth.root_task` in the
    /// message's metadata; empty: this task is the root).
    pub root_task_id: String,
    /// The message marked the task sensitive (`hearth.sensitive`).
    pub sensitive: bool,
    /// The sampling temperature the message asked for
    /// (`hearth.temperature`).
    pub temperature: Option<f32>,
    events: mpsc::Sender<Result<TaskEvent, Status>>,
    watchers: Watchers,
    worker: String,
}

impl TaskHandle {
    /// Reports progress as a `WORKING` status update (dropped if the reader is slow).
    pub fn progress(&self, text: impl Into<String>) {
        let msg = text_message(Role::Agent, text, &self.task_id, &self.context_id);
        let ev = TaskEvent {
            event: Some(status_event(
                &self.task_id,
                &self.context_id,
                TaskState::Working,
                Some(msg),
            )),
            usage: None,
            worker: self.worker.clone(),
        };
        self.watchers.send(&ev);
        let _ = self.events.try_send(Ok(ev));
    }
}

fn status_event(
    task_id: &str,
    context_id: &str,
    state: TaskState,
    message: Option<Message>,
) -> StreamResponse {
    StreamResponse {
        payload: Some(Payload::StatusUpdate(TaskStatusUpdateEvent {
            task_id: task_id.to_string(),
            context_id: context_id.to_string(),
            status: Some(status(state, message)),
            metadata: None,
        })),
    }
}

fn task_event(task: &Task, usage: Option<Usage>, worker: &str) -> TaskEvent {
    TaskEvent {
        event: Some(StreamResponse {
            payload: Some(Payload::Task(task.clone())),
        }),
        usage,
        worker: worker.to_string(),
    }
}

fn state_of(task: Option<&Task>) -> i32 {
    task.and_then(|t| t.status.as_ref()).map_or(0, |s| s.state)
}

/// Sends to the turn's caller (waiting for room) and to subscribers.
async fn emit(
    events: &mpsc::Sender<Result<TaskEvent, Status>>,
    watchers: &Watchers,
    ev: TaskEvent,
) {
    watchers.send(&ev);
    let _ = events.send(Ok(ev)).await;
}

/// Whether an event is the task reaching a terminal state.
fn ends(ev: &TaskEvent) -> bool {
    match ev.event.as_ref().and_then(|e| e.payload.as_ref()) {
        Some(Payload::Task(t)) => is_terminal(state_of(Some(t))),
        _ => false,
    }
}

/// How a message is taken in (see `TaskHost::admit`).
enum Admit {
    /// Nothing to run: these are the events.
    Done(ReplyStream<TaskEvent>),
    /// Run it: the task, the conversation before this message, and who
    /// watches it.
    Go(Box<Task>, Vec<(Role, String)>, Watchers),
}

impl TaskHost {
    /// A host for the instance called `worker`.
    pub fn new(worker: impl Into<String>) -> Self {
        Self {
            worker: worker.into(),
            store: Arc::default(),
        }
    }

    /// This instance's name.
    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// Takes `message` in as task `task_id`: a new task, the answer to one
    /// waiting for input (with the conversation so far), or — for a task
    /// already finished — its final event again. A running task, or an
    /// answer in another context, is refused.
    fn admit(
        &self,
        task_id: &str,
        mut message: Message,
        tx: &mpsc::Sender<Result<TaskEvent, Status>>,
    ) -> Result<Admit, Status> {
        let mut store = lock(&self.store);
        match store.slots.get_mut(task_id) {
            Some(slot) => {
                let state = state_of(slot.record.task.as_ref());
                if is_terminal(state) {
                    // An idempotent retry of a finished task.
                    let Some(t) = slot.record.task.as_ref() else {
                        return Err(Status::internal("task record without a task"));
                    };
                    let ev = task_event(t, slot.record.usage.clone(), &self.worker);
                    return Ok(Admit::Done(futures::stream::iter([Ok(ev)]).boxed()));
                }
                if state != TaskState::InputRequired as i32 {
                    return Err(Status::already_exists(format!(
                        "task {task_id} is already running"
                    )));
                }
                let Some(t) = slot.record.task.as_mut() else {
                    return Err(Status::internal("task record without a task"));
                };
                if !message.context_id.is_empty() && message.context_id != t.context_id {
                    return Err(Status::invalid_argument(format!(
                        "task {task_id} belongs to context {}, not {}",
                        t.context_id, message.context_id
                    )));
                }
                let prior = t
                    .history
                    .iter()
                    .map(|m| {
                        let role = Role::try_from(m.role).unwrap_or(Role::User);
                        (role, convert::text_of(m))
                    })
                    .collect();
                message.task_id = task_id.to_string();
                message.context_id.clone_from(&t.context_id);
                t.history.push(message);
                t.status = Some(status(TaskState::Submitted, None));
                slot.events = Some(tx.clone());
                slot.started = Instant::now();
                Ok(Admit::Go(Box::new(t.clone()), prior, slot.watchers.clone()))
            }
            None => {
                let context_id = if message.context_id.is_empty() {
                    uuid::Uuid::now_v7().to_string()
                } else {
                    message.context_id.clone()
                };
                message.task_id = task_id.to_string();
                message.context_id.clone_from(&context_id);
                let task = Task {
                    id: task_id.to_string(),
                    context_id,
                    status: Some(status(TaskState::Submitted, None)),
                    history: vec![message],
                    ..Default::default()
                };
                self.evict(&mut store);
                store.order.push_back(task_id.to_string());
                let watchers = Watchers::default();
                store.slots.insert(
                    task_id.to_string(),
                    Slot {
                        record: TaskRecord {
                            task: Some(task.clone()),
                            usage: None,
                            worker: self.worker.clone(),
                        },
                        abort: None,
                        events: Some(tx.clone()),
                        watchers: watchers.clone(),
                        started: Instant::now(),
                    },
                );
                Ok(Admit::Go(Box::new(task), Vec::new(), watchers))
            }
        }
    }

    /// Starts a task (or continues one waiting for input) and returns its
    /// events: the task, a working status, progress, then (on success) the
    /// answer artifact, the final status, and the task with its usage — or,
    /// when the agent asks a question, an `INPUT_REQUIRED` status and the
    /// task. A retry with the id of a finished task gets that task back; one
    /// with the id of a running task is refused.
    pub fn start<F>(
        &self,
        req: SendTaskRequest,
        timeout: Duration,
        work: F,
    ) -> Result<ReplyStream<TaskEvent>, Status>
    where
        F: FnOnce(TaskHandle) -> Work,
    {
        let message = req
            .message
            .ok_or_else(|| Status::invalid_argument("the task has no message"))?;
        let text = convert::text_of(&message);
        let parent_task_id = message
            .reference_task_ids
            .first()
            .cloned()
            .unwrap_or_default();
        if text.trim().is_empty() {
            return Err(Status::invalid_argument("the task's message has no text"));
        }
        let sensitive = hearth_mesh::a2a::meta_flag(&message, hearth_mesh::a2a::META_SENSITIVE);
        let temperature = hearth_mesh::a2a::temperature(&message);
        let root_task_id = hearth_mesh::a2a::meta_text(&message, hearth_mesh::a2a::META_ROOT_TASK)
            .unwrap_or_default()
            .to_string();
        let task_id = if req.task_id.is_empty() {
            uuid::Uuid::now_v7().to_string()
        } else {
            req.task_id
        };
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let (task, prior, watchers) = match self.admit(&task_id, message, &tx)? {
            Admit::Done(events) => return Ok(events),
            Admit::Go(task, prior, watchers) => (*task, prior, watchers),
        };
        let context_id = task.context_id.clone();
        let first = task_event(&task, None, &self.worker);
        watchers.send(&first);
        let _ = tx.try_send(Ok(first));
        let working = TaskEvent {
            event: Some(status_event(
                &task_id,
                &context_id,
                TaskState::Working,
                None,
            )),
            usage: None,
            worker: self.worker.clone(),
        };
        watchers.send(&working);
        let _ = tx.try_send(Ok(working));
        self.set_state(&task_id, TaskState::Working, None);
        let handle = TaskHandle {
            task_id: task_id.clone(),
            context_id,
            text,
            prior,
            parent_task_id,
            root_task_id,
            sensitive,
            temperature,
            events: tx.clone(),
            watchers,
            worker: self.worker.clone(),
        };
        let fut = work(handle);
        let host = self.clone();
        let id = task_id.clone();
        // The task's span, under the hop that started it, so the work it
        // does on other services joins the caller's trace.
        let span = tracing::info_span!("task", task_id = %id, worker = %self.worker);
        let join = tokio::spawn(
            async move {
                let result = match tokio::time::timeout(timeout, fut).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err(format!("the task did not finish within {timeout:?}")),
                };
                host.finish(&id, result).await;
            }
            .instrument(span),
        );
        if let Some(slot) = lock(&self.store).slots.get_mut(&task_id) {
            slot.abort = Some(join.abort_handle());
        }
        drop(tx);
        Ok(ReceiverStream::new(rx).boxed())
    }

    fn evict(&self, store: &mut Store) {
        while store.slots.len() >= MAX_RECORDS {
            let Some(pos) = store.order.iter().position(|id| {
                store
                    .slots
                    .get(id)
                    .is_none_or(|s| is_terminal(state_of(s.record.task.as_ref())))
            }) else {
                break; // everything is still running: keep them all
            };
            if let Some(id) = store.order.remove(pos) {
                store.slots.remove(&id);
            }
        }
    }

    fn set_state(&self, id: &str, state: TaskState, message: Option<Message>) {
        let mut store = lock(&self.store);
        if let Some(task) = store.slots.get_mut(id).and_then(|s| s.record.task.as_mut()) {
            task.status = Some(status(state, message));
        }
    }

    async fn finish(&self, id: &str, result: Result<Outcome, String>) {
        let (events, watchers, final_task, usage, context_id) = {
            let mut store = lock(&self.store);
            let Some(slot) = store.slots.get_mut(id) else {
                return;
            };
            let Some(task) = slot.record.task.as_mut() else {
                return;
            };
            if task.status.as_ref().is_some_and(|s| is_final(s.state)) {
                return; // canceled meanwhile
            }
            let context_id = task.context_id.clone();
            let mut usage = Usage::default();
            match &result {
                Ok(out) if out.input_required => {
                    usage = out.usage.clone();
                    let question = text_message(Role::Agent, out.answer.clone(), id, &context_id);
                    task.history.push(question.clone());
                    task.status = Some(status(TaskState::InputRequired, Some(question)));
                }
                Ok(out) => {
                    usage = out.usage.clone();
                    let reply = text_message(Role::Agent, out.answer.clone(), id, &context_id);
                    task.artifacts
                        .push(text_artifact("answer", out.answer.clone()));
                    task.history.push(reply.clone());
                    task.status = Some(status(TaskState::Completed, Some(reply)));
                }
                Err(reason) => {
                    let msg = text_message(Role::Agent, reason.clone(), id, &context_id);
                    task.status = Some(status(TaskState::Failed, Some(msg)));
                }
            }
            usage.latency_ms = slot.started.elapsed().as_secs_f64() * 1e3;
            slot.record.usage = Some(usage.clone());
            slot.abort = None;
            (
                slot.events.take(),
                slot.watchers.clone(),
                task.clone(),
                usage,
                context_id,
            )
        };
        let worker = self.worker.clone();
        let (silent, _) = mpsc::channel(1);
        let events = events.unwrap_or(silent);
        hearth_mesh::metrics::task_ended(state_of(Some(&final_task)));
        let answered = state_of(Some(&final_task)) == TaskState::Completed as i32;
        if let Some(artifact) = final_task.artifacts.last().filter(|_| answered) {
            let ev = StreamResponse {
                payload: Some(Payload::ArtifactUpdate(TaskArtifactUpdateEvent {
                    task_id: id.to_string(),
                    context_id: context_id.clone(),
                    artifact: Some(artifact.clone()),
                    append: false,
                    last_chunk: true,
                    metadata: None,
                })),
            };
            let ev = TaskEvent {
                event: Some(ev),
                usage: None,
                worker: worker.clone(),
            };
            emit(&events, &watchers, ev).await;
        }
        let ev = StreamResponse {
            payload: Some(Payload::StatusUpdate(TaskStatusUpdateEvent {
                task_id: id.to_string(),
                context_id,
                status: final_task.status.clone(),
                metadata: None,
            })),
        };
        let ev = TaskEvent {
            event: Some(ev),
            usage: None,
            worker: worker.clone(),
        };
        emit(&events, &watchers, ev).await;
        emit(
            &events,
            &watchers,
            task_event(&final_task, Some(usage), &worker),
        )
        .await;
    }

    /// Forgets task `id` if it ended `failed`, so that the same id can be
    /// run again (the work queue's next attempt at a subtask that failed
    /// here). A task in any other state is kept.
    pub fn forget_failed(&self, id: &str) {
        let mut store = lock(&self.store);
        let failed = store
            .slots
            .get(id)
            .is_some_and(|s| state_of(s.record.task.as_ref()) == TaskState::Failed as i32);
        if failed {
            store.slots.remove(id);
            store.order.retain(|o| o != id);
        }
    }

    /// Looks a task up.
    pub fn get(&self, req: &GetTaskRequest) -> Result<TaskRecord, Status> {
        let store = lock(&self.store);
        let slot = store
            .slots
            .get(&req.id)
            .ok_or_else(|| Status::not_found(format!("no task {}", req.id)))?;
        let mut record = slot.record.clone();
        record.task = record.task.map(|t| trim_history(t, req.history_length));
        Ok(record)
    }

    /// The tasks this host knows, newest first, filtered and paged (A2A's
    /// ListTasks: context, state, status time; `page_token` is where the
    /// previous page stopped).
    pub fn list(&self, req: &ListTasksRequest) -> Result<ListTasksResponse, Status> {
        let page_size = match req.page_size {
            None | Some(0) => PAGE_DEFAULT,
            Some(n) if n < 0 => {
                return Err(Status::invalid_argument("page_size must not be negative"));
            }
            Some(n) => usize::try_from(n).unwrap_or(PAGE_MAX).min(PAGE_MAX),
        };
        let offset = if req.page_token.is_empty() {
            0
        } else {
            req.page_token
                .parse::<usize>()
                .map_err(|_| Status::invalid_argument("page_token is not one this service gave"))?
        };
        if req.history_length.is_some_and(|n| n < 0) {
            return Err(Status::invalid_argument(
                "history_length must not be negative",
            ));
        }
        let after = req.status_timestamp_after.as_ref();
        let store = lock(&self.store);
        let matching: Vec<&Task> = store
            .order
            .iter()
            .rev()
            .filter_map(|id| store.slots.get(id)?.record.task.as_ref())
            .filter(|t| req.context_id.is_empty() || t.context_id == req.context_id)
            .filter(|t| req.status == 0 || state_of(Some(t)) == req.status)
            .filter(|t| {
                after.is_none_or(|a| {
                    t.status
                        .as_ref()
                        .and_then(|s| s.timestamp.as_ref())
                        .is_some_and(|ts| (ts.seconds, ts.nanos) >= (a.seconds, a.nanos))
                })
            })
            .collect();
        let total = matching.len();
        let tasks: Vec<Task> = matching
            .into_iter()
            .skip(offset)
            .take(page_size)
            .map(|t| {
                let mut t = trim_history(t.clone(), req.history_length);
                if req.include_artifacts != Some(true) {
                    t.artifacts.clear();
                }
                t
            })
            .collect();
        let next = offset + tasks.len();
        Ok(ListTasksResponse {
            next_page_token: if next < total {
                next.to_string()
            } else {
                String::new()
            },
            page_size: i32::try_from(page_size).unwrap_or(i32::MAX),
            total_size: i32::try_from(total).unwrap_or(i32::MAX),
            tasks,
        })
    }

    /// A task's events from now on: the task as it is, then its updates
    /// until it reaches a terminal state.
    pub fn subscribe(&self, id: &str) -> Result<ReplyStream<TaskEvent>, Status> {
        let store = lock(&self.store);
        let slot = store
            .slots
            .get(id)
            .ok_or_else(|| Status::not_found(format!("no task {id}")))?;
        let Some(task) = slot.record.task.as_ref() else {
            return Err(Status::internal("task record without a task"));
        };
        let state = state_of(Some(task));
        if is_terminal(state) {
            return Err(Status::failed_precondition(format!(
                "task {id} is {} and has no more events",
                convert::state_name(state)
            )));
        }
        let now = task_event(task, slot.record.usage.clone(), &self.worker);
        let updates = BroadcastStream::new(slot.watchers.subscribe())
            // A subscriber too slow to keep up misses events, not the end.
            .filter_map(|r| async move { r.ok() });
        let all = futures::stream::iter([now]).chain(updates).boxed();
        // Ends right after the terminal event, without waiting for another.
        let events = futures::stream::unfold((all, false), |(mut s, done)| async move {
            if done {
                return None;
            }
            let ev = s.next().await?;
            let end = ends(&ev);
            Some((Ok(ev), (s, end)))
        });
        Ok(events.boxed())
    }

    /// Cancels a task that is running or waiting for input; a finished task
    /// cannot be canceled.
    pub async fn cancel(&self, id: &str) -> Result<TaskRecord, Status> {
        let (record, events, watchers) = {
            let mut store = lock(&self.store);
            let slot = store
                .slots
                .get_mut(id)
                .ok_or_else(|| Status::not_found(format!("no task {id}")))?;
            let Some(task) = slot.record.task.as_mut() else {
                return Err(Status::internal("task record without a task"));
            };
            if task.status.as_ref().is_some_and(|s| is_terminal(s.state)) {
                return Err(Status::failed_precondition(format!(
                    "task {id} is {} and cannot be canceled",
                    convert::state_name(task.status.as_ref().map_or(0, |s| s.state))
                )));
            }
            if let Some(a) = slot.abort.take() {
                a.abort();
            }
            task.status = Some(status(TaskState::Canceled, None));
            hearth_mesh::metrics::task_ended(TaskState::Canceled as i32);
            let mut usage = slot.record.usage.clone().unwrap_or_default();
            usage.latency_ms = slot.started.elapsed().as_secs_f64() * 1e3;
            slot.record.usage = Some(usage);
            (
                slot.record.clone(),
                slot.events.take(),
                slot.watchers.clone(),
            )
        };
        if let Some(task) = record.task.as_ref() {
            let (silent, _) = mpsc::channel(1);
            let events = events.unwrap_or(silent);
            let ev = TaskEvent {
                event: Some(status_event(
                    &task.id,
                    &task.context_id,
                    TaskState::Canceled,
                    None,
                )),
                usage: None,
                worker: self.worker.clone(),
            };
            emit(&events, &watchers, ev).await;
            emit(
                &events,
                &watchers,
                task_event(task, record.usage.clone(), &self.worker),
            )
            .await;
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> SendTaskRequest {
        SendTaskRequest {
            message: Some(text_message(Role::User, text, "", "")),
            ..Default::default()
        }
    }

    async fn last_task(stream: ReplyStream<TaskEvent>) -> (Task, Vec<TaskEvent>) {
        let events: Vec<TaskEvent> = stream.map(|e| e.unwrap()).collect().await;
        let Some(Payload::Task(t)) = events
            .last()
            .and_then(|e| e.event.as_ref())
            .and_then(|e| e.payload.clone())
        else {
            panic!("the last event is not a task: {events:?}");
        };
        (t, events)
    }

    #[tokio::test]
    async fn a_task_completes_with_an_answer_artifact_and_usage() {
        let host = TaskHost::new("w1");
        let stream = host
            .start(req("hi"), Duration::from_secs(5), |h| {
                Box::pin(async move {
                    Ok(Outcome {
                        answer: format!("re: {}", h.text),
                        ..Default::default()
                    })
                })
            })
            .unwrap();
        let (task, events) = last_task(stream).await;
        assert_eq!(task.status.unwrap().state, TaskState::Completed as i32);
        assert_eq!(
            convert::answer_of(
                &host
                    .get(&GetTaskRequest {
                        id: task.id.clone(),
                        history_length: None
                    })
                    .unwrap()
                    .task
                    .unwrap()
            ),
            "re: hi"
        );
        assert!(events.last().unwrap().usage.is_some());
        let rec = host
            .get(&GetTaskRequest {
                id: task.id,
                history_length: Some(1),
            })
            .unwrap();
        assert_eq!(rec.task.unwrap().history.len(), 1);
        assert_eq!(rec.worker, "w1");
    }

    #[tokio::test]
    async fn a_failing_task_reports_why() {
        let host = TaskHost::new("w");
        let stream = host
            .start(req("hi"), Duration::from_secs(5), |_| {
                Box::pin(async { Err(AgentError::EmptyAnswer) })
            })
            .unwrap();
        let (task, _) = last_task(stream).await;
        let st = task.status.unwrap();
        assert_eq!(st.state, TaskState::Failed as i32);
        assert!(convert::text_of(&st.message.unwrap()).contains("empty answer"));
    }

    #[tokio::test]
    async fn a_task_past_its_deadline_fails_and_a_running_task_can_be_canceled() {
        let host = TaskHost::new("w");
        let slow = |_| -> Work {
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(Outcome::default())
            })
        };
        let (task, _) = last_task(
            host.start(req("a"), Duration::from_millis(50), slow)
                .unwrap(),
        )
        .await;
        assert_eq!(task.status.unwrap().state, TaskState::Failed as i32);

        let mut stream = host.start(req("b"), Duration::from_secs(60), slow).unwrap();
        let first = stream.next().await.unwrap().unwrap();
        let Some(Payload::Task(t)) = first.event.unwrap().payload else {
            panic!()
        };
        let rec = host.cancel(&t.id).await.unwrap();
        assert_eq!(
            rec.task.unwrap().status.unwrap().state,
            TaskState::Canceled as i32
        );
        let (after, _) = last_task(stream).await;
        assert_eq!(after.status.unwrap().state, TaskState::Canceled as i32);
        let again = host.cancel(&t.id).await.unwrap_err();
        assert_eq!(again.code(), tonic::Code::FailedPrecondition);
        assert_eq!(
            host.get(&GetTaskRequest {
                id: "nope".into(),
                history_length: None
            })
            .unwrap_err()
            .code(),
            tonic::Code::NotFound
        );
    }

    fn ask_then_answer(h: TaskHandle) -> Work {
        Box::pin(async move {
            Ok(if h.prior.is_empty() {
                Outcome {
                    answer: "Which city?".into(),
                    input_required: true,
                    ..Default::default()
                }
            } else {
                Outcome {
                    answer: format!("{} after {} earlier messages", h.text, h.prior.len()),
                    ..Default::default()
                }
            })
        })
    }

    #[tokio::test]
    async fn a_task_waiting_for_input_continues_with_the_next_message() {
        let host = TaskHost::new("w");
        let (t, _) = last_task(
            host.start(req("book a table"), Duration::from_secs(5), ask_then_answer)
                .unwrap(),
        )
        .await;
        let st = t.status.clone().unwrap();
        assert_eq!(st.state, TaskState::InputRequired as i32);
        assert_eq!(convert::text_of(&st.message.unwrap()), "Which city?");
        // A subscriber hears the rest of the task.
        let watching = host.subscribe(&t.id).unwrap();
        let mut next = req("Lisbon");
        next.task_id = t.id.clone();
        let (done, _) = last_task(
            host.start(next.clone(), Duration::from_secs(5), ask_then_answer)
                .unwrap(),
        )
        .await;
        assert_eq!(
            done.status.as_ref().unwrap().state,
            TaskState::Completed as i32
        );
        assert_eq!(done.context_id, t.context_id);
        assert_eq!(done.history.len(), 4);
        assert_eq!(convert::answer_of(&done), "Lisbon after 2 earlier messages");
        let seen: Vec<TaskEvent> = watching.map(|e| e.unwrap()).collect().await;
        let (first, _) = last_task(futures::stream::iter([Ok(seen[0].clone())]).boxed()).await;
        assert_eq!(first.status.unwrap().state, TaskState::InputRequired as i32);
        assert!(ends(seen.last().unwrap()), "{seen:?}");
        assert!(seen.len() >= 4, "{seen:?}");
        // A finished task can be neither continued nor subscribed to.
        let again = host
            .start(next, Duration::from_secs(5), ask_then_answer)
            .unwrap();
        let (same, _) = last_task(again).await;
        assert_eq!(same.history.len(), 4);
        assert_eq!(
            host.subscribe(&t.id).err().unwrap().code(),
            tonic::Code::FailedPrecondition
        );
        // Another context cannot continue it.
        let (t2, _) = last_task(
            host.start(req("x"), Duration::from_secs(5), ask_then_answer)
                .unwrap(),
        )
        .await;
        let mut wrong = req("y");
        wrong.task_id = t2.id.clone();
        wrong.message.as_mut().unwrap().context_id = "other".into();
        let err = host
            .start(wrong, Duration::from_secs(5), ask_then_answer)
            .err()
            .unwrap();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        // A task waiting for input can be canceled.
        let rec = host.cancel(&t2.id).await.unwrap();
        assert_eq!(
            rec.task.unwrap().status.unwrap().state,
            TaskState::Canceled as i32
        );
    }

    #[tokio::test]
    async fn tasks_are_listed_newest_first_filtered_and_paged() {
        let host = TaskHost::new("w");
        let echo = |h: TaskHandle| -> Work {
            Box::pin(async move {
                Ok(Outcome {
                    answer: h.text,
                    ..Default::default()
                })
            })
        };
        let mut ids = Vec::new();
        for i in 0..5 {
            let mut r = req(&format!("t{i}"));
            r.message.as_mut().unwrap().context_id = if i % 2 == 0 { "even" } else { "odd" }.into();
            let (t, _) = last_task(host.start(r, Duration::from_secs(5), echo).unwrap()).await;
            ids.push(t.id);
        }
        let page = host
            .list(&ListTasksRequest {
                page_size: Some(2),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(page.total_size, 5);
        assert_eq!(
            page.tasks.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
            vec![ids[4].clone(), ids[3].clone()]
        );
        assert!(page.tasks.iter().all(|t| t.artifacts.is_empty()));
        let rest = host
            .list(&ListTasksRequest {
                page_size: Some(10),
                page_token: page.next_page_token.clone(),
                include_artifacts: Some(true),
                history_length: Some(1),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(rest.tasks.len(), 3);
        assert!(rest.next_page_token.is_empty());
        assert!(
            rest.tasks
                .iter()
                .all(|t| t.artifacts.len() == 1 && t.history.len() == 1)
        );
        let even = host
            .list(&ListTasksRequest {
                context_id: "even".into(),
                status: TaskState::Completed as i32,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(even.total_size, 3);
        let none = host
            .list(&ListTasksRequest {
                status: TaskState::Working as i32,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(none.total_size, 0);
        for bad in [
            ListTasksRequest {
                page_size: Some(-1),
                ..Default::default()
            },
            ListTasksRequest {
                page_token: "zz".into(),
                ..Default::default()
            },
        ] {
            assert_eq!(
                host.list(&bad).unwrap_err().code(),
                tonic::Code::InvalidArgument
            );
        }
    }

    #[tokio::test]
    async fn a_message_without_text_is_refused() {
        let host = TaskHost::new("w");
        let err = host
            .start(req("  "), Duration::from_secs(1), |_| {
                Box::pin(async { Ok(Outcome::default()) })
            })
            .err()
            .unwrap();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }
}
