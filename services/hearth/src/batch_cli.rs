//! `hearth batch FILE.jsonl`: many tasks at once. Each input line is a
//! task (`{"id": …, "prompt": …}`, a JSON string, or plain text); each
//! result is written as one JSONL line (`{"id", "answer", "state",
//! "usage", "task_id"}`) as it arrives, so an interrupted batch loses
//! nothing: run the same command again and the lines already written are
//! not redone. Over NATS the tasks go through the orchestrator's durable
//! work queue, and a line's task id comes from the file, the line's id and
//! its prompt, so a resumed batch reattaches to the tasks still under way
//! instead of sending them again.

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use hearth_launch::{Door, Part};
use hearth_mesh::Config;
use hearth_proto::a2a::Role;
use hearth_proto::v1::SendTaskRequest;
use serde::Serialize;

/// Options of `hearth batch`.
#[derive(Debug, Clone, clap::Args)]
pub struct BatchArgs {
    /// The tasks, one a line: `{"id": "a1", "prompt": "…"}`, a JSON string,
    /// or plain text (its id is then its line number).
    pub file: PathBuf,
    /// Where the results go, one JSON line each (default: FILE with
    /// `.results.jsonl` in place of its extension). Lines already there are
    /// not redone.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Tasks in flight at once.
    #[arg(long, default_value_t = 8)]
    pub parallel: usize,
    /// New task ids: run every line not yet in the results afresh, instead
    /// of reattaching to tasks an interrupted run left under way.
    #[arg(long)]
    pub fresh: bool,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// One input line.
#[derive(Debug, Clone, PartialEq)]
struct Line {
    id: String,
    prompt: String,
}

/// Reads the tasks of `text`: every bad line is reported at once, with
/// its number, and nothing runs.
fn parse(text: &str) -> Result<Vec<Line>> {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    let mut seen = HashSet::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        let line = match serde_json::from_str::<serde_json::Value>(raw) {
            Ok(serde_json::Value::String(prompt)) => Some(Line {
                id: n.to_string(),
                prompt,
            }),
            Ok(serde_json::Value::Object(map)) => {
                let prompt = map.get("prompt").and_then(|p| p.as_str());
                let id = match map.get("id") {
                    None => Some(n.to_string()),
                    Some(serde_json::Value::String(s)) => Some(s.clone()),
                    Some(serde_json::Value::Number(x)) => Some(x.to_string()),
                    Some(_) => None,
                };
                match (id, prompt) {
                    (Some(id), Some(p)) => Some(Line {
                        id,
                        prompt: p.to_string(),
                    }),
                    (None, _) => {
                        bad.push(format!("line {n}: `id` must be a string or a number"));
                        continue;
                    }
                    (_, None) => {
                        bad.push(format!("line {n}: no `prompt` string"));
                        continue;
                    }
                }
            }
            Ok(_) => None,
            // Plain text is a prompt.
            Err(_) if !raw.starts_with('{') && !raw.starts_with('[') => Some(Line {
                id: n.to_string(),
                prompt: raw.to_string(),
            }),
            Err(e) => {
                bad.push(format!("line {n}: not JSON ({e})"));
                continue;
            }
        };
        let Some(line) = line else {
            bad.push(format!(
                "line {n}: a task is {{\"id\", \"prompt\"}}, a JSON string or plain text"
            ));
            continue;
        };
        if line.prompt.trim().is_empty() {
            bad.push(format!("line {n}: the prompt is empty"));
            continue;
        }
        if !seen.insert(line.id.clone()) {
            bad.push(format!("line {n}: the id `{}` is used twice", line.id));
            continue;
        }
        out.push(line);
    }
    if !bad.is_empty() {
        bail!(
            "the batch has {} bad line(s); nothing was run:\n  {}",
            bad.len(),
            bad.join("\n  ")
        );
    }
    Ok(out)
}

/// One result line.
#[derive(Debug, Serialize, serde::Deserialize)]
struct Output {
    id: String,
    answer: String,
    state: String,
    usage: serde_json::Value,
    task_id: String,
}

/// The ids already in the results at `path`; a torn last line (the
/// process died writing it) is cut off so appending goes on cleanly.
fn done_ids(path: &Path) -> Result<HashSet<String>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(HashSet::new());
    };
    let mut ids = HashSet::new();
    let mut good_len = 0;
    for chunk in text.split_inclusive('\n') {
        if !chunk.ends_with('\n') {
            break;
        }
        if let Ok(o) = serde_json::from_str::<Output>(chunk.trim()) {
            ids.insert(o.id);
        }
        good_len += chunk.len();
    }
    if good_len < text.len() {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        f.set_len(good_len as u64)
            .with_context(|| format!("cutting the torn last line of {}", path.display()))?;
    }
    Ok(ids)
}

/// The results file for `input` when `--out` is not given.
fn default_out(input: &Path) -> PathBuf {
    input.with_extension("results.jsonl")
}

/// A line's task id: the same for the same file, id and prompt, so a
/// resumed batch finds the task an interrupted one sent.
fn task_id_of(input: &Path, line: &Line) -> String {
    let key = format!(
        "hearth-batch\n{}\n{}\n{}",
        input.display(),
        line.id,
        line.prompt
    );
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, key.as_bytes()).to_string()
}

/// What a batch came to.
#[derive(Debug, Serialize)]
struct Summary {
    lines: usize,
    already_done: usize,
    completed: usize,
    failed: usize,
    errors: usize,
    wall_s: f64,
    median_latency_ms: Option<f64>,
    out: PathBuf,
    durable: bool,
}

/// Runs `hearth batch`; the exit code is non-zero when a line could not be
/// run (it is not written, so running the batch again retries it).
pub async fn run(config: &Config, args: BatchArgs) -> Result<i32> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let lines = parse(&text)?;
    let input = std::fs::canonicalize(&args.file).unwrap_or_else(|_| args.file.clone());
    let out_path = args.out.clone().unwrap_or_else(|| default_out(&args.file));
    let done = done_ids(&out_path)?;
    let todo: Vec<Line> = lines
        .iter()
        .filter(|l| !done.contains(&l.id))
        .cloned()
        .collect();
    let already_done = lines.len() - todo.len();
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&out_path)
        .with_context(|| format!("opening {}", out_path.display()))?;
    let started = Instant::now();
    let session = hearth_launch::Session::open(config, &Part::TASK).await?;
    let door = Door::open(config, session.bus.clone()).await;
    let durable = door.queue().is_some();
    let tty = std::io::stderr().is_terminal() && !args.json;
    let total = todo.len();
    let mut finished = 0;
    if tty && already_done > 0 {
        eprintln!(
            "{already_done} of {} line(s) already in {}: not redone",
            lines.len(),
            out_path.display()
        );
    }
    let runs = futures::stream::iter(todo.into_iter().map(|line| {
        let door = door.clone();
        let task_id = if args.fresh {
            uuid::Uuid::now_v7().to_string()
        } else {
            task_id_of(&input, &line)
        };
        async move {
            let req = SendTaskRequest {
                message: Some(hearth_mesh::a2a::text_message(
                    Role::User,
                    &line.prompt,
                    "",
                    "",
                )),
                task_id,
                ..Default::default()
            };
            let result = door.run(&req, &|_| {}).await;
            (line, result)
        }
    }))
    .buffer_unordered(args.parallel.max(1));
    futures::pin_mut!(runs);
    let (mut completed, mut failed, mut errors) = (0, 0, 0);
    let mut latencies = Vec::new();
    while let Some((line, result)) = runs.next().await {
        finished += 1;
        let n = finished;
        match result {
            Ok(answer) => {
                if answer.completed() {
                    completed += 1;
                } else {
                    failed += 1;
                }
                latencies.push(answer.usage.latency_ms);
                let row = Output {
                    id: line.id,
                    answer: answer.answer,
                    state: answer.state,
                    usage: serde_json::to_value(&answer.usage)?,
                    task_id: answer.task_id,
                };
                // One whole line per result, flushed: a crash tears at most
                // the line being written.
                let mut bytes = serde_json::to_vec(&row)?;
                bytes.push(b'\n');
                out.write_all(&bytes)
                    .and_then(|()| out.flush())
                    .with_context(|| format!("writing {}", out_path.display()))?;
            }
            Err(e) => {
                errors += 1;
                eprintln!(
                    "line {}: {e:#} (not written; run the batch again to retry it)",
                    line.id
                );
            }
        }
        if tty {
            eprint!(
                "\r[{n}/{total}] {completed} completed, {failed} failed, {errors} error(s) · {:.0} s",
                started.elapsed().as_secs_f64()
            );
            let _ = std::io::stderr().flush();
        }
    }
    if tty && total > 0 {
        eprintln!();
    }
    session.close().await;
    latencies.sort_by(f64::total_cmp);
    let summary = Summary {
        lines: lines.len(),
        already_done,
        completed,
        failed,
        errors,
        wall_s: started.elapsed().as_secs_f64(),
        median_latency_ms: latencies.get(latencies.len() / 2).copied(),
        out: out_path,
        durable,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "{} line(s): {} already done, {} completed, {} failed, {} error(s) in {:.1} s{} → {}{}",
            summary.lines,
            summary.already_done,
            summary.completed,
            summary.failed,
            summary.errors,
            summary.wall_s,
            summary
                .median_latency_ms
                .map(|m| format!(" (median {m:.0} ms a task)"))
                .unwrap_or_default(),
            summary.out.display(),
            if durable {
                " (through the durable work queue)"
            } else {
                ""
            }
        );
    }
    Ok(i32::from(errors > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_may_be_objects_strings_or_plain_text() {
        let lines = parse(
            "{\"id\": \"a\", \"prompt\": \"What is 2+2?\"}\n\"Capital of France?\"\n\nwrite hi to a.txt\n{\"id\": 7, \"prompt\": \"x\"}\n",
        )
        .unwrap();
        let ids: Vec<&str> = lines.iter().map(|l| l.id.as_str()).collect();
        assert_eq!(ids, ["a", "2", "4", "7"]);
        assert_eq!(lines[2].prompt, "write hi to a.txt");
    }

    #[test]
    fn bad_lines_are_all_reported_and_nothing_runs() {
        let err = parse("{\"id\": \"a\"}\n{\"prompt\": \"x\", \"id\": \"b\"}\n{\"prompt\": \"y\", \"id\": \"b\"}\n{oops\n[1]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1: no `prompt`"), "{err}");
        assert!(err.contains("line 3: the id `b` is used twice"), "{err}");
        assert!(err.contains("line 4: not JSON"), "{err}");
        assert!(err.contains("line 5: a task is"), "{err}");
    }

    #[test]
    fn a_torn_last_result_is_cut_and_finished_ids_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.jsonl");
        std::fs::write(
            &p,
            "{\"id\":\"a\",\"answer\":\"4\",\"state\":\"TASK_STATE_COMPLETED\",\"usage\":{},\"task_id\":\"t\"}\n{\"id\":\"b\",\"ans",
        )
        .unwrap();
        let ids = done_ids(&p).unwrap();
        assert_eq!(ids, HashSet::from(["a".to_string()]));
        assert!(std::fs::read_to_string(&p).unwrap().ends_with("\"t\"}\n"));
    }

    #[test]
    fn a_line_keeps_its_task_id_and_fresh_input_gets_another() {
        let l = Line {
            id: "1".into(),
            prompt: "hi".into(),
        };
        let a = task_id_of(Path::new("/x/b.jsonl"), &l);
        assert_eq!(a, task_id_of(Path::new("/x/b.jsonl"), &l));
        assert_ne!(a, task_id_of(Path::new("/x/c.jsonl"), &l));
        assert_eq!(
            default_out(Path::new("/x/b.jsonl")),
            Path::new("/x/b.results.jsonl")
        );
    }
}
