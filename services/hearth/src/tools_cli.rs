//! `hearth tools list|call|approve` and `hearth mcp`: the toolhost and the
//! mesh's MCP face from the command line. With no NATS configured the
//! toolhost (or, for `hearth mcp`, the whole mesh) runs in this process;
//! with one, these talk to the mesh's toolhost over the bus.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use hearth_mesh::Config;
use hearth_mesh::clients::ToolhostClient;
use hearth_proto::v1::{ApproveToolsRequest, CallToolRequest, ListToolsRequest};
use rmcp::ServiceExt;

use hearth_launch::{Part, Session};

/// A toolhost to talk to: the mesh's over NATS, or one started here.
async fn toolhost(config: &Config) -> Result<(ToolhostClient, Session)> {
    let session = Session::open(config, &[Part::Toolhost]).await?;
    Ok((
        ToolhostClient::new(
            session.bus.clone(),
            config.subjects(),
            config.request_timeout(),
        ),
        session,
    ))
}

/// `hearth tools list`.
pub async fn list(config: &Config, json: bool) -> Result<()> {
    let (client, mesh) = toolhost(config).await?;
    let resp = client
        .list_tools(&ListToolsRequest::default())
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))
        .context("listing tools");
    mesh.close().await;
    let resp = resp?;
    if json {
        let tools: Vec<_> = resp
            .tools
            .iter()
            .map(|t| {
                serde_json::json!({
                    "name": t.name, "server": t.server, "status": t.status().name(),
                    "status_detail": t.status_detail,
                    "description": t.description,
                    "input_schema": serde_json::from_str::<serde_json::Value>(&t.input_schema_json).unwrap_or_default(),
                })
            })
            .collect();
        let servers: Vec<_> = resp
            .servers
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name, "transport": s.transport().name(), "state": s.state().name(),
                    "detail": s.detail, "tools": s.tools,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "tools": tools, "servers": servers })
            )?
        );
        return Ok(());
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_header(["tool", "server", "status", "description"]);
    for tool in &resp.tools {
        let d: String = tool.description.chars().take(70).collect();
        t.add_row([
            tool.name.clone(),
            tool.server.clone(),
            if tool.status_detail.is_empty() {
                tool.status().name().to_string()
            } else {
                format!("held: {}", tool.status_detail)
            },
            d,
        ]);
    }
    println!("{t}");
    let mut s = Table::new();
    s.load_preset(UTF8_FULL_CONDENSED).set_header([
        "server",
        "transport",
        "state",
        "tools",
        "detail",
    ]);
    for srv in &resp.servers {
        s.add_row([
            srv.name.clone(),
            srv.transport().name().to_string(),
            srv.state().name().to_string(),
            srv.tools.to_string(),
            srv.detail.clone(),
        ]);
    }
    println!("{s}");
    Ok(())
}

/// `hearth tools call <server.tool> '<json>'`.
pub async fn call(config: &Config, name: &str, arguments: &str, json: bool) -> Result<bool> {
    let (client, mesh) = toolhost(config).await?;
    let t0 = Instant::now();
    let resp = client
        .call_tool(&CallToolRequest {
            name: name.to_string(),
            arguments_json: arguments.to_string(),
            agent: String::new(),
            task_id: String::new(),
            deadline_unix_ms: 0,
            idempotency_key: String::new(),
        })
        .await;
    let wall = t0.elapsed().as_secs_f64() * 1e3;
    mesh.close().await;
    let resp = resp.map_err(|s| anyhow::anyhow!("{}", s.message()))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "tool": name, "content": resp.content, "is_error": resp.is_error,
                "duration_ms": resp.duration_ms, "wall_ms": wall,
            }))?
        );
    } else if resp.is_error {
        eprintln!("{name} reported an error: {}", resp.content);
    } else {
        println!("{}", resp.content);
    }
    Ok(!resp.is_error)
}

/// `hearth tools approve <server[.tool]>…`.
pub async fn approve(config: &Config, names: &[String], json: bool) -> Result<()> {
    if names.is_empty() {
        bail!("name a server or a tool to approve (hearth tools list shows held tools)");
    }
    let (client, mesh) = toolhost(config).await?;
    let mut approved = Vec::new();
    let mut failed = None;
    for n in names {
        match client
            .approve_tools(&ApproveToolsRequest { name: n.clone() })
            .await
        {
            Ok(r) => approved.extend(r.approved),
            Err(s) => {
                failed = Some(format!("{n}: {}", s.message()));
                break;
            }
        }
    }
    mesh.close().await;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "approved": approved, "error": failed })
            )?
        );
    } else {
        for a in &approved {
            println!("approved {a}");
        }
    }
    match failed {
        Some(f) => bail!("{f}"),
        None => Ok(()),
    }
}

/// `hearth mcp`: the mesh as an MCP server over stdio (logs go to stderr).
pub async fn mcp_stdio(config: &Config) -> Result<()> {
    let mesh = Session::open(
        config,
        &[
            Part::Engine,
            Part::Memory,
            Part::Toolhost,
            Part::Operative,
            Part::Orchestrator,
        ],
    )
    .await?;
    let bus = mesh.bus.clone();
    let server = hearth_gateway::mcp::MeshMcp::new(config, bus);
    let served = async {
        let running = server
            .serve(rmcp::transport::stdio())
            .await
            .context("serving MCP over stdio")?;
        running.waiting().await.context("serving MCP over stdio")?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    mesh.close().await;
    served
}
