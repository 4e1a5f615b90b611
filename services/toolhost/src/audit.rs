//! The audit log: one JSON line per tool call — when, which agent and task,
//! which tool, a digest of the arguments (never the arguments themselves,
//! which may hold secrets), the outcome and how long it took.
//!
//! Lines go through a bounded channel to one writer task, so a slow disk
//! never blocks a call; if the channel is full the line is dropped and a
//! warning logged rather than stalling the mesh.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The tool ran and succeeded.
    Ok,
    /// The tool ran and reported an error.
    ToolError,
    /// The toolhost refused it (permissions, a held tool, an unknown tool,
    /// malformed arguments).
    Refused,
    /// It could not run (server down, timeout).
    Failed,
}

/// One audit record.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: u128,
    /// The agent spec that called.
    pub agent: String,
    /// The task it was working on.
    pub task_id: String,
    /// `server.tool`.
    pub tool: String,
    /// SHA-256 of the arguments as sent.
    pub args_sha256: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Why, when it did not succeed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Wall time.
    pub duration_ms: f64,
}

impl Record {
    /// A record stamped now.
    pub fn new(
        agent: &str,
        task_id: &str,
        tool: &str,
        arguments_json: &str,
        outcome: Outcome,
        detail: Option<String>,
        duration_ms: f64,
    ) -> Self {
        let digest = Sha256::digest(arguments_json.as_bytes());
        Self {
            ts_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis()),
            agent: agent.into(),
            task_id: task_id.into(),
            tool: tool.into(),
            args_sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
            outcome,
            detail,
            duration_ms,
        }
    }
}

/// Where records go.
#[derive(Clone)]
pub struct AuditLog {
    tx: Option<mpsc::Sender<Record>>,
}

impl AuditLog {
    /// Appends to `path` (created with its directory); `None` logs nothing.
    pub fn open(path: Option<PathBuf>) -> Self {
        let Some(path) = path else {
            return Self { tx: None };
        };
        let (tx, mut rx) = mpsc::channel::<Record>(4096);
        tokio::spawn(async move {
            if let Some(dir) = path.parent() {
                let _ = tokio::fs::create_dir_all(dir).await;
            }
            let file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .await;
            let mut file = match file {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "the tool audit log cannot be opened; calls are not audited");
                    return;
                }
            };
            while let Some(r) = rx.recv().await {
                let Ok(mut line) = serde_json::to_vec(&r) else {
                    continue;
                };
                line.push(b'\n');
                if let Err(e) = file.write_all(&line).await {
                    tracing::warn!(error = %e, "audit record not written");
                }
                if rx.is_empty() {
                    let _ = file.flush().await;
                }
            }
        });
        Self { tx: Some(tx) }
    }

    /// Records a call (and logs it).
    pub fn record(&self, r: Record) {
        tracing::info!(
            tool = %r.tool, agent = %r.agent, task_id = %r.task_id,
            outcome = ?r.outcome, duration_ms = r.duration_ms, "tool call"
        );
        if let Some(tx) = &self.tx
            && tx.try_send(r).is_err()
        {
            tracing::warn!("the audit log is behind; a record was dropped");
        }
    }
}
