//! The decode loop: one thread that owns the llama.cpp context and decodes
//! every running generation together (continuous batching).
//!
//! Each generation runs in a slot, a llama.cpp sequence id with its own part
//! of the KV cache. A new request takes the free slot whose cached tokens
//! share the longest prefix with its prompt, so an agent's next turn (same
//! system prompt, same history, a few new messages) decodes only what is
//! new. Every step builds one batch holding the next token of each
//! generating slot and as much pending prompt as fits, decodes it once, and
//! samples each slot that asked for logits. Requests beyond the slots wait in
//! the channel; a caller that goes away frees its slot at the next step.
//!
//! Replies that copy from their prompt (a task restated for an operative,
//! code or text the user gave, a sentence of a search result) decode
//! several tokens a step by prompt lookup: when the last tokens of a slot
//! also occur earlier in its context, the tokens that followed them there
//! go into the batch as a draft, each with its own logits. The sampler then
//! runs on each position in order exactly as it would one token at a time,
//! and the draft is kept up to the first token it did not choose; the rest
//! leave the cache. The reply is the one sequential decoding gives — only
//! faster when the draft is right.
//!
//! Everything that would make llama.cpp abort (a batch over `n_batch`, a
//! sequence over its share of the context, a sequence id out of range) is
//! checked here first and answered as an error.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use tokio::sync::mpsc::UnboundedSender;

/// One generation handed to the worker.
pub struct Job {
    /// The prompt, already templated and tokenized.
    pub prompt: Vec<LlamaToken>,
    /// The sampler chain (without the grammar).
    pub sampler: LlamaSampler,
    /// The grammar a constrained reply must follow.
    pub grammar: Option<LlamaSampler>,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Stop when the text ends with any of these.
    pub stop: Vec<String>,
    /// Where the output goes.
    pub out: UnboundedSender<Event>,
}

/// What the worker reports for a job.
#[derive(Debug)]
pub enum Event {
    /// Text since the last piece (always whole UTF-8 characters).
    Piece(String),
    /// The generation ended.
    Done {
        /// Prompt tokens.
        tokens_in: u64,
        /// Of which found in the cache (not decoded again).
        tokens_cached: u64,
        /// Generated tokens.
        tokens_out: u64,
        /// `stop` (end of generation or a stop sequence) or `length`.
        finish: &'static str,
    },
    /// It failed.
    Error(String),
}

/// Sizes the worker runs with.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Parallel sequences.
    pub slots: usize,
    /// Tokens per slot (prompt + output).
    pub slot_context: usize,
    /// Most tokens in one decode call.
    pub n_batch: usize,
    /// The model's attention window in its sliding-window layers (0: none).
    pub n_swa: usize,
    /// Most draft tokens a step verifies by prompt lookup (0: none).
    pub draft: usize,
}

struct Active {
    job: Job,
    /// Prompt tokens not yet decoded.
    pending: Vec<LlamaToken>,
    /// Batch index whose logits this slot samples next, if any.
    logits_at: Option<i32>,
    /// Draft tokens in this step's batch after the last sampled token (with
    /// logits at the indices after `logits_at`).
    draft: Vec<LlamaToken>,
    /// Draft tokens proposed and kept, over the whole generation.
    drafted: (u64, u64),
    /// When the job was admitted, and when its first token was sampled.
    admitted: std::time::Instant,
    first_token: Option<std::time::Instant>,
    /// Tokens whose top choice the grammar refused (each costs a pass of
    /// the grammar over the whole vocabulary).
    refused: u32,
    tokens_cached: u64,
    generated: usize,
    /// Undecoded UTF-8 bytes (a character split across tokens).
    utf8: Vec<u8>,
    /// Text generated so far, for stop sequences.
    text: String,
    /// Bytes of `text` already sent.
    sent: usize,
}

struct Slot {
    /// The tokens whose keys and values are in this slot's cache.
    cached: Vec<LlamaToken>,
    active: Option<Active>,
    /// When it last took a job (a counter), for least-recently-used choice.
    used: u64,
}

/// Runs until every sender of `jobs` is gone.
pub fn run(model: Arc<LlamaModel>, mut ctx: LlamaContext<'_>, jobs: Receiver<Job>, limits: Limits) {
    let mut slots: Vec<Slot> = (0..limits.slots)
        .map(|_| Slot {
            cached: Vec::new(),
            active: None,
            used: 0,
        })
        .collect();
    let mut batch = LlamaBatch::new(limits.n_batch, 1);
    let mut clock = 0u64;
    loop {
        // Admit waiting jobs into free slots; block only when idle.
        while slots.iter().any(|s| s.active.is_none()) {
            let job = if slots.iter().all(|s| s.active.is_none()) {
                match jobs.recv() {
                    Ok(j) => j,
                    Err(_) => return,
                }
            } else {
                match jobs.try_recv() {
                    Ok(j) => j,
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            };
            clock += 1;
            admit(&mut ctx, &mut slots, job, limits, clock);
        }

        // Drop generations whose caller went away.
        for (i, slot) in slots.iter_mut().enumerate() {
            if slot.active.as_ref().is_some_and(|a| a.job.out.is_closed()) {
                slot.active = None;
                forget(&mut ctx, slot, i);
            }
        }

        // One batch: each generating slot's next token, then pending prompt.
        batch.clear();
        let mut room = limits.n_batch;
        for (i, slot) in slots.iter_mut().enumerate() {
            let Some(a) = slot.active.as_mut() else {
                continue;
            };
            a.logits_at = None;
            a.draft.clear();
            if !a.pending.is_empty() || room == 0 {
                continue;
            }
            let Some(&last) = slot.cached.last() else {
                continue;
            };
            // The last sampled token is in `cached` but not yet decoded.
            let pos = slot.cached.len() - 1;
            if batch.add(last, pos as i32, &[i as i32], true).is_ok() {
                a.logits_at = Some(batch.n_tokens() - 1);
                room -= 1;
                let most = limits
                    .draft
                    .min(room)
                    .min(a.job.max_tokens.saturating_sub(a.generated + 1))
                    .min(limits.slot_context.saturating_sub(slot.cached.len() + 1));
                for (k, d) in lookup(&slot.cached, most).into_iter().enumerate() {
                    if batch
                        .add(d, (pos + 1 + k) as i32, &[i as i32], true)
                        .is_err()
                    {
                        break;
                    }
                    a.draft.push(d);
                    room -= 1;
                }
            }
        }
        for (i, slot) in slots.iter_mut().enumerate() {
            let Some(a) = slot.active.as_mut() else {
                continue;
            };
            if a.pending.is_empty() || room == 0 {
                continue;
            }
            let take = a.pending.len().min(room);
            let chunk: Vec<LlamaToken> = a.pending.drain(..take).collect();
            let last_of_prompt = a.pending.is_empty();
            for (k, t) in chunk.iter().enumerate() {
                let pos = slot.cached.len();
                let wants = last_of_prompt && k + 1 == chunk.len();
                if batch.add(*t, pos as i32, &[i as i32], wants).is_err() {
                    break;
                }
                slot.cached.push(*t);
                if wants {
                    a.logits_at = Some(batch.n_tokens() - 1);
                }
            }
            room -= take;
        }
        if batch.n_tokens() == 0 {
            continue;
        }
        if let Err(e) = ctx.decode(&mut batch) {
            tracing::warn!(error = %e, "llama.cpp decode failed");
            for (i, slot) in slots.iter_mut().enumerate() {
                if let Some(a) = slot.active.take() {
                    let _ = a.job.out.send(Event::Error(format!("decode failed: {e}")));
                }
                forget(&mut ctx, slot, i);
            }
            continue;
        }

        // Sample every slot that has logits in this batch: the position
        // after its last token, then each draft token while the sampler
        // chooses the draft.
        let vocab = model.vocab();
        for (i, slot) in slots.iter_mut().enumerate() {
            let Some(a) = slot.active.as_mut() else {
                continue;
            };
            let Some(mut at) = a.logits_at else { continue };
            let draft = std::mem::take(&mut a.draft);
            // Tokens whose keys and values are in the cache now: those in
            // `cached` (its last was decoded in this batch) and the draft.
            let decoded = slot.cached.len();
            let mut kept = 0usize;
            let mut finish = None;
            loop {
                let Some(token) = sample(&ctx, at, &mut a.job, &mut a.refused) else {
                    let _ = a.job.out.send(Event::Error(
                        "the grammar allowed no token (the constrained reply cannot continue)"
                            .into(),
                    ));
                    finish = Some("error");
                    break;
                };
                // A sampled token joins `cached` now and is decoded in the
                // next batch (unless it is the draft's, decoded already); if
                // the generation ends first it is taken out again.
                a.first_token.get_or_insert_with(std::time::Instant::now);
                if vocab.is_eog(token) {
                    finish = Some("stop");
                    break;
                }
                a.generated += 1;
                a.utf8
                    .extend_from_slice(&vocab.token_to_piece(token, false, None));
                take_utf8(&mut a.utf8, &mut a.text);
                slot.cached.push(token);
                if let Some(cut) = stop_at(&a.text, &a.job.stop) {
                    a.text.truncate(cut);
                    finish = Some("stop");
                } else if a.generated >= a.job.max_tokens
                    || slot.cached.len() >= limits.slot_context
                {
                    finish = Some("length");
                }
                if finish.is_some() {
                    slot.cached.pop();
                    break;
                }
                if draft.get(kept) == Some(&token) {
                    kept += 1;
                    at += 1;
                    continue;
                }
                break;
            }
            a.drafted.0 += draft.len() as u64;
            a.drafted.1 += kept as u64;
            // Draft tokens the sampler did not choose leave the cache.
            let valid = slot.cached.len().min(decoded + kept);
            if decoded + draft.len() > valid
                && ctx
                    .kv_cache_seq_rm(i as i32, Some(valid as u32), None)
                    .is_err()
            {
                forget(&mut ctx, slot, i);
                let Some(a) = slot.active.take() else {
                    continue;
                };
                let _ = a.job.out.send(Event::Error(
                    "this model's cache cannot drop a rejected draft (set engine.draft_tokens = 0)"
                        .into(),
                ));
                continue;
            }
            let Some(a) = slot.active.as_mut() else {
                continue;
            };
            if finish == Some("error") {
                slot.active = None;
                continue;
            }
            // Send what can no longer turn into a stop sequence.
            let safe = if finish.is_some() {
                a.text.len()
            } else {
                held_back(&a.text, &a.job.stop)
            };
            if safe > a.sent {
                let piece = a.text[a.sent..safe].to_string();
                a.sent = safe;
                let _ = a.job.out.send(Event::Piece(piece));
            }
            if let Some(finish) = finish {
                let first = a.first_token.unwrap_or(a.admitted);
                tracing::debug!(
                    prefill_tokens = a.job.prompt.len() as u64 - a.tokens_cached,
                    prefill_ms = (first - a.admitted).as_secs_f64() * 1e3,
                    decode_tokens = a.generated,
                    decode_ms = first.elapsed().as_secs_f64() * 1e3,
                    grammar_refused = a.refused,
                    "generation timings"
                );
                if a.drafted.0 > 0 {
                    tracing::debug!(
                        drafted = a.drafted.0,
                        kept = a.drafted.1,
                        "prompt-lookup drafts"
                    );
                }
                let _ = a.job.out.send(Event::Done {
                    tokens_in: a.job.prompt.len() as u64,
                    tokens_cached: a.tokens_cached,
                    tokens_out: a.generated as u64,
                    finish,
                });
                slot.active = None;
            }
        }
    }
}

/// The shortest run of last tokens looked up, and the longest.
const LOOKUP_NGRAM: (usize, usize) = (2, 4);

/// Up to `most` tokens that followed the most recent earlier occurrence of
/// the last few tokens of `tokens` (the longest run that occurs, 4 to 2
/// tokens; shorter runs draft fewer tokens, being likelier wrong).
fn lookup(tokens: &[LlamaToken], most: usize) -> Vec<LlamaToken> {
    if most == 0 {
        return Vec::new();
    }
    let len = tokens.len();
    for n in (LOOKUP_NGRAM.0..=LOOKUP_NGRAM.1).rev() {
        if len <= n {
            continue;
        }
        let key = &tokens[len - n..];
        let found = (0..len - n).rev().find(|&s| &tokens[s..s + n] == key);
        if let Some(start) = found {
            let from = start + n;
            let want = if n >= 3 { most } else { most.div_ceil(2) };
            let to = (from + want).min(len);
            if from < to {
                return tokens[from..to].to_vec();
            }
        }
    }
    Vec::new()
}

/// Candidates kept from the logits before the sampler chain runs.
const TOP_K: usize = 40;

/// The `k` highest logits, in one pass over the vocabulary without copying
/// it (Gemma's has 262,144 entries: the copy llama.cpp's own sampling makes
/// costs more than choosing among the best 40 ever does).
fn top_k(logits: &[f32], k: usize) -> LlamaTokenDataArray {
    let mut best: Vec<(f32, i32)> = Vec::with_capacity(k);
    let mut floor = f32::NEG_INFINITY;
    let mut floor_at = 0usize;
    for (i, &l) in logits.iter().enumerate() {
        if best.len() < k {
            best.push((l, i as i32));
            if best.len() == k {
                (floor_at, floor) = lowest(&best);
            }
        } else if l > floor {
            best[floor_at] = (l, i as i32);
            (floor_at, floor) = lowest(&best);
        }
    }
    LlamaTokenDataArray::new(
        best.into_iter()
            .map(|(l, t)| LlamaTokenData::new(LlamaToken(t), l, 0.0))
            .collect(),
        false,
    )
}

fn lowest(best: &[(f32, i32)]) -> (usize, f32) {
    best.iter().enumerate().fold(
        (0, f32::INFINITY),
        |(at, min), (i, &(l, _))| {
            if l < min { (i, l) } else { (at, min) }
        },
    )
}

/// Samples the next token of `job` from the logits at batch index `at`.
///
/// The sampler chain (DRY, then greedy or top-k/top-p/temperature) runs on
/// the 40 most likely tokens: DRY only ever lowers a logit, so the choice
/// among the best 40 is the choice overall unless DRY penalises all 40. With
/// a grammar, the chosen token is checked alone first; only when the grammar
/// rejects it is the choice made again over the whole vocabulary, filtered
/// by the grammar (llama.cpp's own server does the same). `None` when
/// nothing is allowed.
fn sample(ctx: &LlamaContext<'_>, at: i32, job: &mut Job, refused: &mut u32) -> Option<LlamaToken> {
    let mut candidates = top_k(ctx.get_logits_ith(at), TOP_K);
    job.sampler.apply(&mut candidates);
    let first = candidates.selected_token()?;
    let Some(grammar) = job.grammar.as_mut() else {
        job.sampler.accept(first);
        return Some(first);
    };
    let mut alone = LlamaTokenDataArray::new(vec![LlamaTokenData::new(first, 1.0, 0.0)], false);
    grammar.apply(&mut alone);
    let allowed = alone.data.first().is_some_and(|d| d.logit().is_finite());
    let token = if allowed {
        first
    } else {
        *refused += 1;
        let mut candidates = ctx.token_data_array_ith(at);
        grammar.apply(&mut candidates);
        if !candidates.data.iter().any(|d| d.logit().is_finite()) {
            return None;
        }
        job.sampler.apply(&mut candidates);
        let t = candidates.selected_token()?;
        if !candidates
            .data
            .iter()
            .any(|d| d.id() == t && d.logit().is_finite())
        {
            return None;
        }
        t
    };
    grammar.try_accept(token).ok()?;
    job.sampler.accept(token);
    Some(token)
}

/// Puts `job` in the free slot that shares the longest cached prefix with
/// it. A share too short to matter (a template's opening tokens) counts as
/// none, so unrelated requests take an empty or the least recently used
/// slot instead of evicting a conversation worth keeping.
fn admit(ctx: &mut LlamaContext<'_>, slots: &mut [Slot], job: Job, limits: Limits, now: u64) {
    const WORTH_KEEPING: usize = 32;
    if job.prompt.is_empty() {
        let _ = job.out.send(Event::Error("the prompt is empty".into()));
        return;
    }
    if job.prompt.len() + 1 > limits.slot_context {
        let _ = job.out.send(Event::Error(format!(
            "the prompt is {} tokens; this engine's context holds {} per request \
             (raise engine.context, or shorten the conversation)",
            job.prompt.len(),
            limits.slot_context
        )));
        return;
    }
    let best = slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.active.is_none())
        .map(|(i, s)| {
            let shared = common_prefix(&s.cached, &job.prompt);
            let worth = if shared >= WORTH_KEEPING.min(job.prompt.len()) {
                shared
            } else {
                0
            };
            (
                i,
                shared,
                (worth, s.cached.is_empty(), std::cmp::Reverse(s.used)),
            )
        })
        .max_by_key(|(_, _, key)| *key)
        .map(|(i, shared, _)| (i, shared));
    let Some((i, mut common)) = best else {
        let _ = job.out.send(Event::Error("no free slot".into()));
        return;
    };
    // At least one prompt token must be decoded to get logits.
    common = common.min(job.prompt.len() - 1);
    let slot = &mut slots[i];
    // A sliding-window cache keeps only the last window of positions: going
    // on from `common` needs the window before it, which may be gone.
    let window_gone = limits.n_swa > 0
        && common > 0
        && ctx.kv_cache_seq_pos_min(i as i32) > common.saturating_sub(limits.n_swa) as i32;
    if window_gone
        || ctx
            .kv_cache_seq_rm(i as i32, Some(common as u32), None)
            .is_err()
    {
        // Start over (also a model whose cache cannot drop a tail).
        forget(ctx, slot, i);
        common = 0;
    }
    slot.cached.truncate(common);
    slot.used = now;
    slot.active = Some(Active {
        pending: job.prompt[common..].to_vec(),
        tokens_cached: common as u64,
        job,
        logits_at: None,
        draft: Vec::new(),
        drafted: (0, 0),
        admitted: std::time::Instant::now(),
        first_token: None,
        refused: 0,
        generated: 0,
        utf8: Vec::new(),
        text: String::new(),
        sent: 0,
    });
}

fn forget(ctx: &mut LlamaContext<'_>, slot: &mut Slot, i: usize) {
    let _ = ctx.clear_kv_cache_seq(Some(i as u32), None, None);
    slot.cached.clear();
}

fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Moves the complete UTF-8 characters at the front of `bytes` into `text`;
/// bytes that can never be valid are replaced, an incomplete tail waits.
fn take_utf8(bytes: &mut Vec<u8>, text: &mut String) {
    loop {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                text.push_str(s);
                bytes.clear();
                return;
            }
            Err(e) => {
                let good = e.valid_up_to();
                text.push_str(&String::from_utf8_lossy(&bytes[..good]));
                match e.error_len() {
                    None => {
                        bytes.drain(..good);
                        return;
                    }
                    Some(bad) => {
                        text.push('\u{FFFD}');
                        bytes.drain(..good + bad);
                    }
                }
            }
        }
    }
}

/// Where `text` must be cut if it contains a stop sequence.
fn stop_at(text: &str, stop: &[String]) -> Option<usize> {
    stop.iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
}

/// How much of `text` can be sent: all but a tail that could still grow
/// into a stop sequence.
fn held_back(text: &str, stop: &[String]) -> usize {
    let mut safe = text.len();
    for s in stop.iter().filter(|s| !s.is_empty()) {
        for k in (1..s.len()).rev() {
            if s.is_char_boundary(k) && text.ends_with(&s[..k]) {
                safe = safe.min(text.len() - k);
                break;
            }
        }
    }
    safe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_characters_wait_for_their_last_byte() {
        let mut bytes = "é".as_bytes()[..1].to_vec();
        let mut text = String::new();
        take_utf8(&mut bytes, &mut text);
        assert_eq!(text, "");
        bytes.extend_from_slice(&"é".as_bytes()[1..]);
        take_utf8(&mut bytes, &mut text);
        assert_eq!(text, "é");
        assert!(bytes.is_empty());
        let mut bad = vec![b'a', 0xff, b'b'];
        take_utf8(&mut bad, &mut text);
        assert_eq!(text, "éa\u{FFFD}b");
    }

    #[test]
    fn stop_sequences_cut_and_hold_back_partial_matches() {
        let stop = vec!["</s>".to_string()];
        assert_eq!(stop_at("hello</s> more", &stop), Some(5));
        assert_eq!(stop_at("hello", &stop), None);
        assert_eq!(held_back("hello</", &stop), 5);
        assert_eq!(held_back("hello", &stop), 5);
        assert_eq!(held_back("x<", &stop), 1);
    }

    #[test]
    fn top_k_keeps_the_highest_logits() {
        let logits: Vec<f32> = (0..1000).map(|i| ((i * 7919) % 1000) as f32).collect();
        let arr = top_k(&logits, 5);
        let mut got: Vec<f32> = arr.data.iter().map(|d| d.logit()).collect();
        got.sort_by(|a, b| b.total_cmp(a));
        assert_eq!(got, [999.0, 998.0, 997.0, 996.0, 995.0]);
        assert_eq!(top_k(&[1.0, 3.0], 5).data.len(), 2);
    }

    #[test]
    fn lookup_drafts_what_followed_the_last_tokens_before() {
        let t = |xs: &[i32]| xs.iter().map(|&x| LlamaToken(x)).collect::<Vec<_>>();
        // "… 5 6 7 8 9 … 5 6 7" → 8 9 …
        let seq = t(&[1, 5, 6, 7, 8, 9, 10, 2, 3, 5, 6, 7]);
        assert_eq!(lookup(&seq, 3), t(&[8, 9, 10]));
        assert_eq!(lookup(&seq, 0), t(&[]));
        // The most recent occurrence wins; a draft stops at the end.
        let seq = t(&[4, 5, 1, 4, 5, 2, 4, 5]);
        assert_eq!(lookup(&seq, 4), t(&[2, 4]));
        // Nothing repeats: no draft.
        assert!(lookup(&t(&[1, 2, 3, 4]), 4).is_empty());
    }

    #[test]
    fn common_prefix_counts_shared_tokens() {
        let a = [LlamaToken(1), LlamaToken(2), LlamaToken(3)];
        let b = [LlamaToken(1), LlamaToken(2), LlamaToken(9)];
        assert_eq!(common_prefix(&a, &b), 2);
        assert_eq!(common_prefix(&a, &[]), 0);
    }
}
