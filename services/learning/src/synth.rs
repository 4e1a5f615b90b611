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
    let tpl = pick(
        rng,
        &[
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
    calc(
        fill(tpl, &[("p", p.to_string()), ("n", n.to_string())]),
        format!("{n}*{p}/100"),
    )
}

fn units<R: Rng>(rng: &mut R) -> Plan {
    match rng.gen_range(0..5) {
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
    let text = pick(rng, &FILE_TEXTS).to_string();
    let append = rng.gen_bool(0.25);
    let tpl = if append {
        pick(
            rng,
            &[
                "Append '{t}' to {f}",
                "Add the line '{t}' to {f}.",
                "Add \"{t}\" to the end of {f}",
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

fn python<R: Rng>(rng: &mut R) -> Plan {
    let w = pick(rng, &WORDS);
    let n = rng.gen_range(5..25u64);
    let (prompt, code) = match rng.gen_range(0..12) {
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

/// Plain questions and their answers (the orchestrator answers itself).
const PLAIN: [(&str, &str); 60] = [
    ("What is the capital of Italy?", "Rome."),
    ("What is the capital of Spain?", "Madrid."),
    ("What is the capital of Germany?", "Berlin."),
    ("What is the capital of Japan?", "Tokyo."),
    ("What is the capital of England?", "London."),
    ("What is the capital of Russia?", "Moscow."),
    ("What is the capital of China?", "Beijing."),
    ("What is the capital of Egypt?", "Cairo."),
    ("What is the capital of Greece?", "Athens."),
    ("What is the capital of Portugal?", "Lisbon."),
    ("What is the capital of Ireland?", "Dublin."),
    ("What is the capital of Norway?", "Oslo."),
    ("Which city is the capital of Austria?", "Vienna."),
    ("Which city is the capital of Canada?", "Ottawa."),
    ("Name the capital of Sweden.", "Stockholm."),
    ("Name the capital of the Netherlands.", "Amsterdam."),
    ("Say hello.", "Hello!"),
    ("Hi!", "Hello! How can I help you?"),
    ("Good morning", "Good morning! How can I help?"),
    ("Thank you!", "You're welcome!"),
    ("Thanks a lot", "You're welcome!"),
    (
        "Who are you?",
        "I am Hearth, an assistant running on your own machine.",
    ),
    ("What is your name?", "My name is Hearth."),
    (
        "What can you do?",
        "I can do arithmetic, run Python, write files, search your notes and answer questions.",
    ),
    ("What is the opposite of up?", "Down."),
    ("What is the opposite of big?", "Small."),
    ("What is the opposite of day?", "Night."),
    ("What is the opposite of fast?", "Slow."),
    ("What is the opposite of open?", "Closed."),
    ("What color is grass?", "Green."),
    ("What color is snow?", "White."),
    ("What color are bananas?", "Yellow."),
    ("What color is a ripe tomato?", "Red."),
    ("What colour is coal?", "Black."),
    ("What animal says moo?", "A cow."),
    ("What animal barks?", "A dog."),
    ("What animal says meow?", "A cat."),
    (
        "Which animal is known as the king of the jungle?",
        "The lion.",
    ),
    (
        "What is the largest planet in the solar system?",
        "Jupiter.",
    ),
    ("Which planet is known as the red planet?", "Mars."),
    (
        "What star is at the center of our solar system?",
        "The Sun.",
    ),
    ("What language is spoken in France?", "French."),
    ("What language is spoken in Germany?", "German."),
    ("What do bees make?", "Honey."),
    (
        "What gas do plants take in from the air?",
        "Carbon dioxide.",
    ),
    ("What do we call frozen water?", "Ice."),
    ("What is the largest ocean on Earth?", "The Pacific Ocean."),
    ("Which season comes after winter?", "Spring."),
    ("What is the first month of the year?", "January."),
    ("What day comes after Monday?", "Tuesday."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci."),
    ("What is the chemical symbol for water?", "H2O."),
    ("What is the tallest animal?", "The giraffe."),
    ("What do you call a baby dog?", "A puppy."),
    ("What do you call a baby cat?", "A kitten."),
    ("Tell me a greeting in Spanish.", "Hola!"),
    ("How do you say thank you in French?", "Merci."),
    ("What is the main ingredient of guacamole?", "Avocado."),
    ("Is the Earth round or flat?", "Round."),
];

fn plain<R: Rng>(rng: &mut R) -> Plan {
    let (q, a) = PLAIN[rng.gen_range(0..PLAIN.len())];
    let q = if rng.gen_bool(0.2) {
        q.to_lowercase().trim_end_matches('?').to_string()
    } else {
        q.to_string()
    };
    Plan {
        prompt: q,
        capability: Capability::Plain,
        call: None,
        answer_from: None,
        direct: Some(a.to_string()),
    }
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

/// How many tasks of each capability to make, out of 100.
pub const MIX: [(Capability, usize); 5] = [
    (Capability::Calculator, 38),
    (Capability::Files, 16),
    (Capability::Python, 20),
    (Capability::Retrieval, 8),
    (Capability::Plain, 18),
];

/// `count` tasks, mixed as [`MIX`] says, from `seed`; prompts are unique.
/// `topics` are the titles of the notes retrieval tasks search (none: no
/// retrieval tasks). Prompts in `exclude` (held-out cases) are never made.
pub fn generate(count: usize, seed: u64, topics: &[String], exclude: &[String]) -> Vec<Plan> {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut seen: std::collections::HashSet<String> = exclude.iter().cloned().collect();
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
            Capability::Calculator => match rng.gen_range(0..10) {
                0..=4 => arithmetic(&mut rng),
                5..=6 => percentage(&mut rng),
                7 => units(&mut rng),
                _ => powers_and_lists(&mut rng),
            },
            Capability::Files => files(&mut rng, out.len()),
            Capability::Python => python(&mut rng),
            Capability::Retrieval => match retrieval(&mut rng, topics) {
                Some(p) => p,
                None => continue,
            },
            // Plain questions repeat (there are few); allow each a few times.
            Capability::Plain => {
                let p = plain(&mut rng);
                if exclude.contains(&p.prompt) {
                    continue;
                }
                out.push(p);
                continue;
            }
        };
        if seen.insert(plan.prompt.clone()) {
            out.push(plan);
        }
    }
    out
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
        .find(|m| m.role == "user")
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
            backend: "teacher".into(),
            model: "teacher".into(),
            calls: 1,
            ..Default::default()
        };
        let answer = |text: String| GenerateChunk {
            delta: text,
            finish_reason: "stop".into(),
            usage: Some(usage.clone()),
            ..Default::default()
        };
        let call = |name: &str, args: &Value| GenerateChunk {
            tool_calls: vec![ToolCall {
                id: format!("call_{}", uuid::Uuid::new_v4().simple()),
                name: name.to_string(),
                arguments_json: args.to_string(),
            }],
            finish_reason: "tool_calls".into(),
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
            .filter(|m| m.role == "tool")
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
        let a = generate(300, 1, &topics, &[]);
        assert_eq!(a, generate(300, 1, &topics, &[]));
        assert_eq!(a.len(), 300);
        for c in Capability::ALL {
            assert!(a.iter().any(|p| p.capability == c), "{c:?}");
        }
        let excluded = vec![a[0].prompt.clone()];
        let b = generate(300, 1, &topics, &excluded);
        assert!(!b.iter().any(|p| p.prompt == a[0].prompt));
    }

    #[test]
    fn the_teacher_delegates_calls_and_answers_from_the_real_result() {
        let plan = calc("What is 12*12?".into(), "12*12".into());
        let t = Teacher::new(std::slice::from_ref(&plan));
        let user = ChatMessage {
            role: "user".into(),
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
            role: "tool".into(),
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
