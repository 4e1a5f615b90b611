//! `hearth tasks`: the tasks of the durable mesh over NATS, read from the
//! events stream the work queue keeps (`<PREFIX>_EVENTS`): list them, show
//! one (and with `--wait`, reattach to it and wait for its answer), cancel
//! one wherever it runs, retry one that ended.

use std::time::Duration;

use anyhow::{Result, bail};
use comfy_table::Table;
use comfy_table::presets::UTF8_FULL_CONDENSED;
use hearth_mesh::Config;
use hearth_mesh::a2a::{answer_of, is_final, state_name, text_of};
use hearth_mesh::work::{WorkQueue, WorkSettings};
use hearth_proto::a2a::{Role, stream_response::Payload};
use hearth_proto::v1::{SendTaskRequest, TaskEvent};

/// `hearth tasks …`.
#[derive(Debug, clap::Subcommand)]
pub enum TasksCommand {
    /// The newest tasks, with their state and answer (subtasks name the
    /// task that delegated them).
    ///
    /// Example: hearth tasks list --limit 10
    List {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One task: its state, answer and every event kept; with --wait,
    /// reattach to it and wait for its answer (after a restart of this
    /// client, or of the orchestrator running it).
    ///
    /// Example: hearth tasks show 0193… --wait
    Show {
        /// The task's id (`hearth ask --json` and `hearth tasks list` print it).
        id: String,
        /// Wait until it ends, then print its answer.
        #[arg(long)]
        wait: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a task wherever it runs (its subtasks too); a task still
    /// waiting in the queue ends canceled when it is picked up.
    Cancel {
        /// The task's id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run an ended task's request again, as a new task, and wait for its answer.
    Retry {
        /// The ended task's id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The work queue of the running mesh, attached as a client, and the bus.
async fn queue(config: &Config) -> Result<(hearth_mesh::SharedBus, WorkQueue)> {
    if config.nats_url.is_none() {
        bail!(
            "tasks are kept by the durable mesh over NATS: HEARTH_NATS_URL is not set, so a task lives only as long as its `hearth ask` (start a mesh: `hearth serve …`, see the README's \"Durable work\")"
        );
    }
    if !config.work.durable {
        bail!("[work] durable = false: this mesh keeps no tasks (tasks go by request)");
    }
    let bus = hearth_launch::connect_bus(config).await?;
    let Some(client) = bus.nats() else {
        bail!("the bus is not NATS");
    };
    let queue = WorkQueue::attach(
        client.clone(),
        &config.subjects(),
        WorkSettings::from_config(config),
    )
    .await?;
    Ok((bus, queue))
}

/// Runs `hearth tasks …`; the exit code is non-zero for a task that did
/// not complete (show --wait, retry).
pub async fn run(config: &Config, what: TasksCommand) -> Result<i32> {
    let (bus, queue) = queue(config).await?;
    match what {
        TasksCommand::List { limit, json } => {
            let tasks = queue.tasks(limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tasks)?);
                return Ok(0);
            }
            if tasks.is_empty() {
                println!("no tasks kept (tasks are kept for [work] step_log_hours)");
                return Ok(0);
            }
            let mut t = Table::new();
            t.load_preset(UTF8_FULL_CONDENSED);
            t.set_header([
                "task",
                "state",
                "delegated by",
                "worker",
                "answer / last status",
            ]);
            for s in &tasks {
                t.add_row([
                    s.task_id.clone(),
                    short_state(&s.state),
                    s.parent.clone(),
                    s.worker.clone(),
                    clip(&s.text, 60),
                ]);
            }
            println!("{t}");
            Ok(0)
        }
        TasksCommand::Show { id, wait, json } => {
            if wait {
                let door = hearth_launch::Door::from_queue(config, bus, queue);
                let answer = door.reattach(&id).await?;
                print_answer(&answer, json)?;
                return Ok(i32::from(!answer.completed()));
            }
            let events = queue.history(&id).await?;
            if events.is_empty() {
                bail!("no task {id} is kept (`hearth tasks list` shows those that are)");
            }
            if json {
                let rows: Vec<serde_json::Value> = events.iter().map(event_json).collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({"id": id, "events": rows}))?
                );
                return Ok(0);
            }
            let mut t = Table::new();
            t.load_preset(UTF8_FULL_CONDENSED);
            t.set_header(["event", "state", "worker", "text"]);
            for ev in &events {
                let v = event_json(ev);
                let field = |k: &str| v[k].as_str().unwrap_or_default().to_string();
                t.add_row([
                    field("kind"),
                    short_state(&field("state")),
                    field("worker"),
                    clip(&field("text"), 70),
                ]);
            }
            println!("{t}");
            Ok(0)
        }
        TasksCommand::Cancel { id, json } => {
            if let Some(ev) = queue.final_event(&id).await? {
                let v = event_json(&ev);
                bail!(
                    "task {id} has ended ({}) and cannot be canceled",
                    short_state(v["state"].as_str().unwrap_or_default())
                );
            }
            queue
                .cancel(&id, "canceled by `hearth tasks cancel`")
                .await?;
            // Its holder answers with its final event; one waiting in the
            // queue ends when it is picked up.
            let mut state = None;
            for _ in 0..50 {
                if let Some(ev) = queue.final_event(&id).await? {
                    state = event_json(&ev)["state"].as_str().map(str::to_string);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            if json {
                println!(
                    "{}",
                    serde_json::json!({"id": id, "cancel_requested": true, "state": state})
                );
            } else {
                match state {
                    Some(s) => println!("task {id}: {}", short_state(&s)),
                    None => println!(
                        "task {id}: cancel requested; it ends canceled when an instance picks it up"
                    ),
                }
            }
            Ok(0)
        }
        TasksCommand::Retry { id, json } => {
            let Some(ev) = queue.final_event(&id).await? else {
                bail!(
                    "task {id} has not ended (or is not kept): `hearth tasks show {id}`; cancel it first to run it again"
                );
            };
            let Some(Payload::Task(task)) = ev.event.and_then(|e| e.payload) else {
                bail!("task {id}'s final event holds no task");
            };
            let Some(message) = task.history.iter().find(|m| m.role == Role::User as i32) else {
                bail!("task {id} keeps no request to run again");
            };
            if !message.reference_task_ids.is_empty() {
                bail!(
                    "task {id} is a subtask of {}: retry that task instead",
                    message.reference_task_ids.join(", ")
                );
            }
            let req = SendTaskRequest {
                message: Some(hearth_mesh::a2a::text_message(
                    Role::User,
                    text_of(message),
                    "",
                    "",
                )),
                task_id: uuid::Uuid::now_v7().to_string(),
                ..Default::default()
            };
            if !json {
                eprintln!("retrying {id} as {}", req.task_id);
            }
            let door = hearth_launch::Door::from_queue(config, bus, queue);
            let answer = door.run(&req, &|_| {}).await?;
            print_answer(&answer, json)?;
            Ok(i32::from(!answer.completed()))
        }
    }
}

fn print_answer(answer: &hearth_launch::Answer, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(answer)?);
    } else {
        println!("{}", answer.answer);
        eprintln!("— {} · task {}", short_state(&answer.state), answer.task_id);
    }
    Ok(())
}

/// `TASK_STATE_COMPLETED` → `completed`.
fn short_state(s: &str) -> String {
    s.trim_start_matches("TASK_STATE_").to_lowercase()
}

/// At most `n` characters of `s`, on one line.
fn clip(s: &str, n: usize) -> String {
    let one: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() <= n {
        one
    } else {
        format!("{}…", one.chars().take(n).collect::<String>())
    }
}

/// One event as `hearth tasks show --json` prints it.
fn event_json(ev: &TaskEvent) -> serde_json::Value {
    match ev.event.as_ref().and_then(|e| e.payload.as_ref()) {
        Some(Payload::Task(t)) => {
            let state = t.status.as_ref().map_or(0, |s| s.state);
            serde_json::json!({
                "kind": "task",
                "state": state_name(state),
                "final": is_final(state),
                "worker": ev.worker,
                "text": answer_of(t),
            })
        }
        Some(Payload::StatusUpdate(u)) => {
            let st = u.status.as_ref();
            serde_json::json!({
                "kind": "status",
                "state": state_name(st.map_or(0, |s| s.state)),
                "worker": ev.worker,
                "text": st.and_then(|s| s.message.as_ref()).map(text_of).unwrap_or_default(),
            })
        }
        _ => serde_json::json!({"kind": "other", "worker": ev.worker}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_short_and_text_is_clipped_to_one_line() {
        assert_eq!(short_state("TASK_STATE_CANCELED"), "canceled");
        assert_eq!(clip("a\nb  c", 10), "a b c");
        assert_eq!(clip("abcdef", 3), "abc…");
    }
}
