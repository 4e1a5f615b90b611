//! `hearth status`: asks each service of the running mesh (over NATS) for
//! its health — the `Health` RPC every service answers under its role —
//! and prints one row per service, then what the durable work queue
//! holds (waiting, in progress, redelivered, dead letters) and every
//! instance alive on every machine (from their heartbeats). With `--check`, the exit code says
//! whether the named services are ready: the health check a container
//! runs.

use std::time::Duration;

use anyhow::{Result, bail};
use comfy_table::Table;
use comfy_table::presets::UTF8_FULL_CONDENSED;
use hearth_mesh::Config;
use hearth_mesh::bindings::health_bus::HealthClient;
use hearth_proto::v1::HealthRequest;

use hearth_launch::Part;

/// Options of `hearth status`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// Exit non-zero unless each of these services answers ready (repeat,
    /// or list with commas); only these are asked.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub check: Vec<Part>,
    /// How long to wait for each service's answer, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub timeout_ms: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One service's answer (or its silence).
#[derive(Debug, serde::Serialize)]
struct Row {
    service: &'static str,
    answered: bool,
    ready: bool,
    draining: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    worker: String,
    uptime_s: f64,
    checks: Vec<serde_json::Value>,
    #[serde(skip_serializing_if = "String::is_empty")]
    error: String,
}

/// Runs `hearth status`; the exit code is 1 when a checked service is not
/// ready.
pub async fn run(config: &Config, args: &StatusArgs) -> Result<i32> {
    if config.nats_url.is_none() {
        bail!(
            "no mesh to ask: HEARTH_NATS_URL is not set, so the mesh runs inside `hearth up` or `hearth ask` only (`hearth doctor` starts and checks it)"
        );
    }
    let bus = hearth_launch::connect_bus(config).await?;
    let asked: Vec<Part> = if args.check.is_empty() {
        Part::ALL.to_vec()
    } else {
        args.check.clone()
    };
    let mut rows = Vec::new();
    for part in &asked {
        let service = part.service();
        let client = HealthClient::new(
            bus.clone(),
            config.subjects(),
            service,
            Duration::from_millis(args.timeout_ms),
        );
        rows.push(match client.check(&HealthRequest {}).await {
            Ok(h) => Row {
                service: service.name(),
                answered: true,
                ready: h.ready,
                draining: h.draining,
                worker: h.worker,
                uptime_s: h.uptime_s,
                checks: h
                    .checks
                    .iter()
                    .map(|c| {
                        serde_json::json!({
                            "name": c.name,
                            "outcome": c.outcome().as_str_name().trim_start_matches("CHECK_OUTCOME_").to_lowercase(),
                            "detail": c.detail,
                            "fix": c.fix,
                        })
                    })
                    .collect(),
                error: String::new(),
            },
            Err(e) => Row {
                service: service.name(),
                answered: false,
                ready: false,
                draining: false,
                worker: String::new(),
                uptime_s: 0.0,
                checks: Vec::new(),
                error: e.message().to_string(),
            },
        });
    }
    let failing = !args.check.is_empty() && rows.iter().any(|r| !r.ready);
    // The durable work queue, read without creating anything.
    let work = match bus.nats() {
        Some(client) if args.check.is_empty() => {
            match hearth_mesh::work::stats(client, &config.subjects()).await {
                Ok(stats) => stats,
                Err(e) => {
                    tracing::warn!(error = %e, "the work queue could not be read");
                    None
                }
            }
        }
        _ => None,
    };
    // Every instance alive, from the heartbeats (on every machine).
    let instances = match bus.nats() {
        Some(client) if args.check.is_empty() => {
            match hearth_mesh::heartbeat::instances(client, &config.subjects()).await {
                Ok(list) => list,
                Err(e) => {
                    tracing::warn!(error = %e, "the heartbeats could not be read");
                    Vec::new()
                }
            }
        }
        _ => Vec::new(),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "ready": rows.iter().all(|r| r.ready),
                "services": rows,
                "work": work,
                "instances": instances,
            }))?
        );
    } else {
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED)
            .set_header(["service", "state", "instance", "up for", "checks"]);
        for r in &rows {
            let state = match (r.answered, r.draining, r.ready) {
                (false, _, _) => "no answer",
                (true, true, _) => "draining",
                (true, false, true) => "ready",
                (true, false, false) => "not ready",
            };
            let checks = if r.answered {
                r.checks
                    .iter()
                    .map(|c| {
                        let mark = match c["outcome"].as_str() {
                            Some("ok") => "✓",
                            Some("warn") => "!",
                            _ => "✗",
                        };
                        format!(
                            "{mark} {}: {}",
                            c["name"].as_str().unwrap_or(""),
                            c["detail"].as_str().unwrap_or("")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            } else {
                r.error.clone()
            };
            t.add_row([
                r.service.to_string(),
                state.to_string(),
                r.worker.clone(),
                if r.answered {
                    format!("{:.0} s", r.uptime_s)
                } else {
                    String::new()
                },
                checks,
            ]);
        }
        println!("{t}");
        if !instances.is_empty() {
            let mut t = Table::new();
            t.load_preset(UTF8_FULL_CONDENSED).set_header([
                "instance of",
                "instance",
                "host",
                "pid",
                "version",
                "load",
                "in flight",
                "NATS server",
                "last beat",
            ]);
            for b in &instances {
                t.add_row([
                    b.service.clone(),
                    b.instance.clone(),
                    b.host.clone(),
                    b.pid.to_string(),
                    b.version.clone(),
                    b.load.map_or_else(|| "?".into(), |l| format!("{l:.2}")),
                    b.in_flight.to_string(),
                    b.nats_server.clone(),
                    format!("{} s ago", now.saturating_sub(b.at)),
                ]);
            }
            println!("{t}");
        }
        if let Some(w) = &work {
            for r in &w.roles {
                println!(
                    "work queue ({}): {} waiting, {} in progress ({} redelivered), {} free slot(s)",
                    r.role, r.waiting, r.in_progress, r.redelivered, r.free_slots
                );
            }
            println!(
                "{} dead letter(s); {} task(s) kept (`hearth tasks list`)",
                w.dead_letters, w.tasks_kept
            );
        }
    }
    Ok(i32::from(failing))
}
