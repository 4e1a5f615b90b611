//! Heartbeats: every service on a NATS mesh puts a short record of itself —
//! its role, instance, Hearth's version, the host, the process, the load,
//! the requests in flight and the NATS server it is connected to — in the
//! key-value bucket `<PREFIX>_INSTANCES` every few seconds. Records expire
//! soon after their last beat, so what the bucket holds is who is alive:
//! `hearth status` lists every instance on every machine from it.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use futures::StreamExt;
use hearth_proto::v1::Heartbeat;
use prost::Message;
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::subjects::{Service, Subjects};
use crate::work::token;

/// How often an instance beats.
pub const EVERY: Duration = Duration::from_secs(5);

/// How long a record outlives its last beat.
const KEPT: Duration = Duration::from_secs(16);

/// One instance's record, as `hearth status` shows it (on the bus it is
/// the protobuf [`Heartbeat`]).
#[derive(Debug, Clone, Serialize)]
pub struct Beat {
    /// Its role (`operative`).
    pub service: String,
    /// Its instance name (the worker name of an agent service).
    pub instance: String,
    /// Hearth's version.
    pub version: String,
    /// The machine's name.
    pub host: String,
    /// The process id.
    pub pid: u32,
    /// The machine's one-minute load average.
    pub load: Option<f64>,
    /// Requests this process is handling now.
    pub in_flight: usize,
    /// The NATS server it is connected to (name, or id).
    pub nats_server: String,
    /// When this record was written (seconds since the Unix epoch).
    pub at: u64,
}

impl From<Heartbeat> for Beat {
    fn from(h: Heartbeat) -> Self {
        Self {
            service: h.service,
            instance: h.instance,
            version: h.version,
            host: h.host,
            pid: h.pid,
            load: h.load,
            in_flight: usize::try_from(h.in_flight).unwrap_or(usize::MAX),
            nats_server: h.nats_server,
            at: h.at,
        }
    }
}

fn bucket_name(subjects: &Subjects) -> String {
    format!(
        "{}_INSTANCES",
        token(subjects.prefix()).to_ascii_uppercase()
    )
}

async fn bucket(js: &jetstream::Context, name: &str, replicas: usize) -> Option<kv::Store> {
    if let Ok(kv) = js.get_key_value(name).await {
        return Some(kv);
    }
    match js
        .create_key_value(kv::Config {
            bucket: name.to_string(),
            description: "Hearth: who is alive (each service's heartbeat)".into(),
            history: 1,
            max_age: KEPT,
            storage: stream::StorageType::Memory,
            num_replicas: replicas.max(1),
            ..Default::default()
        })
        .await
    {
        Ok(kv) => Some(kv),
        Err(e) => {
            // Another instance made it at the same moment.
            match js.get_key_value(name).await {
                Ok(kv) => Some(kv),
                Err(_) => {
                    tracing::warn!(error = %e, "no heartbeat bucket: this instance is not listed by `hearth status`");
                    None
                }
            }
        }
    }
}

/// This machine's name, as heartbeats and health checks give it.
pub fn host() -> String {
    crate::running::host_name()
}

/// This process's record now.
fn beat(client: &async_nats::Client, service: Service, instance: &str) -> Heartbeat {
    let info = client.server_info();
    Heartbeat {
        service: service.name().to_string(),
        instance: instance.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        host: crate::running::host_name(),
        pid: std::process::id(),
        load: crate::running::load_average().and_then(|l| l.parse().ok()),
        in_flight: crate::rpc::in_flight() as u64,
        nats_server: if info.server_name.is_empty() {
            info.server_id
        } else {
            info.server_name
        },
        at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
}

/// Starts beating for `instance` of `service` (until the handle is aborted).
pub fn start(
    client: async_nats::Client,
    subjects: &Subjects,
    service: Service,
    instance: String,
    replicas: usize,
) -> JoinHandle<()> {
    let name = bucket_name(subjects);
    let js = subjects.jetstream(client.clone());
    tokio::spawn(async move {
        let key = format!("{}.{}", service.name(), token(&instance));
        let mut store = None;
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if store.is_none() {
                store = bucket(&js, &name, replicas).await;
            }
            let Some(kv) = &store else { continue };
            let record = beat(&client, service, &instance).encode_to_vec();
            if let Err(e) = kv.put(key.as_str(), record.into()).await {
                // The bucket may be gone (a server restarted without its
                // memory store): find or make it again on the next beat.
                tracing::debug!(error = %e, "heartbeat not written");
                store = None;
            }
        }
    })
}

/// Every instance alive on the mesh under `subjects`, by role then
/// instance (none when no service has beaten yet).
pub async fn instances(
    client: &async_nats::Client,
    subjects: &Subjects,
) -> Result<Vec<Beat>, crate::work::WorkError> {
    let js = subjects.jetstream(client.clone());
    let Ok(kv) = js.get_key_value(bucket_name(subjects)).await else {
        return Ok(Vec::new());
    };
    let mut keys = kv
        .keys()
        .await
        .map_err(|e| crate::work::WorkError::JetStream(e.to_string()))?;
    let mut out: Vec<Beat> = Vec::new();
    while let Some(key) = keys.next().await {
        let Ok(key) = key else { continue };
        if let Ok(Some(v)) = kv.get(&key).await
            && let Ok(b) = Heartbeat::decode(v)
        {
            out.push(b.into());
        }
    }
    out.sort_by(|a, b| (&a.service, &a.instance).cmp(&(&b.service, &b.instance)));
    Ok(out)
}
