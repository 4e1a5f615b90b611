//! The bus: one trait, two transports carrying the same subjects and bytes.
//!
//! A request goes to a subject and its replies come back as a sequence of
//! encoded [`Frame`]s (one for a unary reply; several ending in an
//! end-of-stream frame for a streamed one). Services subscribe in queue
//! groups, so several instances of a service share its work.

mod local;
mod nats;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use hearth_proto::v1::{Frame, frame};
use prost::Message as _;

pub use local::LocalBus;
pub(crate) use nats::headers_of;
pub use nats::{NatsBus, subscriptions_in_force};

/// The largest payload a bus carries by default (NATS's own default).
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

/// A bus shared by every service of a process.
pub type SharedBus = Arc<dyn Bus>;

/// What can go wrong on the bus itself (as opposed to in a service).
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// Nothing is subscribed to the subject.
    #[error("no service is listening on `{subject}` (is it running and on the same bus?)")]
    NoResponders {
        /// The subject of the request.
        subject: String,
    },
    /// No reply (or no next frame) within the deadline.
    #[error("no reply on `{subject}` within {timeout:?}")]
    Timeout {
        /// The subject of the request.
        subject: String,
        /// The deadline that passed.
        timeout: Duration,
    },
    /// The payload is larger than the bus carries.
    #[error("payload of {size} bytes on `{subject}` exceeds the bus limit of {max} bytes")]
    PayloadTooLarge {
        /// The subject it was meant for.
        subject: String,
        /// Its size.
        size: usize,
        /// The bus's limit.
        max: usize,
    },
    /// The transport failed (connection lost, subscription closed, …).
    #[error("bus transport error: {0}")]
    Transport(String),
    /// The connection dropped while the request waited: its reply may be
    /// lost. Nothing says whether the request was served.
    #[error(
        "the connection to NATS dropped before the reply came (the request may or may not have been served)"
    )]
    ConnectionLost,
    /// A frame could not be decoded.
    #[error("malformed frame on `{subject}`: {reason}")]
    Malformed {
        /// The subject of the request.
        subject: String,
        /// What was wrong.
        reason: String,
    },
}

/// Headers a request carries beside its payload: NATS message headers over
/// NATS, the same map in process. What travels in them today is the W3C
/// trace context (`traceparent`, `tracestate`), so a task that crosses
/// processes is one trace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(BTreeMap<String, String>);

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Sets `name` to `value`.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.insert(name.into(), value.into());
    }

    /// Every header, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The header names.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

/// A stream of decoded reply frames: `Data` frames, then possibly one `Error`
/// frame; the stream ends after an end-of-stream frame (which it does not
/// yield) or an error. A transport that closes early yields a `BusError`.
pub type FrameStream = BoxStream<'static, Result<frame::Kind, BusError>>;

/// A stream of requests arriving at a subscription.
pub type RequestStream = BoxStream<'static, IncomingRequest>;

/// The bus: request/reply with streamed replies, and subscriptions in queue groups.
#[async_trait::async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Sends `payload` with `headers` to `subject` and returns the reply
    /// frames as they arrive.
    ///
    /// The first frame must arrive within `timeout`, and each later frame
    /// within `timeout` of the one before; the stream ends after an end or
    /// error frame.
    async fn request(
        &self,
        subject: &str,
        headers: &Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<FrameStream, BusError>;

    /// Subscribes to `subject` (NATS wildcards allowed), in queue group
    /// `queue` if given: each request goes to one member of a group.
    async fn subscribe(
        &self,
        subject: &str,
        queue: Option<&str>,
    ) -> Result<RequestStream, BusError>;

    /// The largest payload this bus carries.
    fn max_payload(&self) -> usize;

    /// A short name for logs: `nats` or `local`.
    fn kind(&self) -> &'static str;

    /// The NATS connection under this bus, for what only NATS has (the
    /// durable work queue on JetStream); none in process.
    fn nats(&self) -> Option<&async_nats::Client> {
        None
    }
}

/// A request delivered to a subscriber.
pub struct IncomingRequest {
    /// The subject it was sent to.
    pub subject: String,
    /// The headers it came with.
    pub headers: Headers,
    /// The request body (a protobuf message).
    pub payload: Bytes,
    /// Where replies go.
    pub responder: Responder,
}

/// Sends reply frames back to a requester.
pub struct Responder {
    inner: ResponderInner,
    max_payload: usize,
}

enum ResponderInner {
    Nats {
        client: async_nats::Client,
        reply: Option<async_nats::Subject>,
    },
    Local {
        tx: tokio::sync::mpsc::Sender<Bytes>,
    },
}

impl Responder {
    /// Sends one data frame carrying an encoded message. A message too large
    /// for the bus is replaced by an error frame, so the requester learns why.
    pub async fn data(&self, message: Bytes) -> Result<(), BusError> {
        self.message(frame::Kind::Data(message)).await
    }

    /// Sends the last data frame of a stream, which also ends it.
    pub async fn last(&self, message: Bytes) -> Result<(), BusError> {
        self.message(frame::Kind::Last(message)).await
    }

    async fn message(&self, kind: frame::Kind) -> Result<(), BusError> {
        let frame = Frame { kind: Some(kind) };
        let encoded = Bytes::from(frame.encode_to_vec());
        if encoded.len() > self.max_payload {
            let size = encoded.len();
            self.error(
                8, // RESOURCE_EXHAUSTED
                format!(
                    "reply of {size} bytes exceeds the bus limit of {} bytes",
                    self.max_payload
                ),
            )
            .await?;
            return Err(BusError::PayloadTooLarge {
                subject: "reply".into(),
                size,
                max: self.max_payload,
            });
        }
        self.send(encoded).await
    }

    /// Ends a streamed reply.
    pub async fn end(&self) -> Result<(), BusError> {
        let frame = Frame {
            kind: Some(frame::Kind::End(Default::default())),
        };
        self.send(frame.encode_to_vec().into()).await
    }

    /// Sends an error frame (a gRPC status code and a message); nothing may follow it.
    pub async fn error(&self, code: i32, message: String) -> Result<(), BusError> {
        let frame = Frame {
            kind: Some(frame::Kind::Error(hearth_proto::v1::Error {
                code,
                message,
            })),
        };
        self.send(frame.encode_to_vec().into()).await
    }

    async fn send(&self, bytes: Bytes) -> Result<(), BusError> {
        match &self.inner {
            ResponderInner::Nats { client, reply } => {
                let Some(reply) = reply else {
                    // Fire-and-forget publish: nobody to answer.
                    return Ok(());
                };
                client
                    .publish(reply.clone(), bytes)
                    .await
                    .map_err(|e| BusError::Transport(e.to_string()))
            }
            ResponderInner::Local { tx } => tx
                .send(bytes)
                .await
                .map_err(|_| BusError::Transport("the requester went away".into())),
        }
    }
}

/// Turns raw reply bytes into decoded frames, enforcing the per-frame
/// deadline and ending the stream at its end or error frame.
pub(crate) fn frames_with_deadline(
    subject: String,
    raw: BoxStream<'static, Result<Bytes, BusError>>,
    timeout: Duration,
) -> FrameStream {
    use futures::StreamExt;
    futures::stream::unfold(Some(raw), move |state| {
        let subject = subject.clone();
        async move {
            let mut raw = state?;
            let item = match tokio::time::timeout(timeout, raw.next()).await {
                Err(_) => Err(BusError::Timeout {
                    subject: subject.clone(),
                    timeout,
                }),
                Ok(None) => Err(BusError::Transport(format!(
                    "the reply stream on `{subject}` closed before its end-of-stream frame"
                ))),
                Ok(Some(Err(e))) => Err(e),
                Ok(Some(Ok(bytes))) => decode_frame(&subject, &bytes),
            };
            match item {
                Ok(frame::Kind::End(_)) => None,
                Ok(kind @ frame::Kind::Data(_)) => Some((Ok(kind), Some(raw))),
                // Callers see a data frame; the stream ends after it.
                Ok(frame::Kind::Last(bytes)) => Some((Ok(frame::Kind::Data(bytes)), None)),
                Ok(kind @ frame::Kind::Error(_)) => Some((Ok(kind), None)),
                Err(e) => Some((Err(e), None)),
            }
        }
    })
    .boxed()
}

/// Decodes one raw frame.
pub fn decode_frame(subject: &str, bytes: &[u8]) -> Result<frame::Kind, BusError> {
    Frame::decode(bytes)
        .ok()
        .and_then(|f| f.kind)
        .ok_or_else(|| BusError::Malformed {
            subject: subject.to_string(),
            reason: "not a hearth.v1.Frame".into(),
        })
}

#[cfg(test)]
mod tests;
