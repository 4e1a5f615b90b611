//! Synthetic trajectories: generators of tasks per capability (arithmetic
//! phrased many ways, percentages, unit sums, files to write, Python to run,
//! notes to search, questions that need no tool), and the [`Teacher`] that
//! plays the model while the real mesh runs them.
//!
//! The teacher knows, for each generated task, the call an ideal agent makes
//! — the orchestrator delegates the task (or answers a plain question
//! itself), the operative calls the right tool with the right arguments —
//! and, once the real tool has answered, builds the answer from the real
//! result. Everything else is the real mesh: the agents' own prompts, the
//! toolhost's real tool definitions, real tool results, agent memory. The
//! traces it leaves are exactly what the model would have seen, so training
//! on them teaches the model its own job.

use std::collections::HashMap;

use hearth_proto::v1::{ChatMessage, GenerateChunk, GenerateRequest, ToolCall, Usage};
use rand::Rng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The capability a task exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    /// The calculator.
    Calculator,
    /// Writing files.
    Files,
    /// Running Python.
    Python,
    /// Searching notes.
    Retrieval,
    /// No tool: the orchestrator answers.
    Plain,
}

impl Capability {
    /// Every capability.
    pub const ALL: [Capability; 5] = [
        Capability::Calculator,
        Capability::Files,
        Capability::Python,
        Capability::Retrieval,
        Capability::Plain,
    ];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Calculator => "calculator",
            Capability::Files => "files",
            Capability::Python => "python",
            Capability::Retrieval => "retrieval",
            Capability::Plain => "plain",
        }
    }
}

/// How the answer is made from the tool's real result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AnswerFrom {
    /// The result, as it is (the calculator's value).
    Result,
    /// What the code printed.
    Stdout,
    /// A confirmation naming the file.
    Wrote(String),
    /// The sentence of the result that shares most words with the task.
    BestSentence,
    /// The sentence of the result that holds this answer (a fact of the
    /// synthesised notes); the best sentence when none does.
    SentenceWith(String),
}

/// One generated task and what an ideal agent does with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// What the user asks.
    pub prompt: String,
    /// Its capability.
    pub capability: Capability,
    /// The operative's call: tool and arguments (none for a plain question).
    pub call: Option<(String, Value)>,
    /// How the operative answers from the result.
    pub answer_from: Option<AnswerFrom>,
    /// The orchestrator's own answer to a plain question.
    pub direct: Option<String>,
}

const ONES: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: [&str; 10] = [
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];

/// A whole number below a million in English words.
pub fn words(n: u64) -> String {
    match n {
        0..=19 => ONES[n as usize].to_string(),
        20..=99 => {
            let t = TENS[(n / 10) as usize];
            if n.is_multiple_of(10) {
                t.to_string()
            } else {
                format!("{t}-{}", ONES[(n % 10) as usize])
            }
        }
        100..=999 => {
            let rest = n % 100;
            let h = format!("{} hundred", ONES[(n / 100) as usize]);
            if rest == 0 {
                h
            } else {
                format!("{h} and {}", words(rest))
            }
        }
        _ => {
            let rest = n % 1000;
            let th = format!("{} thousand", words(n / 1000));
            match rest {
                0 => th,
                1..=99 => format!("{th} and {}", words(rest)),
                _ => format!("{th} {}", words(rest)),
            }
        }
    }
}

fn pick<'a, R: Rng>(rng: &mut R, xs: &'a [&'a str]) -> &'a str {
    xs.choose(rng).copied().unwrap_or_default()
}

fn fill(template: &str, vars: &[(&str, String)]) -> String {
    let mut s = template.to_string();
    for (k, v) in vars {
        s = s.replace(&format!("{{{k}}}"), v);
    }
    s
}

fn calc(prompt: String, expression: String) -> Plan {
    Plan {
        prompt,
        capability: Capability::Calculator,
        call: Some((
            "calculator.evaluate".into(),
            json!({ "expression": expression }),
        )),
        answer_from: Some(AnswerFrom::Result),
        direct: None,
    }
}

/// `n` with thousands separators (`7,200`).
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A number as a person might write it: digits, digits with separators, or
/// words.
fn spoken<R: Rng>(rng: &mut R, n: u64) -> String {
    match rng.gen_range(0..10) {
        0..=2 => words(n),
        3..=4 if n >= 1000 => grouped(n),
        _ => n.to_string(),
    }
}

/// Subtraction, division and multiplication phrased with the operands the
/// other way round or as a story ("take 275 away from 1,000", "share 1,260
/// among 15 people"): the expression must put them in the right order.
fn phrased_operations<R: Rng>(rng: &mut R) -> Plan {
    match rng.gen_range(0..5) {
        0 => {
            let (a, b) = (rng.gen_range(100..9000u64), rng.gen_range(1..99u64) * 5);
            let (sa, sb) = (spoken(rng, a), spoken(rng, b));
            let tpl = pick(
                rng,
                &[
                    "Subtract {b} from {a}.",
                    "What do I get if I subtract {b} from {a}?",
                    "What's left when you take {b} from {a}?",
                    "Deduct {b} from {a}.",
                    "If I had {a} and spent {b}, how much is left?",
                ],
            );
            calc(fill(tpl, &[("a", sa), ("b", sb)]), format!("{a}-{b}"))
        }
        1 => {
            let b = rng.gen_range(2..25u64);
            let a = b * rng.gen_range(3..120u64);
            let (sa, sb) = (spoken(rng, a), spoken(rng, b));
            let tpl = pick(
                rng,
                &[
                    "Split {a} evenly between {b} people. How much each?",
                    "Divide {a} equally among {b} friends. What does each one get?",
                    "{b} people share a bill of {a}. How much does each pay?",
                    "If {a} sweets are shared by {b} children, how many does each child get?",
                    "How many times does {b} go into {a}?",
                ],
            );
            calc(fill(tpl, &[("a", sa), ("b", sb)]), format!("{a}/{b}"))
        }
        2 => {
            let (a, b) = (rng.gen_range(2..40u64), rng.gen_range(2..60u64));
            let (sa, sb) = (spoken(rng, a), spoken(rng, b));
            let tpl = pick(
                rng,
                &[
                    "Multiply {a} by {b}.",
                    "{a} boxes hold {b} items each. How many items in all?",
                    "I buy {a} tickets at {b} dollars each. What is the total?",
                    "What is the product of {a} and {b}?",
                    "{a} lots of {b}?",
                ],
            );
            calc(fill(tpl, &[("a", sa), ("b", sb)]), format!("{a}*{b}"))
        }
        3 => {
            let (a, b) = (rng.gen_range(10..9000u64), rng.gen_range(10..9000u64));
            let (sa, sb) = (spoken(rng, a), spoken(rng, b));
            let tpl = pick(
                rng,
                &[
                    "Could you add {a} and {b}?",
                    "What do you get when you add {a} to {b}?",
                    "Give me the sum of {a} and {b}.",
                    "I had {a} and got {b} more. How many now?",
                ],
            );
            calc(fill(tpl, &[("a", sa), ("b", sb)]), format!("{a}+{b}"))
        }
        _ => {
            let a = rng.gen_range(2..30u64);
            let sa = spoken(rng, a);
            let tpl = pick(
                rng,
                &[
                    "What is {a} cubed?",
                    "{a} cubed?",
                    "Cube {a}.",
                    "what's {a} to the third power",
                    "How much is {a} cubed?",
                ],
            );
            calc(fill(tpl, &[("a", sa)]), format!("{a}^3"))
        }
    }
}

fn arithmetic<R: Rng>(rng: &mut R) -> Plan {
    // (words, symbol)
    let ops: [(&[&str], &str); 4] = [
        (&["plus", "added to", "and"], "+"),
        (&["minus", "take away", "less"], "-"),
        (&["times", "multiplied by", "x"], "*"),
        (&["divided by", "over"], "/"),
    ];
    let (names, sym) = ops[rng.gen_range(0..ops.len())];
    let (a, b) = match sym {
        "/" => {
            let b = rng.gen_range(2..40u64);
            (b * rng.gen_range(2..60u64), b)
        }
        "*" => (rng.gen_range(2..200u64), rng.gen_range(2..120u64)),
        _ => (rng.gen_range(1..5000u64), rng.gen_range(1..3000u64)),
    };
    let word_numbers = rng.gen_bool(0.3);
    let (sa, sb) = if word_numbers {
        (words(a), words(b))
    } else if rng.gen_bool(0.3) {
        (grouped(a), grouped(b))
    } else {
        (a.to_string(), b.to_string())
    };
    let op = if word_numbers || rng.gen_bool(0.5) {
        pick(rng, names).to_string()
    } else {
        sym.to_string()
    };
    let tpl = pick(
        rng,
        &[
            "What is {a} {op} {b}?",
            "what is {a} {op} {b}",
            "What's {a} {op} {b}?",
            "Calculate {a} {op} {b}.",
            "Compute {a} {op} {b}",
            "How much is {a} {op} {b}?",
            "Please work out {a} {op} {b}.",
            "Can you tell me what {a} {op} {b} is?",
            "{a} {op} {b} = ?",
            "Quick question: {a} {op} {b}?",
            "I need {a} {op} {b}.",
            "Solve {a} {op} {b}",
        ],
    );
    let mut prompt = fill(tpl, &[("a", sa), ("op", op), ("b", sb)]);
    if !word_numbers && rng.gen_bool(0.12) {
        prompt = format!("{a}{sym}{b}");
    }
    calc(prompt, format!("{a}{sym}{b}"))
}

fn percentage<R: Rng>(rng: &mut R) -> Plan {
    let p = *[5u64, 10, 12, 15, 20, 25, 30, 40, 50, 60, 75, 8, 18, 35, 45]
        .choose(rng)
        .unwrap_or(&10);
    let n = rng.gen_range(2..400u64) * 10;
    let (sp, sn) = (
        if rng.gen_bool(0.3) {
            words(p)
        } else {
            p.to_string()
        },
        spoken(rng, n),
    );
    let tpl = pick(
        rng,
        &[
            "{p} percent of {n}, please.",
            "What's {p} per cent of {n}?",
            "Work out {p} percent of {n}",
            "{p}% of {n} is how much?",
            "I got {p}% off {n}. How much did I save?",
            "What is {p}% of {n}?",
            "What's {p} percent of {n}?",
            "Calculate {p}% of {n}.",
            "{p}% of {n}?",
            "How much is {p} percent of {n}?",
            "Find {p}% of {n}",
            "What is a {p}% tip on a bill of {n} dollars?",
            "A {n} dollar item is {p}% off. How much is the discount?",
        ],
    );
    calc(fill(tpl, &[("p", sp), ("n", sn)]), format!("{n}*{p}/100"))
}

fn units<R: Rng>(rng: &mut R) -> Plan {
    match rng.gen_range(0..12) {
        9 | 10 => {
            // One duration in two units, given in the smaller one.
            let (big, small, per, a, b) = *[
                ("hours", "minutes", 60u64, (1u64, 12u64), (5u64, 59u64)),
                ("minutes", "seconds", 60, (1, 50), (5, 59)),
                ("days", "hours", 24, (1, 20), (1, 23)),
                ("weeks", "days", 7, (1, 30), (1, 6)),
                ("years", "months", 12, (1, 40), (1, 11)),
                ("feet", "inches", 12, (1, 9), (1, 11)),
            ]
            .choose(rng)
            .unwrap_or(&("hours", "minutes", 60, (1, 12), (5, 59)));
            let (x, y) = (rng.gen_range(a.0..a.1), rng.gen_range(b.0..b.1));
            let tpl = pick(
                rng,
                &[
                    "my movie is {x} {big} and {y} {small} long, how many {small} is that in total",
                    "How many {small} are in {x} {big} and {y} {small}?",
                    "{x} {big} and {y} {small} - how many {small} is that?",
                    "Convert {x} {big} {y} {small} into {small}.",
                    "The recipe takes {x} {big} and {y} {small}. How long is that in {small}?",
                    "what is {x} {big} plus {y} {small} in {small}",
                    "The trip lasted {x} {big} and {y} {small}; give me the total in {small}.",
                ],
            );
            calc(
                fill(
                    tpl,
                    &[
                        ("x", x.to_string()),
                        ("y", y.to_string()),
                        ("big", big.to_string()),
                        ("small", small.to_string()),
                    ],
                ),
                format!("{x}*{per}+{y}"),
            )
        }
        5 | 6 => {
            // Two durations, hours and minutes each, summed in minutes.
            let (h1, m1, h2, m2) = (
                rng.gen_range(1..6u64),
                rng.gen_range(5..59u64),
                rng.gen_range(1..6u64),
                rng.gen_range(5..59u64),
            );
            let hours = |h: u64| if h == 1 { "hour" } else { "hours" };
            let d1 = format!("{h1} {} {m1} minutes", hours(h1));
            let d2 = format!("{h2} {} {m2} minutes", hours(h2));
            let tpl = pick(
                rng,
                &[
                    "The first film runs {d1} and the second {d2}. How many minutes in total?",
                    "I studied {d1} on Saturday and {d2} on Sunday. Total minutes?",
                    "Add {d1} to {d2} and give me the answer in minutes.",
                    "How many minutes is {d1} plus {d2}?",
                    "My train takes {d1} and the bus after it {d2}. How long is the trip in minutes?",
                    "Sum {d1} and {d2} in minutes.",
                ],
            );
            calc(
                fill(tpl, &[("d1", d1), ("d2", d2)]),
                format!("{h1}*60+{m1}+{h2}*60+{m2}"),
            )
        }
        7 => {
            let (km, tenths, m) = (
                rng.gen_range(0..9u64),
                rng.gen_range(1..10u64),
                rng.gen_range(50..999u64),
            );
            let metre = pick(rng, &["metres", "meters"]);
            let tpl = pick(
                rng,
                &[
                    "I ran {k} km and then {m} m more. How many {u} is that?",
                    "A path of {k} km joins one of {m} m. Total length in {u}?",
                    "What is {k} kilometres plus {m} {u}, in {u}?",
                    "We hiked {k} km in the morning and {m} m after lunch. How far in {u}?",
                ],
            );
            calc(
                fill(
                    tpl,
                    &[
                        ("k", format!("{km}.{tenths}")),
                        ("m", m.to_string()),
                        ("u", metre.to_string()),
                    ],
                ),
                format!("{km}.{tenths}*1000+{m}"),
            )
        }
        8 => {
            let (h, m) = (rng.gen_range(1..24u64), rng.gen_range(1..59u64));
            calc(
                fill(
                    pick(
                        rng,
                        &[
                            "How many seconds are there in {h} hours and {m} minutes?",
                            "Convert {h} h {m} min to seconds.",
                        ],
                    ),
                    &[("h", h.to_string()), ("m", m.to_string())],
                ),
                format!("({h}*60+{m})*60"),
            )
        }
        0 => {
            let (h, m, m2) = (
                rng.gen_range(1..9u64),
                rng.gen_range(1..59u64),
                rng.gen_range(5..90u64),
            );
            calc(
                format!("What is {h} hours and {m} minutes plus {m2} minutes, in minutes?"),
                format!("{h}*60+{m}+{m2}"),
            )
        }
        1 => {
            let h = rng.gen_range(2..48u64);
            calc(
                fill(
                    pick(
                        rng,
                        &[
                            "How many minutes are in {h} hours?",
                            "Convert {h} hours to minutes.",
                        ],
                    ),
                    &[("h", h.to_string())],
                ),
                format!("{h}*60"),
            )
        }
        2 => {
            let m = rng.gen_range(2..90u64);
            calc(
                format!("How many seconds are in {m} minutes?"),
                format!("{m}*60"),
            )
        }
        3 => {
            let (km, m) = (rng.gen_range(1..30u64), rng.gen_range(10..999u64));
            calc(
                format!("What is {km} km plus {m} meters, in meters?"),
                format!("{km}*1000+{m}"),
            )
        }
        _ => {
            let (a, b) = (rng.gen_range(1..20u64), rng.gen_range(1..20u64));
            calc(
                format!(
                    "I walked {a} miles on Monday and {b} miles on Tuesday. How many miles in total?"
                ),
                format!("{a}+{b}"),
            )
        }
    }
}

fn powers_and_lists<R: Rng>(rng: &mut R) -> Plan {
    match rng.gen_range(0..6) {
        0 => {
            let a = rng.gen_range(2..60u64);
            calc(
                fill(
                    pick(rng, &["What is {a} squared?", "{a} squared", "Square {a}."]),
                    &[("a", a.to_string())],
                ),
                format!("{a}^2"),
            )
        }
        1 => {
            let (a, b) = (rng.gen_range(2..12u64), rng.gen_range(2..16u64));
            calc(
                fill(
                    pick(
                        rng,
                        &[
                            "What is {a} to the power of {b}?",
                            "{a}^{b}",
                            "Raise {a} to the {b}th power.",
                        ],
                    ),
                    &[("a", a.to_string()), ("b", b.to_string())],
                ),
                format!("{a}^{b}"),
            )
        }
        2 => {
            let r = rng.gen_range(2..40u64);
            calc(
                format!("What is the square root of {}?", r * r),
                format!("sqrt({})", r * r),
            )
        }
        3 => {
            let xs: Vec<u64> = (0..rng.gen_range(3..6))
                .map(|_| rng.gen_range(1..500))
                .collect();
            let list = xs.iter().map(u64::to_string).collect::<Vec<_>>();
            let tpl = pick(
                rng,
                &[
                    "Add up {l}.",
                    "What is the sum of {l}?",
                    "Sum these numbers: {l}",
                    "What do {l} add up to?",
                ],
            );
            calc(fill(tpl, &[("l", list.join(", "))]), list.join("+"))
        }
        4 => {
            let xs: Vec<u64> = (0..3).map(|_| rng.gen_range(1..100) * 3).collect();
            let list = xs.iter().map(u64::to_string).collect::<Vec<_>>();
            calc(
                format!("What is the average of {}?", list.join(", ")),
                format!("({})/{}", list.join("+"), xs.len()),
            )
        }
        _ => {
            let (a, b, c) = (
                rng.gen_range(2..100u64),
                rng.gen_range(2..30u64),
                rng.gen_range(2..30u64),
            );
            calc(format!("What is {a} + {b} * {c}?"), format!("{a}+{b}*{c}"))
        }
    }
}

const FILE_WORDS: [&str; 24] = [
    "todo",
    "notes",
    "shopping",
    "ideas",
    "plan",
    "draft",
    "reminder",
    "list",
    "journal",
    "log",
    "summary",
    "groceries",
    "tasks",
    "memo",
    "letter",
    "recipe",
    "agenda",
    "birthday",
    "trip",
    "books",
    "movies",
    "hello",
    "report",
    "budget",
];
const FILE_TEXTS: [&str; 24] = [
    "buy milk",
    "call mom on sunday",
    "water the plants",
    "meeting at 10am",
    "pay the rent",
    "hello world",
    "finish the report",
    "pick up the kids at 3",
    "eggs, bread and butter",
    "the quick brown fox",
    "remember to stretch",
    "book the flights",
    "dentist on friday",
    "learn rust",
    "feed the cat",
    "renew the passport",
    "clean the garage",
    "send the invoice",
    "go for a run",
    "read chapter five",
    "back up the laptop",
    "buy a birthday gift",
    "practice guitar",
    "fix the bike",
];

fn files<R: Rng>(rng: &mut R, n: usize) -> Plan {
    let stem = pick(rng, &FILE_WORDS);
    let ext = pick(rng, &[".txt", ".md", ".txt"]);
    let file = if rng.gen_bool(0.5) {
        format!("{stem}{ext}")
    } else {
        format!("{stem}-{n}{ext}")
    };
    let text = if rng.gen_bool(0.5) {
        pick(rng, &FILE_TEXTS).to_string()
    } else {
        // A fresh line, so the model learns to copy the text, not recall it.
        let verb = pick(
            rng,
            &[
                "call", "buy", "email", "book", "pay", "fix", "return", "clean", "water", "pack",
                "renew", "check", "order", "visit", "print",
            ],
        );
        let object = pick(
            rng,
            &[
                "the plumber",
                "oat milk",
                "the dentist",
                "the car insurance",
                "library books",
                "the plants",
                "the garage door",
                "my passport",
                "invoice 2211",
                "grandma",
                "new batteries",
                "the train tickets",
                "the bike tyres",
                "the quarterly report",
            ],
        );
        let when = pick(
            rng,
            &[
                "",
                " on monday",
                " before friday",
                " tomorrow",
                " at 6 pm",
                " this weekend",
                " next week",
            ],
        );
        format!("{verb} {object}{when}")
    };
    let append = rng.gen_bool(0.25);
    let tpl = if append {
        pick(
            rng,
            &[
                "Append '{t}' to {f}",
                "Add the line '{t}' to {f}.",
                "Add \"{t}\" to the end of {f}",
                "Stick '{t}' on the end of {f}.",
                "append the line '{t}' to {f}",
                "Add '{t}' to {f} without overwriting it.",
                "At the bottom of {f}, add '{t}'",
            ],
        )
    } else {
        pick(
            rng,
            &[
                "Write '{t}' to {f}",
                "Create a file called {f} containing '{t}'",
                "Save the text \"{t}\" in {f}.",
                "Put '{t}' into a file named {f}",
                "Make a file {f} that says {t}",
                "Create {f} with the content: {t}",
                "Please write \"{t}\" into {f}.",
                "Save '{t}' to a file {f}",
                "Write a note in {f}: {t}",
                "Could you note '{t}' in {f}?",
                "{f} should contain '{t}'. Please write it.",
                "Keep '{t}' in {f}",
                "Create a new file, {f}, and put '{t}' in it.",
                "Put down '{t}' in {f}, thanks.",
                "Can you save '{t}' as {f}?",
                "new file {f}: '{t}'",
            ],
        )
    };
    Plan {
        prompt: fill(tpl, &[("t", text.clone()), ("f", file.clone())]),
        capability: Capability::Files,
        call: Some((
            if append {
                "files.append"
            } else {
                "files.write"
            }
            .into(),
            json!({ "path": file, "content": text }),
        )),
        answer_from: Some(AnswerFrom::Wrote(file)),
        direct: None,
    }
}

const WORDS: [&str; 16] = [
    "hearth", "python", "banana", "rocket", "garden", "sunrise", "keyboard", "elephant",
    "mountain", "river", "pizza", "galaxy", "window", "dragon", "coffee", "library",
];

/// A made-up word (so the model copies it rather than recalls it).
fn made_up_word<R: Rng>(rng: &mut R) -> String {
    const SYLLABLES: [&str; 24] = [
        "ka", "lo", "mi", "ter", "zu", "pra", "vel", "on", "shi", "dra", "ne", "qui", "bor", "la",
        "fen", "tis", "ro", "gal", "ex", "mun", "cha", "pi", "dor", "ly",
    ];
    (0..rng.gen_range(2..6))
        .map(|_| pick(rng, &SYLLABLES))
        .collect()
}

/// A one-line Python snippet a user pastes to be run as it is.
fn snippet<R: Rng>(rng: &mut R) -> String {
    let code = single_quoted_snippet(rng);
    // People write double quotes as often as single ones; in a JSON
    // argument they are the ones that need escaping.
    if rng.gen_bool(0.4) {
        code.replace('\'', "\"")
    } else {
        code
    }
}

fn single_quoted_snippet<R: Rng>(rng: &mut R) -> String {
    let w = made_up_word(rng);
    let (a, b) = (rng.gen_range(2..60u64), rng.gen_range(2..12u64));
    match rng.gen_range(0..20) {
        16 => format!(
            "print('{}'.join(str(n * {b}) for n in range({})))",
            pick(rng, &[", ", "+", " ", "/", ":"]),
            b.min(6)
        ),
        17 => format!("print(f'{{{a} * {b}}} {w}s')"),
        18 => format!("print(sum(x * x for x in range({b})))"),
        19 => format!("print({{'{w}': {a}}}['{w}'] + {b})"),
        0 => format!("print([n for n in range(1, {}) if n % {b} == 0])", a + 10),
        1 => format!("print(len('{w}') * {b})"),
        2 => format!("print(sum([{a}, {b}, {}]))", a + b),
        3 => format!("print(max([{a}, {b}, {}, {}]))", a * 2, b + 7),
        4 => format!("print('{w}'.upper())"),
        5 => format!("print({a} ** {})", b.min(6)),
        6 => format!("print({} // {b}, {} % {b})", a * 7, a * 7),
        7 => format!("print(sorted('{w}'))"),
        8 => format!("print(list(range({b}, {}, {})))", a + 20, b.min(5)),
        9 => format!("print('-'.join(['{w}', '{}']))", made_up_word(rng)),
        10 => format!("print(round({a} / {b}, 2))"),
        11 => format!("print([x * x for x in range({})])", b.min(8)),
        12 => format!("print('{w}' * {})", b.min(4)),
        13 => format!("print(str({})[::-1])", a * 1000 + b),
        14 => format!("print('{w}'.count('{}'))", w.chars().next().unwrap_or('a')),
        _ => format!("print({a} * {b} - {})", a + b),
    }
}

fn python<R: Rng>(rng: &mut R) -> Plan {
    let w = pick(rng, &WORDS);
    let n = rng.gen_range(5..25u64);
    let (prompt, code) = match rng.gen_range(0..25) {
        20..=24 => program(rng),
        12..=15 => {
            // Code to run as the user wrote it: copied, never rewritten.
            let code = snippet(rng);
            (
                fill(
                    pick(
                        rng,
                        &[
                            "run the following python: {c}",
                            "could you run {c} with python?",
                            "Please execute {c}",
                            "Python: {c}",
                            "What is the output of {c}? Run it.",
                            "Run {c} and tell me what it prints.",
                            "execute this snippet in python: {c}",
                            "Try running {c} for me.",
                            "I'd like to see what {c} prints.",
                            "{c} - run that in Python please",
                        ],
                    ),
                    &[("c", code.clone())],
                ),
                code,
            )
        }
        16 => {
            let k = rng.gen_range(3..11u64);
            (
                fill(
                    pick(
                        rng,
                        &[
                            "With Python, multiply together every whole number from 1 to {k}.",
                            "Use Python to print the product 1 x 2 x ... x {k}.",
                            "In Python, what do you get multiplying all the numbers from 1 up to {k}?",
                        ],
                    ),
                    &[("k", k.to_string())],
                ),
                format!("import math\nprint(math.prod(range(1, {})))", k + 1),
            )
        }
        17 => {
            let (what, code) = *[
                ("minutes in a week", "print(7 * 24 * 60)"),
                ("seconds in an hour", "print(60 * 60)"),
                ("hours in a year", "print(365 * 24)"),
                ("minutes in a year", "print(365 * 24 * 60)"),
                ("seconds in a week", "print(7 * 24 * 60 * 60)"),
                ("days in ten years", "print(10 * 365)"),
            ]
            .choose(rng)
            .unwrap_or(&("seconds in an hour", "print(60 * 60)"));
            (
                fill(
                    pick(
                        rng,
                        &[
                            "Use Python to print how many {w} there are.",
                            "python please: how many {w}?",
                            "Have Python work out the number of {w}.",
                        ],
                    ),
                    &[("w", what.to_string())],
                ),
                code.to_string(),
            )
        }
        18 => {
            let m = made_up_word(rng);
            (
                fill(
                    pick(
                        rng,
                        &[
                            "Get Python to print how many letters '{m}' has.",
                            "In Python, print the length of '{m}'.",
                            "Using python, how long is the word '{m}'?",
                        ],
                    ),
                    &[("m", m.clone())],
                ),
                format!("print(len('{m}'))"),
            )
        }
        19 => {
            let m = made_up_word(rng);
            (
                fill(
                    pick(
                        rng,
                        &[
                            "Have Python print '{m}' backwards.",
                            "Python: reverse '{m}' and print it.",
                            "Use python to print the string '{m}' reversed.",
                        ],
                    ),
                    &[("m", m.clone())],
                ),
                format!("print('{m}'[::-1])"),
            )
        }
        0 => {
            let (a, b) = (rng.gen_range(2..999u64), rng.gen_range(2..99u64));
            let code = format!("print({a} * {b} + 1)");
            (
                fill(
                    pick(
                        rng,
                        &[
                            "Run this Python: {c}",
                            "Execute this code: {c}",
                            "Run `{c}` in Python",
                            "What does this Python print? {c}",
                            "Run the following Python code: {c}",
                        ],
                    ),
                    &[("c", code.clone())],
                ),
                code,
            )
        }
        1 => {
            let code = format!("print(sum(range({n})))");
            (
                fill(
                    pick(
                        rng,
                        &[
                            "Run this Python: {c}",
                            "Execute: {c}",
                            "Please run {c} in Python.",
                        ],
                    ),
                    &[("c", code.clone())],
                ),
                code,
            )
        }
        2 => (
            format!("Use Python to reverse the string '{w}'."),
            format!("print('{w}'[::-1])"),
        ),
        3 => (
            format!("Use Python to compute the factorial of {n}."),
            format!("import math\nprint(math.factorial({n}))"),
        ),
        4 => (
            format!("Use Python to compute the {n}th Fibonacci number and print it."),
            format!("a, b = 0, 1\nfor _ in range({n}):\n    a, b = b, a + b\nprint(a)"),
        ),
        5 => (
            format!("Using Python, sum the numbers from 1 to {}.", n * 10),
            format!("print(sum(range(1, {})))", n * 10 + 1),
        ),
        6 => (
            format!("Use Python to count the vowels in '{w}'."),
            format!("print(sum(c in 'aeiou' for c in '{w}'))"),
        ),
        7 => {
            let xs: Vec<u64> = (0..5).map(|_| rng.gen_range(1..99)).collect();
            let l = format!("{xs:?}");
            (
                format!("Use Python to sort the list {l}."),
                format!("print(sorted({l}))"),
            )
        }
        8 => (
            format!("Write Python that prints '{w}' in upper case, and run it."),
            format!("print('{w}'.upper())"),
        ),
        9 => (
            format!("Use Python to find the length of the string '{w}'."),
            format!("print(len('{w}'))"),
        ),
        10 => (
            format!("Run Python code that prints the numbers 1 to {}.", n.min(9)),
            format!("for i in range(1, {}):\n    print(i)", n.min(9) + 1),
        ),
        _ => (
            format!(
                "Use Python to check whether {} is a prime number.",
                n * 7 + 2
            ),
            format!(
                "n = {}\nprint(n > 1 and all(n % d for d in range(2, int(n ** 0.5) + 1)))",
                n * 7 + 2
            ),
        ),
    };
    Plan {
        prompt,
        capability: Capability::Python,
        call: Some(("code.run_python".into(), json!({ "code": code }))),
        answer_from: Some(AnswerFrom::Stdout),
        direct: None,
    }
}

/// A request for something computed with Python, and the short program a
/// person would expect for it.
fn program<R: Rng>(rng: &mut R) -> (String, String) {
    let n = rng.gen_range(2..20u64) * 50;
    let k = rng.gen_range(3..13u64);
    let polite = |rng: &mut R, what: &str| {
        fill(
            pick(
                rng,
                &[
                    "Can you use Python to {w}?",
                    "use python to {w}",
                    "With Python, {w}.",
                    "Write a little Python program to {w}, and run it.",
                    "Please {w} using Python.",
                    "python: {w}",
                ],
            ),
            &[("w", what.to_string())],
        )
    };
    let (what, code) = match rng.gen_range(0..8) {
        0 => (
            format!("count how many prime numbers there are below {n}"),
            format!(
                "print(sum(all(n % d for d in range(2, int(n ** 0.5) + 1)) for n in range(2, {n})))"
            ),
        ),
        1 => (
            format!("add up the squares of the numbers from 1 to {k}"),
            format!("print(sum(i * i for i in range(1, {})))", k + 1),
        ),
        2 => (
            format!("count the numbers from 1 to {n} that are divisible by {k}"),
            format!(
                "print(len([i for i in range(1, {}) if i % {k} == 0]))",
                n + 1
            ),
        ),
        3 => (
            format!("sum all the even numbers up to {n}"),
            format!("print(sum(range(0, {}, 2)))", n + 1),
        ),
        4 => {
            let xs: Vec<u64> = (0..rng.gen_range(3..6))
                .map(|_| rng.gen_range(1..99))
                .collect();
            let l = xs.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
            (
                format!("find the average of {l}"),
                format!("print(sum([{l}]) / {})", xs.len()),
            )
        }
        5 => (
            format!("list the first {k} square numbers"),
            format!("print([i * i for i in range(1, {})])", k + 1),
        ),
        6 => (
            format!("compute 2 to the power of {}", k * 3),
            format!("print(2 ** {})", k * 3),
        ),
        _ => (
            format!("find the sum of the digits of {}", n * 37 + k),
            format!("print(sum(int(d) for d in str({})))", n * 37 + k),
        ),
    };
    (polite(rng, &what), code)
}

/// A question that needs no tool, the answer to train on, and the check
/// (a regex) a right answer passes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PlainFact {
    /// The question.
    pub q: String,
    /// The answer the teacher gives.
    pub a: String,
    /// What a right answer matches.
    pub check: String,
}

/// The facts plain questions are drawn from: those of
/// `synth/plain-facts.pool.jsonl` that the base model already knows, as
/// `train/known_facts.py` found by asking it (few-shot, greedy, checked).
/// Training a small model on facts it does not know teaches it to answer
/// anything with confidence ("Which animal barks?" → "The cat.", after
/// "What animal quacks?" → "A duck."); on facts it knows, to say what it
/// knows in the reply format.
const PLAIN_FACTS: &str = include_str!("../synth/plain-facts.jsonl");

/// [`PLAIN_FACTS`], parsed once (a line that does not parse is left out;
/// a test checks that none is).
pub fn plain_facts() -> &'static [PlainFact] {
    static FACTS: std::sync::LazyLock<Vec<PlainFact>> = std::sync::LazyLock::new(|| {
        PLAIN_FACTS
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    });
    &FACTS
}

fn plain<R: Rng>(rng: &mut R) -> Option<Plan> {
    let fact = plain_facts().choose(rng)?;
    let q = if rng.gen_bool(0.2) {
        fact.q.to_lowercase().trim_end_matches('?').to_string()
    } else {
        fact.q.clone()
    };
    Some(Plan {
        prompt: q,
        capability: Capability::Plain,
        call: None,
        answer_from: None,
        direct: Some(fact.a.clone()),
    })
}

fn retrieval<R: Rng>(rng: &mut R, topics: &[String]) -> Option<Plan> {
    let topic = topics.choose(rng)?;
    let tpl = pick(
        rng,
        &[
            "Search my notes for {t}.",
            "What do my notes say about {t}?",
            "Look up {t} in my notes.",
            "Check my documents: what do they say about {t}?",
            "Find {t} in my notes",
        ],
    );
    let prompt = fill(tpl, &[("t", topic.to_lowercase())]);
    Some(Plan {
        capability: Capability::Retrieval,
        call: Some((
            "retrieval.search".into(),
            json!({ "query": topic.to_lowercase() }),
        )),
        answer_from: Some(AnswerFrom::BestSentence),
        direct: None,
        prompt,
    })
}

/// A note synthesised for retrieval tasks: a file the mesh ingests, and the
/// questions its facts answer. The facts are made up, so a model can only
/// answer them by searching.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Note {
    /// File name (markdown).
    pub file: String,
    /// The note's text.
    pub text: String,
    /// `(question, answer)`: the answer appears word for word in the text.
    pub facts: Vec<(String, String)>,
}

const CITIES: [&str; 16] = [
    "Porto", "Ghent", "Tampere", "Graz", "Bergen", "Utrecht", "Lyon", "Krakow", "Aarhus", "Bilbao",
    "Turin", "Leeds", "Cork", "Brno", "Malmo", "Basel",
];
const CODES: [&str; 12] = [
    "Kestrel", "Juniper", "Osprey", "Quartz", "Marlin", "Tundra", "Saffron", "Falcon", "Cobalt",
    "Willow", "Heron", "Basalt",
];
const PEOPLE: [&str; 12] = [
    "Amara Okafor",
    "Tomas Lindqvist",
    "Priya Raman",
    "Jonas Weber",
    "Lucia Moretti",
    "Kenji Sato",
    "Elena Petrova",
    "Samir Haddad",
    "Ingrid Dahl",
    "Mateo Ruiz",
    "Nadia Kowalski",
    "Owen Gallagher",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 5] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"];

fn ordinal(n: u64) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// `count` made-up notes (offices, projects, people, clubs, recipes), from `seed`.
pub fn notes(count: usize, seed: u64) -> Vec<Note> {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x6e6f_7465);
    let rng = &mut rng;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let city = CITIES[i % CITIES.len()];
        let code = CODES[i % CODES.len()];
        let person = PEOPLE[(i * 5 + 3) % PEOPLE.len()];
        let first = person.split(' ').next().unwrap_or(person);
        let other = PEOPLE[(i * 7 + 1) % PEOPLE.len()];
        let n = |rng: &mut rand::rngs::StdRng, lo: u64, hi: u64| rng.gen_range(lo..hi);
        let (title, body, facts): (String, String, Vec<(String, String)>) = match i % 5 {
            0 => {
                let (floor, num, open, close, desks) = (
                    n(rng, 1, 9),
                    n(rng, 2, 180),
                    n(rng, 7, 10),
                    n(rng, 17, 21),
                    n(rng, 12, 90),
                );
                let street = pick(
                    rng,
                    &["Oak Street", "Harbour Road", "Mill Lane", "Station Square"],
                );
                (
                    format!("The {city} office"),
                    format!(
                        "The {city} office is on the {} floor of {street} {num}. It opens at \
                         0{open}:00 and closes at {close}:00 on weekdays. The office has {desks} \
                         desks and a small kitchen. Visitors sign in with {person} at the front desk.",
                        ordinal(floor)
                    ),
                    vec![
                        (
                            format!("What is the closing time of the {city} office on weekdays?"),
                            format!("{close}:00"),
                        ),
                        (
                            format!("When does the {city} office open?"),
                            format!("0{open}:00"),
                        ),
                        (
                            format!("How many desks does the {city} office have?"),
                            desks.to_string(),
                        ),
                        (
                            format!("Who do visitors sign in with at the {city} office?"),
                            person.to_string(),
                        ),
                        (
                            format!("Which floor is the {city} office on?"),
                            ordinal(floor),
                        ),
                    ],
                )
            }
            1 => {
                let (year, day, budget, hour) = (
                    n(rng, 2019, 2027),
                    n(rng, 1, 29),
                    n(rng, 10, 900) * 1000,
                    n(rng, 9, 17),
                );
                let (month, weekday) = (pick(rng, &MONTHS), pick(rng, &WEEKDAYS));
                (
                    format!("Project {code}"),
                    format!(
                        "Project {code} is led by {person}. It started in {year} and is due to \
                         ship on {month} {day}. Its budget is {} euros. The team meets every \
                         {weekday} at {hour}:00.",
                        grouped(budget)
                    ),
                    vec![
                        (format!("Who leads project {code}?"), person.to_string()),
                        (
                            format!("When is project {code} due to ship?"),
                            format!("{month} {day}"),
                        ),
                        (
                            format!("What is the budget of project {code}?"),
                            grouped(budget),
                        ),
                        (
                            format!("On which day does the project {code} team meet?"),
                            weekday.to_string(),
                        ),
                        (
                            format!("In what year did project {code} start?"),
                            year.to_string(),
                        ),
                    ],
                )
            }
            2 => {
                let (year, km, ext) = (n(rng, 2008, 2026), n(rng, 2, 25), n(rng, 200, 999));
                let role = pick(
                    rng,
                    &["designer", "engineer", "accountant", "nurse", "teacher"],
                );
                (
                    format!("About {person}"),
                    format!(
                        "{person} joined the company in {year} as a {role}. {first} lives in \
                         {city} and cycles {km} kilometres to work. {first}'s phone extension is \
                         {ext}, and {first} shares a desk with {other}."
                    ),
                    vec![
                        (
                            format!("In which year did {person} join the company?"),
                            year.to_string(),
                        ),
                        (format!("Where does {person} live?"), city.to_string()),
                        (
                            format!("How far does {first} cycle to work?"),
                            format!("{km} kilometres"),
                        ),
                        (
                            format!("What is {person}'s phone extension?"),
                            ext.to_string(),
                        ),
                        (
                            format!("Who shares a desk with {person}?"),
                            other.to_string(),
                        ),
                    ],
                )
            }
            3 => {
                let club = pick(
                    rng,
                    &[
                        "chess", "running", "book", "choir", "pottery", "cycling", "film", "garden",
                    ],
                );
                let (hour, fee, year, members) = (
                    n(rng, 5, 9),
                    n(rng, 12, 99),
                    n(rng, 1950, 2020),
                    n(rng, 9, 140),
                );
                let weekday = pick(rng, &WEEKDAYS);
                (
                    format!("The {city} {club} club"),
                    format!(
                        "The {city} {club} club meets every {weekday} at {hour} pm. Membership \
                         costs {fee} euros a year. The club was founded in {year} and now has \
                         {members} members; {person} is its secretary."
                    ),
                    vec![
                        (
                            format!("When does the {city} {club} club meet?"),
                            weekday.to_string(),
                        ),
                        (
                            format!("How much is membership of the {city} {club} club?"),
                            format!("{fee} euros"),
                        ),
                        (
                            format!("When was the {city} {club} club founded?"),
                            year.to_string(),
                        ),
                        (
                            format!("How many members does the {city} {club} club have?"),
                            members.to_string(),
                        ),
                        (
                            format!("Who is the secretary of the {city} {club} club?"),
                            person.to_string(),
                        ),
                    ],
                )
            }
            _ => {
                let dish = pick(
                    rng,
                    &[
                        "banana bread",
                        "apple cake",
                        "pancakes",
                        "scones",
                        "flatbread",
                        "lemon tart",
                    ],
                );
                let (flour, eggs, temp, mins, serves) = (
                    n(rng, 12, 60) * 10,
                    n(rng, 1, 6),
                    n(rng, 16, 23) * 10,
                    n(rng, 12, 70),
                    n(rng, 2, 12),
                );
                (
                    format!("{first}'s {dish}"),
                    format!(
                        "{first}'s {dish} needs {flour} grams of flour and {eggs} eggs. Bake it \
                         at {temp} degrees for {mins} minutes. It serves {serves} people."
                    ),
                    vec![
                        (
                            format!("How much flour goes into {first}'s {dish}?"),
                            format!("{flour} grams"),
                        ),
                        (
                            format!("How many eggs does {first}'s {dish} need?"),
                            format!("{eggs} eggs"),
                        ),
                        (
                            format!("At what temperature is {first}'s {dish} baked?"),
                            format!("{temp} degrees"),
                        ),
                        (
                            format!("How long does {first}'s {dish} bake?"),
                            format!("{mins} minutes"),
                        ),
                        (
                            format!("How many people does {first}'s {dish} serve?"),
                            format!("{serves} people"),
                        ),
                    ],
                )
            }
        };
        out.push(Note {
            file: format!("note-{i:03}.md"),
            text: format!("# {title}\n\n{body}\n"),
            facts,
        });
    }
    out
}

/// A question about a synthesised note, asked as a person asks about their
/// own notes.
fn retrieval_fact<R: Rng>(rng: &mut R, notes: &[Note]) -> Option<Plan> {
    let note = notes.choose(rng)?;
    let (question, answer) = note.facts.choose(rng)?;
    let lower = {
        let mut c = question.chars();
        c.next()
            .map(|f| f.to_lowercase().collect::<String>() + c.as_str())
            .unwrap_or_default()
    };
    let tpl = pick(
        rng,
        &[
            "According to my notes, {q}",
            "{Q} Check my notes.",
            "Look in my notes: {q}",
            "Search my notes: {q}",
            "{Q} It should be in my documents.",
            "Using my notes, {q}",
            "I wrote this down somewhere. {Q}",
            "From what I saved: {q}",
            "{Q} (look it up in my notes)",
            "In my notes, {q}",
            "Can you find this in my files? {Q}",
            "Go through my notes. {Q}",
        ],
    );
    Some(Plan {
        prompt: fill(tpl, &[("q", lower), ("Q", question.clone())]),
        capability: Capability::Retrieval,
        call: Some((
            "retrieval.search".into(),
            json!({ "query": question.trim_end_matches('?') }),
        )),
        answer_from: Some(AnswerFrom::SentenceWith(answer.clone())),
        direct: None,
    })
}

/// How many tasks of each capability to make, out of 100.
pub const MIX: [(Capability, usize); 5] = [
    (Capability::Calculator, 34),
    (Capability::Files, 14),
    (Capability::Python, 20),
    (Capability::Retrieval, 14),
    (Capability::Plain, 18),
];

/// `count` tasks, mixed as [`MIX`] says, from `seed`; prompts are unique.
/// `topics` are the titles of the notes retrieval tasks search, `notes` the
/// synthesised notes whose facts they ask about (neither: no retrieval
/// tasks). Prompts in `exclude` (held-out cases) are never made, however
/// they are capitalised or punctuated.
pub fn generate(
    count: usize,
    seed: u64,
    topics: &[String],
    notes: &[Note],
    exclude: &[String],
) -> Vec<Plan> {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let excluded: std::collections::HashSet<String> = exclude.iter().map(|p| normal(p)).collect();
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(count);
    let mut tries = 0;
    while out.len() < count && tries < count * 50 {
        tries += 1;
        let roll = rng.gen_range(0..100);
        let mut acc = 0;
        let mut cap = Capability::Plain;
        for (c, share) in MIX {
            acc += share;
            if roll < acc {
                cap = c;
                break;
            }
        }
        let plan = match cap {
            Capability::Calculator => match rng.gen_range(0..12) {
                0..=3 => arithmetic(&mut rng),
                4..=5 => percentage(&mut rng),
                6..=7 => units(&mut rng),
                8..=9 => phrased_operations(&mut rng),
                _ => powers_and_lists(&mut rng),
            },
            Capability::Files => files(&mut rng, out.len()),
            Capability::Python => python(&mut rng),
            Capability::Retrieval => {
                let plan = if rng.gen_bool(0.75) {
                    retrieval_fact(&mut rng, notes)
                } else {
                    retrieval(&mut rng, topics)
                };
                match plan.or_else(|| retrieval_fact(&mut rng, notes)) {
                    Some(p) => p,
                    None => continue,
                }
            }
            // Plain questions repeat (there are few); allow each a few times.
            Capability::Plain => {
                let Some(p) = plain(&mut rng) else { continue };
                if excluded.contains(&normal(&p.prompt)) {
                    continue;
                }
                out.push(p);
                continue;
            }
        };
        if excluded.contains(&normal(&plan.prompt)) {
            continue;
        }
        if seen.insert(plan.prompt.clone()) {
            out.push(plan);
        }
    }
    out
}

/// A prompt reduced to its lower-case words, for comparing prompts that
/// differ only in case and punctuation.
pub fn normal(prompt: &str) -> String {
    prompt
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The sentence of a search result that holds `answer`.
fn sentence_with(result: &str, answer: &str, task: &str) -> String {
    let found = result
        .split_inclusive(['.', '!', '?', '\n'])
        .map(|s| {
            s.trim()
                .trim_start_matches('#')
                .trim()
                .trim_start_matches("Best match:")
                .trim()
        })
        .find(|s| s.contains(answer) && s.split_whitespace().count() >= 3);
    match found {
        Some(s) => s.to_string(),
        None => best_sentence(result, task),
    }
}

/// The teacher: answers each model request of a generated task as an ideal
/// agent would.
pub struct Teacher {
    plans: HashMap<String, Plan>,
}

fn last_user(messages: &[ChatMessage]) -> Option<&str> {
    messages
        .iter()
        .rev()
        .find(|m| m.role() == hearth_proto::v1::ChatRole::User)
        .map(|m| m.content.as_str())
}

fn stdout_of(result: &str) -> String {
    serde_json::from_str::<Value>(result)
        .ok()
        .and_then(|v| v.get("stdout").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| result.to_string())
        .trim()
        .to_string()
}

fn best_sentence(result: &str, task: &str) -> String {
    // The search tool names its best-matching sentence first; the ideal
    // agent answers with it.
    if let Some(line) = result.trim_start().strip_prefix("Best match:") {
        let line = line.lines().next().unwrap_or_default().trim();
        if !line.is_empty() {
            return line.to_string();
        }
    }
    let task_words: Vec<String> = task
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 3)
        .map(str::to_string)
        .collect();
    // The search result is JSON hits with `text`; fall back to the raw text.
    let texts: Vec<String> = serde_json::from_str::<Value>(result)
        .ok()
        .and_then(|v| {
            let hits = v.get("hits").or(Some(&v))?.as_array()?.clone();
            Some(
                hits.iter()
                    .filter_map(|h| h.get("text").and_then(Value::as_str).map(str::to_string))
                    .collect(),
            )
        })
        .unwrap_or_else(|| {
            // The retrieval tool's text: `[n] title — source (score …)` and
            // the passage below it, passages separated by blank lines.
            result
                .split("\n\n[")
                .map(|p| p.split_once('\n').map_or(p, |(_, body)| body).to_string())
                .collect()
        });
    let mut best = (0usize, String::new());
    for t in texts.iter().take(3) {
        for s in t.split_inclusive(['.', '!', '?', '\n']) {
            let s = s.trim().trim_start_matches('#').trim();
            // Headings and fragments are not answers.
            if s.split_whitespace().count() < 6 || !s.ends_with(['.', '!', '?']) {
                continue;
            }
            let low = s.to_lowercase();
            let score = task_words
                .iter()
                .filter(|w| low.contains(w.as_str()))
                .count();
            if score > best.0 || best.1.is_empty() {
                best = (score, s.to_string());
            }
        }
    }
    best.1
}

impl Teacher {
    /// A teacher for these plans.
    pub fn new(plans: &[Plan]) -> Self {
        Self {
            plans: plans
                .iter()
                .map(|p| (p.prompt.clone(), p.clone()))
                .collect(),
        }
    }

    /// The model's reply to `req`, as one final chunk.
    pub fn reply(&self, req: &GenerateRequest) -> GenerateChunk {
        let usage = Usage {
            // The teacher follows its plans: a scripted model, named as such.
            backend: hearth_proto::v1::EngineBackend::Scripted.into(),
            model: "teacher".into(),
            calls: 1,
            ..Default::default()
        };
        let answer = |text: String| GenerateChunk {
            delta: text,
            finish_reason: hearth_proto::v1::FinishReason::Stop.into(),
            usage: Some(usage.clone()),
            ..Default::default()
        };
        let call = |name: &str, args: &Value| GenerateChunk {
            tool_calls: vec![ToolCall {
                id: format!("call_{}", uuid::Uuid::new_v4().simple()),
                name: name.to_string(),
                arguments_json: args.to_string(),
            }],
            finish_reason: hearth_proto::v1::FinishReason::ToolCalls.into(),
            usage: Some(usage.clone()),
            ..Default::default()
        };
        let Some(task) = last_user(&req.messages) else {
            return answer("I cannot tell what the task is.".into());
        };
        let Some(plan) = self.plans.get(task) else {
            return answer("This task is not one the teacher generated.".into());
        };
        let orchestrator = req.tools.iter().any(|t| t.name == "hearth.delegate");
        if orchestrator {
            return match (&plan.direct, req.answer_now) {
                (Some(a), _) => answer(a.clone()),
                (None, false) => call("hearth.delegate", &json!({ "task": plan.prompt })),
                (None, true) => answer("The operative could not finish the task.".into()),
            };
        }
        let result = req
            .messages
            .last()
            .filter(|m| m.role() == hearth_proto::v1::ChatRole::Tool)
            .map(|m| m.content.clone());
        match (result, &plan.call) {
            (None, Some((name, args))) if !req.answer_now => call(name, args),
            (Some(r), _) => answer(match &plan.answer_from {
                _ if r.starts_with("error:") => format!("The tool failed: {r}"),
                Some(AnswerFrom::Result) | None => r.trim().to_string(),
                Some(AnswerFrom::Stdout) => {
                    let out = stdout_of(&r);
                    if out.is_empty() {
                        "The code ran and printed nothing.".into()
                    } else {
                        out
                    }
                }
                Some(AnswerFrom::Wrote(f)) => format!("Done: {f} is saved."),
                Some(AnswerFrom::BestSentence) => best_sentence(&r, task),
                Some(AnswerFrom::SentenceWith(a)) => sentence_with(&r, a, task),
            }),
            _ => answer(
                plan.direct
                    .clone()
                    .unwrap_or_else(|| "I cannot do that.".into()),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_words() {
        assert_eq!(words(7), "seven");
        assert_eq!(words(23), "twenty-three");
        assert_eq!(words(140), "one hundred and forty");
        assert_eq!(words(2_005), "two thousand and five");
        assert_eq!(
            words(12_345),
            "twelve thousand three hundred and forty-five"
        );
    }

    #[test]
    fn generation_is_seeded_mixed_unique_and_leaves_held_out_prompts_out() {
        let topics = vec!["sourdough starter".to_string()];
        let notes = notes(10, 1);
        let a = generate(300, 1, &topics, &notes, &[]);
        assert_eq!(a, generate(300, 1, &topics, &notes, &[]));
        assert_eq!(a.len(), 300);
        for c in Capability::ALL {
            assert!(a.iter().any(|p| p.capability == c), "{c:?}");
        }
        // Excluded however it is cased or punctuated.
        let first = a
            .iter()
            .find(|p| p.capability != Capability::Plain)
            .unwrap()
            .prompt
            .clone();
        let excluded = vec![format!("{}!!", first.to_uppercase())];
        let b = generate(300, 1, &topics, &notes, &excluded);
        assert!(!b.iter().any(|p| normal(&p.prompt) == normal(&first)));
    }

    #[test]
    fn every_made_up_fact_is_in_its_note_and_the_teacher_answers_with_its_sentence() {
        let notes = notes(25, 7);
        assert_eq!(notes.len(), 25);
        for n in &notes {
            assert_eq!(n.facts.len(), 5, "{}", n.file);
            for (q, a) in &n.facts {
                assert!(n.text.contains(a.as_str()), "{q}: {a} not in {}", n.text);
            }
        }
        let (q, a) = &notes[0].facts[0];
        let result = format!("[1] {} — note-000.md (score 0.8)\n{}", q, notes[0].text);
        let s = sentence_with(&result, a, q);
        assert!(s.contains(a.as_str()) && s.ends_with('.'), "{s}");
    }

    #[test]
    fn every_plain_fact_parses_is_in_the_pool_and_passes_its_own_check() {
        let lines = PLAIN_FACTS.lines().filter(|l| !l.trim().is_empty()).count();
        assert_eq!(
            plain_facts().len(),
            lines,
            "a line of plain-facts.jsonl does not parse"
        );
        assert!(lines >= 100, "only {lines} plain facts");
        let pool: Vec<PlainFact> = include_str!("../synth/plain-facts.pool.jsonl")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        for f in plain_facts() {
            assert!(pool.contains(f), "{:?} is not in the pool", f.q);
            let rx = regex::Regex::new(&f.check).unwrap();
            assert!(rx.is_match(&f.a), "{:?}: {:?} fails {}", f.q, f.a, f.check);
        }
    }

    #[test]
    fn held_out_questions_are_not_answered_by_the_plain_training_facts() {
        // A plain fact whose answer passes a held-out case about the same
        // thing would leak the held-out answer into training.
        let root = tempfile::tempdir().unwrap();
        let content = |t: &str| -> Vec<String> {
            normal(t)
                .split(' ')
                .filter(|w| w.len() > 3)
                .map(str::to_string)
                .collect()
        };
        for name in crate::eval::HELD_OUT {
            for suite in crate::eval::load(name).unwrap() {
                for case in suite.cases.iter().filter(|c| c.tool.is_none()) {
                    let words = content(&case.prompt);
                    for f in plain_facts() {
                        let shared = content(&f.q).iter().any(|w| words.contains(w));
                        assert!(
                            !(shared
                                && crate::eval::check(&case.expect, &f.a, root.path()).is_ok()),
                            "the training fact {:?} → {:?} answers held-out {}",
                            f.q,
                            f.a,
                            case.id
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_teacher_delegates_calls_and_answers_from_the_real_result() {
        let plan = calc("What is 12*12?".into(), "12*12".into());
        let t = Teacher::new(std::slice::from_ref(&plan));
        let user = ChatMessage {
            role: hearth_proto::v1::ChatRole::User.into(),
            content: plan.prompt.clone(),
            ..Default::default()
        };
        let delegate = hearth_proto::v1::ToolSpec {
            name: "hearth.delegate".into(),
            ..Default::default()
        };
        let r = t.reply(&GenerateRequest {
            messages: vec![user.clone()],
            tools: vec![delegate],
            ..Default::default()
        });
        assert_eq!(r.tool_calls[0].name, "hearth.delegate");
        let r = t.reply(&GenerateRequest {
            messages: vec![user.clone()],
            ..Default::default()
        });
        assert_eq!(r.tool_calls[0].name, "calculator.evaluate");
        assert_eq!(r.tool_calls[0].arguments_json, r#"{"expression":"12*12"}"#);
        let result = ChatMessage {
            role: hearth_proto::v1::ChatRole::Tool.into(),
            content: "144".into(),
            ..Default::default()
        };
        let r = t.reply(&GenerateRequest {
            messages: vec![user, result],
            ..Default::default()
        });
        assert_eq!(r.delta, "144");
        assert_eq!(
            stdout_of(r#"{"status":"ok","stdout":"45\n","stderr":""}"#),
            "45"
        );
    }
}
