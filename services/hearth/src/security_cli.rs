//! `hearth security audit`: the exposures of the configuration in force
//! (file, environment, defaults), each with how bad it is and the fix. It
//! reads configuration only and starts nothing; the exit code is non-zero
//! when any exposure is high.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use anyhow::Result;
use comfy_table::Table;
use comfy_table::presets::UTF8_FULL_CONDENSED;
use hearth_mesh::Config;
use serde::Serialize;

/// How bad an exposure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Others can act as you, or read what is yours.
    High,
    /// Weaker than it should be; exploitable with more access.
    Medium,
}

impl Severity {
    fn name(self) -> &'static str {
        match self {
            Severity::High => "high",
            Severity::Medium => "medium",
        }
    }
}

/// One exposure.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// How bad.
    pub severity: Severity,
    /// The setting it is about (`gateway.addr`).
    pub setting: String,
    /// What is exposed.
    pub exposure: String,
    /// How to close it.
    pub fix: String,
}

/// Whether `host` (a name or an address) is this machine only.
fn loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The host of a URL such as `nats://user:pw@host:4222` or `http://h/x`.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let hostport = &rest[..end];
    if let Some(v6) = hostport.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    hostport.split(':').next().unwrap_or(hostport)
}

/// Whether a listen address reaches beyond this machine.
fn beyond_loopback(addr: &str) -> bool {
    match addr.parse::<SocketAddr>() {
        Ok(a) => !a.ip().is_loopback(),
        // A name: only localhost is known to be loopback.
        Err(_) => !loopback_host(addr.rsplit_once(':').map_or(addr, |(h, _)| h)),
    }
}

/// The exposures of `config`; `file` is the configuration file in force.
pub fn audit(config: &Config, file: Option<&Path>) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut add = |severity, setting: &str, exposure: String, fix: String| {
        out.push(Finding {
            severity,
            setting: setting.to_string(),
            exposure,
            fix,
        })
    };
    let g = &config.gateway;
    for (setting, addr) in [
        ("gateway.addr", &g.addr),
        ("gateway.grpc_addr", &g.grpc_addr),
    ] {
        if addr.trim().is_empty() || !beyond_loopback(addr) {
            continue;
        }
        if g.token.is_empty() {
            add(
                Severity::High,
                setting,
                format!("the gateway listens on {addr}, beyond this machine, and no token is set: anyone who reaches it can run tasks with your tools"),
                "set a token (HEARTH_GATEWAY_TOKEN, or gateway.token in hearth.toml), or listen on 127.0.0.1".into(),
            );
        } else if g
            .public_url
            .as_deref()
            .is_none_or(|u| u.starts_with("http://"))
        {
            add(
                Severity::Medium,
                setting,
                format!(
                    "the gateway listens on {addr} over plain HTTP: its token crosses the network readable"
                ),
                "put it behind a TLS proxy and set gateway.public_url to its https:// address"
                    .into(),
            );
        }
        if g.max_auth_failures_per_minute == 0 {
            add(
                Severity::Medium,
                "gateway.max_auth_failures_per_minute",
                "failed token attempts are not limited: the token can be guessed at speed".into(),
                "set gateway.max_auth_failures_per_minute (10 by default)".into(),
            );
        }
    }
    if g.push_allow_private {
        add(
            Severity::Medium,
            "gateway.push_allow_private",
            "push-notification webhooks may target loopback and private addresses: a caller can aim the gateway at this machine's own services".into(),
            "set gateway.push_allow_private = false unless every caller is trusted".into(),
        );
    }
    if let Some(urls) = &config.nats_url {
        let b = &config.bus;
        let auth = b.user.is_some()
            || !b.token.is_empty()
            || b.nkey_seed_file.is_some()
            || b.creds_file.is_some();
        let tls = b.tls_required || b.tls_ca.is_some() || urls.contains("tls://");
        let off_host: Vec<&str> = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !loopback_host(host_of(u)))
            .collect();
        if !auth {
            add(
                if off_host.is_empty() { Severity::Medium } else { Severity::High },
                "bus",
                format!("the mesh signs in to NATS ({urls}) with no credentials: anything that can reach the server can drive every service"),
                "give each service its own NATS user (deploy/nats/least-privilege.conf) and set [bus] user/password, token, nkey_seed_file or creds_file".into(),
            );
        }
        if !tls && !off_host.is_empty() {
            add(
                Severity::High,
                "nats_url",
                format!("NATS at {} is reached without TLS: tasks, answers and credentials cross the network readable", off_host.join(", ")),
                "enable TLS on nats-server and set [bus] tls_ca (and tls_cert/tls_key for client certificates) or tls_required = true".into(),
            );
        }
    }
    for s in &config.mcp.servers {
        if let Some(url) = &s.url
            && url.starts_with("http://")
            && !loopback_host(host_of(url))
        {
            add(
                Severity::High,
                &format!("mcp.servers.{}", s.name),
                format!(
                    "the MCP server `{}` is reached over plain HTTP off this machine ({url}): its tools' arguments and results, and its token, can be read or changed on the way",
                    s.name
                ),
                "use its https:// address, or run it on this machine".into(),
            );
        }
    }
    for r in &config.agents.remote {
        if r.url.starts_with("http://") && !loopback_host(host_of(&r.url)) {
            add(
                Severity::Medium,
                &format!("agents.remote.{}", r.name),
                format!(
                    "the remote agent `{}` is reached over plain HTTP ({}): the tasks handed to it can be read on the way",
                    r.name, r.url
                ),
                "use its https:// address".into(),
            );
        }
    }
    if let Some(url) = &config.engine.url
        && url.starts_with("http://")
        && !loopback_host(host_of(url))
        && !config.engine.api_key.is_empty()
    {
        add(
            Severity::High,
            "engine.url",
            format!("the engine's API key is sent over plain HTTP to {url}"),
            "use the engine's https:// address".into(),
        );
    }
    if let Some(url) = &config.memory.qdrant_url
        && !loopback_host(host_of(url))
    {
        if config.memory.qdrant_api_key.is_empty() {
            add(
                Severity::High,
                "memory.qdrant_url",
                format!("the Qdrant server at {url} is used without an API key: anyone who reaches it can read and change the mesh's memory"),
                "set an API key on the Qdrant server and in memory.qdrant_api_key (HEARTH_QDRANT_API_KEY)".into(),
            );
        } else if url.starts_with("http://") {
            add(
                Severity::Medium,
                "memory.qdrant_url",
                format!(
                    "the Qdrant server at {url} is reached without TLS: memories and its API key cross the network readable"
                ),
                "enable TLS on the Qdrant server and use its https:// address".into(),
            );
        }
    }
    if config.tools.files.enabled {
        let root = hearth_launch::builtins::files_options(config).root;
        let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
        if root == Path::new("/") {
            add(
                Severity::High,
                "tools.files.root",
                "the files tool's root is `/`: an agent may read and write anything this user can".into(),
                "set tools.files.root to a directory of its own (default: the data dir's workspace/)".into(),
            );
        } else if home.as_deref() == Some(root.as_path()) {
            add(
                Severity::Medium,
                "tools.files.root",
                format!(
                    "the files tool's root is your home directory ({}): keys, tokens and mail are in reach of an agent",
                    root.display()
                ),
                "set tools.files.root to a directory of its own, or tools.files.read_only = true"
                    .into(),
            );
        }
    }
    if config.tools.web.enabled && config.tools.web.allow_private {
        add(
            Severity::Medium,
            "tools.web.allow_private",
            "the web tool may fetch loopback and private addresses: a prompt can make an agent read this machine's and this network's services".into(),
            "set tools.web.allow_private = false".into(),
        );
    }
    if let Some(path) = file {
        let secrets = [
            !config.gateway.token.is_empty(),
            !config.bus.password.is_empty(),
            !config.bus.token.is_empty(),
            !config.engine.api_key.is_empty(),
        ]
        .into_iter()
        .any(|s| s);
        #[cfg(unix)]
        if secrets {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(path)
                && meta.permissions().mode() & 0o077 != 0
            {
                add(
                    Severity::Medium,
                    "config file",
                    format!(
                        "{} may hold secrets and other users can read it (mode {:o})",
                        path.display(),
                        meta.permissions().mode() & 0o777
                    ),
                    format!(
                        "chmod 600 {}, or give secrets through HEARTH_* variables or files",
                        path.display()
                    ),
                );
            }
        }
        #[cfg(not(unix))]
        let _ = secrets;
    }
    out.sort_by_key(|f| f.severity);
    out
}

/// Runs `hearth security audit`; the exit code is 1 when an exposure is high.
pub fn run(config: &Config, json: bool) -> Result<i32> {
    let file = Config::file()?;
    let findings = audit(config, file.as_deref());
    let high = findings.iter().any(|f| f.severity == Severity::High);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "config_file": file,
                "findings": findings,
            }))?
        );
    } else if findings.is_empty() {
        println!(
            "no exposures found in the configuration in force{}",
            file.map(|f| format!(" ({})", f.display()))
                .unwrap_or_default()
        );
    } else {
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED);
        t.set_header(["severity", "setting", "exposure", "fix"]);
        for f in &findings {
            t.add_row([
                f.severity.name(),
                f.setting.as_str(),
                f.exposure.as_str(),
                f.fix.as_str(),
            ]);
        }
        println!("{t}");
    }
    Ok(i32::from(high))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(f: &[Finding]) -> Vec<(&str, Severity)> {
        f.iter().map(|f| (f.setting.as_str(), f.severity)).collect()
    }

    #[test]
    fn the_defaults_expose_nothing() {
        assert!(audit(&Config::default(), None).is_empty());
    }

    #[test]
    fn each_exposure_is_found_with_its_fix() {
        let mut c = Config::default();
        c.gateway.addr = "0.0.0.0:8777".into();
        c.nats_url = Some("nats://10.0.0.5:4222".into());
        c.tools.files.enabled = true;
        c.tools.files.root = Some("/".into());
        c.mcp.servers.push(hearth_mesh::config::McpServer {
            name: "far".into(),
            url: Some("http://192.168.1.9:9000/mcp".into()),
            ..Default::default()
        });
        let f = audit(&c, None);
        let s = settings(&f);
        assert!(s.contains(&("gateway.addr", Severity::High)), "{s:?}");
        assert!(s.contains(&("bus", Severity::High)), "{s:?}");
        assert!(s.contains(&("nats_url", Severity::High)), "{s:?}");
        assert!(s.contains(&("tools.files.root", Severity::High)), "{s:?}");
        assert!(s.contains(&("mcp.servers.far", Severity::High)), "{s:?}");
        assert!(f.iter().all(|f| !f.fix.is_empty()));
        // Closed: a token, NATS credentials and TLS.
        c.gateway.token = hearth_mesh::Secret::new("t");
        c.gateway.public_url = Some("https://agents.example.com".into());
        c.bus.user = Some("operative".into());
        c.bus.tls_ca = Some("/etc/ca.pem".into());
        let s2: Vec<String> = audit(&c, None).into_iter().map(|f| f.setting).collect();
        assert!(
            !s2.iter()
                .any(|s| s == "gateway.addr" || s == "bus" || s == "nats_url"),
            "{s2:?}"
        );
    }

    #[test]
    fn hosts_are_read_from_urls() {
        assert_eq!(host_of("nats://u:p@10.1.2.3:4222"), "10.1.2.3");
        assert_eq!(host_of("http://[::1]:80/x"), "::1");
        assert_eq!(host_of("localhost:4222"), "localhost");
        assert!(loopback_host("127.0.0.1") && loopback_host("localhost") && loopback_host("[::1]"));
        assert!(beyond_loopback("0.0.0.0:1") && !beyond_loopback("127.0.0.1:1"));
    }
}
