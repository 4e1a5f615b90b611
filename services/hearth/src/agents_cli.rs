//! `hearth agents list|card`: the agents this mesh has (its own specs and
//! the external A2A agents it may delegate to), and any agent card, fetched
//! and checked against A2A v1.0.

use anyhow::{Result, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use hearth_mesh::Config;
use hearth_orchestrator::remote::{check_card, fetch_card, tool_name};
use serde_json::{Value, json};

/// `hearth agents list`.
pub async fn list(config: &Config, json_out: bool) -> Result<()> {
    let specs = hearth_agents::Specs::load(config.agents.dir.as_deref())?;
    let http = reqwest::Client::new();
    let local: Vec<Value> = specs
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "role": format!("{:?}", s.role).to_lowercase(),
                "description": s.description,
                "tools": s.tools,
            })
        })
        .collect();
    let mut remote = Vec::new();
    for r in &config.agents.remote {
        let fetched = fetch_card(&http, &r.url, r.token.expose(), r.api_key.expose()).await;
        remote.push(match fetched {
            Ok((card, _)) => json!({
                "name": r.name,
                "tool": tool_name(&r.name),
                "url": r.url,
                "reachable": true,
                "card": card.name,
                "skills": card.skills.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
                "bindings": card.supported_interfaces.iter().map(|i| i.protocol_binding.clone()).collect::<Vec<_>>(),
            }),
            Err(e) => json!({
                "name": r.name, "tool": tool_name(&r.name), "url": r.url,
                "reachable": false, "error": e.to_string(),
            }),
        });
    }
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "local": local, "remote": remote }))?
        );
        return Ok(());
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_header(["agent", "role", "tools", "description"]);
    for a in &local {
        t.add_row([
            a["name"].as_str().unwrap_or("").to_string(),
            a["role"].as_str().unwrap_or("").to_string(),
            a["tools"]
                .as_array()
                .map(|x| {
                    x.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default(),
            a["description"].as_str().unwrap_or("").to_string(),
        ]);
    }
    println!("{t}");
    if remote.is_empty() {
        println!("no external agents ([[agents.remote]] in hearth.toml adds them)");
        return Ok(());
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_header([
        "external agent",
        "tool",
        "url",
        "card",
        "skills / error",
    ]);
    for r in &remote {
        let ok = r["reachable"].as_bool().unwrap_or(false);
        t.add_row([
            r["name"].as_str().unwrap_or("").to_string(),
            r["tool"].as_str().unwrap_or("").to_string(),
            r["url"].as_str().unwrap_or("").to_string(),
            if ok {
                format!("✅ {}", r["card"].as_str().unwrap_or(""))
            } else {
                "❌ unreachable".into()
            },
            if ok {
                r["skills"]
                    .as_array()
                    .map(|x| {
                        x.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default()
            } else {
                r["error"].as_str().unwrap_or("").to_string()
            },
        ]);
    }
    println!("{t}");
    Ok(())
}

/// `hearth agents card <url>`: exits non-zero when the card cannot be read
/// or has problems.
pub async fn card(url: &str, token: Option<&str>, json_out: bool) -> Result<()> {
    let http = reqwest::Client::new();
    let (card, raw) = fetch_card(&http, url, token.unwrap_or(""), "").await?;
    let problems = check_card(&raw);
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "valid": problems.is_empty(),
                "problems": problems,
                "card": raw,
            }))?
        );
    } else {
        println!("{} {} — {}", card.name, card.version, card.description);
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED)
            .set_header(["binding", "version", "url"]);
        for i in &card.supported_interfaces {
            t.add_row([
                i.protocol_binding.clone(),
                i.protocol_version.clone(),
                i.url.clone(),
            ]);
        }
        println!("{t}");
        let caps = &card.capabilities;
        println!(
            "streaming: {} · push notifications: {} · extended card: {}",
            caps.streaming.unwrap_or(false),
            caps.push_notifications.unwrap_or(false),
            caps.extended_agent_card.unwrap_or(false)
        );
        for s in &card.skills {
            println!("skill {}: {}", s.name, s.description);
        }
        if let Some(schemes) = &card.security_schemes {
            let mut names: Vec<&String> = schemes.keys().collect();
            names.sort();
            println!(
                "authentication: {}",
                names
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if problems.is_empty() {
            println!("✅ a valid A2A v1.0 card");
        } else {
            for p in &problems {
                println!("❌ {p}");
            }
        }
    }
    if !problems.is_empty() {
        bail!("the card has {} problem(s)", problems.len());
    }
    Ok(())
}
