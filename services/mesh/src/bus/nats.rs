//! The NATS bus (async-nats): a real mesh across processes and machines.
//!
//! Replies come back on one wildcard inbox subscription per connection and
//! are routed to the waiting request by the inbox token, so a request costs
//! one publish, whether it expects one reply frame or a stream of them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{
    Bus, BusError, FrameStream, Headers, IncomingRequest, RequestStream, Responder, ResponderInner,
};

/// How many unread reply frames a request may have queued before the
/// stream is cut off as a slow consumer.
const REPLY_QUEUE: usize = 256;

type Pending = Arc<Mutex<HashMap<String, mpsc::Sender<Result<Bytes, BusError>>>>>;

/// The NATS bus.
#[derive(Clone)]
pub struct NatsBus {
    client: async_nats::Client,
    inbox: String,
    pending: Pending,
    next: Arc<AtomicU64>,
    max_payload: usize,
}

impl std::fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBus")
            .field("inbox", &self.inbox)
            .finish()
    }
}

fn lock(
    p: &Pending,
) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::Sender<Result<Bytes, BusError>>>> {
    crate::sync::lock(p)
}

impl NatsBus {
    /// Connects to the NATS server at `url` (e.g. `nats://127.0.0.1:4222`)
    /// with no credentials.
    pub async fn connect(url: &str) -> Result<Self, BusError> {
        Self::connect_with(url, &crate::config::BusConfig::default()).await
    }

    /// Connects to the NATS server(s) at `urls` (one, or several separated
    /// by commas: a cluster's), signing in and securing the connection as
    /// `[bus]` says.
    pub async fn connect_with(
        urls: &str,
        bus: &crate::config::BusConfig,
    ) -> Result<Self, BusError> {
        let servers = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| {
                u.parse::<async_nats::ServerAddr>()
                    .map_err(|e| BusError::Transport(format!("NATS address `{u}`: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if servers.is_empty() {
            return Err(BusError::Transport("no NATS server address given".into()));
        }
        let pending: Pending = Arc::default();
        let client = connect_options(bus, Some(pending.clone()))
            .await?
            .name("hearth")
            .connection_timeout(Duration::from_secs(5))
            .connect(servers)
            .await
            .map_err(|e| BusError::Transport(format!("connecting to NATS at {urls}: {e}")))?;
        Self::wrap(client, pending).await
    }

    /// Wraps a connected client. (A bus connected by [`NatsBus::connect_with`]
    /// also ends the requests in flight when the connection drops.)
    pub async fn from_client(client: async_nats::Client) -> Result<Self, BusError> {
        Self::wrap(client, Pending::default()).await
    }

    async fn wrap(client: async_nats::Client, pending: Pending) -> Result<Self, BusError> {
        let inbox = client.new_inbox();
        let mut sub = client
            .subscribe(format!("{inbox}.*"))
            .await
            .map_err(|e| BusError::Transport(e.to_string()))?;
        let routes = pending.clone();
        let prefix_len = inbox.len() + 1;
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let token = msg.subject.get(prefix_len..).unwrap_or_default();
                let mut map = lock(&routes);
                let Some(tx) = map.get(token) else { continue };
                let item = if msg.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
                    Err(BusError::NoResponders {
                        subject: msg.description.clone().unwrap_or_default(),
                    })
                } else {
                    Ok(msg.payload)
                };
                if tx.try_send(item).is_err() {
                    // A full or closed queue: drop the route so the requester's
                    // stream ends with an error instead of silently losing frames.
                    map.remove(token);
                }
            }
        });
        let max_payload = match client.server_info().max_payload {
            0 => super::DEFAULT_MAX_PAYLOAD,
            n => n,
        };
        Ok(Self {
            client,
            inbox,
            pending,
            next: Arc::new(AtomicU64::new(0)),
            max_payload,
        })
    }

    /// The underlying client (for JetStream and raw benchmarks).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }
}

/// Ends every request waiting for a reply with `ConnectionLost`: a reply
/// sent while the connection was down (or before this client subscribed
/// again) never comes, and a caller waiting for it would wait out its whole
/// deadline. An idempotent caller asks again (`BusModel` does).
fn end_pending(pending: &Pending) {
    let routes = std::mem::take(&mut *lock(pending));
    if !routes.is_empty() {
        tracing::info!(
            requests = routes.len(),
            "ending the requests in flight: their replies may be lost"
        );
    }
    for tx in routes.into_values() {
        let _ = tx.try_send(Err(BusError::ConnectionLost));
    }
}

/// The connection options `[bus]` asks for: who signs in (a `.creds`
/// file, an NKey seed, a token, or a user and password) and TLS; `pending`,
/// the requests to end when the connection drops.
async fn connect_options(
    bus: &crate::config::BusConfig,
    pending: Option<Pending>,
) -> Result<async_nats::ConnectOptions, BusError> {
    let unreadable = |what: &str, path: &std::path::Path, e: std::io::Error| {
        BusError::Transport(format!("reading the {what} {}: {e}", path.display()))
    };
    let mut options = if let Some(path) = &bus.creds_file {
        async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| unreadable("NATS credentials file", path, e))?
    } else if let Some(path) = &bus.nkey_seed_file {
        let seed =
            std::fs::read_to_string(path).map_err(|e| unreadable("NKey seed file", path, e))?;
        async_nats::ConnectOptions::with_nkey(seed.trim().to_string())
    } else {
        async_nats::ConnectOptions::new()
    };
    if !bus.token.is_empty() {
        options = options.token(bus.token.expose().to_string());
    }
    if let Some(user) = &bus.user {
        options = options.user_and_password(user.clone(), bus.password.expose().to_string());
    }
    if let Some(ca) = &bus.tls_ca {
        options = options.add_root_certificates(ca.clone());
    }
    match (&bus.tls_cert, &bus.tls_key) {
        (Some(cert), Some(key)) => {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        (None, None) => {}
        _ => {
            return Err(BusError::Transport(
                "[bus] tls_cert and tls_key go together: set both or neither".into(),
            ));
        }
    }
    if bus.tls_required {
        options = options.require_tls(true);
    }
    options = options.custom_inbox_prefix(bus.inbox().map_err(BusError::Transport)?);
    // What the server refuses (a permission violation, say) is said in the
    // log, not lost: a publish has no reply to carry it.
    options = options.event_callback(move |event| {
        let pending = pending.clone();
        async move {
            match event {
                async_nats::Event::ServerError(e) => tracing::warn!(error = %e, "NATS refused"),
                async_nats::Event::Disconnected => {
                    tracing::warn!("disconnected from NATS; reconnecting");
                    if let Some(p) = &pending {
                        end_pending(p);
                    }
                }
                async_nats::Event::SlowConsumer(_) | async_nats::Event::ClientError(_) => {
                    tracing::warn!(%event, "NATS")
                }
                other => tracing::debug!(event = %other, "NATS"),
            }
        }
    });
    Ok(options)
}

/// Returns once the server has processed every subscription `client` made
/// before the call, so requests from any connection reach them.
///
/// `flush` only writes to the socket. A request to a subject nobody serves
/// comes back (as "no responders") only after the server has processed
/// everything this connection sent before it, the subscriptions included.
pub async fn subscriptions_in_force(client: &async_nats::Client) -> Result<(), BusError> {
    client
        .flush()
        .await
        .map_err(|e| BusError::Transport(e.to_string()))?;
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        client.request(
            format!("_HEARTH_SYNC.{}", client.new_inbox().replace('.', "_")),
            Bytes::new(),
        ),
    )
    .await;
    Ok(())
}

/// Removes a request's route when its reply stream is dropped.
struct RouteGuard {
    pending: Pending,
    token: String,
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        lock(&self.pending).remove(&self.token);
    }
}

#[async_trait::async_trait]
impl Bus for NatsBus {
    async fn request(
        &self,
        subject: &str,
        headers: &Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<FrameStream, BusError> {
        let max = self.max_payload();
        if payload.len() > max {
            return Err(BusError::PayloadTooLarge {
                subject: subject.to_string(),
                size: payload.len(),
                max,
            });
        }
        let token = self.next.fetch_add(1, Ordering::Relaxed).to_string();
        let (tx, rx) = mpsc::channel(REPLY_QUEUE);
        lock(&self.pending).insert(token.clone(), tx);
        let guard = RouteGuard {
            pending: self.pending.clone(),
            token: token.clone(),
        };
        let reply = format!("{}.{token}", self.inbox);
        let sent = if headers.is_empty() {
            self.client
                .publish_with_reply(subject.to_string(), reply, payload)
                .await
        } else {
            let mut map = async_nats::HeaderMap::new();
            for (k, v) in headers.iter() {
                map.insert(k, v);
            }
            self.client
                .publish_with_reply_and_headers(subject.to_string(), reply, map, payload)
                .await
        };
        sent.map_err(|e| BusError::Transport(e.to_string()))?;
        let subject_owned = subject.to_string();
        let raw = ReceiverStream::new(rx)
            .map(move |item| {
                let _keep = &guard;
                item.map_err(|e| match e {
                    BusError::NoResponders { .. } => BusError::NoResponders {
                        subject: subject_owned.clone(),
                    },
                    other => other,
                })
            })
            .boxed();
        Ok(super::frames_with_deadline(
            subject.to_string(),
            raw,
            timeout,
        ))
    }

    async fn subscribe(
        &self,
        subject: &str,
        queue: Option<&str>,
    ) -> Result<RequestStream, BusError> {
        let sub = match queue {
            Some(q) => {
                self.client
                    .queue_subscribe(subject.to_string(), q.to_string())
                    .await
            }
            None => self.client.subscribe(subject.to_string()).await,
        }
        .map_err(|e| BusError::Transport(e.to_string()))?;
        // Make sure the server has the subscription before anyone relies on it.
        subscriptions_in_force(&self.client).await?;
        let client = self.client.clone();
        let max_payload = self.max_payload();
        Ok(sub
            .map(move |msg| IncomingRequest {
                subject: msg.subject.to_string(),
                headers: msg.headers.as_ref().map(headers_of).unwrap_or_default(),
                payload: msg.payload,
                responder: Responder {
                    inner: ResponderInner::Nats {
                        client: client.clone(),
                        reply: msg.reply,
                    },
                    max_payload,
                },
            })
            .boxed())
    }

    fn max_payload(&self) -> usize {
        self.max_payload
    }

    fn kind(&self) -> &'static str {
        "nats"
    }

    fn nats(&self) -> Option<&async_nats::Client> {
        Some(&self.client)
    }
}

/// A NATS message's headers, the ones that are text (the last value of each).
pub(crate) fn headers_of(map: &async_nats::HeaderMap) -> Headers {
    let mut out = Headers::new();
    for (name, values) in map.iter() {
        if let Some(v) = values.last() {
            out.insert(name.to_string(), v.as_str());
        }
    }
    out
}
