//! `hearth models`: the catalog as a table, one model in detail, and where
//! each model's file is on this machine.

use anyhow::{Result, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use hearth_engine::catalog::{Catalog, models_dir};
use hearth_mesh::Config;
use serde::Serialize;

#[derive(Serialize)]
struct Row<'a> {
    #[serde(flatten)]
    model: &'a hearth_engine::catalog::Model,
    default: bool,
    on_disk: Option<String>,
}

fn gb(bytes: u64) -> String {
    format!("{:.2} GB", bytes as f64 / 1e9)
}

/// `hearth models list`.
pub fn list(config: &Config, json: bool) -> Result<()> {
    let catalog = Catalog::builtin()?;
    let dir = models_dir(config.engine.models_dir.as_deref());
    let rows: Vec<Row<'_>> = catalog
        .models
        .iter()
        .map(|m| Row {
            model: m,
            default: m.id == catalog.default,
            on_disk: catalog.locate(m, &dir).map(|p| p.display().to_string()),
        })
        .collect();
    if json {
        let out = serde_json::json!({ "models": rows, "cloud": catalog.cloud });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_header([
        "model", "family", "params", "quant", "file", "memory", "context", "licence", "on disk",
    ]);
    for r in &rows {
        let f = r.model.files.first();
        t.add_row([
            format!(
                "{}{}",
                r.model.id,
                if r.default { " (default)" } else { "" }
            ),
            r.model.family.clone(),
            format!("{}B", r.model.params_b),
            f.map_or_else(String::new, |f| f.quant.clone()),
            f.map_or_else(String::new, |f| gb(f.size_bytes)),
            f.map_or_else(String::new, |f| format!("{} GB", f.memory_gb)),
            r.model.context.to_string(),
            r.model.license.clone(),
            if r.on_disk.is_some() { "yes" } else { "-" }.into(),
        ]);
    }
    println!("{t}");
    let mut c = Table::new();
    c.load_preset(UTF8_FULL_CONDENSED).set_header([
        "cloud model",
        "provider",
        "$ / M in",
        "$ / M out",
        "context",
    ]);
    for m in &catalog.cloud {
        c.add_row([
            m.id.clone(),
            m.provider.clone(),
            format!("{:.2}", m.input_usd_per_mtok),
            format!("{:.2}", m.output_usd_per_mtok),
            m.context.map_or_else(|| "?".into(), |c| c.to_string()),
        ]);
    }
    println!("{c}");
    Ok(())
}

/// `hearth models show <id>`.
pub fn show(config: &Config, id: &str, json: bool) -> Result<()> {
    let catalog = Catalog::builtin()?;
    let dir = models_dir(config.engine.models_dir.as_deref());
    let Some(m) = catalog.model(id) else {
        if let Some(c) = catalog.cloud.iter().find(|c| c.id == id) {
            if json {
                println!("{}", serde_json::to_string_pretty(c)?);
            } else {
                println!(
                    "{} ({}): ${:.2} per million input tokens, ${:.2} per million output tokens",
                    c.id, c.provider, c.input_usd_per_mtok, c.output_usd_per_mtok
                );
            }
            return Ok(());
        }
        bail!("no model `{id}` in the catalog; `hearth models list` shows them all");
    };
    let row = Row {
        model: m,
        default: m.id == catalog.default,
        on_disk: catalog.locate(m, &dir).map(|p| p.display().to_string()),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&row)?);
        return Ok(());
    }
    let family = catalog.family(&m.family);
    println!(
        "{}{}",
        m.id,
        if row.default { " (the default)" } else { "" }
    );
    println!(
        "  family      {} ({}), chat template `{}`",
        m.family,
        family.map_or("?", |f| f.vendor.as_str()),
        family.map_or("?", |f| f.template.as_str())
    );
    println!("  parameters  {}B", m.params_b);
    println!("  context     {} tokens", m.context);
    println!(
        "  tuned       {}",
        if m.instruct {
            "instruction-tuned"
        } else {
            "pretrained base"
        }
    );
    println!("  licence     {}", m.license);
    println!("  engines     {}", m.engines.join(", "));
    if let Some(n) = &m.notes {
        println!("  notes       {n}");
    }
    for f in &m.files {
        println!(
            "  {}  {} · {} · needs ~{} GB · sha256 {}",
            f.quant,
            f.file,
            gb(f.size_bytes),
            f.memory_gb,
            f.sha256.as_deref().unwrap_or("not pinned")
        );
        if let Some(p) = &f.pypi {
            println!("          pip install {p}");
        }
        if let Some(u) = &f.url {
            println!("          {u}");
        }
    }
    match &row.on_disk {
        Some(p) => println!("  on disk     {p}"),
        None => println!("  on disk     no (looked in {})", dir.display()),
    }
    Ok(())
}
