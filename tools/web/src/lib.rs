//! The web tool: an MCP server (rmcp) that fetches a URL and returns readable
//! text (HTML rendered to Markdown-like text, never raw HTML), and searches
//! through a configured provider (a SearXNG instance's JSON API, Brave or
//! Tavily).
//!
//! Guard rails: http(s) only; a deadline per request; a byte cap on bodies
//! (read as a stream, stopped at the cap); a bounded number of redirects,
//! each checked again; and loopback, private, link-local and other
//! non-public addresses refused — by literal address in the URL and, for
//! names, after DNS resolution (the resolver drops such addresses, so a
//! name cannot smuggle a request to them) — unless `allow_private` is set.
//!
//! Not for: crawling, JavaScript, authentication to sites.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ServerHandler, tool, tool_handler, tool_router};
use serde::Deserialize;
use serde_json::Value;

/// A search provider and how to reach it.
#[derive(Debug, Clone)]
pub enum SearchProvider {
    /// A SearXNG instance's JSON API (`<url>/search?q=…&format=json`).
    Searxng {
        /// The instance's base URL.
        url: String,
    },
    /// Brave Search API (`X-Subscription-Token`).
    Brave {
        /// Base URL (`https://api.search.brave.com`).
        url: String,
        /// API key.
        key: String,
    },
    /// Tavily (`POST /search`).
    Tavily {
        /// Base URL (`https://api.tavily.com`).
        url: String,
        /// API key.
        key: String,
    },
}

/// How the web tool behaves.
#[derive(Debug, Clone)]
pub struct WebOptions {
    /// Allow loopback and private-network addresses (off: refused).
    pub allow_private: bool,
    /// Deadline for one request.
    pub timeout: Duration,
    /// Largest body read, in bytes.
    pub max_bytes: usize,
    /// Most redirects followed.
    pub max_redirects: usize,
    /// Longest text returned to the caller, in bytes.
    pub max_text_bytes: usize,
    /// Where `search` goes; `None`: the tool is not offered.
    pub search: Option<SearchProvider>,
}

impl Default for WebOptions {
    fn default() -> Self {
        Self {
            allow_private: false,
            timeout: Duration::from_secs(15),
            max_bytes: 2 * 1024 * 1024,
            max_redirects: 5,
            max_text_bytes: 64 * 1024,
            search: None,
        }
    }
}

/// Why a fetch or search failed.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// Not an http(s) URL.
    #[error("`{0}` is not an http(s) URL")]
    BadUrl(String),
    /// A non-public address, refused.
    #[error(
        "`{0}` is a loopback or private-network address, which the web tool refuses (set tools.web.allow_private to allow it)"
    )]
    Private(String),
    /// The transfer failed.
    #[error("fetching {url}: {reason}")]
    Fetch {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The server answered an error status.
    #[error("{url} answered HTTP {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// No search provider is configured.
    #[error(
        "no search provider is configured (tools.web.search_provider: searxng, brave or tavily)"
    )]
    NoSearch,
    /// The provider answered something unreadable.
    #[error("the search provider's answer could not be read: {0}")]
    BadAnswer(String),
}

/// Whether an address is one the public internet can reach.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])) // shared address space (CGNAT)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
        }
    }
}

/// DNS through the system resolver, keeping only public addresses.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = addrs.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(
                    Box::new(WebError::Private(host)) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// The fetcher and searcher, usable without MCP.
#[derive(Clone)]
pub struct Web {
    client: reqwest::Client,
    opts: Arc<WebOptions>,
}

/// A literal address in a URL's host, if it is one.
fn literal_ip(url: &reqwest::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(a) => Some(IpAddr::V4(a)),
        url::Host::Ipv6(a) => Some(IpAddr::V6(a)),
        url::Host::Domain(d) => d.parse().ok(),
    }
}

fn check_url(url: &reqwest::Url, allow_private: bool) -> Result<(), WebError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(WebError::BadUrl(url.to_string()));
    }
    let host = url.host_str().unwrap_or_default();
    if !allow_private {
        if let Some(ip) = literal_ip(url)
            && !is_public(ip)
        {
            return Err(WebError::Private(host.into()));
        }
        if host.eq_ignore_ascii_case("localhost") || host.ends_with(".localhost") {
            return Err(WebError::Private(host.into()));
        }
    }
    Ok(())
}

/// A fetched page.
#[derive(Debug, Clone)]
pub struct Page {
    /// The final URL (after redirects).
    pub url: String,
    /// Its content type.
    pub content_type: String,
    /// Readable text.
    pub text: String,
    /// Whether the body or the text was cut at a cap.
    pub truncated: bool,
}

fn cut(mut s: String, max: usize) -> (String, bool) {
    if s.len() <= max {
        return (s, false);
    }
    s.truncate(s.floor_char_boundary(max));
    (s, true)
}

impl Web {
    /// A web client with `opts`.
    pub fn new(opts: WebOptions) -> Result<Self, WebError> {
        let allow_private = opts.allow_private;
        let max_redirects = opts.max_redirects;
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > max_redirects {
                return attempt.error(format!("more than {max_redirects} redirects"));
            }
            match check_url(attempt.url(), allow_private) {
                Ok(()) => attempt.follow(),
                Err(e) => attempt.error(e),
            }
        });
        let mut b = reqwest::Client::builder()
            .timeout(opts.timeout)
            .connect_timeout(opts.timeout)
            .redirect(policy)
            .no_proxy()
            .user_agent(concat!("hearth-web/", env!("CARGO_PKG_VERSION")));
        if !allow_private {
            b = b.dns_resolver(Arc::new(PublicOnly));
        }
        let client = b.build().map_err(|e| WebError::Fetch {
            url: String::new(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            client,
            opts: Arc::new(opts),
        })
    }

    /// The options it runs with.
    pub fn options(&self) -> &WebOptions {
        &self.opts
    }

    fn fetch_error(url: &str, e: &reqwest::Error) -> WebError {
        // Walk the source chain: a refused address shows up as our own error.
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(s) = source {
            if let Some(WebError::Private(h)) = s.downcast_ref::<WebError>() {
                return WebError::Private(h.clone());
            }
            source = s.source();
        }
        let mut reason = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            reason.push_str(&format!(": {s}"));
            src = s.source();
        }
        WebError::Fetch {
            url: url.to_string(),
            reason,
        }
    }

    /// Fetches `url` and renders it as readable text.
    pub async fn fetch(&self, url: &str) -> Result<Page, WebError> {
        let parsed = reqwest::Url::parse(url).map_err(|_| WebError::BadUrl(url.into()))?;
        check_url(&parsed, self.opts.allow_private)?;
        let resp = self
            .client
            .get(parsed)
            .send()
            .await
            .map_err(|e| Self::fetch_error(url, &e))?;
        let status = resp.status();
        let final_url = resp.url().to_string();
        if !status.is_success() {
            return Err(WebError::Status {
                url: final_url,
                status: status.as_u16(),
            });
        }
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let mut body = Vec::new();
        let mut truncated = false;
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Self::fetch_error(url, &e))?;
            let room = self.opts.max_bytes - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                truncated = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        let is_html = content_type.contains("html")
            || (content_type.is_empty() && body.trim_ascii_start().starts_with(b"<"));
        let text = if is_html {
            html2text::config::plain()
                .string_from_read(body.as_slice(), 100)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned())
        } else if content_type.starts_with("text/")
            || content_type.contains("json")
            || content_type.contains("xml")
            || content_type.is_empty()
        {
            String::from_utf8_lossy(&body).into_owned()
        } else {
            format!("({} bytes of {content_type}; not text)", body.len())
        };
        let (text, cut_text) = cut(text, self.opts.max_text_bytes);
        Ok(Page {
            url: final_url,
            content_type,
            text,
            truncated: truncated || cut_text,
        })
    }

    /// Searches through the configured provider: (title, url, snippet) rows.
    pub async fn search(
        &self,
        query: &str,
        count: usize,
    ) -> Result<Vec<(String, String, String)>, WebError> {
        let provider = self.opts.search.as_ref().ok_or(WebError::NoSearch)?;
        let count = count.clamp(1, 20);
        let with_params = |base: String, params: &[(&str, &str)]| {
            reqwest::Url::parse_with_params(&base, params).map_err(|_| WebError::BadUrl(base))
        };
        let count_s = count.to_string();
        let (url, req) = match provider {
            SearchProvider::Searxng { url } => {
                let u = with_params(
                    format!("{}/search", url.trim_end_matches('/')),
                    &[("q", query), ("format", "json")],
                )?;
                (u.clone(), self.client.get(u))
            }
            SearchProvider::Brave { url, key } => {
                let u = with_params(
                    format!("{}/res/v1/web/search", url.trim_end_matches('/')),
                    &[("q", query), ("count", &count_s)],
                )?;
                (
                    u.clone(),
                    self.client
                        .get(u)
                        .header("X-Subscription-Token", key)
                        .header(reqwest::header::ACCEPT, "application/json"),
                )
            }
            SearchProvider::Tavily { url, key } => {
                let u = with_params(format!("{}/search", url.trim_end_matches('/')), &[])?;
                (
                    u.clone(),
                    self.client
                        .post(u)
                        .bearer_auth(key)
                        .json(&serde_json::json!({
                            "query": query, "max_results": count,
                        })),
                )
            }
        };
        // The provider is configured by the user: it may be on the LAN (a
        // SearXNG at home), so it is checked only for its scheme.
        check_url(&url, true)?;
        let url = url.to_string();
        let resp = req.send().await.map_err(|e| Self::fetch_error(&url, &e))?;
        if !resp.status().is_success() {
            return Err(WebError::Status {
                url,
                status: resp.status().as_u16(),
            });
        }
        let v: Value = resp
            .json()
            .await
            .map_err(|e| WebError::BadAnswer(e.to_string()))?;
        let (rows, snippet) = match provider {
            SearchProvider::Searxng { .. } => (v.get("results"), "content"),
            SearchProvider::Brave { .. } => (v.pointer("/web/results"), "description"),
            SearchProvider::Tavily { .. } => (v.get("results"), "content"),
        };
        let rows = rows
            .and_then(Value::as_array)
            .ok_or_else(|| WebError::BadAnswer("no result list".into()))?;
        Ok(rows
            .iter()
            .take(count)
            .map(|r| {
                let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                (s("title"), s("url"), s(snippet))
            })
            .collect())
    }
}

/// `fetch`'s input.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct FetchParams {
    /// An http(s) URL.
    pub url: String,
}

/// `search`'s input.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SearchParams {
    /// What to search for.
    pub query: String,
    /// How many results (1–20, default 5).
    #[serde(default)]
    pub count: Option<usize>,
}

/// The web MCP server.
#[derive(Clone)]
pub struct WebServer {
    web: Web,
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl WebServer {
    /// A server over `web`; `search` is offered only when a provider is configured.
    pub fn new(web: Web) -> Self {
        let mut tool_router = Self::tool_router();
        if web.opts.search.is_none() {
            tool_router.remove_route("search");
        }
        Self { web, tool_router }
    }

    /// Fetch a page as text.
    #[tool(
        description = "Fetch a web page and return it as readable text (HTML is rendered, not returned raw). Local and private-network addresses are refused.",
        annotations(read_only_hint = true, open_world_hint = true)
    )]
    async fn fetch(&self, Parameters(p): Parameters<FetchParams>) -> CallToolResult {
        match self.web.fetch(&p.url).await {
            Ok(page) => {
                let mut text = format!("URL: {}\n\n{}", page.url, page.text);
                if page.truncated {
                    text.push_str("\n…[truncated at the size limit]");
                }
                CallToolResult::success(vec![ContentBlock::text(text)])
            }
            Err(e) => CallToolResult::error(vec![ContentBlock::text(e.to_string())]),
        }
    }

    /// Search the web.
    #[tool(
        description = "Search the web through the configured provider; returns title, URL and snippet of each result.",
        annotations(read_only_hint = true, open_world_hint = true)
    )]
    async fn search(&self, Parameters(p): Parameters<SearchParams>) -> CallToolResult {
        match self.web.search(&p.query, p.count.unwrap_or(5)).await {
            Ok(rows) if rows.is_empty() => {
                CallToolResult::success(vec![ContentBlock::text("no results")])
            }
            Ok(rows) => {
                let text = rows
                    .iter()
                    .enumerate()
                    .map(|(i, (t, u, s))| format!("{}. {t}\n   {u}\n   {s}", i + 1))
                    .collect::<Vec<_>>()
                    .join("\n");
                CallToolResult::success(vec![ContentBlock::text(text)])
            }
            Err(e) => CallToolResult::error(vec![ContentBlock::text(e.to_string())]),
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for WebServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("hearth-web", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Fetch web pages as text; search the web when a provider is configured.",
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["1.1.1.1", "93.184.216.34", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn local_urls_are_refused_before_any_request() {
        let web = Web::new(WebOptions::default()).unwrap();
        for url in [
            "http://127.0.0.1:1/",
            "http://localhost/",
            "http://[::1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://0x7f000001/",
        ] {
            let e = web.fetch(url).await.unwrap_err();
            assert!(matches!(e, WebError::Private(_)), "{url}: {e}");
        }
        let e = web.fetch("file:///etc/passwd").await.unwrap_err();
        assert!(matches!(e, WebError::BadUrl(_)), "{e}");
        let e = web.fetch("not a url").await.unwrap_err();
        assert!(matches!(e, WebError::BadUrl(_)), "{e}");
    }
}
