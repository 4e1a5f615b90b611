//! The `Host` and `Origin` checks that keep a web page from reaching the
//! gateway through the user's browser (DNS rebinding, cross-site requests).
//!
//! A gateway on loopback answers only requests whose `Host` is a loopback
//! name (`localhost`, `127.0.0.1`, `[::1]`, any port), the host of
//! `gateway.public_url`, or one of `gateway.allowed_hosts`: a page whose
//! name an attacker re-points at 127.0.0.1 still sends its own name, and is
//! refused. Beyond loopback the machine is reached by whatever names it
//! has, so `Host` is not checked unless `allowed_hosts` is set (the token
//! guards it then).
//!
//! A request that carries `Origin` — browsers send it on every cross-site
//! request and every POST — is answered only when that origin is the
//! gateway's own, a page on a loopback name (a local chat UI), the origin of
//! `public_url`, or one of `gateway.allowed_origins`. Scripts and SDKs send
//! no `Origin` and are not affected. Both checks cover every HTTP route,
//! the agent card included (gRPC is not reached from browsers).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hearth_mesh::Config;

/// What the checks allow, from the configuration.
#[derive(Debug, Clone, Default)]
pub struct Allowed {
    /// Check `Host` at all (loopback listener, or a configured list).
    check_host: bool,
    /// Host names allowed besides the loopback names (lowercase, no port).
    hosts: Vec<String>,
    /// Origins allowed besides loopback pages (`scheme://host[:port]`).
    origins: Vec<String>,
}

impl Allowed {
    /// The checks for a gateway configured by `config`.
    pub fn from_config(config: &Config) -> Self {
        let g = &config.gateway;
        let loopback_listener = g
            .addr
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.ip().is_loopback());
        let mut hosts: Vec<String> = g
            .allowed_hosts
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        let mut origins: Vec<String> = g
            .allowed_origins
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
            .filter(|o| !o.is_empty())
            .collect();
        let check_host = loopback_listener || !hosts.is_empty();
        if let Some(public) = g
            .public_url
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok())
        {
            if let Some(h) = public.host_str() {
                hosts.push(h.to_ascii_lowercase());
            }
            origins.push(public.origin().ascii_serialization().to_ascii_lowercase());
        }
        Self {
            check_host,
            hosts,
            origins,
        }
    }

    /// Why a request with these headers is refused, if it is.
    pub fn refusal(&self, headers: &HeaderMap) -> Option<String> {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::trim)
            .unwrap_or_default();
        let name = host_name(host);
        if self.check_host && !host.is_empty() && !self.host_allowed(&name) {
            return Some(format!(
                "the Host `{host}` is not one this gateway answers to (loopback names, \
                 gateway.public_url's host, gateway.allowed_hosts)"
            ));
        }
        let origin = headers.get(header::ORIGIN)?;
        let origin = origin.to_str().unwrap_or("?").trim();
        let lower = origin.to_ascii_lowercase();
        let own = !host.is_empty()
            && url::Url::parse(&lower)
                .ok()
                .and_then(|u| {
                    let h = u.host_str()?.to_string();
                    Some(match u.port() {
                        Some(p) => format!("{h}:{p}"),
                        None => h,
                    })
                })
                .is_some_and(|o| o == host.to_ascii_lowercase());
        let loopback_page = url::Url::parse(&lower)
            .ok()
            .and_then(|u| u.host_str().map(host_name))
            .is_some_and(|h| is_loopback_name(&h));
        if own || loopback_page || self.origins.contains(&lower) {
            return None;
        }
        Some(format!(
            "requests from pages at `{origin}` are not allowed (add it to gateway.allowed_origins)"
        ))
    }

    fn host_allowed(&self, name: &str) -> bool {
        is_loopback_name(name) || self.hosts.iter().any(|h| h == name)
    }
}

/// The host name of a `Host` header or URL host, lowercase, without port or
/// IPv6 brackets.
fn host_name(host: &str) -> String {
    let h = host.trim().to_ascii_lowercase();
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default().to_string();
    }
    match h.rsplit_once(':') {
        // One colon: a port. More: a bare IPv6 address.
        Some((name, port)) if !name.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => {
            name.to_string()
        }
        _ => h,
    }
}

fn is_loopback_name(name: &str) -> bool {
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The middleware: 403 for a refused `Host` or `Origin`.
pub async fn check(
    State(allowed): State<Arc<Allowed>>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(why) = allowed.refusal(req.headers()) {
        tracing::info!(reason = %why, path = %req.uri().path(), "refused a request");
        return (StatusCode::FORBIDDEN, why).into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(host: &str, origin: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().unwrap());
        }
        h
    }

    fn allowed(addr: &str, hosts: &[&str], origins: &[&str], public: Option<&str>) -> Allowed {
        let mut c = Config::default();
        c.gateway.addr = addr.into();
        c.gateway.allowed_hosts = hosts.iter().map(|s| s.to_string()).collect();
        c.gateway.allowed_origins = origins.iter().map(|s| s.to_string()).collect();
        c.gateway.public_url = public.map(str::to_string);
        Allowed::from_config(&c)
    }

    #[test]
    fn loopback_names_pass_and_foreign_hosts_and_origins_do_not() {
        let a = allowed("127.0.0.1:8777", &[], &[], None);
        for ok in [
            "127.0.0.1:8777",
            "localhost:8777",
            "[::1]:8777",
            "LOCALHOST",
            "app.localhost:1",
        ] {
            assert_eq!(a.refusal(&headers(ok, None)), None, "{ok}");
        }
        // DNS rebinding: a foreign name pointed at 127.0.0.1.
        assert!(a.refusal(&headers("evil.example:8777", None)).is_some());
        // The gateway's own page, and a local chat UI on another port.
        assert_eq!(
            a.refusal(&headers("127.0.0.1:8777", Some("http://127.0.0.1:8777"))),
            None
        );
        assert_eq!(
            a.refusal(&headers("127.0.0.1:8777", Some("http://localhost:3000"))),
            None
        );
        // A cross-site page, and a sandboxed one.
        assert!(
            a.refusal(&headers("127.0.0.1:8777", Some("https://evil.example")))
                .is_some()
        );
        assert!(
            a.refusal(&headers("127.0.0.1:8777", Some("null")))
                .is_some()
        );
    }

    #[test]
    fn configured_names_and_the_public_url_are_allowed() {
        let a = allowed(
            "127.0.0.1:8777",
            &["hearth.lan"],
            &["https://chat.example.com/"],
            Some("https://agents.example.com/base"),
        );
        assert_eq!(a.refusal(&headers("hearth.lan:8777", None)), None);
        assert_eq!(a.refusal(&headers("agents.example.com", None)), None);
        assert_eq!(
            a.refusal(&headers(
                "agents.example.com",
                Some("https://chat.example.com")
            )),
            None
        );
        assert_eq!(
            a.refusal(&headers(
                "agents.example.com",
                Some("https://agents.example.com")
            )),
            None
        );
        assert!(a.refusal(&headers("other.lan", None)).is_some());
        // Beyond loopback with no list, any Host; Origin is still checked.
        let wide = allowed("0.0.0.0:8777", &[], &[], None);
        assert_eq!(wide.refusal(&headers("gateway:8777", None)), None);
        assert_eq!(
            wide.refusal(&headers("gateway:8777", Some("http://gateway:8777"))),
            None
        );
        assert!(
            wide.refusal(&headers("gateway:8777", Some("https://evil.example")))
                .is_some()
        );
    }
}
