//! The token check for everything but the agent card: `Authorization:
//! Bearer <token>` or `X-API-Key: <token>` (both declared in the card),
//! with failed attempts limited per client address: past
//! `max_auth_failures_per_minute` wrong or missing tokens in a minute, the
//! address is answered 429 until the minute is over, so a token cannot be
//! guessed at speed.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hearth_mesh::Secret;

/// Constant-time equality, so the token cannot be guessed byte by byte from timings.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether any of `offered` is the token.
pub fn matches(token: &Secret, offered: [Option<&str>; 2]) -> bool {
    offered
        .into_iter()
        .flatten()
        .any(|p| same(p.trim().as_bytes(), token.expose().as_bytes()))
}

/// The window failed attempts are counted in.
const WINDOW: Duration = Duration::from_secs(60);

/// Addresses tracked at most; past that the oldest windows are dropped
/// (a flood of addresses cannot grow memory without bound).
const MAX_TRACKED: usize = 10_000;

/// Failed token attempts per client address, in one-minute windows.
#[derive(Debug)]
pub struct Failures {
    max: u32,
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Failures {
    /// At most `max` failures a minute per address (0: no limit).
    pub fn new(max: u32) -> Self {
        Self {
            max,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// How long `ip` must wait, if it used up its failures.
    pub fn locked(&self, ip: IpAddr) -> Option<Duration> {
        if self.max == 0 {
            return None;
        }
        let seen = hearth_mesh::sync::lock(&self.seen);
        let (start, n) = seen.get(&ip)?;
        let left = WINDOW.checked_sub(start.elapsed())?;
        (*n >= self.max).then_some(left)
    }

    /// Counts one failure of `ip`.
    pub fn record(&self, ip: IpAddr) {
        if self.max == 0 {
            return;
        }
        let mut seen = hearth_mesh::sync::lock(&self.seen);
        if seen.len() >= MAX_TRACKED && !seen.contains_key(&ip) {
            seen.retain(|_, (start, _)| start.elapsed() < WINDOW);
            if seen.len() >= MAX_TRACKED {
                seen.clear();
            }
        }
        let now = Instant::now();
        let entry = seen.entry(ip).or_insert((now, 0));
        if entry.0.elapsed() >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        if entry.1 == self.max {
            tracing::warn!(client = %ip, failures = entry.1, "too many requests with a wrong or missing token: refusing this address for the rest of the minute");
        }
    }
}

/// The token (when one is configured) and the failures so far.
#[derive(Debug, Clone)]
pub struct Guard {
    /// The token every request must carry.
    pub token: Option<Secret>,
    /// Failed attempts per address.
    pub failures: Arc<Failures>,
}

/// The "too many failures" answer.
fn too_many(wait: Duration) -> Response {
    let secs = wait.as_secs().max(1);
    let mut r = (
        StatusCode::TOO_MANY_REQUESTS,
        format!("too many requests with a wrong or missing token from this address: try again in {secs} s"),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// Refuses requests without the configured token (when one is configured),
/// and addresses that failed too often.
pub async fn require_token(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    let Some(token) = &guard.token else {
        return next.run(req).await;
    };
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    if let Some(wait) = guard.failures.locked(ip) {
        return too_many(wait);
    }
    let headers = req.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    if matches(token, [bearer, key]) {
        return next.run(req).await;
    }
    guard.failures.record(ip);
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "a token is required (Authorization: Bearer <token>, or X-API-Key: <token>)",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_locked_after_its_failures_and_others_are_not() {
        let f = Failures::new(3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..2 {
            f.record(a);
        }
        assert!(f.locked(a).is_none(), "two failures of three");
        f.record(a);
        let wait = f.locked(a).expect("locked after three");
        assert!(wait <= WINDOW && wait > Duration::from_secs(50));
        assert!(f.locked(b).is_none());
        let off = Failures::new(0);
        for _ in 0..100 {
            off.record(a);
        }
        assert!(off.locked(a).is_none(), "0 is no limit");
    }
}
