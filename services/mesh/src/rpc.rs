//! Protobuf RPC over the bus: typed unary and streamed calls, and the loops
//! that serve them.
//!
//! Errors are [`tonic::Status`] on both sides, so a service written once as a
//! tonic service answers the same way on the bus and over gRPC. Bus failures
//! map onto status codes: no responders → `Unavailable`, a missed deadline →
//! `DeadlineExceeded`, an oversize payload → `ResourceExhausted`, a
//! connection dropped while waiting → `Aborted` (an idempotent call asks
//! again).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{FutureExt, Stream, StreamExt};
use hearth_proto::v1::frame;
use prost::Message;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tonic::{Code, Status};
use tracing::Instrument;

use crate::bus::{BusError, Headers, IncomingRequest, SharedBus};
use crate::subjects::{Service, Subjects};

/// Where a service is served: its role on the bus, one instance of it or
/// the role as a whole, and the queue group that shares the role's work.
#[derive(Clone)]
pub struct ServeAt {
    bus: SharedBus,
    subjects: Subjects,
    role: Service,
    instance: Option<String>,
    queue: Option<String>,
}

impl ServeAt {
    /// The role's own subjects, in the role's queue group (its instances
    /// share the work).
    pub fn role(bus: SharedBus, subjects: Subjects, role: Service) -> Self {
        Self {
            bus,
            subjects,
            role,
            instance: None,
            queue: Some(role.name().to_string()),
        }
    }

    /// The subjects of one instance of the role (no queue group: only it
    /// answers).
    pub fn instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self.queue = None;
        self
    }

    /// The bus.
    pub fn bus(&self) -> &SharedBus {
        &self.bus
    }

    /// The subject of `method` here.
    pub fn subject(&self, method: &str) -> String {
        match &self.instance {
            Some(i) => self.subjects.instance_method(self.role, i, method),
            None => self.subjects.method(self.role, method),
        }
    }

    /// The queue group, if any.
    pub fn queue(&self) -> Option<String> {
        self.queue.clone()
    }
}

/// A stream of typed replies.
pub type ReplyStream<T> = BoxStream<'static, Result<T, Status>>;

/// How many requests one serving loop handles at once.
pub const DEFAULT_CONCURRENCY: usize = 256;

impl From<BusError> for Status {
    fn from(e: BusError) -> Self {
        let code = match &e {
            BusError::NoResponders { .. } => Code::Unavailable,
            BusError::Timeout { .. } => Code::DeadlineExceeded,
            BusError::PayloadTooLarge { .. } => Code::ResourceExhausted,
            BusError::Transport(_) => Code::Unavailable,
            BusError::ConnectionLost => Code::Aborted,
            BusError::Malformed { .. } => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}

fn decode<T: Message + Default>(subject: &str, bytes: &[u8]) -> Result<T, Status> {
    T::decode(bytes).map_err(|e| Status::internal(format!("malformed reply on `{subject}`: {e}")))
}

fn frame_to_reply<T: Message + Default>(
    subject: &str,
    item: Result<frame::Kind, BusError>,
) -> Result<T, Status> {
    match item? {
        frame::Kind::Data(bytes) | frame::Kind::Last(bytes) => decode(subject, &bytes),
        frame::Kind::Error(e) => Err(Status::new(Code::from_i32(e.code), e.message)),
        frame::Kind::End(_) => Err(Status::internal("unexpected end-of-stream frame")),
    }
}

/// The role and method a subject names (`<prefix>.v1.<role>[.<instance>].<method>`),
/// for span names; other subjects are their own method.
fn hop_of(subject: &str) -> (&str, &str) {
    let method = subject.rsplit('.').next().unwrap_or(subject);
    let role = subject
        .split('.')
        .skip_while(|s| *s != "v1")
        .nth(1)
        .unwrap_or("");
    (role, method)
}

/// The client's span of one call, and the headers that carry it on.
fn client_span(subject: &str) -> (tracing::Span, Headers) {
    let (service, method) = hop_of(subject);
    let span = tracing::info_span!(
        "bus.call",
        otel.name = %format_args!("call {service}.{method}"),
        otel.kind = "client",
        service,
        method,
        subject,
    );
    let mut headers = Headers::new();
    crate::telemetry::inject(&span, &mut headers);
    (span, headers)
}

/// Sends `req` and waits for its one reply.
pub async fn call<Req: Message, Resp: Message + Default>(
    bus: &SharedBus,
    subject: &str,
    req: &Req,
    timeout: Duration,
) -> Result<Resp, Status> {
    let (span, headers) = client_span(subject);
    async {
        let mut frames = bus
            .request(subject, &headers, Bytes::from(req.encode_to_vec()), timeout)
            .await?;
        match frames.next().await {
            Some(item) => frame_to_reply(subject, item),
            None => Err(Status::internal(format!(
                "`{subject}` ended its reply without a message"
            ))),
        }
    }
    .instrument(span)
    .await
}

/// Sends `req` and returns its replies as they stream in. Each reply must
/// arrive within `timeout` of the one before.
pub async fn call_stream<Req: Message, Resp: Message + Default + 'static>(
    bus: &SharedBus,
    subject: &str,
    req: &Req,
    timeout: Duration,
) -> Result<ReplyStream<Resp>, Status> {
    let (span, headers) = client_span(subject);
    let frames = bus
        .request(subject, &headers, Bytes::from(req.encode_to_vec()), timeout)
        .instrument(span)
        .await?;
    let subject = subject.to_string();
    Ok(frames
        .map(move |item| frame_to_reply(&subject, item))
        .boxed())
}

async fn reply_status(req: &IncomingRequest, status: &Status) {
    if let Err(e) = req
        .responder
        .error(status.code() as i32, status.message().to_string())
        .await
    {
        tracing::debug!(subject = %req.subject, error = %e, "could not send the error reply");
    }
}

/// Serves a unary method: each request on `subject` (in queue group `queue`)
/// is decoded, handled, and answered with one frame.
pub async fn serve_unary<Req, Resp, F, Fut>(
    bus: SharedBus,
    subject: String,
    queue: Option<String>,
    handler: F,
) -> Result<JoinHandle<()>, BusError>
where
    Req: Message + Default + 'static,
    Resp: Message + 'static,
    F: Fn(Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
{
    let handler = Arc::new(handler);
    serve_raw(bus, subject, queue, move |req: IncomingRequest| {
        let handler = handler.clone();
        async move {
            let result = match Req::decode(req.payload.as_ref()) {
                Ok(msg) => handler(msg).await,
                Err(e) => Err(Status::invalid_argument(format!(
                    "malformed request on `{}`: {e}",
                    req.subject
                ))),
            };
            match result {
                Ok(resp) => {
                    if let Err(e) = req.responder.data(resp.encode_to_vec().into()).await {
                        tracing::debug!(subject = %req.subject, error = %e, "reply not delivered");
                    }
                }
                Err(status) => reply_status(&req, &status).await,
            }
        }
    })
    .await
}

/// Serves a server-streaming method: the handler returns a stream whose
/// items are sent as data frames, followed by an end-of-stream frame (or an
/// error frame at the first error).
pub async fn serve_stream<Req, Resp, F, Fut, S>(
    bus: SharedBus,
    subject: String,
    queue: Option<String>,
    handler: F,
) -> Result<JoinHandle<()>, BusError>
where
    Req: Message + Default + 'static,
    Resp: Message + 'static,
    F: Fn(Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<S, Status>> + Send + 'static,
    S: Stream<Item = Result<Resp, Status>> + Send + 'static,
{
    let handler = Arc::new(handler);
    serve_raw(bus, subject, queue, move |req: IncomingRequest| {
        let handler = handler.clone();
        async move {
            let stream = match Req::decode(req.payload.as_ref()) {
                Ok(msg) => handler(msg).await,
                Err(e) => Err(Status::invalid_argument(format!(
                    "malformed request on `{}`: {e}",
                    req.subject
                ))),
            };
            let stream = match stream {
                Ok(s) => s,
                Err(status) => return reply_status(&req, &status).await,
            };
            futures::pin_mut!(stream);
            // Each message waits only as long as it takes to see whether the
            // stream has more ready: when the next poll says it has ended,
            // the message goes as the `last` frame (one frame instead of
            // two); when the stream is still working, it goes at once.
            let mut next = stream.next().await;
            loop {
                let resp = match next {
                    None => break,
                    Some(Err(status)) => return reply_status(&req, &status).await,
                    Some(Ok(resp)) => resp,
                };
                let bytes: Bytes = resp.encode_to_vec().into();
                let ready = stream.next().now_or_never();
                if let Some(None) = ready {
                    if let Err(e) = req.responder.last(bytes).await {
                        tracing::debug!(subject = %req.subject, error = %e, "last frame not delivered");
                    }
                    return;
                }
                if req.responder.data(bytes).await.is_err() {
                    // The requester is gone (or the frame was too big and an
                    // error frame went instead): stop producing.
                    return;
                }
                next = match ready {
                    Some(item) => item,
                    None => stream.next().await,
                };
            }
            if let Err(e) = req.responder.end().await {
                tracing::debug!(subject = %req.subject, error = %e, "end frame not delivered");
            }
        }
    })
    .await
}

/// Requests this process's serving loops are handling right now (a
/// streamed reply counts until its last frame is sent).
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// One request being handled, counted in [`in_flight`] until dropped.
pub(crate) struct InFlight;

impl InFlight {
    pub(crate) fn enter() -> Self {
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How many requests this process's serving loops are handling now.
pub fn in_flight() -> usize {
    IN_FLIGHT.load(Ordering::SeqCst)
}

/// Waits until this process handles no request, or `deadline` passes;
/// true when nothing is left in flight. The drain of a service: stop its
/// intake first (abort the loops that take new work), then wait here.
pub async fn drained(deadline: Duration) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if in_flight() == 0 {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Serves raw requests with at most [`DEFAULT_CONCURRENCY`] in flight.
///
/// Aborting the returned loop stops taking requests (the subscription is
/// dropped, so over NATS a queue peer gets the next one); requests already
/// taken run to their end in tasks of their own.
async fn serve_raw<F, Fut>(
    bus: SharedBus,
    subject: String,
    queue: Option<String>,
    handle: F,
) -> Result<JoinHandle<()>, BusError>
where
    F: Fn(IncomingRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut requests = bus.subscribe(&subject, queue.as_deref()).await?;
    let slots = Arc::new(Semaphore::new(DEFAULT_CONCURRENCY));
    tracing::debug!(%subject, ?queue, bus = bus.kind(), "serving");
    Ok(tokio::spawn(async move {
        // A subject without wildcards names one method: its histogram is
        // looked up once.
        let fixed = (!subject.contains(['*', '>'])).then(|| {
            let (service, method) = hop_of(&subject);
            crate::metrics::hops(service, method)
        });
        while let Some(req) = requests.next().await {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                break;
            };
            let (service, method) = hop_of(&req.subject);
            let span = tracing::info_span!(
                "bus.serve",
                otel.name = %format_args!("{service}.{method}"),
                otel.kind = "server",
                service,
                method,
                subject = %req.subject,
            );
            crate::telemetry::adopt(&span, &req.headers);
            let histogram = match &fixed {
                Some(h) => h.clone(),
                None => crate::metrics::hops(service, method),
            };
            let fut = handle(req).instrument(span);
            let counted = InFlight::enter();
            tokio::spawn(async move {
                let started = Instant::now();
                fut.await;
                histogram.observe(started.elapsed().as_secs_f64());
                drop(permit);
                drop(counted);
            });
        }
        tracing::debug!(%subject, "subscription closed");
    }))
}
