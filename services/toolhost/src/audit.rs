//! The audit log: one JSON line per tool call — when, which agent and task,
//! which tool, a digest of the arguments (never the arguments themselves,
//! which may hold secrets), the outcome and how long it took.
//!
//! Lines go through a bounded channel to one writer thread, so a slow disk
//! never blocks a call; if the channel is full the line is dropped and a
//! warning logged rather than stalling the mesh.

use std::io::Write;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sha2::{Digest, Sha256};

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
    /// Its task was canceled while it ran: the call was canceled at the
    /// server.
    Canceled,
    /// Answered from an earlier call with the same idempotency key (a step
    /// asked again after a crash): the tool did not run again.
    Replayed,
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
    tx: Option<std::sync::mpsc::SyncSender<Record>>,
}

/// Records queued for the writer before new ones are dropped.
const QUEUE: usize = 4096;

impl AuditLog {
    /// Appends to `path` (created with its directory); `None` logs nothing.
    ///
    /// One OS thread of its own writes the lines (plain blocking writes,
    /// flushed whenever the queue runs dry), so a record costs a call a
    /// channel send — no task, no trip through the runtime's blocking pool.
    pub fn open(path: Option<PathBuf>) -> Self {
        let Some(path) = path else {
            return Self { tx: None };
        };
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let file = match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "the tool audit log cannot be opened; calls are not audited");
                return Self { tx: None };
            }
        };
        let (tx, rx) = std::sync::mpsc::sync_channel::<Record>(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("hearth-audit".into())
            .spawn(move || {
                let mut out = std::io::BufWriter::new(file);
                // Ends when every sender is gone.
                while let Ok(first) = rx.recv() {
                    let mut next = Some(first);
                    while let Some(r) = next {
                        if let Ok(mut line) = serde_json::to_vec(&r) {
                            line.push(b'\n');
                            if let Err(e) = out.write_all(&line) {
                                tracing::warn!(error = %e, "audit record not written");
                            }
                        }
                        next = rx.try_recv().ok();
                    }
                    if let Err(e) = out.flush() {
                        tracing::warn!(error = %e, "audit log not flushed");
                    }
                }
            });
        match spawned {
            Ok(_) => Self { tx: Some(tx) },
            Err(e) => {
                tracing::error!(error = %e, "the tool audit log's writer did not start; calls are not audited");
                Self { tx: None }
            }
        }
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
