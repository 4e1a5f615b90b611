//! Idempotent tool calls. A call that carries an idempotency key (the task
//! step it is, the same on every attempt at a durable task) runs the tool
//! at most once on this toolhost: a later call with the key gets the first
//! call's answer again, and a call that arrives while the first still runs
//! (its operative died mid-call and the step was redelivered elsewhere)
//! waits for that call instead of starting the tool a second time. The step
//! log covers a step whose result was recorded; this covers the window
//! between the tool starting and its result being recorded.
//!
//! Only answers are kept (a tool's own error is an answer): a call that
//! could not run (its server was down, it timed out) may run again. A key
//! reused for a different call (another agent, tool or arguments) is not
//! answered from the first; that call runs unkeyed. Keys are kept for a
//! while (the step log's lifetime) and at most [`Once::CAP`] of them.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hearth_proto::v1::CallToolResponse;
use tokio::sync::OnceCell;
use tonic::Status;

/// One key's call: what it was, and its answer once it has one.
struct Slot {
    call: String,
    answer: OnceCell<CallToolResponse>,
}

#[derive(Default)]
struct Keys {
    slots: HashMap<String, Arc<Slot>>,
    /// Keys by age, oldest first, for expiry.
    order: VecDeque<(Instant, String)>,
}

/// The keyed calls of one toolhost.
pub struct Once {
    keys: Mutex<Keys>,
    keep: Duration,
}

/// How a keyed call was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// The tool ran for this call.
    Ran,
    /// The answer of an earlier call with the key: the tool did not run.
    Replayed,
}

impl Once {
    /// The most keys kept at once (the oldest go first).
    pub const CAP: usize = 4096;

    /// Keeps each key's answer for `keep`.
    pub fn new(keep: Duration) -> Self {
        Self {
            keys: Mutex::default(),
            keep,
        }
    }

    /// Runs `run` for the call `call` (its agent, task, tool and arguments,
    /// as one string) under `key` — unless the key has an answer, or a call
    /// under it is running, whose answer is returned instead.
    pub async fn call<F, Fut>(
        &self,
        key: &str,
        call: String,
        run: F,
    ) -> Result<(CallToolResponse, Answered), Status>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<CallToolResponse, Status>>,
    {
        let slot = self.slot(key, &call);
        let Some(slot) = slot else {
            tracing::warn!(
                key,
                "an idempotency key reused for another call: that call runs unkeyed"
            );
            return run().await.map(|r| (r, Answered::Ran));
        };
        let mut ran = false;
        let answer = slot
            .answer
            .get_or_try_init(|| {
                ran = true;
                run()
            })
            .await?;
        Ok((
            answer.clone(),
            if ran {
                Answered::Ran
            } else {
                Answered::Replayed
            },
        ))
    }

    /// The slot for `key`, made if new; `None` when the key belongs to a
    /// different call.
    fn slot(&self, key: &str, call: &str) -> Option<Arc<Slot>> {
        let mut keys = hearth_mesh::sync::lock(&self.keys);
        let now = Instant::now();
        while let Some((at, old)) = keys.order.front() {
            if now.duration_since(*at) < self.keep && keys.slots.len() < Self::CAP {
                break;
            }
            let old = old.clone();
            keys.order.pop_front();
            keys.slots.remove(&old);
        }
        if let Some(slot) = keys.slots.get(key) {
            return (slot.call == call).then(|| slot.clone());
        }
        let slot = Arc::new(Slot {
            call: call.to_string(),
            answer: OnceCell::new(),
        });
        keys.slots.insert(key.to_string(), slot.clone());
        keys.order.push_back((now, key.to_string()));
        Some(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn answer(text: &str) -> CallToolResponse {
        CallToolResponse {
            content: text.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_key_runs_once_while_running_and_after() {
        let once = Arc::new(Once::new(Duration::from_secs(60)));
        let runs = Arc::new(AtomicUsize::new(0));
        let slow = |runs: Arc<AtomicUsize>| async move {
            runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(answer("appended"))
        };
        let (a, b) = tokio::join!(
            once.call("s.t.1", "call".into(), || slow(runs.clone())),
            once.call("s.t.1", "call".into(), || slow(runs.clone())),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(a.0.content, "appended");
        assert_eq!(b.0.content, "appended");
        assert_ne!(a.1, b.1, "one ran, one was replayed");
        let (c, how) = once
            .call("s.t.1", "call".into(), || slow(runs.clone()))
            .await
            .unwrap();
        assert_eq!((c.content.as_str(), how), ("appended", Answered::Replayed));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failure_is_not_kept_and_a_reused_key_is_not_answered_from_another_call() {
        let once = Once::new(Duration::from_secs(60));
        let failed = once
            .call("k", "call".into(), || async {
                Err(Status::unavailable("server down"))
            })
            .await;
        assert!(failed.is_err());
        let (r, how) = once
            .call("k", "call".into(), || async { Ok(answer("second try")) })
            .await
            .unwrap();
        assert_eq!((r.content.as_str(), how), ("second try", Answered::Ran));
        let (r, how) = once
            .call("k", "another call".into(), || async { Ok(answer("other")) })
            .await
            .unwrap();
        assert_eq!((r.content.as_str(), how), ("other", Answered::Ran));
    }

    #[tokio::test]
    async fn keys_expire() {
        let once = Once::new(Duration::ZERO);
        for text in ["first", "second"] {
            let (r, how) = once
                .call("k", "call".into(), || async move { Ok(answer(text)) })
                .await
                .unwrap();
            assert_eq!((r.content.as_str(), how), (text, Answered::Ran));
        }
    }
}
