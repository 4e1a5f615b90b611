//! Durable work: subtasks reach operatives through a JetStream work-queue
//! stream instead of a plain request, so that no subtask dies with the
//! process that holds it.
//!
//! - The orchestrator [`submit`](WorkQueue::submit)s a [`WorkItem`] to
//!   `<prefix>.v1.work.operative` (deduplicated by task id) and reads the
//!   task's events from `<prefix>.v1.work.events.<task>`.
//! - Every operative, on every machine, pulls from one durable consumer
//!   (`operative`) with explicit acks: one subtask per free slot, an
//!   in-progress ack every third of `ack_wait` while it runs, an ack when
//!   it ends. An operative that dies stops acking, and JetStream hands the
//!   subtask to another after `ack_wait`.
//! - A failed attempt is retried after a backoff that doubles; after
//!   `max_attempts` charged attempts (failures, or operatives that died
//!   holding it) the subtask goes to the dead-letter subject
//!   `<prefix>.v1.work.dead` with the reason, and its task ends `failed`
//!   with that reason. Never silently lost, never retried forever.
//! - Each attempt records its steps (model turns, tool results) in a
//!   key-value bucket, the [`StepLog`]; a redelivered subtask replays the
//!   recorded steps instead of running them again, so a tool with a side
//!   effect is not run twice by a crash.
//!
//! Every stream and bucket carries a schema version; a layout from another
//! Hearth is refused with a clear message, never silently misread.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer, kv, stream};
use bytes::Bytes;
use futures::StreamExt;
use hearth_proto::a2a::{self, Role, StreamResponse, Task, TaskState, stream_response::Payload};
use hearth_proto::v1::{DeadLetter, SendTaskRequest, TaskEvent, WorkItem};
use prost::Message as _;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tonic::Status;
use tracing::Instrument;

use crate::a2a::{status, text_message};
use crate::bus::Headers;
use crate::rpc::ReplyStream;
use crate::subjects::{Service, Subjects};

/// The layout version of Hearth's streams and buckets. A newer Hearth that
/// changes the layout bumps it and migrates, or refuses the old one.
pub const SCHEMA: &str = "1";

/// The metadata key (streams) and the key (buckets) holding [`SCHEMA`].
const SCHEMA_KEY: &str = "hearth_schema";

/// The durable consumer every operative pulls from.
const CONSUMER: &str = "operative";

/// How long one pull waits for work before asking again.
const PULL_EXPIRES: Duration = Duration::from_secs(5);

/// What can go wrong with the work queue.
#[derive(Debug, thiserror::Error)]
pub enum WorkError {
    /// The server has no JetStream.
    #[error(
        "the NATS server has no JetStream ({0}): start nats-server with JetStream and file storage (`-js -sd DIR`, or `jetstream {{ store_dir: DIR, sync_interval: always }}`), or set [work] durable = false"
    )]
    NoJetStream(String),
    /// A stream or bucket was laid out by another version of Hearth.
    #[error(
        "the {what} `{name}` has Hearth layout {found}, and this Hearth reads layout {SCHEMA}: let the Hearth that made it finish its work, then remove it (`nats {what} rm {name}`), or run a matching Hearth"
    )]
    Schema {
        /// `stream` or `kv`.
        what: &'static str,
        /// Its name.
        name: String,
        /// The layout it carries.
        found: String,
    },
    /// A JetStream call failed.
    #[error("work queue: {0}")]
    JetStream(String),
}

fn js_err(e: impl std::fmt::Display) -> WorkError {
    WorkError::JetStream(e.to_string())
}

/// How the queue behaves: `[work]` and `[bus]` of the configuration.
#[derive(Debug, Clone)]
pub struct WorkSettings {
    /// How long a subtask may go without an ack or progress before it is redelivered.
    pub ack_wait: Duration,
    /// Charged attempts before the dead letter.
    pub max_attempts: u32,
    /// The wait before the first retry of a failed attempt; doubles each time.
    pub retry_backoff: Duration,
    /// How long a delegation waits for an operative to take its subtask.
    pub pickup_timeout: Duration,
    /// Subtasks one operative works on at once.
    pub slots: usize,
    /// How long step logs are kept.
    pub step_log_max_age: Duration,
    /// Replicas of the streams and the bucket.
    pub replicas: usize,
}

impl WorkSettings {
    /// The settings in `config`.
    pub fn from_config(config: &crate::Config) -> Self {
        let w = &config.work;
        Self {
            ack_wait: Duration::from_millis(w.ack_wait_ms.max(100)),
            max_attempts: w.max_attempts.max(1),
            retry_backoff: Duration::from_millis(w.retry_backoff_ms),
            pickup_timeout: Duration::from_millis(w.pickup_timeout_ms.max(100)),
            slots: (w.slots as usize).max(1),
            step_log_max_age: Duration::from_secs(w.step_log_hours.max(1) * 3600),
            replicas: config.bus.replicas.max(1),
        }
    }

    /// The wait before attempt `next` (2, 3, …) after a failure.
    fn backoff_before(&self, next: u32) -> Duration {
        let doublings = next.saturating_sub(2).min(16);
        self.retry_backoff.saturating_mul(1 << doublings)
    }
}

/// A subject token made from a task id: characters NATS subjects and
/// key-value keys cannot carry become `_`.
pub fn token(task_id: &str) -> String {
    task_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The names of one mesh's streams, bucket and subjects.
#[derive(Debug, Clone)]
struct Names {
    work_stream: String,
    work_subject: String,
    dead_stream: String,
    dead_subject: String,
    bucket: String,
}

impl Names {
    fn new(subjects: &Subjects) -> Self {
        let base = token(subjects.prefix()).to_ascii_uppercase();
        Self {
            work_stream: format!("{base}_WORK"),
            work_subject: subjects.work(Service::Operative),
            dead_stream: format!("{base}_DEAD"),
            dead_subject: subjects.work_dead(),
            bucket: format!("{base}_STEPS"),
        }
    }
}

/// The work queue of one mesh, over a NATS connection.
#[derive(Clone)]
pub struct WorkQueue {
    client: async_nats::Client,
    js: jetstream::Context,
    work: stream::Stream,
    subjects: Subjects,
    names: Names,
    settings: WorkSettings,
    steps: kv::Store,
}

impl std::fmt::Debug for WorkQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkQueue")
            .field("stream", &self.names.work_stream)
            .finish()
    }
}

/// Makes (or finds) a stream and checks its layout.
async fn stream_of(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Stream, WorkError> {
    let name = config.name.clone();
    let mut s = js.get_or_create_stream(config).await.map_err(|e| {
        let text = e.to_string();
        if text.contains("unavailable")
            || text.contains("not enabled")
            || text.contains("no responders")
        {
            WorkError::NoJetStream(text)
        } else {
            js_err(format!("stream {name}: {text}"))
        }
    })?;
    let info = s.info().await.map_err(js_err)?;
    match info.config.metadata.get(SCHEMA_KEY) {
        Some(v) if v == SCHEMA => Ok(s),
        found => Err(WorkError::Schema {
            what: "stream",
            name,
            found: found.cloned().unwrap_or_else(|| "none".into()),
        }),
    }
}

impl WorkQueue {
    /// The work queue for `config`'s mesh on `bus`: none in process (the
    /// in-process mesh hands subtasks over directly) or when
    /// `[work] durable = false`.
    pub async fn for_bus(
        config: &crate::Config,
        bus: &crate::SharedBus,
    ) -> Result<Option<Self>, WorkError> {
        match bus.nats() {
            Some(client) if config.work.durable => Ok(Some(
                Self::open(
                    client.clone(),
                    &config.subjects(),
                    WorkSettings::from_config(config),
                )
                .await?,
            )),
            _ => Ok(None),
        }
    }

    /// Opens (creating what is missing) the work stream, the dead-letter
    /// stream and the step-log bucket of the mesh under `subjects`.
    pub async fn open(
        client: async_nats::Client,
        subjects: &Subjects,
        settings: WorkSettings,
    ) -> Result<Self, WorkError> {
        let js = jetstream::new(client.clone());
        let names = Names::new(subjects);
        let metadata: std::collections::HashMap<String, String> =
            [(SCHEMA_KEY.to_string(), SCHEMA.to_string())].into();
        let work = stream_of(
            &js,
            stream::Config {
                name: names.work_stream.clone(),
                description: Some("Hearth: subtasks waiting for an operative".into()),
                subjects: vec![names.work_subject.clone()],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                num_replicas: settings.replicas,
                duplicate_window: Duration::from_secs(120),
                metadata: metadata.clone(),
                ..Default::default()
            },
        )
        .await?;
        stream_of(
            &js,
            stream::Config {
                name: names.dead_stream.clone(),
                description: Some("Hearth: subtasks that used up their attempts".into()),
                subjects: vec![names.dead_subject.clone()],
                retention: stream::RetentionPolicy::Limits,
                storage: stream::StorageType::File,
                num_replicas: settings.replicas,
                max_age: Duration::from_secs(14 * 24 * 3600),
                metadata,
                ..Default::default()
            },
        )
        .await?;
        let steps = match js.get_key_value(&names.bucket).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: names.bucket.clone(),
                    description: "Hearth: the recorded steps of subtasks, for replay".into(),
                    history: 1,
                    max_age: settings.step_log_max_age,
                    storage: stream::StorageType::File,
                    num_replicas: settings.replicas,
                    ..Default::default()
                })
                .await
                .map_err(js_err)?,
        };
        match steps.get(SCHEMA_KEY).await.map_err(js_err)? {
            Some(v) if v.as_ref() == SCHEMA.as_bytes() => {}
            Some(v) => {
                return Err(WorkError::Schema {
                    what: "kv",
                    name: names.bucket.clone(),
                    found: String::from_utf8_lossy(&v).into_owned(),
                });
            }
            None => {
                // A bucket made just now (or by a Hearth that wrote no
                // version, which had the same layout): mark it.
                let _ = steps
                    .create(SCHEMA_KEY, Bytes::from_static(SCHEMA.as_bytes()))
                    .await;
            }
        }
        Ok(Self {
            client,
            js,
            work,
            subjects: subjects.clone(),
            names,
            settings,
            steps,
        })
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &WorkSettings {
        &self.settings
    }

    /// The subject subtasks are submitted to.
    pub fn subject(&self) -> &str {
        &self.names.work_subject
    }

    /// The dead-letter subject.
    pub fn dead_subject(&self) -> &str {
        &self.names.dead_subject
    }

    /// The name of the dead-letter stream.
    pub fn dead_stream(&self) -> &str {
        &self.names.dead_stream
    }

    /// Puts `task` (its `task_id` set) in the queue and returns its events
    /// as operatives publish them. Submitting the same task id again within
    /// two minutes is deduplicated by JetStream.
    pub async fn submit(
        &self,
        task: SendTaskRequest,
        headers: &Headers,
    ) -> Result<Submitted, WorkError> {
        if task.task_id.is_empty() {
            return Err(js_err("a subtask needs a task id"));
        }
        let events_subject = self.subjects.work_events(&token(&task.task_id));
        // Subscribed before the item is published: the server takes this
        // connection's SUB before its PUB, so no event can be missed.
        let events = self
            .client
            .subscribe(events_subject.clone())
            .await
            .map_err(js_err)?;
        let id = task.task_id.clone();
        let item = WorkItem {
            task: Some(task),
            events_subject,
        };
        let mut map = async_nats::HeaderMap::new();
        for (k, v) in headers.iter() {
            map.insert(k, v);
        }
        let publish = jetstream::message::PublishMessage::build()
            .payload(item.encode_to_vec().into())
            .headers(map)
            .message_id(id.as_str());
        let ack = self
            .js
            .send_publish(self.names.work_subject.clone(), publish)
            .await
            .map_err(js_err)?
            .await
            .map_err(js_err)?;
        Ok(Submitted {
            queue: self.clone(),
            sequence: ack.sequence,
            task_id: id,
            events,
        })
    }

    /// Whether any operative is running on this mesh (one answers its
    /// health on the bus).
    async fn any_operative(&self) -> bool {
        let subject = self.subjects.method(Service::Operative, "check");
        match tokio::time::timeout(
            Duration::from_secs(2),
            self.client.request(subject, Bytes::new()),
        )
        .await
        {
            Ok(Err(e)) => e.kind() != async_nats::RequestErrorKind::NoResponders,
            // An answer, or a busy one that did not answer in time.
            Ok(Ok(_)) | Err(_) => true,
        }
    }

    /// Takes subtasks off the queue for `worker`, at most `slots` at a time,
    /// and runs each with `handler` until it ends: the intake of a durable
    /// operative. Aborting the returned loop stops taking work; subtasks
    /// already taken run to their end (counted as in flight for the drain).
    pub async fn serve<H, Fut>(
        &self,
        worker: String,
        handler: H,
    ) -> Result<JoinHandle<()>, WorkError>
    where
        H: Fn(Attempt) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        let config = consumer::pull::Config {
            durable_name: Some(CONSUMER.into()),
            description: Some("Hearth: every operative, on every machine".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.settings.ack_wait,
            // One delivery more than the attempts: the operative that gets
            // it dead-letters a subtask whose last holder died.
            max_deliver: i64::from(self.settings.max_attempts) + 1,
            filter_subject: self.names.work_subject.clone(),
            num_replicas: self.settings.replicas,
            ..Default::default()
        };
        let consumer: consumer::PullConsumer = match self.work.get_consumer(CONSUMER).await {
            Ok(mut c) => {
                let info = c.info().await.map_err(js_err)?;
                if info.config.ack_wait != config.ack_wait
                    || info.config.max_deliver != config.max_deliver
                {
                    // The settings changed: the last operative to start wins.
                    self.work.update_consumer(config).await.map_err(js_err)?
                } else {
                    c
                }
            }
            Err(_) => self
                .work
                .get_or_create_consumer(CONSUMER, config)
                .await
                .map_err(js_err)?,
        };
        let slots = Arc::new(Semaphore::new(self.settings.slots));
        let queue = self.clone();
        let handler = Arc::new(handler);
        Ok(tokio::spawn(async move {
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    break;
                };
                let batch = consumer
                    .batch()
                    .max_messages(1)
                    .expires(PULL_EXPIRES)
                    .messages()
                    .await;
                let mut batch = match batch {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not ask the work queue for work; trying again");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let msg = match batch.next().await {
                    Some(Ok(msg)) => msg,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "work queue pull ended");
                        continue;
                    }
                    None => continue,
                };
                let counted = crate::rpc::InFlight::enter();
                let (queue, handler, worker) = (queue.clone(), handler.clone(), worker.clone());
                tokio::spawn(async move {
                    queue.handle(msg, &worker, handler.as_ref()).await;
                    drop(permit);
                    drop(counted);
                });
            }
        }))
    }

    /// Runs one delivery of a subtask to its end.
    async fn handle<H, Fut>(&self, msg: jetstream::Message, worker: &str, handler: &H)
    where
        H: Fn(Attempt) -> Fut,
        Fut: Future<Output = Outcome>,
    {
        let number = msg
            .info()
            .map(|i| u32::try_from(i.delivered.max(1)).unwrap_or(u32::MAX))
            .unwrap_or(1);
        let headers = msg
            .headers
            .as_ref()
            .map(crate::bus::headers_of)
            .unwrap_or_default();
        let item = match WorkItem::decode(msg.payload.clone()) {
            Ok(item) if item.task.as_ref().is_some_and(|t| !t.task_id.is_empty()) => item,
            _ => {
                tracing::warn!(subject = %msg.subject, "a malformed work item: dead-lettered");
                let letter = DeadLetter {
                    item: None,
                    attempts: number,
                    reason: "not a hearth.v1.WorkItem with a task id".into(),
                    worker: worker.to_string(),
                };
                self.dead_letter(&letter).await;
                let _ = msg.ack_with(AckKind::Term).await;
                return;
            }
        };
        let task_id = item
            .task
            .as_ref()
            .map(|t| t.task_id.clone())
            .unwrap_or_default();
        let max = self.settings.max_attempts;
        // The operative's SendTask, reached through the queue: the same
        // name as the direct hop, so a trace reads the same either way.
        let span = tracing::info_span!(
            "work.attempt",
            otel.name = "operative.send_task",
            otel.kind = "consumer",
            messaging.system = "nats",
            task_id = %task_id,
            attempt = number,
            of = max,
            worker,
        );
        crate::telemetry::adopt(&span, &headers);
        async {
            if number > max {
                // Its last holder died: nothing more is charged.
                let reason = self.last_reason(&task_id).await.unwrap_or_else(|| {
                    "the operative running it stopped before it ended".into()
                });
                self.give_up(&item, max, &reason, worker).await;
                let _ = msg.ack_with(AckKind::Term).await;
                return;
            }
            let attempt = Attempt {
                steps: Arc::new(StepLog {
                    kv: Some(self.steps.clone()),
                    token: token(&task_id),
                    next: AtomicU32::new(0),
                    replay: number > 1,
                }),
                events: EventSink {
                    client: self.client.clone(),
                    subject: item.events_subject.clone(),
                },
                item: item.clone(),
                number,
                of: max,
            };
            if number > 1 {
                tracing::info!(task_id = %task_id, attempt = number, "a redelivered subtask: replaying its recorded steps");
            }
            let outcome = with_progress(&msg, handler(attempt), self.settings.ack_wait / 3).await;
            match outcome {
                Outcome::Done => {
                    if let Err(e) = msg.double_ack().await {
                        tracing::warn!(task_id = %task_id, error = %e, "the subtask's ack was not confirmed");
                    }
                }
                Outcome::Failed(reason) if number < max => {
                    let wait = self.settings.backoff_before(number + 1);
                    self.note_reason(&task_id, &reason).await;
                    let text = format!(
                        "attempt {number} of {max} failed ({reason}); trying again in {wait:?}"
                    );
                    tracing::info!(task_id = %task_id, "{text}");
                    EventSink {
                        client: self.client.clone(),
                        subject: item.events_subject.clone(),
                    }
                    .send(&working_event(&item, &text, worker))
                    .await;
                    let _ = msg.ack_with(AckKind::Nak(Some(wait))).await;
                }
                Outcome::Failed(reason) => {
                    self.give_up(&item, number, &reason, worker).await;
                    let _ = msg.ack_with(AckKind::Term).await;
                }
            }
        }
        .instrument(span)
        .await;
    }

    /// Dead-letters `item` after `attempts` and ends its task `failed`.
    async fn give_up(&self, item: &WorkItem, attempts: u32, reason: &str, worker: &str) {
        let text = format!("the subtask failed {attempts} time(s) and was given up: {reason}");
        tracing::warn!(
            task_id = %item.task.as_ref().map(|t| t.task_id.as_str()).unwrap_or_default(),
            "{text}"
        );
        self.dead_letter(&DeadLetter {
            item: Some(item.clone()),
            attempts,
            reason: reason.to_string(),
            worker: worker.to_string(),
        })
        .await;
        let sink = EventSink {
            client: self.client.clone(),
            subject: item.events_subject.clone(),
        };
        for ev in failed_events(item, &text, worker) {
            sink.send(&ev).await;
        }
    }

    async fn dead_letter(&self, letter: &DeadLetter) {
        let sent = match self
            .js
            .publish(
                self.names.dead_subject.clone(),
                letter.encode_to_vec().into(),
            )
            .await
        {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = sent {
            tracing::error!(error = %e, "a dead letter could not be kept");
        }
    }

    async fn note_reason(&self, task_id: &str, reason: &str) {
        let key = format!("r.{}", token(task_id));
        if let Err(e) = self.steps.put(key, reason.to_string().into()).await {
            tracing::debug!(error = %e, "the failure reason was not kept");
        }
    }

    async fn last_reason(&self, task_id: &str) -> Option<String> {
        let key = format!("r.{}", token(task_id));
        let v = self.steps.get(key).await.ok()??;
        Some(format!(
            "{} (and the operative running the last attempt stopped)",
            String::from_utf8_lossy(&v)
        ))
    }

    /// The dead letters kept so far, oldest first (at most `limit`).
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, WorkError> {
        let mut stream = self
            .js
            .get_stream(&self.names.dead_stream)
            .await
            .map_err(js_err)?;
        let state = stream.info().await.map_err(js_err)?.state.clone();
        let mut out = Vec::new();
        if state.messages == 0 {
            return Ok(out);
        }
        for seq in state.first_sequence..=state.last_sequence {
            if out.len() >= limit {
                break;
            }
            // A gap (a message removed by age) is skipped.
            if let Ok(msg) = stream.get_raw_message(seq).await
                && let Ok(letter) = DeadLetter::decode(msg.payload)
            {
                out.push(letter);
            }
        }
        Ok(out)
    }
}

/// What the work queue holds now, as `hearth status` shows it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct QueueStats {
    /// Subtasks waiting for an operative.
    pub waiting: u64,
    /// Subtasks an operative holds now.
    pub in_progress: u64,
    /// Of those, ones delivered more than once (an operative died, or an
    /// attempt failed).
    pub redelivered: u64,
    /// Pulls waiting for work: about how many free operative slots there are.
    pub free_slots: u64,
    /// Subtasks dead-lettered (kept 14 days).
    pub dead_letters: u64,
}

/// Reads the work queue of the mesh under `subjects` without creating
/// anything: none when no operative has made it yet.
pub async fn stats(
    client: &async_nats::Client,
    subjects: &Subjects,
) -> Result<Option<QueueStats>, WorkError> {
    let js = jetstream::new(client.clone());
    let names = Names::new(subjects);
    let Ok(work) = js.get_stream(&names.work_stream).await else {
        return Ok(None);
    };
    let mut out = QueueStats::default();
    if let Ok(mut c) = work.get_consumer::<consumer::pull::Config>(CONSUMER).await {
        let info = c.info().await.map_err(js_err)?;
        out.waiting = info.num_pending;
        out.in_progress = info.num_ack_pending as u64;
        out.redelivered = info.num_redelivered as u64;
        out.free_slots = info.num_waiting as u64;
    } else {
        let mut work = work;
        out.waiting = work.info().await.map_err(js_err)?.state.messages;
    }
    if let Ok(mut dead) = js.get_stream(&names.dead_stream).await {
        out.dead_letters = dead.info().await.map_err(js_err)?.state.messages;
    }
    Ok(Some(out))
}

/// Keeps a delivery alive while `work` runs: an in-progress ack every `every`.
async fn with_progress<T>(
    msg: &jetstream::Message,
    work: impl Future<Output = T>,
    every: Duration,
) -> T {
    let mut work = std::pin::pin!(work);
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick() => {
                if let Err(e) = msg.ack_with(AckKind::Progress).await {
                    tracing::debug!(error = %e, "progress not reported");
                }
            }
        }
    }
}

/// A status event saying the task is working, with `text`.
fn working_event(item: &WorkItem, text: &str, worker: &str) -> TaskEvent {
    let (task_id, context_id) = ids_of(item);
    let message = text_message(Role::Agent, text, &task_id, &context_id);
    TaskEvent {
        event: Some(StreamResponse {
            payload: Some(Payload::StatusUpdate(a2a::TaskStatusUpdateEvent {
                task_id,
                context_id,
                status: Some(status(TaskState::Working, Some(message))),
                metadata: None,
            })),
        }),
        usage: None,
        worker: worker.to_string(),
    }
}

fn ids_of(item: &WorkItem) -> (String, String) {
    let task = item.task.as_ref();
    (
        task.map(|t| t.task_id.clone()).unwrap_or_default(),
        task.and_then(|t| t.message.as_ref())
            .map(|m| m.context_id.clone())
            .unwrap_or_default(),
    )
}

/// The final events of a task that failed with `text`: its status, then the task.
fn failed_events(item: &WorkItem, text: &str, worker: &str) -> [TaskEvent; 2] {
    let (task_id, context_id) = ids_of(item);
    let message = text_message(Role::Agent, text, &task_id, &context_id);
    let st = status(TaskState::Failed, Some(message));
    let task = Task {
        id: task_id.clone(),
        context_id: context_id.clone(),
        status: Some(st.clone()),
        history: item
            .task
            .as_ref()
            .and_then(|t| t.message.clone())
            .into_iter()
            .collect(),
        ..Default::default()
    };
    let ev = |payload| TaskEvent {
        event: Some(StreamResponse {
            payload: Some(payload),
        }),
        usage: None,
        worker: worker.to_string(),
    };
    [
        ev(Payload::StatusUpdate(a2a::TaskStatusUpdateEvent {
            task_id,
            context_id,
            status: Some(st),
            metadata: None,
        })),
        ev(Payload::Task(task)),
    ]
}

/// A subtask in the queue, as its submitter sees it.
pub struct Submitted {
    queue: WorkQueue,
    sequence: u64,
    task_id: String,
    events: async_nats::Subscriber,
}

impl Submitted {
    /// The task's events: the first within the pickup timeout (else the
    /// subtask is withdrawn and the stream ends with `Unavailable`), each
    /// later one within `between` of the one before.
    pub fn events(self, between: Duration) -> ReplyStream<TaskEvent> {
        let Submitted {
            queue,
            sequence,
            task_id,
            events,
        } = self;
        let state = (queue, sequence, task_id, events, true);
        futures::stream::unfold(Some(state), move |state| async move {
            let (queue, sequence, task_id, mut events, first) = state?;
            let wait = if first {
                queue.settings.pickup_timeout
            } else {
                between
            };
            let next = if first {
                first_event(&queue, &mut events, wait).await
            } else {
                tokio::time::timeout(wait, events.next())
                    .await
                    .map_err(|_| {
                        Status::deadline_exceeded(format!(
                            "the subtask {task_id} sent no event within {wait:?}"
                        ))
                    })
            };
            let item = match next {
                Err(status) => {
                    if first {
                        queue.withdraw(sequence).await;
                    }
                    return Some((Err(status), None));
                }
                Ok(None) => {
                    return Some((
                        Err(Status::unavailable(
                            "the subtask's event subscription closed",
                        )),
                        None,
                    ));
                }
                Ok(Some(msg)) => TaskEvent::decode(msg.payload).map_err(|e| {
                    Status::internal(format!("a malformed event of subtask {task_id}: {e}"))
                }),
            };
            Some((item, Some((queue, sequence, task_id, events, false))))
        })
        .boxed()
    }

    /// The subtask's sequence in the work stream.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }
}

/// Waits for a subtask's first event: `wait` in all, but a mesh with no
/// operative at all is told so after a second instead.
async fn first_event(
    queue: &WorkQueue,
    events: &mut async_nats::Subscriber,
    wait: Duration,
) -> Result<Option<async_nats::Message>, Status> {
    let probe_after = Duration::from_secs(1).min(wait);
    if let Ok(got) = tokio::time::timeout(probe_after, events.next()).await {
        return Ok(got);
    }
    if !queue.any_operative().await {
        return Err(Status::unavailable(format!(
            "no operative is running on this mesh: no service is listening on `{}` (start one: `hearth serve operative`)",
            queue.subjects.method(Service::Operative, "check")
        )));
    }
    let rest = wait.saturating_sub(probe_after);
    tokio::time::timeout(rest, events.next())
        .await
        .map_err(|_| {
            Status::unavailable(format!(
                "no operative took the subtask within {wait:?} (all busy? see `hearth status`)"
            ))
        })
}

impl WorkQueue {
    /// Removes a subtask nobody has taken (its submitter gave up on it).
    pub async fn withdraw(&self, sequence: u64) {
        if let Err(e) = self.work.delete_message(sequence).await {
            tracing::debug!(sequence, error = %e, "subtask not withdrawn (already taken?)");
        }
    }
}

/// What an attempt at a subtask came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It reached a final state other than failed; its final events were sent.
    Done,
    /// It failed, for this reason; its final events were held back (the
    /// queue retries it, or gives it up and sends them).
    Failed(String),
}

/// One delivery of a subtask to an operative.
pub struct Attempt {
    /// The subtask.
    pub item: WorkItem,
    /// Which attempt this is (1 for the first delivery).
    pub number: u32,
    /// How many may be charged.
    pub of: u32,
    /// Its step log: what earlier attempts recorded, and where this one records.
    pub steps: Arc<StepLog>,
    /// Where its events go.
    pub events: EventSink,
}

/// Where a subtask's events go: its submitter's subscription.
#[derive(Clone)]
pub struct EventSink {
    client: async_nats::Client,
    subject: String,
}

impl EventSink {
    /// Publishes one event (best effort: a submitter that went away misses it).
    pub async fn send(&self, ev: &TaskEvent) {
        if let Err(e) = self
            .client
            .publish(self.subject.clone(), ev.encode_to_vec().into())
            .await
        {
            tracing::debug!(subject = %self.subject, error = %e, "event not published");
        }
    }
}

/// The recorded steps of one subtask: model turns and tool results, in
/// order, under `s.<task>.<n>`. An attempt asks for step `n` before it
/// runs it; a recorded one is replayed, not run again. The first attempt
/// reads nothing (there is nothing to read) and only writes.
pub struct StepLog {
    kv: Option<kv::Store>,
    token: String,
    next: AtomicU32,
    replay: bool,
}

impl StepLog {
    /// A log that records nothing and replays nothing (the request path).
    pub fn off() -> Self {
        Self {
            kv: None,
            token: String::new(),
            next: AtomicU32::new(0),
            replay: false,
        }
    }

    /// The key of the next step.
    pub fn next_key(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        format!("s.{}.{n}", self.token)
    }

    /// The step recorded under `key` by an earlier attempt, if any.
    pub async fn recorded(&self, key: &str) -> Option<Bytes> {
        if !self.replay {
            return None;
        }
        match self.kv.as_ref()?.get(key).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(key, error = %e, "the step log could not be read; running the step");
                None
            }
        }
    }

    /// Records the step `key`.
    pub async fn record(&self, key: &str, step: Bytes) {
        let Some(kv) = &self.kv else { return };
        if let Err(e) = kv.put(key, step).await {
            tracing::warn!(key, error = %e, "a step was not recorded (a redelivery would run it again)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_valid_subject_tokens_and_keys() {
        assert_eq!(token("0193-abc_D"), "0193-abc_D");
        assert_eq!(token("a.b c*>/"), "a_b_c___");
    }

    #[test]
    fn retries_back_off_doubling() {
        let s = WorkSettings {
            ack_wait: Duration::from_secs(2),
            max_attempts: 4,
            retry_backoff: Duration::from_millis(500),
            pickup_timeout: Duration::from_secs(30),
            slots: 1,
            step_log_max_age: Duration::from_secs(3600),
            replicas: 1,
        };
        assert_eq!(s.backoff_before(2), Duration::from_millis(500));
        assert_eq!(s.backoff_before(3), Duration::from_millis(1000));
        assert_eq!(s.backoff_before(4), Duration::from_millis(2000));
    }
}
