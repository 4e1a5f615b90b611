//! Routing: which backend serves each generation — local first, the cloud
//! only when allowed, and never for sensitive work.
//!
//! The engine holds its configured backend (`[engine]`, the first lane)
//! and any number of named remote backends (`[[engine.remote]]`). Every
//! generation passes here, so no agent or prompt can route around it:
//! - the policy (`[routing] policy`) orders the lanes: `local-only` uses
//!   `[engine]` alone, `local-first` adds the remote `[routing] remote` when
//!   the local one fails or the agent loop escalates (a malformed tool
//!   call), `cloud-first` puts that remote first and `[engine]` after it;
//! - a sensitive request (asked for, matching a credential or
//!   `[routing] sensitive_patterns`, or of a root task already found
//!   sensitive) is served only by local lanes, and taints its root task;
//! - a priced lane is tried only after its worst-case cost is reserved
//!   against every budget ([`crate::spend`]); a request that does not fit
//!   goes to the next lane, or fails naming the budget.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hearth_mesh::config::{Config, RemoteBackend, RemoteKind, RoutePolicy};
use hearth_proto::v1::GenerateRequest;
use regex::RegexSet;

use crate::backend::{Backend, EngineError};
use crate::service::{Metering, Price, metering_for};
use crate::spend::{Limits, SpendLedger, Why};

/// Credential shapes that make a request sensitive whatever the
/// configuration says: private-key blocks and the key formats of the
/// common providers (the same shapes traces redact).
pub const CREDENTIAL_PATTERNS: &[&str] = hearth_mesh::secrets::CREDENTIAL_PATTERNS;

/// Personal data that makes a request sensitive: e-mail addresses and
/// payment-card numbers (13-19 digits, spaces or dashes between; checked
/// with Luhn's sum before it counts).
const EMAIL: &str = r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b";
const CARD: &str = r"\b\d(?:[ \-]?\d){12,18}\b";

/// One backend the engine may send a request to.
pub struct Lane {
    /// Its name: `local` for `[engine]`, else the remote's.
    pub name: String,
    /// The backend.
    pub backend: Arc<dyn Backend>,
    /// How its calls are measured and priced.
    pub metering: Arc<Metering>,
    /// Whether data sent to it stays on this machine or network.
    pub local: bool,
    /// Most tokens one reply may have (for the worst-case cost).
    pub max_tokens: u32,
}

impl Lane {
    /// USD per million input and output tokens, when priced.
    pub fn price(&self) -> Option<(f64, f64)> {
        match self.metering.price {
            Price::Cloud {
                input_per_mtok,
                output_per_mtok,
            } => Some((input_per_mtok, output_per_mtok)),
            _ => None,
        }
    }

    /// The longest reply `req` may get here: its own `max_tokens`, capped
    /// by a remote's `max_tokens` (sent as the cap), else the lane's.
    pub fn reply_limit(&self, req: &GenerateRequest, remote: bool) -> u32 {
        match req.max_tokens {
            0 => self.max_tokens,
            n if remote && self.max_tokens > 0 => n.min(self.max_tokens),
            n => n,
        }
    }

    /// The most `req` can cost here: every byte of what is sent counted as
    /// a token (no tokenizer for a cloud model offline; a token is at
    /// least one byte), plus the longest reply allowed.
    pub fn worst_case_usd(&self, req: &GenerateRequest, remote: bool) -> Option<f64> {
        let (input, output) = self.price()?;
        let max_out = self.reply_limit(req, remote);
        Some((bytes_sent(req) as f64 * input + f64::from(max_out) * output) / 1e6)
    }
}

/// An upper bound on the tokens `req` sends: its bytes, with a few per
/// message for the roles and separators a template adds.
pub fn bytes_sent(req: &GenerateRequest) -> u64 {
    let messages: usize = req
        .messages
        .iter()
        .map(|m| {
            16 + m.content.len()
                + m.tool_call_id.len()
                + m.tool_calls
                    .iter()
                    .map(|c| c.name.len() + c.arguments_json.len() + c.id.len() + 16)
                    .sum::<usize>()
        })
        .sum();
    let tools: usize = req
        .tools
        .iter()
        .map(|t| t.name.len() + t.description.len() + t.input_schema_json.len() + 32)
        .sum();
    (messages + tools + 64) as u64
}

/// One lane to try, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Index into the lanes.
    pub lane: usize,
    /// Why it is tried.
    pub why: Why,
}

/// The root tasks found sensitive, newest kept (a bounded set).
#[derive(Default)]
struct Tainted {
    set: HashSet<String>,
    order: VecDeque<String>,
}

const TAINTED_KEPT: usize = 4096;

impl Tainted {
    fn insert(&mut self, id: &str) {
        if id.is_empty() || !self.set.insert(id.to_string()) {
            return;
        }
        self.order.push_back(id.to_string());
        while self.order.len() > TAINTED_KEPT {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
}

/// The engine's routing: its lanes, policy, sensitivity and budgets.
pub struct Routing {
    lanes: Vec<Lane>,
    policy: RoutePolicy,
    remote: Option<usize>,
    sensitive: RegexSet,
    ledger: Option<Arc<SpendLedger>>,
    tainted: Mutex<Tainted>,
}

impl Routing {
    /// One backend and nothing else: `[engine]` as the only lane, no
    /// ledger (tests, tools that drive a backend directly).
    pub fn single(backend: Arc<dyn Backend>, metering: Metering, max_tokens: u32) -> Self {
        Self {
            lanes: vec![Lane {
                name: "local".into(),
                backend,
                metering: Arc::new(metering),
                local: true,
                max_tokens,
            }],
            policy: RoutePolicy::LocalOnly,
            remote: None,
            sensitive: RegexSet::empty(),
            ledger: None,
            tainted: Mutex::default(),
        }
    }

    /// The routing a configuration asks for, around the already loaded
    /// `[engine]` backend. The configuration was checked at load (names,
    /// budgets, patterns); what can only be checked here — a remote that
    /// cannot be priced while a budget is set — is refused here.
    pub fn from_config(
        config: &Config,
        primary: Arc<dyn Backend>,
        metering: Metering,
    ) -> Result<Self, EngineError> {
        let engine = &config.engine;
        let primary_local = engine.local.unwrap_or(match engine.backend {
            hearth_mesh::config::BackendKind::Openai | hearth_mesh::config::BackendKind::Ollama => {
                engine.url.as_deref().is_none_or(is_local_url)
            }
            _ => true,
        });
        let mut lanes = vec![Lane {
            name: "local".into(),
            backend: primary,
            metering: Arc::new(metering),
            local: primary_local,
            max_tokens: engine.max_tokens,
        }];
        let budgets = &config.budget;
        let limits = Limits {
            usd_per_day: budgets.usd_per_day,
            usd_per_month: budgets.usd_per_month,
            usd_per_task: budgets.usd_per_task,
        };
        let any_budget = limits != Limits::default();
        for r in &engine.remote {
            let lane = remote_lane(config, r)?;
            if any_budget && !lane.local && lane.price().is_none() {
                return Err(EngineError::NotConfigured(format!(
                    "[[engine.remote]] {:?} sends data off the machine but has no price, so [budget] \
                     cannot be enforced on it: set input_usd_per_mtok and output_usd_per_mtok \
                     (or use a model id the catalog prices)",
                    r.name
                )));
            }
            lanes.push(lane);
        }
        let remote = config
            .routing
            .remote_name(&engine.remote)
            .and_then(|name| lanes.iter().position(|l| l.name == name));
        let mut patterns: Vec<String> = Vec::new();
        if config.routing.detect_sensitive {
            patterns.extend(CREDENTIAL_PATTERNS.iter().map(|p| p.to_string()));
            patterns.push(EMAIL.into());
            patterns.push(CARD.into());
        }
        patterns.extend(config.routing.sensitive_patterns.iter().cloned());
        let sensitive = RegexSet::new(&patterns).map_err(|e| {
            EngineError::NotConfigured(format!("[routing] sensitive_patterns: {e}"))
        })?;
        Ok(Self {
            lanes,
            policy: config.routing.policy,
            remote,
            sensitive,
            ledger: Some(Arc::new(SpendLedger::new(
                config.data_dir().join("routing"),
                limits,
            ))),
            tainted: Mutex::default(),
        })
    }

    /// The lanes, `[engine]` first.
    pub fn lanes(&self) -> &[Lane] {
        &self.lanes
    }

    /// `[engine]`'s lane.
    pub fn primary(&self) -> &Lane {
        &self.lanes[0]
    }

    /// The spend ledger, when the engine keeps one.
    pub fn ledger(&self) -> Option<&Arc<SpendLedger>> {
        self.ledger.as_ref()
    }

    /// The policy in force.
    pub fn policy(&self) -> RoutePolicy {
        self.policy
    }

    /// Whether `req` must stay local: asked for, of a root task already
    /// found sensitive, or holding sensitive content (which marks its root
    /// task from now on).
    pub fn is_sensitive(&self, req: &GenerateRequest) -> bool {
        let root = root_of(req);
        let mut tainted = hearth_mesh::sync::lock(&self.tainted);
        if req.sensitive || (!root.is_empty() && tainted.set.contains(root)) {
            tainted.insert(root);
            return true;
        }
        drop(tainted);
        let found = !self.sensitive.is_empty()
            && req.messages.iter().any(|m| {
                self.sensitive_text(&m.content)
                    || m.tool_calls
                        .iter()
                        .any(|c| self.sensitive_text(&c.arguments_json))
            });
        if found {
            hearth_mesh::sync::lock(&self.tainted).insert(root);
        }
        found
    }

    fn sensitive_text(&self, text: &str) -> bool {
        let hits = self.sensitive.matches(text);
        if !hits.matched_any() {
            return false;
        }
        // A card-shaped number counts only when its digits pass Luhn's sum
        // (an order number or a phone number does not).
        let card = self.card_index();
        if hits.iter().any(|i| Some(i) != card) {
            return true;
        }
        card_numbers(text).any(|digits| luhn(&digits))
    }

    fn card_index(&self) -> Option<usize> {
        self.sensitive.patterns().iter().position(|p| p == CARD)
    }

    /// The lanes to try for `req`, in order, with why; and whether it is
    /// sensitive. Fails when sensitivity leaves no lane.
    pub fn plan(&self, req: &GenerateRequest) -> Result<(Vec<Step>, bool), EngineError> {
        let step = |lane, why| Step { lane, why };
        let order = match (self.policy, self.remote) {
            (RoutePolicy::LocalOnly, _) | (_, None) => vec![step(0, Why::Policy)],
            (RoutePolicy::LocalFirst, Some(r)) if req.escalate => {
                vec![step(r, Why::Escalated), step(0, Why::Fallback)]
            }
            (RoutePolicy::LocalFirst, Some(r)) => {
                vec![step(0, Why::Policy), step(r, Why::Fallback)]
            }
            (RoutePolicy::CloudFirst, Some(r)) => {
                vec![step(r, Why::Policy), step(0, Why::Fallback)]
            }
        };
        let sensitive = self.is_sensitive(req);
        if !sensitive {
            return Ok((order, false));
        }
        let first = order.first().map(|s| s.lane);
        let mut kept: Vec<Step> = order
            .into_iter()
            .filter(|s| self.lanes[s.lane].local)
            .collect();
        match kept.first_mut() {
            Some(s) => {
                if Some(s.lane) != first {
                    s.why = Why::Sensitive;
                }
                Ok((kept, true))
            }
            None => Err(EngineError::Refused(
                "the request is sensitive and no local backend may serve it ([engine] is not local): \
                 it was not sent"
                    .into(),
            )),
        }
    }
}

/// The task whose budget and sensitivity `req` shares.
pub fn root_of(req: &GenerateRequest) -> &str {
    if req.root_task_id.is_empty() {
        &req.task_id
    } else {
        &req.root_task_id
    }
}

/// Builds a remote's lane.
fn remote_lane(config: &Config, r: &RemoteBackend) -> Result<Lane, EngineError> {
    let key = r.api_key_value().map_err(EngineError::NotConfigured)?;
    let timeout = Duration::from_millis(r.timeout_ms.unwrap_or(config.engine.timeout_ms));
    let max_tokens = r.max_tokens.unwrap_or(config.engine.max_tokens);
    let backend: Arc<dyn Backend> = match r.backend {
        RemoteKind::Openai => Arc::new(crate::backends::openai::OpenAiBackend::new(
            &r.url, &r.model, key, timeout, max_tokens,
        )?),
        RemoteKind::Ollama => Arc::new(crate::backends::ollama::OllamaBackend::new(
            &r.url, &r.model, timeout, max_tokens,
        )?),
    };
    let local = r.local.unwrap_or_else(|| is_local_url(&r.url));
    // Metered as `[engine]` would be with this server configured, then the
    // remote's own prices win.
    let as_engine = hearth_mesh::config::EngineConfig {
        backend: match r.backend {
            RemoteKind::Openai => hearth_mesh::config::BackendKind::Openai,
            RemoteKind::Ollama => hearth_mesh::config::BackendKind::Ollama,
        },
        url: Some(r.url.clone()),
        electricity_usd_per_kwh: config.engine.electricity_usd_per_kwh,
        ..Default::default()
    };
    let mut metering = metering_for(&as_engine, &r.model);
    if let (Some(input), Some(output)) = (r.input_usd_per_mtok, r.output_usd_per_mtok) {
        metering.price = Price::Cloud {
            input_per_mtok: input,
            output_per_mtok: output,
        };
    }
    Ok(Lane {
        name: r.name.clone(),
        backend,
        metering: Arc::new(metering),
        local,
        max_tokens,
    })
}

/// Whether a server's URL is on this machine or a private network:
/// `localhost`, a loopback, private, link-local or unique-local address.
pub fn is_local_url(url: &str) -> bool {
    let Ok(u) = reqwest::Url::parse(url) else {
        return false;
    };
    match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback() || ip.is_private() || ip.is_link_local(),
        Some(url::Host::Ipv6(ip)) => {
            ip.is_loopback() || ip.is_unique_local() || ip.is_unicast_link_local()
        }
        None => false,
    }
}

/// Runs of 13-19 digits (spaces and dashes between them dropped).
fn card_numbers(text: &str) -> impl Iterator<Item = Vec<u8>> + '_ {
    text.split(|c: char| !(c.is_ascii_digit() || c == ' ' || c == '-'))
        .flat_map(|run| run.split("  "))
        .map(|run| {
            run.bytes()
                .filter(u8::is_ascii_digit)
                .map(|b| b - b'0')
                .collect::<Vec<u8>>()
        })
        .filter(|d| (13..=19).contains(&d.len()))
}

/// Luhn's check-digit sum.
fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_proto::v1::{ChatMessage, ChatRole};

    fn ask(text: &str) -> GenerateRequest {
        GenerateRequest {
            task_id: "t1".into(),
            messages: vec![ChatMessage {
                role: ChatRole::User.into(),
                content: text.into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn local_urls_are_loopback_and_private_addresses() {
        for u in [
            "http://127.0.0.1:8000/v1",
            "http://localhost:11434",
            "http://10.1.2.3/v1",
            "http://192.168.1.20:8000/v1",
            "http://[::1]:8000/v1",
            "http://[fd00::5]/v1",
        ] {
            assert!(is_local_url(u), "{u}");
        }
        for u in [
            "https://api.openai.com/v1",
            "http://8.8.8.8/v1",
            "not a url",
        ] {
            assert!(!is_local_url(u), "{u}");
        }
    }

    #[test]
    fn card_numbers_count_only_when_luhn_agrees() {
        assert!(luhn(&[4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]));
        let digits: Vec<Vec<u8>> =
            card_numbers("card 4111 1111 1111 1111, order 1234567890123").collect();
        assert_eq!(digits.len(), 2);
        assert!(luhn(&digits[0]) && !luhn(&digits[1]));
    }

    fn routing_with(patterns: &[&str]) -> Routing {
        let mut r = Routing::single(
            Arc::new(crate::backends::scripted::ScriptedBackend::default()),
            Metering::none("test"),
            64,
        );
        let mut all: Vec<String> = CREDENTIAL_PATTERNS.iter().map(|p| p.to_string()).collect();
        all.push(EMAIL.into());
        all.push(CARD.into());
        all.extend(patterns.iter().map(|p| p.to_string()));
        r.sensitive = RegexSet::new(all).unwrap();
        r
    }

    #[test]
    fn sensitive_content_taints_its_root_task() {
        let r = routing_with(&[r"(?i)project\s+nightjar"]);
        assert!(!r.is_sensitive(&ask("What is 12*12?")));
        assert!(!r.is_sensitive(&ask("order 1234567890123 shipped")));
        for text in [
            "my key is sk-proj-abcdefghijklmnopqrstuv",
            "write to ada@example.org",
            "pay with 4111-1111-1111-1111",
            "notes on Project Nightjar",
        ] {
            let mut req = ask(text);
            req.task_id = format!("task of {text}");
            assert!(r.is_sensitive(&req), "{text}");
        }
        // The task that held a key stays sensitive, and so do its subtasks.
        let mut later = ask("and now the weather");
        later.task_id = "sub".into();
        later.root_task_id = "task of my key is sk-proj-abcdefghijklmnopqrstuv".into();
        assert!(r.is_sensitive(&later));
        let mut asked = ask("plain");
        asked.sensitive = true;
        asked.task_id = "t9".into();
        assert!(r.is_sensitive(&asked));
        assert!(!r.is_sensitive(&ask("plain")));
        let mut again = ask("plain again");
        again.task_id = "t9".into();
        assert!(r.is_sensitive(&again), "t9 was marked sensitive");
    }

    #[test]
    fn the_worst_case_cost_bounds_input_by_bytes_and_output_by_max_tokens() {
        let lane = Lane {
            name: "cloud".into(),
            backend: Arc::new(crate::backends::scripted::ScriptedBackend::default()),
            metering: Arc::new(Metering {
                price: Price::Cloud {
                    input_per_mtok: 1.0,
                    output_per_mtok: 10.0,
                },
                ..Metering::none("test")
            }),
            local: false,
            max_tokens: 100,
        };
        let mut req = ask("hello");
        req.max_tokens = 1000;
        let usd = lane.worst_case_usd(&req, true).unwrap();
        let expected = (bytes_sent(&req) as f64 * 1.0 + 100.0 * 10.0) / 1e6;
        assert!((usd - expected).abs() < 1e-15);
        assert!(bytes_sent(&req) >= 5);
    }
}
