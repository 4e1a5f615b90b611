//! Durable work: tasks reach the orchestrator, and subtasks the
//! operatives, through a JetStream work-queue stream instead of a plain
//! request, so that no task dies with the process that holds it.
//!
//! - A client (`hearth ask`, `hearth batch`) [`submit`](WorkQueue::submit)s
//!   a [`WorkItem`] to `<prefix>.v1.work.orchestrator`, the orchestrator's
//!   delegation to `<prefix>.v1.work.operative` (deduplicated by task id),
//!   and each reads the task's events from `<prefix>.v1.work.events.<task>`.
//! - Those events are kept in a stream (`<PREFIX>_EVENTS`): a client whose
//!   orchestrator restarted, or that restarted itself, reattaches to a task
//!   by its id and reads its events from the start, the final one exactly
//!   once. A task's final event is stored (acknowledged by JetStream) before
//!   its work item is acked; a redelivered item whose task already has its
//!   final event is not run again.
//! - Every instance of a role, on every machine, pulls from one durable
//!   consumer (named after the role) with explicit acks: one item per free
//!   slot, an in-progress ack every third of `ack_wait` while it runs, an
//!   ack when it ends. An instance that dies stops acking, and JetStream
//!   hands the item to another after `ack_wait`.
//! - A failed attempt is retried after a backoff that doubles; after
//!   `max_attempts` charged attempts (failures, or instances that died
//!   holding it) the item goes to the dead-letter subject
//!   `<prefix>.v1.work.dead` with the reason, and its task ends `failed`
//!   with that reason. Never silently lost, never retried forever.
//! - Each attempt records its steps (model turns, tool results) in a
//!   key-value bucket, the [`StepLog`]; a redelivered item replays the
//!   recorded steps instead of running them again, so a tool with a side
//!   effect is not run twice by a crash, and a restarted orchestrator's
//!   delegation finds the subtask it had already handed over (its id comes
//!   from the step, so it reattaches instead of handing it over again).
//! - [`cancel`](WorkQueue::cancel) marks a task canceled in the bucket and
//!   tells its holder: a running attempt is canceled, a waiting or
//!   redelivered item ends `canceled` when it is picked up.
//!
//! Every stream and bucket carries a schema version; a layout from another
//! Hearth is refused with a clear message, never silently misread. A work
//! stream laid out before the orchestrator's queue existed gains its
//! subject (a migration within layout 1).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// The roles that take work from the queue; each has a durable consumer
/// named after it.
pub const QUEUED: [Service; 2] = [Service::Orchestrator, Service::Operative];

/// How long the final event's store is retried while NATS is unreachable.
const FINAL_RETRY_FOR: Duration = Duration::from_secs(60);

/// How long a task's queuing is retried while JetStream does not answer.
const PUBLISH_RETRY_FOR: Duration = Duration::from_secs(30);

/// How long a read of kept events is tried again while a cluster elects a
/// stream's leader or a server restarts (an election takes seconds).
const READ_RETRY_FOR: Duration = Duration::from_secs(15);

/// A follower silent this long makes its consumer again from the next
/// event (the old one may have died with a server).
const REFOLLOW_AFTER: Duration = Duration::from_secs(4);

/// How long one pull waits for work before asking again.
const PULL_EXPIRES: Duration = Duration::from_secs(5);

/// How much longer than [`PULL_EXPIRES`] a pull is waited for before it is
/// taken as lost with its server.
const PULL_GRACE: Duration = Duration::from_secs(2);

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

/// How many clients may follow tasks' events at once (one ordered consumer
/// each) on the events stream.
const FOLLOWERS: i32 = 100_000;

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
    /// Tasks one orchestrator works on at once.
    pub orchestrator_slots: usize,
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
            orchestrator_slots: (w.orchestrator_slots as usize).max(1),
            step_log_max_age: Duration::from_secs(w.step_log_hours.max(1) * 3600),
            replicas: config.bus.replicas.max(1),
        }
    }

    /// The items one instance of `service` works on at once.
    fn slots_for(&self, service: Service) -> usize {
        match service {
            Service::Orchestrator => self.orchestrator_slots,
            _ => self.slots,
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
    work_subjects: Vec<String>,
    dead_stream: String,
    dead_subject: String,
    events_stream: String,
    events_subjects: String,
    bucket: String,
}

impl Names {
    fn new(subjects: &Subjects) -> Self {
        let base = token(subjects.prefix()).to_ascii_uppercase();
        Self {
            work_stream: format!("{base}_WORK"),
            work_subjects: QUEUED.iter().map(|s| subjects.work(*s)).collect(),
            dead_stream: format!("{base}_DEAD"),
            dead_subject: subjects.work_dead(),
            events_stream: format!("{base}_EVENTS"),
            events_subjects: subjects.work_events(">"),
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
    events: stream::Stream,
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
    checked(&mut s, name).await?;
    Ok(s)
}

/// Checks the layout version a stream carries.
async fn checked(s: &mut stream::Stream, name: String) -> Result<(), WorkError> {
    let info = s.info().await.map_err(js_err)?;
    match info.config.metadata.get(SCHEMA_KEY) {
        Some(v) if v == SCHEMA => Ok(()),
        found => Err(WorkError::Schema {
            what: "stream",
            name,
            found: found.cloned().unwrap_or_else(|| "none".into()),
        }),
    }
}

/// Finds a stream that must exist already (a client's view: it creates nothing).
async fn existing(js: &jetstream::Context, name: &str) -> Result<stream::Stream, WorkError> {
    let mut s = js.get_stream(name).await.map_err(|e| {
        WorkError::JetStream(format!(
            "the stream {name} is not there ({e}): no orchestrator or operative has started on this mesh with [work] durable = true (start one: `hearth serve orchestrator`)"
        ))
    })?;
    checked(&mut s, name.to_string()).await?;
    Ok(s)
}

/// Checks the layout version a bucket carries; `mark` writes it into a
/// bucket that carries none (one made just now).
async fn check_bucket(steps: &kv::Store, name: &str, mark: bool) -> Result<(), WorkError> {
    match steps.get(SCHEMA_KEY).await.map_err(js_err)? {
        Some(v) if v.as_ref() == SCHEMA.as_bytes() => Ok(()),
        Some(v) => Err(WorkError::Schema {
            what: "kv",
            name: name.to_string(),
            found: String::from_utf8_lossy(&v).into_owned(),
        }),
        None => {
            // A bucket made just now (or by a Hearth that wrote no
            // version, which had the same layout): mark it.
            if mark {
                let _ = steps
                    .create(SCHEMA_KEY, Bytes::from_static(SCHEMA.as_bytes()))
                    .await;
            }
            Ok(())
        }
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
    /// stream, the events stream and the step-log bucket of the mesh under
    /// `subjects`: what a service that takes work does.
    ///
    /// A JetStream that does not answer yet (a cluster just started, or
    /// electing the leader of a stream made just now) is asked again for up
    /// to 30 s; a layout of another Hearth is refused at once.
    pub async fn open(
        client: async_nats::Client,
        subjects: &Subjects,
        settings: WorkSettings,
    ) -> Result<Self, WorkError> {
        let started = std::time::Instant::now();
        loop {
            let waited = started.elapsed();
            match Self::open_once(client.clone(), subjects, settings.clone()).await {
                // A server without JetStream says so at once, as does a
                // cluster in its first seconds: a short wait tells them apart.
                Err(WorkError::NoJetStream(e)) if waited < Duration::from_secs(5) => {
                    tracing::debug!(error = %e, "no JetStream yet; asking again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(WorkError::JetStream(e)) if waited < PUBLISH_RETRY_FOR => {
                    tracing::info!(error = %e, "JetStream is not answering yet; asking again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                done => return done,
            }
        }
    }

    async fn open_once(
        client: async_nats::Client,
        subjects: &Subjects,
        settings: WorkSettings,
    ) -> Result<Self, WorkError> {
        let js = subjects.jetstream(client.clone());
        let names = Names::new(subjects);
        let metadata: std::collections::HashMap<String, String> =
            [(SCHEMA_KEY.to_string(), SCHEMA.to_string())].into();
        let mut work = stream_of(
            &js,
            stream::Config {
                name: names.work_stream.clone(),
                description: Some("Hearth: tasks and subtasks waiting for an instance".into()),
                subjects: names.work_subjects.clone(),
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                num_replicas: settings.replicas,
                duplicate_window: Duration::from_secs(120),
                metadata: metadata.clone(),
                ..Default::default()
            },
        )
        .await?;
        // A stream made before the orchestrator's queue existed gains its subject.
        let mut config = work.info().await.map_err(js_err)?.config.clone();
        let missing: Vec<String> = names
            .work_subjects
            .iter()
            .filter(|s| !config.subjects.contains(s))
            .cloned()
            .collect();
        if !missing.is_empty() {
            tracing::info!(stream = %names.work_stream, subjects = ?missing, "the work stream gains the subjects of this Hearth's queues");
            config.subjects.extend(missing);
            js.update_stream(config).await.map_err(js_err)?;
            work = js.get_stream(&names.work_stream).await.map_err(js_err)?;
        }
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
                metadata: metadata.clone(),
                ..Default::default()
            },
        )
        .await?;
        let events = stream_of(
            &js,
            stream::Config {
                name: names.events_stream.clone(),
                description: Some(
                    "Hearth: the events of queued tasks, for clients to follow and reattach".into(),
                ),
                subjects: vec![names.events_subjects.clone()],
                retention: stream::RetentionPolicy::Limits,
                storage: stream::StorageType::File,
                num_replicas: settings.replicas,
                max_age: settings.step_log_max_age,
                max_consumers: FOLLOWERS,
                // Any replica answers a read (a client's check for a
                // task's last event), not only the leader.
                allow_direct: true,
                metadata,
                ..Default::default()
            },
        )
        .await?;
        // Every waiting client and delegating orchestrator follows its task
        // with an ordered consumer of this stream: nats-server 2.15 caps a
        // stream at 1,000 consumers unless it says otherwise.
        let mut events = events;
        let mut config = events.info().await.map_err(js_err)?.config.clone();
        if config.max_consumers != FOLLOWERS || !config.allow_direct {
            config.max_consumers = FOLLOWERS;
            config.allow_direct = true;
            match js.update_stream(config).await {
                Ok(_) => events = js.get_stream(&names.events_stream).await.map_err(js_err)?,
                Err(e) => {
                    tracing::warn!(stream = %names.events_stream, error = %e, "the events stream keeps its consumer limit")
                }
            }
        }
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
        check_bucket(&steps, &names.bucket, true).await?;
        Ok(Self {
            client,
            js,
            work,
            events,
            subjects: subjects.clone(),
            names,
            settings,
            steps,
        })
    }

    /// Attaches to the queue of the mesh under `subjects` as a client
    /// (`hearth ask`, `hearth batch`, `hearth tasks`): it creates nothing,
    /// and fails with a clear message when no service has laid it out yet.
    pub async fn attach(
        client: async_nats::Client,
        subjects: &Subjects,
        settings: WorkSettings,
    ) -> Result<Self, WorkError> {
        let js = subjects.jetstream(client.clone());
        let names = Names::new(subjects);
        let work = existing(&js, &names.work_stream).await?;
        let events = existing(&js, &names.events_stream).await?;
        let steps = js.get_key_value(&names.bucket).await.map_err(|e| {
            WorkError::JetStream(format!("the bucket {} is not there: {e}", names.bucket))
        })?;
        check_bucket(&steps, &names.bucket, false).await?;
        Ok(Self {
            client,
            js,
            work,
            events,
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

    /// The subject the work of `service` is submitted to.
    pub fn subject(&self, service: Service) -> String {
        self.subjects.work(service)
    }

    /// The dead-letter subject.
    pub fn dead_subject(&self) -> &str {
        &self.names.dead_subject
    }

    /// The name of the dead-letter stream.
    pub fn dead_stream(&self) -> &str {
        &self.names.dead_stream
    }

    /// Puts `task` (its `task_id` set) in the queue of `service` and
    /// returns its events as they come. A task whose events are already
    /// kept (submitted before, by this caller or one that restarted) is not
    /// queued again: its events are followed from the start. Submitting
    /// the same task id again within two minutes is also deduplicated by
    /// JetStream.
    pub async fn submit(
        &self,
        service: Service,
        task: SendTaskRequest,
        headers: &Headers,
    ) -> Result<Submitted, WorkError> {
        self.submit_until(service, task, headers, None).await
    }

    /// [`submit`](Self::submit), with a deadline the task must have ended
    /// by: it travels with the item to whichever instance takes it, which
    /// stops the task there and bounds its tool calls by it.
    pub async fn submit_until(
        &self,
        service: Service,
        task: SendTaskRequest,
        headers: &Headers,
        deadline: Option<SystemTime>,
    ) -> Result<Submitted, WorkError> {
        if task.task_id.is_empty() {
            return Err(js_err("a queued task needs a task id"));
        }
        let events_subject = self.subjects.work_events(&token(&task.task_id));
        // Followed from the first event kept, before the item is queued:
        // no event can be missed.
        let events = self.follow(&events_subject).await?;
        let id = task.task_id.clone();
        if self.last_event(&events_subject).await?.is_some() {
            tracing::info!(task_id = %id, "the task is already under way: following its events");
            return Ok(Submitted {
                queue: self.clone(),
                service,
                sequence: None,
                task_id: id,
                events,
            });
        }
        let item = WorkItem {
            task: Some(task),
            events_subject,
            deadline_unix_ms: deadline.map_or(0, unix_ms),
        };
        let mut map = async_nats::HeaderMap::new();
        for (k, v) in headers.iter() {
            map.insert(k, v);
        }
        let payload: Bytes = item.encode_to_vec().into();
        // Published again until stored: a cluster electing the stream's
        // leader (a node just died) or a server restarting answers nothing
        // for a moment, and the message id keeps a second copy out.
        let until = std::time::Instant::now() + PUBLISH_RETRY_FOR;
        let ack = loop {
            let publish = jetstream::message::PublishMessage::build()
                .payload(payload.clone())
                .headers(map.clone())
                .message_id(id.as_str());
            let tried = match self
                .js
                .send_publish(self.subjects.work(service), publish)
                .await
            {
                Ok(pending) => pending.await.map_err(js_err),
                Err(e) => Err(js_err(e)),
            };
            match tried {
                Ok(ack) => break ack,
                Err(e) if std::time::Instant::now() < until => {
                    tracing::debug!(task_id = %id, error = %e, "queuing the task again");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(e),
            }
        };
        Ok(Submitted {
            queue: self.clone(),
            service,
            sequence: (!ack.duplicate).then_some(ack.sequence),
            task_id: id,
            events,
        })
    }

    /// Follows the events of a task submitted earlier (by anyone), from its
    /// first: how a client reattaches after a restart.
    pub async fn reattach(&self, service: Service, task_id: &str) -> Result<Submitted, WorkError> {
        let events = self
            .follow(&self.subjects.work_events(&token(task_id)))
            .await?;
        Ok(Submitted {
            queue: self.clone(),
            service,
            sequence: None,
            task_id: task_id.to_string(),
            events,
        })
    }

    /// A follower of the events kept on `subject`, from the first.
    /// A consumer that cannot be made now (a cluster electing the stream's
    /// leader) is made when the first event is awaited.
    async fn follow(&self, subject: &str) -> Result<Feed, WorkError> {
        let inner = match self.ordered_from(subject, 0).await {
            Ok(inner) => Some(inner),
            Err(e) => {
                tracing::debug!(subject, error = %e, "a task's events cannot be followed yet");
                None
            }
        };
        Ok(Feed {
            subject: subject.to_string(),
            next_seq: 0,
            inner,
        })
    }

    /// An ordered consumer of the events kept on `subject`, from the stream
    /// sequence `start` (0: from the first).
    async fn ordered_from(&self, subject: &str, start: u64) -> Result<EventFeed, WorkError> {
        let deliver_policy = if start == 0 {
            consumer::DeliverPolicy::All
        } else {
            consumer::DeliverPolicy::ByStartSequence {
                start_sequence: start,
            }
        };
        let consumer = self
            .events
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                filter_subject: subject.to_string(),
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(js_err)?;
        consumer.messages().await.map_err(js_err)
    }

    /// The last event kept on `subject`, if any.
    async fn last_event(&self, subject: &str) -> Result<Option<TaskEvent>, WorkError> {
        // A cluster electing a stream leader (a node just died) answers
        // nothing for a moment: ask again before giving up.
        let until = std::time::Instant::now() + READ_RETRY_FOR;
        loop {
            match self.events.get_last_raw_message_by_subject(subject).await {
                Ok(msg) => return Ok(TaskEvent::decode(msg.payload).ok()),
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                    return Ok(None);
                }
                Err(e) if std::time::Instant::now() < until => {
                    tracing::debug!(error = %e, "reading a task's last event again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(js_err(e)),
            }
        }
    }

    /// Whether any event of the task `task_id` is kept.
    pub async fn kept(&self, task_id: &str) -> Result<bool, WorkError> {
        Ok(self
            .last_event(&self.subjects.work_events(&token(task_id)))
            .await?
            .is_some())
    }

    /// The final event of the task `task_id`, if it has ended.
    pub async fn final_event(&self, task_id: &str) -> Result<Option<TaskEvent>, WorkError> {
        let last = self
            .last_event(&self.subjects.work_events(&token(task_id)))
            .await?;
        Ok(last.filter(is_final_event))
    }

    /// Cancels the queued task `task_id`: its holder cancels a running
    /// attempt, and an item not yet taken (or redelivered) ends `canceled`
    /// when it is picked up.
    pub async fn cancel(&self, task_id: &str, why: &str) -> Result<(), WorkError> {
        let t = token(task_id);
        self.steps
            .put(format!("c.{t}"), why.to_string().into())
            .await
            .map_err(js_err)?;
        self.client
            .publish(self.subjects.work_cancel(&t), why.to_string().into())
            .await
            .map_err(js_err)?;
        Ok(())
    }

    /// Why the task `task_id` was canceled, if it was.
    async fn canceled(&self, task_id: &str) -> Option<String> {
        let v = self
            .steps
            .get(format!("c.{}", token(task_id)))
            .await
            .ok()??;
        Some(String::from_utf8_lossy(&v).into_owned())
    }

    /// Whether any instance of `service` is running on this mesh (one
    /// answers its health on the bus).
    async fn any_of(&self, service: Service) -> bool {
        let subject = self.subjects.method(service, "check");
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

    /// Takes the work of `service` off the queue for `worker`, at most its
    /// slots at a time, and runs each item with `handler` until it ends: the
    /// intake of a durable orchestrator or operative. Aborting the returned
    /// loop stops taking work; items already taken run to their end
    /// (counted as in flight for the drain).
    pub async fn serve<H, Fut>(
        &self,
        service: Service,
        worker: String,
        handler: H,
    ) -> Result<JoinHandle<()>, WorkError>
    where
        H: Fn(Attempt) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        let name = service.name();
        let config = consumer::pull::Config {
            durable_name: Some(name.into()),
            description: Some(format!("Hearth: every {name}, on every machine")),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.settings.ack_wait,
            // One delivery more than the attempts: the operative that gets
            // it dead-letters a subtask whose last holder died.
            max_deliver: i64::from(self.settings.max_attempts) + 1,
            filter_subject: self.subjects.work(service),
            num_replicas: self.settings.replicas,
            ..Default::default()
        };
        let consumer: consumer::PullConsumer = match self.work.get_consumer(name).await {
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
                .get_or_create_consumer(name, config)
                .await
                .map_err(js_err)?,
        };
        let slots = Arc::new(Semaphore::new(self.settings.slots_for(service)));
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
                // Bounded here too: a pull whose server died (restarted,
                // or a cluster node lost) is never answered, and an intake
                // waiting on it would take no work again.
                let msg = match tokio::time::timeout(PULL_EXPIRES + PULL_GRACE, batch.next()).await
                {
                    Ok(Some(Ok(msg))) => msg,
                    Ok(Some(Err(e))) => {
                        tracing::debug!(error = %e, "work queue pull ended");
                        continue;
                    }
                    Ok(None) => continue,
                    Err(_) => {
                        tracing::debug!("work queue pull unanswered: asking again");
                        continue;
                    }
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

    /// Runs one delivery of an item to its end.
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
        let role = msg
            .subject
            .rsplit('.')
            .next()
            .unwrap_or("operative")
            .to_string();
        // The service's SendTask, reached through the queue: the same name
        // as the direct hop, so a trace reads the same either way.
        let span = tracing::info_span!(
            "work.attempt",
            otel.name = format!("{role}.send_task"),
            otel.kind = "consumer",
            messaging.system = "nats",
            task_id = %task_id,
            attempt = number,
            of = max,
            worker,
        );
        crate::telemetry::adopt(&span, &headers);
        let sink = EventSink {
            client: self.client.clone(),
            js: self.js.clone(),
            subject: item.events_subject.clone(),
        };
        async {
            // Its final event is kept: an earlier holder finished it and
            // died before its ack. Not run again.
            if let Ok(Some(_)) = self.last_event(&item.events_subject).await.map(|e| e.filter(is_final_event)) {
                tracing::info!(task_id = %task_id, "the task had already ended: not run again");
                let _ = msg.double_ack().await;
                return;
            }
            // Heard before the mark is read: a cancel cannot fall between.
            let cancel = Cancel {
                sub: self
                    .client
                    .subscribe(self.subjects.work_cancel(&token(&task_id)))
                    .await
                    .ok(),
            };
            if let Some(why) = self.canceled(&task_id).await {
                let text = format!("canceled before it ran: {why}");
                tracing::info!(task_id = %task_id, "{text}");
                for ev in final_events(&item, TaskState::Canceled, &text, worker) {
                    let _ = sink.send_final(&ev).await;
                }
                let _ = msg.ack_with(AckKind::Term).await;
                return;
            }
            if let Some(late) = past_deadline(&item) {
                let text = format!("its deadline passed {late:?} ago, before it ran");
                tracing::info!(task_id = %task_id, "{text}");
                for ev in final_events(&item, TaskState::Failed, &text, worker) {
                    let _ = sink.send_final(&ev).await;
                }
                let _ = msg.ack_with(AckKind::Term).await;
                return;
            }
            if number > max {
                // Its last holder died: nothing more is charged.
                let reason = self.last_reason(&task_id).await.unwrap_or_else(|| {
                    format!("the {role} running it stopped before it ended")
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
                events: sink.clone(),
                cancel,
                item: item.clone(),
                number,
                of: max,
            };
            if number > 1 {
                tracing::info!(task_id = %task_id, attempt = number, "a redelivered task: replaying its recorded steps");
            }
            let outcome = with_progress(&msg, handler(attempt), self.settings.ack_wait / 3).await;
            match outcome {
                Outcome::Done => {
                    if let Err(e) = msg.double_ack().await {
                        tracing::warn!(task_id = %task_id, error = %e, "the task's ack was not confirmed (a redelivery finds its final event and ends)");
                    }
                }
                Outcome::Failed(reason) if past_deadline(&item).is_some() => {
                    // No time is left for another attempt.
                    let text = format!("its deadline passed: {reason}");
                    tracing::info!(task_id = %task_id, "{text}");
                    for ev in final_events(&item, TaskState::Failed, &text, worker) {
                        let _ = sink.send_final(&ev).await;
                    }
                    let _ = msg.ack_with(AckKind::Term).await;
                }
                Outcome::Failed(reason) if number < max => {
                    let wait = self.settings.backoff_before(number + 1);
                    self.note_reason(&task_id, &reason).await;
                    let text = format!(
                        "attempt {number} of {max} failed ({reason}); trying again in {wait:?}"
                    );
                    tracing::info!(task_id = %task_id, "{text}");
                    sink.send(&working_event(&item, &text, worker)).await;
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
            js: self.js.clone(),
            subject: item.events_subject.clone(),
        };
        for ev in final_events(item, TaskState::Failed, &text, worker) {
            if let Err(e) = sink.send_final(&ev).await {
                tracing::error!(error = %e, "a failed task's final event was not kept");
            }
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

/// What one role's queue holds now, as `hearth status` shows it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RoleQueue {
    /// The role (orchestrator, operative).
    pub role: &'static str,
    /// Items waiting for an instance.
    pub waiting: u64,
    /// Items an instance holds now.
    pub in_progress: u64,
    /// Of those, ones delivered more than once (an instance died, or an
    /// attempt failed).
    pub redelivered: u64,
    /// Pulls waiting for work: about how many free slots there are.
    pub free_slots: u64,
}

/// What the work queue holds now, as `hearth status` shows it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct QueueStats {
    /// Each role's queue.
    pub roles: Vec<RoleQueue>,
    /// Subtasks dead-lettered (kept 14 days).
    pub dead_letters: u64,
    /// Tasks whose events are kept (for `hearth tasks`).
    pub tasks_kept: u64,
}

/// Reads the work queue of the mesh under `subjects` without creating
/// anything: none when no service has made it yet.
pub async fn stats(
    client: &async_nats::Client,
    subjects: &Subjects,
) -> Result<Option<QueueStats>, WorkError> {
    let js = subjects.jetstream(client.clone());
    let names = Names::new(subjects);
    let Ok(work) = js.get_stream(&names.work_stream).await else {
        return Ok(None);
    };
    let mut out = QueueStats::default();
    for service in QUEUED {
        let mut role = RoleQueue {
            role: service.name(),
            ..Default::default()
        };
        if let Ok(mut c) = work
            .get_consumer::<consumer::pull::Config>(service.name())
            .await
        {
            let info = c.info().await.map_err(js_err)?;
            role.waiting = info.num_pending;
            role.in_progress = info.num_ack_pending as u64;
            role.redelivered = info.num_redelivered as u64;
            role.free_slots = info.num_waiting as u64;
        }
        out.roles.push(role);
    }
    if let Ok(mut dead) = js.get_stream(&names.dead_stream).await {
        out.dead_letters = dead.info().await.map_err(js_err)?.state.messages;
    }
    if let Ok(mut events) = js.get_stream(&names.events_stream).await {
        out.tasks_kept = events.info().await.map_err(js_err)?.state.subjects_count;
    }
    Ok(Some(out))
}

/// One task whose events are kept, as `hearth tasks list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskSummary {
    /// Its id.
    pub task_id: String,
    /// Its state now (`TASK_STATE_…`).
    pub state: String,
    /// The task that delegated it (empty for a task a client sent).
    pub parent: String,
    /// The instance that sent its last event.
    pub worker: String,
    /// Its answer, or its last status message.
    pub text: String,
    /// When its last event was kept (seconds since the Unix epoch).
    pub updated: i64,
}

impl WorkQueue {
    /// The tasks whose events are kept, newest first (at most `limit`).
    pub async fn tasks(&self, limit: usize) -> Result<Vec<TaskSummary>, WorkError> {
        let mut subjects = self
            .events
            .info_with_subjects(self.names.events_subjects.clone())
            .await
            .map_err(js_err)?;
        let mut names = Vec::new();
        while let Some(next) = subjects.next().await {
            let (subject, _count) = next.map_err(js_err)?;
            names.push(subject);
        }
        let mut out = Vec::new();
        for subject in names {
            let Ok(msg) = self.events.get_last_raw_message_by_subject(&subject).await else {
                continue;
            };
            let updated = msg.time.unix_timestamp();
            let Ok(ev) = TaskEvent::decode(msg.payload) else {
                continue;
            };
            out.push(summary_of(&ev, updated));
        }
        out.sort_by_key(|s| std::cmp::Reverse(s.updated));
        out.truncate(limit);
        Ok(out)
    }

    /// Every event kept of the task `task_id`, oldest first (empty when
    /// none is kept).
    pub async fn history(&self, task_id: &str) -> Result<Vec<TaskEvent>, WorkError> {
        // Read again from the first while a cluster elects the stream's
        // leader (a node just died): a read cut short is not an answer.
        let until = std::time::Instant::now() + READ_RETRY_FOR;
        loop {
            match self.history_once(task_id).await {
                Err(e) if std::time::Instant::now() < until => {
                    tracing::debug!(task_id, error = %e, "reading a task's events again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                done => return done,
            }
        }
    }

    async fn history_once(&self, task_id: &str) -> Result<Vec<TaskEvent>, WorkError> {
        let subject = self.subjects.work_events(&token(task_id));
        if self.last_event(&subject).await?.is_none() {
            return Ok(Vec::new());
        }
        let mut feed = self.ordered_from(&subject, 0).await?;
        let mut out = Vec::new();
        loop {
            let next = tokio::time::timeout(Duration::from_secs(5), feed.next())
                .await
                .map_err(|_| js_err("the task's events stopped coming"))?;
            let Some(msg) = next else { break };
            let msg = msg.map_err(js_err)?;
            let pending = msg.info().map(|i| i.pending).unwrap_or(0);
            if let Ok(ev) = TaskEvent::decode(msg.payload.clone()) {
                out.push(ev);
            }
            if pending == 0 {
                break;
            }
        }
        Ok(out)
    }
}

/// A task's summary from its last event.
fn summary_of(ev: &TaskEvent, updated: i64) -> TaskSummary {
    let mut s = TaskSummary {
        task_id: String::new(),
        state: String::new(),
        parent: String::new(),
        worker: ev.worker.clone(),
        text: String::new(),
        updated,
    };
    match ev.event.as_ref().and_then(|e| e.payload.as_ref()) {
        Some(Payload::Task(t)) => {
            s.task_id = t.id.clone();
            s.state = crate::a2a::state_name(t.status.as_ref().map_or(0, |st| st.state)).into();
            s.text = crate::a2a::answer_of(t);
            s.parent = t
                .history
                .first()
                .and_then(|m| m.reference_task_ids.first().cloned())
                .unwrap_or_default();
        }
        Some(Payload::StatusUpdate(u)) => {
            s.task_id = u.task_id.clone();
            let st = u.status.as_ref();
            s.state = crate::a2a::state_name(st.map_or(0, |st| st.state)).into();
            s.text = st
                .and_then(|st| st.message.as_ref())
                .map(crate::a2a::text_of)
                .unwrap_or_default();
        }
        _ => {}
    }
    s
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

/// The final events of a task that ended `state` (failed, canceled) with
/// `text`: its status, then the task.
fn final_events(item: &WorkItem, state: TaskState, text: &str, worker: &str) -> [TaskEvent; 2] {
    let (task_id, context_id) = ids_of(item);
    let message = text_message(Role::Agent, text, &task_id, &context_id);
    let st = status(state, Some(message));
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

/// The events of one task, as an ordered consumer of the events stream
/// delivers them (recreated by the client after a gap or a reconnect).
type EventFeed = consumer::push::Ordered;

/// A task's events as one follower reads them: an ordered consumer of the
/// events stream, made again from the next event when it breaks or falls
/// silent (its server restarted, or a cluster's node died), so a follower
/// misses nothing and sees nothing twice.
struct Feed {
    subject: String,
    /// The stream sequence of the next event wanted (0: from the first).
    next_seq: u64,
    inner: Option<EventFeed>,
}

impl Feed {
    /// The next event within `within`; `None` when none came in time.
    async fn next(&mut self, queue: &WorkQueue, within: Duration) -> Option<jetstream::Message> {
        let until = tokio::time::Instant::now() + within;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            match self.inner.as_mut() {
                Some(feed) => {
                    match tokio::time::timeout(left.min(REFOLLOW_AFTER), feed.next()).await {
                        Ok(Some(Ok(msg))) => {
                            if let Ok(info) = msg.info() {
                                self.next_seq = info.stream_sequence + 1;
                            }
                            return Some(msg);
                        }
                        Ok(Some(Err(e))) => {
                            tracing::debug!(subject = %self.subject, error = %e, "a task's event feed broke: following it again");
                            self.inner = None;
                        }
                        Ok(None) | Err(_) => self.inner = None,
                    }
                }
                None => match queue.ordered_from(&self.subject, self.next_seq).await {
                    Ok(feed) => self.inner = Some(feed),
                    Err(e) => {
                        tracing::debug!(subject = %self.subject, error = %e, "a task's events cannot be followed yet");
                        tokio::time::sleep(left.min(Duration::from_millis(500))).await;
                    }
                },
            }
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The deadline of `item`, if it has one.
pub fn deadline_of(item: &WorkItem) -> Option<SystemTime> {
    u64::try_from(item.deadline_unix_ms)
        .ok()
        .filter(|ms| *ms > 0)
        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
}

/// How long ago the deadline of `item` passed, if it has.
fn past_deadline(item: &WorkItem) -> Option<Duration> {
    deadline_of(item).and_then(|d| SystemTime::now().duration_since(d).ok())
}

/// Whether `ev` ends its task: the task itself, in a final state.
fn is_final_event(ev: &TaskEvent) -> bool {
    match ev.event.as_ref().and_then(|e| e.payload.as_ref()) {
        Some(Payload::Task(t)) => t
            .status
            .as_ref()
            .is_some_and(|s| crate::a2a::is_final(s.state)),
        _ => false,
    }
}

/// A task in the queue, as its submitter sees it.
pub struct Submitted {
    queue: WorkQueue,
    service: Service,
    /// Its place in the work stream, when this call queued it.
    sequence: Option<u64>,
    task_id: String,
    events: Feed,
}

impl Submitted {
    /// The task's events: the first within the pickup timeout (else a
    /// task this call queued is withdrawn and the stream ends with
    /// `Unavailable`), each later one within `between` of the one before.
    pub fn events(self, between: Duration) -> ReplyStream<TaskEvent> {
        let Submitted {
            queue,
            service,
            sequence,
            task_id,
            events,
        } = self;
        let state = (queue, service, sequence, task_id, events, true);
        futures::stream::unfold(Some(state), move |state| async move {
            let (queue, service, sequence, task_id, mut events, first) = state?;
            let next = if first {
                first_event(&queue, service, &mut events).await
            } else {
                events.next(&queue, between).await.ok_or_else(|| {
                    Status::deadline_exceeded(format!(
                        "the task {task_id} sent no event within {between:?}"
                    ))
                })
            };
            let item = match next {
                Err(status) => {
                    if let (true, Some(seq)) = (first, sequence) {
                        queue.withdraw(seq).await;
                    }
                    return Some((Err(status), None));
                }
                Ok(msg) => TaskEvent::decode(msg.payload.clone()).map_err(|e| {
                    Status::internal(format!("a malformed event of task {task_id}: {e}"))
                }),
            };
            Some((
                item,
                Some((queue, service, sequence, task_id, events, false)),
            ))
        })
        .boxed()
    }

    /// The task's sequence in the work stream, when this call queued it
    /// (none when it was under way already).
    pub fn sequence(&self) -> Option<u64> {
        self.sequence
    }
}

/// Waits for a task's first event: the pickup timeout in all, but a mesh
/// with no instance of `service` at all is told so after a few seconds
/// instead.
async fn first_event(
    queue: &WorkQueue,
    service: Service,
    events: &mut Feed,
) -> Result<jetstream::Message, Status> {
    let wait = queue.settings.pickup_timeout;
    let probe_after = Duration::from_secs(1).min(wait);
    if let Some(got) = events.next(queue, probe_after).await {
        return Ok(got);
    }
    // Asked twice: a service reconnecting after a server restart answers
    // nobody for a moment.
    let mut none_running = !queue.any_of(service).await;
    if none_running {
        if let Some(got) = events.next(queue, Duration::from_secs(2)).await {
            return Ok(got);
        }
        none_running = !queue.any_of(service).await;
    }
    if none_running {
        let name = service.name();
        return Err(Status::unavailable(format!(
            "no {name} is running on this mesh: no service is listening on `{}` (start one: `hearth serve {name}`)",
            queue.subjects.method(service, "check")
        )));
    }
    let rest = wait.saturating_sub(probe_after);
    events.next(queue, rest).await.ok_or_else(|| {
        Status::unavailable(format!(
            "no {} took the task within {wait:?} (all busy? see `hearth status`)",
            service.name()
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

/// One delivery of a queued item to an instance.
pub struct Attempt {
    /// The task.
    pub item: WorkItem,
    /// Which attempt this is (1 for the first delivery).
    pub number: u32,
    /// How many may be charged.
    pub of: u32,
    /// Its step log: what earlier attempts recorded, and where this one records.
    pub steps: Arc<StepLog>,
    /// Where its events go.
    pub events: EventSink,
    /// Says when the task is canceled while this attempt runs.
    pub cancel: Cancel,
}

/// A cancel request for the task an attempt runs.
pub struct Cancel {
    sub: Option<async_nats::Subscriber>,
}

impl Cancel {
    /// Waits until the task is canceled (forever, if it never is); returns why.
    pub async fn requested(&mut self) -> String {
        match self.sub.as_mut() {
            Some(sub) => match sub.next().await {
                Some(msg) => String::from_utf8_lossy(&msg.payload).into_owned(),
                None => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }
}

/// Where a task's events go: the events stream its followers read.
#[derive(Clone)]
pub struct EventSink {
    client: async_nats::Client,
    js: jetstream::Context,
    subject: String,
}

impl EventSink {
    /// Publishes one event on the way (kept by the stream, unconfirmed: a
    /// progress event lost to a crash is not missed).
    pub async fn send(&self, ev: &TaskEvent) {
        if let Err(e) = self
            .client
            .publish(self.subject.clone(), ev.encode_to_vec().into())
            .await
        {
            tracing::debug!(subject = %self.subject, error = %e, "event not published");
        }
    }

    /// Stores a final event, confirmed by JetStream, before the item is
    /// acked: retried while NATS is unreachable (up to a minute).
    ///
    /// A task keeps one final event of each kind, whoever sends it: the
    /// message id names the task's events and the kind, so a retry whose
    /// first try was stored (its ack lost with a dying node) and a second
    /// holder's final (a redelivery that read a replica not yet caught up)
    /// are both dropped by the stream.
    pub async fn send_final(&self, ev: &TaskEvent) -> Result<(), WorkError> {
        let payload: Bytes = ev.encode_to_vec().into();
        let kind = match ev.event.as_ref().and_then(|e| e.payload.as_ref()) {
            Some(Payload::Task(_)) => "task",
            Some(Payload::StatusUpdate(_)) => "status",
            Some(Payload::ArtifactUpdate(_)) => "artifact",
            Some(Payload::Message(_)) => "message",
            None => "none",
        };
        let id = format!("{}#final-{kind}", self.subject);
        let started = std::time::Instant::now();
        let mut wait = Duration::from_millis(100);
        loop {
            let publish = jetstream::message::PublishMessage::build()
                .payload(payload.clone())
                .message_id(id.as_str());
            let sent = match self.js.send_publish(self.subject.clone(), publish).await {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match sent {
                Ok(()) => return Ok(()),
                Err(e) if started.elapsed() < FINAL_RETRY_FOR => {
                    tracing::info!(subject = %self.subject, error = %e, "the final event is not kept yet; trying again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(js_err(format!("the final event was not kept: {e}"))),
            }
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
            orchestrator_slots: 1,
            step_log_max_age: Duration::from_secs(3600),
            replicas: 1,
        };
        assert_eq!(s.backoff_before(2), Duration::from_millis(500));
        assert_eq!(s.backoff_before(3), Duration::from_millis(1000));
        assert_eq!(s.backoff_before(4), Duration::from_millis(2000));
    }
}
