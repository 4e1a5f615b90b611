//! Grounding checks on a small model's tool arguments.
//!
//! A 270M model turns numbers written in words into digits badly
//! ("twelve plus thirty" became the expression `12+3`). Before a calculator
//! call runs, its expression is checked against the task: every number the
//! task spells out in words (found with `text2num`) must be used in the
//! expression. When one is missing, the call is not run, and the agent loop
//! takes the step again with the task written in digits ("twelve plus
//! thirty" → "12 plus 30"): a small model copies digits well, and reads an
//! error message back as its answer. The check runs once a task, so it can
//! never keep a model from answering, and it looks only at numbers written
//! as words (the digits a task gives, and constants such as 60 or 100 the
//! model adds, are its own business). The task is rewritten only when the
//! model has shown it misread it.

use std::collections::BTreeSet;

use serde_json::Value;
use text2num::{Language, replace_numbers_in_text};

/// Tools whose `expression` argument is checked.
pub fn checks(tool: &str) -> bool {
    tool == "calculator.evaluate" || tool.ends_with(".calculator.evaluate")
}

/// Numbers a lone word below this is not taken for ("one of them").
const LONE_THRESHOLD: f64 = 2.0;

fn numbers_in(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_digit() || (c == '.' && !cur.is_empty() && !cur.contains('.')) {
            cur.push(c);
        } else if !cur.is_empty() {
            out.push(cur.trim_end_matches('.').to_string());
            cur.clear();
        }
    }
    out
}

/// The numbers `task` writes in words, in digits, that `expression` does
/// not use (in the task's order).
pub fn unused_spelled_numbers(task: &str, expression: &str) -> Vec<String> {
    let english = Language::english();
    let normalised = replace_numbers_in_text(task, &english, LONE_THRESHOLD);
    let given: BTreeSet<String> = numbers_in(task).into_iter().collect();
    let used: BTreeSet<String> = numbers_in(expression).into_iter().collect();
    let mut missing = Vec::new();
    for n in numbers_in(&normalised) {
        if !given.contains(&n) && !used.contains(&n) && !missing.contains(&n) {
            missing.push(n);
        }
    }
    missing
}

/// `task` with the numbers it writes in words in digits.
pub fn in_digits(task: &str) -> String {
    replace_numbers_in_text(task, &Language::english(), LONE_THRESHOLD)
}

/// Why a call of `tool` with `arguments_json` does not fit `task`, for the
/// log (None: it fits, or is not checked).
pub fn problem(task: &str, tool: &str, arguments_json: &str) -> Option<String> {
    if !checks(tool) {
        return None;
    }
    let args: Value = serde_json::from_str(arguments_json).ok()?;
    let expression = args.get("expression")?.as_str()?;
    let missing = unused_spelled_numbers(task, expression);
    if missing.is_empty() {
        return None;
    }
    Some(format!(
        "the expression {expression} does not use {} from the task",
        missing.join(" and ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_words_must_reach_the_expression() {
        assert_eq!(
            unused_spelled_numbers("What is twelve plus thirty?", "12+3"),
            vec!["30"]
        );
        assert!(unused_spelled_numbers("What is twelve plus thirty?", "12+30").is_empty());
        assert!(
            unused_spelled_numbers(
                "What is four hundred and six minus one hundred and eighty?",
                "406-180"
            )
            .is_empty()
        );
        // Digits the task gives, and constants the model adds, are not checked.
        assert!(unused_spelled_numbers("What is 15% of 240?", "0.15*240").is_empty());
        assert!(
            unused_spelled_numbers("How many minutes are 3 hours and 45 minutes?", "3*60+45")
                .is_empty()
        );
        // "one" on its own is not a number here.
        assert!(unused_spelled_numbers("Which one is bigger, 5 or 7?", "max(5, 7)").is_empty());
        let p = problem(
            "What is twelve plus thirty?",
            "calculator.evaluate",
            r#"{"expression": "12+3"}"#,
        )
        .unwrap();
        assert!(p.contains("12+3") && p.contains("30"), "{p}");
        assert_eq!(
            in_digits("What is twelve plus thirty?"),
            "What is 12 plus 30?"
        );
        assert_eq!(
            problem(
                "What is twelve plus thirty?",
                "files.write",
                r#"{"path": "a"}"#
            ),
            None
        );
        assert_eq!(problem("twelve", "calculator.evaluate", "not json"), None);
    }
}
