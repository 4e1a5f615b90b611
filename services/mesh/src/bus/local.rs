//! The in-process bus: tokio channels, for the embedded default where every
//! service runs in one process and nothing needs to be installed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{
    Bus, BusError, DEFAULT_MAX_PAYLOAD, FrameStream, Headers, IncomingRequest, RequestStream,
    Responder, ResponderInner,
};
use crate::subjects::matches;

/// How many undelivered requests a subscriber may have queued.
const SUBSCRIBER_QUEUE: usize = 1024;
/// How many unread reply frames a requester may have queued.
const REPLY_QUEUE: usize = 256;

struct Subscriber {
    pattern: String,
    /// The pattern has no wildcard: it matches only itself (compared
    /// whole; most subscriptions are one method's subject).
    literal: bool,
    queue: Option<String>,
    tx: mpsc::Sender<IncomingRequest>,
}

#[derive(Default)]
struct Registry {
    subs: Vec<Subscriber>,
    /// Round-robin position per (pattern, queue group).
    cursors: HashMap<String, usize>,
}

/// The in-process bus.
#[derive(Clone)]
pub struct LocalBus {
    registry: Arc<Mutex<Registry>>,
    max_payload: usize,
}

impl Default for LocalBus {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_PAYLOAD)
    }
}

impl LocalBus {
    /// A bus that carries payloads up to `max_payload` bytes.
    pub fn new(max_payload: usize) -> Self {
        Self {
            registry: Arc::default(),
            max_payload,
        }
    }

    /// Picks the subscribers a message goes to: every plain subscriber, and
    /// one member (round-robin) of each queue group. Closed subscribers are
    /// dropped on the way.
    fn route(&self, subject: &str) -> Vec<mpsc::Sender<IncomingRequest>> {
        let mut reg = crate::sync::lock(&self.registry);
        reg.subs.retain(|s| !s.tx.is_closed());
        let mut groups: HashMap<String, Vec<usize>> = HashMap::new();
        let mut out = Vec::new();
        for (i, s) in reg.subs.iter().enumerate() {
            let hit = if s.literal {
                s.pattern == subject
            } else {
                matches(&s.pattern, subject)
            };
            if !hit {
                continue;
            }
            match &s.queue {
                Some(q) => groups
                    .entry(format!("{}|{q}", s.pattern))
                    .or_default()
                    .push(i),
                None => out.push(s.tx.clone()),
            }
        }
        for (key, members) in groups {
            let cursor = reg.cursors.entry(key).or_insert(0);
            let pick = members[*cursor % members.len()];
            *cursor = cursor.wrapping_add(1);
            out.push(reg.subs[pick].tx.clone());
        }
        out
    }
}

#[async_trait::async_trait]
impl Bus for LocalBus {
    async fn request(
        &self,
        subject: &str,
        headers: &Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<FrameStream, BusError> {
        if payload.len() > self.max_payload {
            return Err(BusError::PayloadTooLarge {
                subject: subject.to_string(),
                size: payload.len(),
                max: self.max_payload,
            });
        }
        let targets = self.route(subject);
        if targets.is_empty() {
            return Err(BusError::NoResponders {
                subject: subject.to_string(),
            });
        }
        let (tx, rx) = mpsc::channel(REPLY_QUEUE);
        for target in targets {
            let req = IncomingRequest {
                subject: subject.to_string(),
                headers: headers.clone(),
                payload: payload.clone(),
                responder: Responder {
                    inner: ResponderInner::Local { tx: tx.clone() },
                    max_payload: self.max_payload,
                },
            };
            match tokio::time::timeout(timeout, target.send(req)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(BusError::NoResponders {
                        subject: subject.to_string(),
                    });
                }
                Err(_) => {
                    return Err(BusError::Timeout {
                        subject: subject.to_string(),
                        timeout,
                    });
                }
            }
        }
        drop(tx);
        Ok(super::frames_with_deadline(
            subject.to_string(),
            ReceiverStream::new(rx).map(Ok).boxed(),
            timeout,
        ))
    }

    async fn subscribe(
        &self,
        subject: &str,
        queue: Option<&str>,
    ) -> Result<RequestStream, BusError> {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        let mut reg = crate::sync::lock(&self.registry);
        reg.subs.push(Subscriber {
            pattern: subject.to_string(),
            literal: !subject.split('.').any(|t| t == "*" || t == ">"),
            queue: queue.map(str::to_string),
            tx,
        });
        tracing::trace!(subject, ?queue, "local subscription");
        Ok(ReceiverStream::new(rx).boxed())
    }

    fn max_payload(&self) -> usize {
        self.max_payload
    }

    fn kind(&self) -> &'static str {
        "local"
    }
}

impl std::fmt::Debug for LocalBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.registry.lock().map(|r| r.subs.len()).unwrap_or(0);
        f.debug_struct("LocalBus")
            .field("subscribers", &n)
            .field("max_payload", &self.max_payload)
            .finish()
    }
}
