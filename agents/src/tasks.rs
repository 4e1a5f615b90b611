//! A2A tasks as an agent service runs them: ids, the event stream (status
//! updates, the answer artifact, the final task), lookup and cancel.
//!
//! Records are kept in memory, bounded: past [`MAX_RECORDS`] the oldest
//! finished tasks are forgotten.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hearth_mesh::rpc::ReplyStream;
use hearth_proto::a2a::{
    Role, StreamResponse, Task, TaskArtifactUpdateEvent, TaskState, TaskStatusUpdateEvent,
    stream_response::Payload,
};
use hearth_proto::v1::{GetTaskRequest, SendTaskRequest, TaskEvent, TaskRecord, Usage};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::convert::{self, is_final, status, text_artifact, text_message};
use crate::runtime::{AgentError, Outcome};

/// How many task records one service keeps.
pub const MAX_RECORDS: usize = 10_000;
/// How many events may wait for a slow reader before progress events are dropped.
const EVENT_QUEUE: usize = 64;

/// The work a task does.
pub type Work = Pin<Box<dyn Future<Output = Result<Outcome, AgentError>> + Send>>;

struct Slot {
    record: TaskRecord,
    abort: Option<AbortHandle>,
    events: Option<mpsc::Sender<Result<TaskEvent, Status>>>,
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
    /// The text of the message that started it.
    pub text: String,
    events: mpsc::Sender<Result<TaskEvent, Status>>,
    worker: String,
}

impl TaskHandle {
    /// Reports progress as a `WORKING` status update (dropped if the reader is slow).
    pub fn progress(&self, text: impl Into<String>) {
        let msg = text_message(Role::Agent, text, &self.task_id, &self.context_id);
        let ev = status_event(
            &self.task_id,
            &self.context_id,
            TaskState::Working,
            Some(msg),
        );
        let _ = self.events.try_send(Ok(TaskEvent {
            event: Some(ev),
            usage: None,
            worker: self.worker.clone(),
        }));
    }
}

fn status_event(
    task_id: &str,
    context_id: &str,
    state: TaskState,
    message: Option<hearth_proto::a2a::Message>,
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

fn lock(store: &Mutex<Store>) -> MutexGuard<'_, Store> {
    match store.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn trim_history(mut task: Task, history_length: Option<i32>) -> Task {
    if let Some(n) = history_length {
        let n = usize::try_from(n.max(0)).unwrap_or(0);
        let len = task.history.len();
        if len > n {
            task.history.drain(..len - n);
        }
    }
    task
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

    /// Starts a task and returns its events: the submitted task, a working
    /// status, progress, then (on success) the answer artifact, the final
    /// status, and the final task with its usage. A retry with the id of a
    /// finished task gets that task back; one with the id of a running task
    /// is refused.
    pub fn start<F>(
        &self,
        req: SendTaskRequest,
        timeout: Duration,
        work: F,
    ) -> Result<ReplyStream<TaskEvent>, Status>
    where
        F: FnOnce(TaskHandle) -> Work,
    {
        let mut message = req
            .message
            .ok_or_else(|| Status::invalid_argument("the task has no message"))?;
        let text = convert::text_of(&message);
        if text.trim().is_empty() {
            return Err(Status::invalid_argument("the task's message has no text"));
        }
        let task_id = if req.task_id.is_empty() {
            uuid::Uuid::now_v7().to_string()
        } else {
            req.task_id
        };
        let context_id = if message.context_id.is_empty() {
            uuid::Uuid::now_v7().to_string()
        } else {
            message.context_id.clone()
        };
        message.task_id.clone_from(&task_id);
        message.context_id.clone_from(&context_id);
        let task = Task {
            id: task_id.clone(),
            context_id: context_id.clone(),
            status: Some(status(TaskState::Submitted, None)),
            history: vec![message],
            ..Default::default()
        };
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        {
            let mut store = lock(&self.store);
            if let Some(slot) = store.slots.get(&task_id) {
                let state = slot
                    .record
                    .task
                    .as_ref()
                    .and_then(|t| t.status.as_ref())
                    .map_or(0, |s| s.state);
                if !is_final(state) {
                    return Err(Status::already_exists(format!(
                        "task {task_id} is already running"
                    )));
                }
                let ev = task_event(
                    slot.record.task.as_ref().unwrap_or(&task),
                    slot.record.usage.clone(),
                    &self.worker,
                );
                return Ok(futures::stream::iter([Ok(ev)]).boxed());
            }
            self.evict(&mut store);
            store.order.push_back(task_id.clone());
            store.slots.insert(
                task_id.clone(),
                Slot {
                    record: TaskRecord {
                        task: Some(task.clone()),
                        usage: None,
                        worker: self.worker.clone(),
                    },
                    abort: None,
                    events: Some(tx.clone()),
                    started: Instant::now(),
                },
            );
        }
        let _ = tx.try_send(Ok(task_event(&task, None, &self.worker)));
        let handle = TaskHandle {
            task_id: task_id.clone(),
            context_id: context_id.clone(),
            text,
            events: tx.clone(),
            worker: self.worker.clone(),
        };
        handle
            .events
            .try_send(Ok(TaskEvent {
                event: Some(status_event(
                    &task_id,
                    &context_id,
                    TaskState::Working,
                    None,
                )),
                usage: None,
                worker: self.worker.clone(),
            }))
            .ok();
        self.set_state(&task_id, TaskState::Working, None);
        let fut = work(handle);
        let host = self.clone();
        let id = task_id.clone();
        let join = tokio::spawn(async move {
            let result = match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!("the task did not finish within {timeout:?}")),
            };
            host.finish(&id, result).await;
        });
        if let Some(slot) = lock(&self.store).slots.get_mut(&task_id) {
            slot.abort = Some(join.abort_handle());
        }
        drop(tx);
        Ok(ReceiverStream::new(rx).boxed())
    }

    fn evict(&self, store: &mut Store) {
        while store.slots.len() >= MAX_RECORDS {
            let Some(pos) = store.order.iter().position(|id| {
                store.slots.get(id).is_none_or(|s| {
                    s.record
                        .task
                        .as_ref()
                        .and_then(|t| t.status.as_ref())
                        .is_some_and(|st| is_final(st.state))
                })
            }) else {
                break; // everything is still running: keep them all
            };
            if let Some(id) = store.order.remove(pos) {
                store.slots.remove(&id);
            }
        }
    }

    fn set_state(&self, id: &str, state: TaskState, message: Option<hearth_proto::a2a::Message>) {
        let mut store = lock(&self.store);
        if let Some(task) = store.slots.get_mut(id).and_then(|s| s.record.task.as_mut()) {
            task.status = Some(status(state, message));
        }
    }

    async fn finish(&self, id: &str, result: Result<Outcome, String>) {
        let (events, final_task, usage, context_id) = {
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
            (slot.events.take(), task.clone(), usage, context_id)
        };
        let Some(events) = events else { return };
        let worker = self.worker.clone();
        if let Some(artifact) = final_task.artifacts.last() {
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
            let _ = events
                .send(Ok(TaskEvent {
                    event: Some(ev),
                    usage: None,
                    worker: worker.clone(),
                }))
                .await;
        }
        let st = final_task.status.clone();
        let ev = StreamResponse {
            payload: Some(Payload::StatusUpdate(TaskStatusUpdateEvent {
                task_id: id.to_string(),
                context_id,
                status: st,
                metadata: None,
            })),
        };
        let _ = events
            .send(Ok(TaskEvent {
                event: Some(ev),
                usage: None,
                worker: worker.clone(),
            }))
            .await;
        let _ = events
            .send(Ok(task_event(&final_task, Some(usage), &worker)))
            .await;
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

    /// Cancels a running task; a finished task cannot be canceled.
    pub async fn cancel(&self, id: &str) -> Result<TaskRecord, Status> {
        let (record, events) = {
            let mut store = lock(&self.store);
            let slot = store
                .slots
                .get_mut(id)
                .ok_or_else(|| Status::not_found(format!("no task {id}")))?;
            let Some(task) = slot.record.task.as_mut() else {
                return Err(Status::internal("task record without a task"));
            };
            if task.status.as_ref().is_some_and(|s| is_final(s.state)) {
                return Err(Status::failed_precondition(format!(
                    "task {id} is {} and cannot be canceled",
                    convert::state_name(task.status.as_ref().map_or(0, |s| s.state))
                )));
            }
            if let Some(a) = slot.abort.take() {
                a.abort();
            }
            task.status = Some(status(TaskState::Canceled, None));
            let mut usage = slot.record.usage.clone().unwrap_or_default();
            usage.latency_ms = slot.started.elapsed().as_secs_f64() * 1e3;
            slot.record.usage = Some(usage);
            (slot.record.clone(), slot.events.take())
        };
        if let (Some(events), Some(task)) = (events, record.task.as_ref()) {
            let ev = status_event(&task.id, &task.context_id, TaskState::Canceled, None);
            let _ = events
                .send(Ok(TaskEvent {
                    event: Some(ev),
                    usage: None,
                    worker: self.worker.clone(),
                }))
                .await;
            let _ = events
                .send(Ok(task_event(task, record.usage.clone(), &self.worker)))
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
