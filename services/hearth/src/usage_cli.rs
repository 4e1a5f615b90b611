//! `hearth usage`: what the engine's routing spent and where — spend and
//! tokens by day, backend, model and agent; each budget with what is left;
//! and how many requests were kept local, by policy, by sensitivity and by
//! budget. Read from the engine's ledger in the data directory
//! (`routing/usage.jsonl`, `routing/spend.json`).

use std::collections::BTreeMap;

use anyhow::Result;
use clap::Args;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use hearth_engine::spend::{BudgetState, Limits, SpendLedger, Stamp, UsageLine, Why, read_usage};
use hearth_mesh::Config;
use serde::Serialize;

/// `hearth usage` arguments.
#[derive(Args, Debug)]
pub struct UsageArgs {
    /// How many days back, today included.
    #[arg(long, default_value_t = 30)]
    days: u32,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
}

/// One row of the spend table.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
struct Row {
    day: String,
    backend: String,
    local: bool,
    model: String,
    agent: String,
    requests: u64,
    failed: u64,
    tokens_in: u64,
    tokens_out: u64,
    /// None when none of its calls were priced.
    usd: Option<f64>,
}

/// Requests kept local, by why.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
struct KeptLocal {
    by_policy: u64,
    by_sensitivity: u64,
    by_budget: u64,
    by_fallback: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    since: String,
    rows: Vec<Row>,
    total_usd: f64,
    requests: u64,
    kept_local: KeptLocal,
    budgets: Vec<BudgetState>,
}

fn summarise(lines: &[UsageLine], since: &str) -> (Vec<Row>, KeptLocal) {
    let mut rows: BTreeMap<(String, String, String, String), Row> = BTreeMap::new();
    let mut kept = KeptLocal::default();
    for l in lines.iter().filter(|l| l.day.as_str() >= since) {
        let key = (
            l.day.clone(),
            l.backend.clone(),
            l.model.clone(),
            l.agent.clone(),
        );
        let r = rows.entry(key).or_insert_with(|| Row {
            day: l.day.clone(),
            backend: l.backend.clone(),
            local: l.local,
            model: l.model.clone(),
            agent: l.agent.clone(),
            ..Default::default()
        });
        r.requests += 1;
        r.failed += u64::from(l.failed);
        r.tokens_in += l.tokens_in;
        r.tokens_out += l.tokens_out;
        if let Some(usd) = l.usd {
            *r.usd.get_or_insert(0.0) += usd;
        }
        if l.local {
            match l.why {
                Why::Policy => kept.by_policy += 1,
                Why::Sensitive => kept.by_sensitivity += 1,
                Why::Budget => kept.by_budget += 1,
                Why::Fallback | Why::Escalated => kept.by_fallback += 1,
            }
        }
    }
    (rows.into_values().collect(), kept)
}

/// Runs `hearth usage`.
pub fn run(config: &Config, args: &UsageArgs) -> Result<()> {
    let ledger = SpendLedger::new(
        config.data_dir().join("routing"),
        Limits {
            usd_per_day: config.budget.usd_per_day,
            usd_per_month: config.budget.usd_per_month,
            usd_per_task: config.budget.usd_per_task,
        },
    );
    let now = Stamp::now();
    let since = chrono::Local::now()
        .checked_sub_days(chrono::Days::new(u64::from(args.days.max(1) - 1)))
        .map_or_else(|| now.day.clone(), |d| d.format("%Y-%m-%d").to_string());
    let lines = read_usage(&ledger.usage_path())?;
    let (rows, kept_local) = summarise(&lines, &since);
    let budgets = ledger.state(&now)?;
    let report = Report {
        since,
        // From 0.0, not the empty sum's -0.0.
        total_usd: rows.iter().filter_map(|r| r.usd).fold(0.0, |a, b| a + b),
        requests: rows.iter().map(|r| r.requests).sum(),
        rows,
        kept_local,
        budgets,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    if report.rows.is_empty() {
        println!(
            "no model calls since {} (policy {})",
            report.since,
            config.routing.policy.as_str()
        );
    } else {
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED).set_header([
            "day",
            "backend",
            "model",
            "agent",
            "requests",
            "tokens in",
            "tokens out",
            "USD",
        ]);
        for r in &report.rows {
            t.add_row([
                r.day.clone(),
                match (r.local, r.backend.as_str()) {
                    (_, "local") | (false, _) => r.backend.clone(),
                    (true, b) => format!("{b} (local)"),
                },
                r.model.clone(),
                r.agent.clone(),
                if r.failed > 0 {
                    format!("{} ({} failed)", r.requests, r.failed)
                } else {
                    r.requests.to_string()
                },
                r.tokens_in.to_string(),
                r.tokens_out.to_string(),
                r.usd.map_or_else(|| "-".into(), |u| format!("{u:.6}")),
            ]);
        }
        println!("{t}");
    }
    let k = &report.kept_local;
    println!(
        "{} request(s) since {}, ${:.6} · kept local: {} by policy, {} sensitive, {} by budget, {} as fallback",
        report.requests,
        report.since,
        report.total_usd,
        k.by_policy,
        k.by_sensitivity,
        k.by_budget,
        k.by_fallback
    );
    if report.budgets.is_empty() {
        println!(
            "no budget set ([budget] usd_per_day, usd_per_month, usd_per_task in hearth.toml)"
        );
    } else {
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED)
            .set_header(["budget", "limit", "spent", "reserved", "left"]);
        for b in &report.budgets {
            t.add_row([
                b.budget.key().to_string(),
                format!("{:.4}", b.limit_usd),
                format!("{:.4}", b.spent_usd),
                format!("{:.4}", b.reserved_usd),
                format!("{:.4}", b.left_usd),
            ]);
        }
        println!("{t}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(day: &str, backend: &str, local: bool, why: Why, usd: Option<f64>) -> UsageLine {
        UsageLine {
            at_unix: 0,
            day: day.into(),
            backend: backend.into(),
            local,
            model: "m".into(),
            agent: "operative".into(),
            why,
            tokens_in: 10,
            tokens_out: 2,
            usd,
            failed: false,
        }
    }

    #[test]
    fn rows_sum_by_day_backend_model_agent_and_count_why_kept_local() {
        let lines = vec![
            line("2026-12-06", "cloud", false, Why::Policy, Some(0.5)),
            line("2026-12-07", "cloud", false, Why::Policy, Some(0.25)),
            line("2026-12-07", "cloud", false, Why::Policy, Some(0.25)),
            line("2026-12-07", "local", true, Why::Sensitive, None),
            line("2026-12-07", "local", true, Why::Budget, None),
            line("2026-12-07", "local", true, Why::Policy, None),
        ];
        let (rows, kept) = summarise(&lines, "2026-12-07");
        assert_eq!(rows.len(), 2, "{rows:?}");
        let cloud = rows.iter().find(|r| r.backend == "cloud").unwrap();
        assert_eq!((cloud.requests, cloud.tokens_in), (2, 20));
        assert_eq!(cloud.usd, Some(0.5));
        let local = rows.iter().find(|r| r.backend == "local").unwrap();
        assert_eq!(local.usd, None);
        assert_eq!(
            kept,
            KeptLocal {
                by_policy: 1,
                by_sensitivity: 1,
                by_budget: 1,
                by_fallback: 0
            }
        );
    }
}
