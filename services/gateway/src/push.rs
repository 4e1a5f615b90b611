//! Push notifications: webhooks a client registers for a task, called with
//! each of the task's updates (an A2A `StreamResponse` as JSON, one POST per
//! event).
//!
//! The token a client gives travels in both spellings the reference SDKs
//! use (`X-A2A-Notification-Token`, Python; `A2A-Notification-Token`, Go and
//! Rust), since the specification names neither; `authentication` becomes
//! an `Authorization` header. A webhook on a loopback, private or
//! link-local address is refused unless `gateway.push_allow_private` is set,
//! checked when it is registered and again before each call (a name may
//! resolve elsewhere later). Configurations live in memory, bounded.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use a2a as sdk;
use a2a_server::{InMemoryPushConfigStore, PushConfigStore};
use sdk::A2AError;

/// Configurations kept at most, over all tasks.
const MAX_CONFIGS: usize = 10_000;
/// Deadline for one webhook call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The push configurations and the client that calls them.
pub struct Push {
    store: InMemoryPushConfigStore,
    http: reqwest::Client,
    allow_private: bool,
    count: std::sync::atomic::AtomicUsize,
}

fn private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                // 100.64.0.0/10, carrier-grade NAT
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00 // unique local
                || (v6.segments()[0] & 0xffc0) == 0xfe80 // link local
                || v6.to_ipv4_mapped().is_some_and(|v4| private(IpAddr::V4(v4)))
        }
    }
}

/// The webhook URL without its query and credentials, for logs.
fn shown(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => {
            format!(
                "{}://{}{}",
                u.scheme(),
                u.host_str().unwrap_or(""),
                u.port().map(|p| format!(":{p}")).unwrap_or_default()
            ) + u.path()
        }
        Err(_) => "<not a URL>".into(),
    }
}

impl Push {
    /// An empty registry; `allow_private` lets webhooks reach loopback and
    /// private addresses.
    pub fn new(allow_private: bool) -> Self {
        Self {
            store: InMemoryPushConfigStore::new(),
            http: reqwest::Client::builder()
                .timeout(CALL_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            allow_private,
            count: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Checks that `url` is an http(s) URL this gateway may call.
    pub async fn check_url(&self, url: &str) -> Result<(), A2AError> {
        let u = url::Url::parse(url)
            .map_err(|e| A2AError::invalid_params(format!("the webhook URL is not a URL: {e}")))?;
        if u.scheme() != "http" && u.scheme() != "https" {
            return Err(A2AError::invalid_params(
                "the webhook URL must be http or https",
            ));
        }
        if self.allow_private {
            return Ok(());
        }
        let host = u
            .host_str()
            .ok_or_else(|| A2AError::invalid_params("the webhook URL has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = u.port_or_known_default().unwrap_or(80);
        let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| {
                    A2AError::invalid_params(format!("the webhook host does not resolve: {e}"))
                })?
                .map(|a| a.ip())
                .collect(),
        };
        if addrs.is_empty() || addrs.into_iter().any(private) {
            return Err(A2AError::invalid_params(
                "the webhook URL points at a loopback or private address (allowed only with gateway.push_allow_private)",
            ));
        }
        Ok(())
    }

    /// Registers a configuration (an id is given if it has none).
    pub async fn save(
        &self,
        config: sdk::TaskPushNotificationConfig,
    ) -> Result<sdk::TaskPushNotificationConfig, A2AError> {
        if config.task_id.is_empty() {
            return Err(A2AError::invalid_params("the configuration names no task"));
        }
        self.check_url(&config.url).await?;
        let n = self
            .count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n >= MAX_CONFIGS {
            self.count
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            return Err(A2AError::internal(
                "too many push configurations are registered; delete some first",
            ));
        }
        self.store.save(config).await
    }

    /// One configuration.
    pub async fn get(
        &self,
        task_id: &str,
        id: &str,
    ) -> Result<sdk::TaskPushNotificationConfig, A2AError> {
        self.store.get(task_id, id).await
    }

    /// A task's configurations.
    pub async fn list(
        &self,
        task_id: &str,
    ) -> Result<Vec<sdk::TaskPushNotificationConfig>, A2AError> {
        self.store.list(task_id).await
    }

    /// Deletes one.
    pub async fn delete(&self, task_id: &str, id: &str) -> Result<(), A2AError> {
        self.store.delete(task_id, id).await?;
        self.count
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Whether a task has any webhook.
    pub async fn wanted(&self, task_id: &str) -> bool {
        self.store.list(task_id).await.is_ok_and(|c| !c.is_empty())
    }

    /// Calls every webhook of `task_id` with `event`; failures are logged,
    /// never the caller's problem.
    pub async fn deliver(self: &Arc<Self>, task_id: &str, event: &sdk::StreamResponse) {
        let Ok(configs) = self.store.list(task_id).await else {
            return;
        };
        for c in configs {
            if let Err(e) = self.check_url(&c.url).await {
                tracing::warn!(url = %shown(&c.url), error = %e, "push webhook refused");
                continue;
            }
            let mut req = self.http.post(&c.url).json(event);
            if let Some(t) = c.token.as_deref().filter(|t| !t.is_empty()) {
                req = req
                    .header("X-A2A-Notification-Token", t)
                    .header("A2A-Notification-Token", t);
            }
            if let Some(auth) = &c.authentication {
                let value = match &auth.credentials {
                    Some(cred) => format!("{} {cred}", auth.scheme),
                    None => auth.scheme.clone(),
                };
                req = req.header(reqwest::header::AUTHORIZATION, value);
            }
            match req.send().await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => {
                    tracing::warn!(url = %shown(&c.url), status = %r.status(), "push webhook answered with an error");
                }
                Err(e) => {
                    tracing::warn!(url = %shown(&c.url), error = %e.without_url(), "push webhook call failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn private_and_malformed_webhooks_are_refused_unless_allowed() {
        let strict = Push::new(false);
        for url in [
            "http://127.0.0.1:9/x",
            "http://localhost:9/x",
            "http://10.1.2.3/x",
            "http://[::1]:9/x",
            "http://169.254.169.254/latest",
            "http://100.64.1.1/x",
            "http://[::ffff:127.0.0.1]/x",
            "ftp://example.com/x",
            "not a url",
        ] {
            assert!(strict.check_url(url).await.is_err(), "{url}");
        }
        assert!(strict.check_url("http://93.184.215.14/hook").await.is_ok());
        let open = Push::new(true);
        assert!(open.check_url("http://127.0.0.1:9/x").await.is_ok());
        assert_eq!(
            shown("https://u:p@h.example:8443/p/q?token=s"),
            "https://h.example:8443/p/q"
        );
    }
}
