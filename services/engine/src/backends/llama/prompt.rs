//! Turning a chat request into what a local model reads, and its output back
//! into text and tool calls.
//!
//! Small local models are poor at tool calling in free text, so when tools
//! are offered the model's whole reply is constrained (by a grammar built
//! from a JSON schema) to exactly one JSON object: either
//! `{"tool": "<server.tool>", "arguments": {…}}`, whose arguments follow that
//! tool's own input schema, or `{"answer": "…"}`. The reply therefore always
//! parses; [`parse_reply`] turns it into a tool call or answer text.
//!
//! Roles are folded into what every chat template understands (system, user,
//! assistant): tool calls the assistant made are shown as the JSON it wrote,
//! and tool results come back as a user turn that names the tool.

use hearth_proto::v1::{ChatMessage, ChatRole, ToolCall, ToolSpec};
use serde_json::Value;

use crate::backend::EngineError;

/// One message in the three roles every template knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateMessage {
    /// `system`, `user` or `assistant`.
    pub role: &'static str,
    /// The text.
    pub content: String,
}

/// The instructions appended to the system prompt when tools are offered.
/// No worked example: a small base model copies an example's values into
/// its own call (measured: it computed the example's expression instead of
/// the user's), and copies placeholders like `<your answer>` literally, so
/// the shapes are named in capitals and the grammar enforces them.
pub fn tool_instructions(tools: &[ToolSpec]) -> String {
    let mut s = String::from(
        "\n\nYou can call tools. Every reply is exactly one JSON object:\n\
         - to call a tool: {\"tool\": TOOL NAME, \"arguments\": {ARGUMENTS}}\n\
         - to give the final answer: {\"answer\": YOUR ANSWER}\n\
         When a tool has given you its result, reply with the final answer built from that \
         result; call a tool again only for a different question.\n\
         Tools:\n",
    );
    for t in tools {
        s.push_str(&format!(
            "- {}: {} Arguments: {}\n",
            t.name,
            t.description.trim(),
            display_schema(&t.input_schema_json)
        ));
    }
    s
}

/// Appended to a tool result: the turn that most often goes wrong with a
/// small model is the one after a result, when it calls again instead of
/// answering.
const AFTER_RESULT: &str =
    "\nIf this result answers the question, reply now with {\"answer\": ...} stating it.";

/// The arguments' schema as compact JSON, without descriptions: a small
/// model copies the examples they hold into its calls instead of the
/// user's values (seen with the calculator's `e.g. …`).
fn display_schema(schema: &str) -> String {
    serde_json::from_str::<Value>(schema)
        .map(|v| {
            clean_schema(
                inline_refs(&v, &v, 0),
                &Clean {
                    drop_descriptions: true,
                    max_string: None,
                },
            )
            .to_string()
        })
        .unwrap_or_else(|_| schema.to_string())
}

/// Folds the request's messages into system/user/assistant turns, with the
/// tool instructions added to the system prompt, and consecutive turns of
/// one role merged (several templates insist on alternation).
pub fn fold_messages(messages: &[ChatMessage], tools: &[ToolSpec]) -> Vec<TemplateMessage> {
    let mut out: Vec<TemplateMessage> = Vec::with_capacity(messages.len() + 1);
    let mut push = |role: &'static str, content: String| match out.last_mut() {
        Some(last) if last.role == role => {
            last.content.push_str("\n\n");
            last.content.push_str(&content);
        }
        _ => out.push(TemplateMessage { role, content }),
    };
    let mut system_seen = false;
    for m in messages {
        match m.role() {
            ChatRole::System => {
                let mut content = m.content.clone();
                if !system_seen && !tools.is_empty() {
                    content.push_str(&tool_instructions(tools));
                }
                system_seen = true;
                push("system", content);
            }
            ChatRole::Assistant => {
                let mut content = m.content.clone();
                for c in &m.tool_calls {
                    if !content.is_empty() {
                        content.push('\n');
                    }
                    content.push_str(&call_json(c));
                }
                if content.is_empty() {
                    continue;
                }
                if !tools.is_empty() && m.tool_calls.is_empty() {
                    // Keep the model's own earlier turns in the format it must use.
                    content = serde_json::json!({ "answer": content }).to_string();
                }
                push("assistant", content);
            }
            ChatRole::Tool => {
                let name = messages
                    .iter()
                    .flat_map(|x| &x.tool_calls)
                    .find(|c| c.id == m.tool_call_id)
                    .map_or("the tool", |c| c.name.as_str());
                push(
                    "user",
                    format!("Result of {name}: {}{AFTER_RESULT}", m.content),
                );
            }
            ChatRole::User | ChatRole::Unspecified => push("user", m.content.clone()),
        }
    }
    if !system_seen && !tools.is_empty() {
        out.insert(
            0,
            TemplateMessage {
                role: "system",
                content: tool_instructions(tools).trim_start().to_string(),
            },
        );
    }
    out
}

fn call_json(c: &ToolCall) -> String {
    let args = serde_json::from_str::<Value>(&c.arguments_json).unwrap_or(Value::Null);
    serde_json::json!({ "tool": c.name, "arguments": args }).to_string()
}

/// The JSON schema every constrained reply follows: one object per tool
/// (its name as a constant, then its arguments), or an answer. Built as text
/// so the keys keep their order (`tool` before `arguments`), which is the
/// order the model writes them in.
/// `loose` names tools whose arguments are constrained only to be a JSON
/// object (their own schema being one llama.cpp cannot turn into a grammar).
pub fn reply_schema(
    tools: &[ToolSpec],
    max_answer_chars: usize,
    loose: &[String],
) -> Result<String, EngineError> {
    let mut alternatives = Vec::with_capacity(tools.len() + 1);
    for t in tools {
        let args: Value = if t.input_schema_json.trim().is_empty() {
            serde_json::json!({"type": "object"})
        } else {
            serde_json::from_str(&t.input_schema_json).map_err(|e| {
                EngineError::InvalidRequest(format!(
                    "tool {}: its input schema is not JSON: {e}",
                    t.name
                ))
            })?
        };
        // Each tool's schema is embedded in a larger one, where its own
        // `#/$defs/…` references would point at nothing: inline them.
        let args = inline_refs(&args, &args, 0);
        let args = clean_schema(
            args,
            &Clean {
                drop_descriptions: false,
                max_string: Some(MAX_ARGUMENT_CHARS),
            },
        );
        let args = if loose.contains(&t.name) {
            serde_json::json!({"type": "object"})
        } else {
            args
        };
        let name = Value::String(t.name.clone());
        alternatives.push(format!(
            r#"{{"type":"object","properties":{{"tool":{{"const":{name}}},"arguments":{args}}},"required":["tool","arguments"],"additionalProperties":false}}"#
        ));
    }
    alternatives.push(format!(
        r#"{{"type":"object","properties":{{"answer":{{"type":"string","maxLength":{max_answer_chars}}}}},"required":["answer"],"additionalProperties":false}}"#
    ));
    Ok(format!(r#"{{"oneOf":[{}]}}"#, alternatives.join(",")))
}

/// How deep `$ref`s are followed: a recursive schema stops there, as a
/// plain object.
const MAX_REF_DEPTH: usize = 8;

/// `schema` with its local references (`#/$defs/…`, `#/definitions/…`,
/// resolved against `root`) replaced by what they name, and its `$defs`
/// dropped.
fn inline_refs(schema: &Value, root: &Value, depth: usize) -> Value {
    match schema {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                let target = r
                    .strip_prefix("#/")
                    .map(|path| {
                        path.split('/').try_fold(root, |at, key| {
                            at.get(key.replace("~1", "/").replace("~0", "~"))
                        })
                    })
                    .and_then(|t| t);
                return match target {
                    Some(t) if depth < MAX_REF_DEPTH => inline_refs(t, root, depth + 1),
                    _ => serde_json::json!({"type": "object"}),
                };
            }
            Value::Object(
                map.iter()
                    .filter(|(k, _)| k.as_str() != "$defs" && k.as_str() != "definitions")
                    .map(|(k, v)| (k.clone(), inline_refs(v, root, depth)))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(|v| inline_refs(v, root, depth)).collect()),
        other => other.clone(),
    }
}

/// What [`clean_schema`] does besides dropping keywords the grammar
/// converter does not need and may reject (`$schema`, `$id`, titles,
/// formats, examples).
struct Clean {
    /// Drop `description` too (for showing the schema to the model).
    drop_descriptions: bool,
    /// Give every free string this `maxLength` unless it has one: a greedy
    /// small model can loop inside a string until the token limit, and a
    /// bound makes the grammar close it, so the reply always parses.
    max_string: Option<usize>,
}

/// Cleans a schema at schema level only: a property *named* `title` or
/// `description` stays.
fn clean_schema(v: Value, how: &Clean) -> Value {
    let Value::Object(map) = v else { return v };
    let mut out = serde_json::Map::new();
    for (k, val) in map {
        let val = match k.as_str() {
            "$schema" | "$id" | "title" | "format" | "examples" => continue,
            "description" if how.drop_descriptions => continue,
            "properties" | "$defs" | "definitions" | "patternProperties" => match val {
                Value::Object(m) => Value::Object(sorted(
                    m.into_iter()
                        .map(|(name, sub)| (name, clean_schema(sub, how)))
                        .collect(),
                )),
                other => other,
            },
            "items" | "additionalProperties" | "not" => clean_schema(val, how),
            "anyOf" | "oneOf" | "allOf" | "prefixItems" => match val {
                Value::Array(a) => {
                    Value::Array(a.into_iter().map(|x| clean_schema(x, how)).collect())
                }
                other => other,
            },
            _ => val,
        };
        out.insert(k, val);
    }
    if let Some(max) = how.max_string {
        let stringy = match out.get("type") {
            Some(Value::String(t)) => t == "string",
            // `["string", "null"]`: an optional string.
            Some(Value::Array(ts)) => ts.iter().any(|t| t == "string"),
            _ => false,
        };
        let free_string = stringy
            && !["maxLength", "enum", "const", "pattern"]
                .iter()
                .any(|k| out.contains_key(*k));
        if free_string {
            out.insert("maxLength".into(), Value::from(max));
        }
    }
    Value::Object(sorted(out))
}

/// The same map with its keys in order, whatever serde_json's map keeps:
/// the schema the model reads, and the grammar made from it, must not
/// change with a dependency's cargo features (a 270M model answers
/// differently to the same schema with its keys reordered).
fn sorted(map: serde_json::Map<String, Value>) -> serde_json::Map<String, Value> {
    let mut entries: Vec<(String, Value)> = map.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries.into_iter().collect()
}

/// An assistant message as the model writes it under the grammar of
/// [`reply_schema`]: `{"tool":…,"arguments":…}` with the arguments' keys in
/// the order the grammar lets them come (required ones first, then the
/// rest, each group in the schema's sorted order), or `{"answer":…}`; plain
/// text when no tools are offered. Training rows are made of exactly this.
pub fn written_reply(reply: &ChatMessage, tools: &[ToolSpec]) -> Result<String, EngineError> {
    if tools.is_empty() {
        return Ok(reply.content.clone());
    }
    match reply.tool_calls.as_slice() {
        [] => Ok(format!(
            r#"{{"answer":{}}}"#,
            Value::String(reply.content.trim().to_string())
        )),
        [call] => {
            let tool = tools.iter().find(|t| t.name == call.name).ok_or_else(|| {
                EngineError::InvalidRequest(format!(
                    "the reply calls `{}`, which is not offered",
                    call.name
                ))
            })?;
            let args: Value = serde_json::from_str(if call.arguments_json.trim().is_empty() {
                "{}"
            } else {
                &call.arguments_json
            })
            .map_err(|e| {
                EngineError::InvalidRequest(format!("the call's arguments are not JSON: {e}"))
            })?;
            let schema: Value = serde_json::from_str(&tool.input_schema_json)
                .unwrap_or_else(|_| serde_json::json!({"type": "object"}));
            let schema = clean_schema(
                inline_refs(&schema, &schema, 0),
                &Clean {
                    drop_descriptions: true,
                    max_string: None,
                },
            );
            Ok(format!(
                r#"{{"tool":{},"arguments":{}}}"#,
                Value::String(call.name.clone()),
                in_grammar_order(&args, &schema)
            ))
        }
        _ => Err(EngineError::InvalidRequest(
            "a constrained reply holds one tool call; this one has several".into(),
        )),
    }
}

/// `value` as compact JSON, object keys in the order llama.cpp's grammar for
/// `schema` makes the model write them: required properties, then optional
/// ones, each in the schema's order; keys the schema does not name last.
fn in_grammar_order(value: &Value, schema: &Value) -> String {
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let required: Vec<&str> = schema
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut keys: Vec<&String> = map.keys().collect();
            let rank = |k: &str| -> (u8, usize) {
                match props.and_then(|p| p.keys().position(|x| x == k)) {
                    Some(i) if required.contains(&k) => (0, i),
                    Some(i) => (1, i),
                    None => (2, 0),
                }
            };
            keys.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| {
                    let sub = props.and_then(|p| p.get(k)).cloned().unwrap_or(Value::Null);
                    format!(
                        "{}:{}",
                        Value::String(k.clone()),
                        in_grammar_order(&map[k], &sub)
                    )
                })
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(items) => {
            let sub = schema.get("items").cloned().unwrap_or(Value::Null);
            let parts: Vec<String> = items.iter().map(|v| in_grammar_order(v, &sub)).collect();
            format!("[{}]", parts.join(","))
        }
        other => other.to_string(),
    }
}

/// The longest string argument a constrained call may hold, unless the
/// tool's schema sets its own bound.
pub const MAX_ARGUMENT_CHARS: usize = 400;

/// What a constrained reply meant.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A call of the named tool with these JSON arguments.
    Call {
        /// The tool's bus name.
        name: String,
        /// Its arguments, as JSON text.
        arguments: String,
    },
    /// The final answer.
    Answer(String),
}

/// Reads a constrained reply. Anything that is not one of the two shapes
/// (possible only if generation stopped early, at the token limit) is a
/// malformed reply, reported as such rather than guessed at.
pub fn parse_reply(text: &str, tools: &[ToolSpec]) -> Result<Reply, String> {
    let v: Value = serde_json::from_str(text.trim())
        .map_err(|e| format!("the model's reply is not complete JSON ({e}): {text}"))?;
    if let Some(answer) = v.get("answer").and_then(Value::as_str) {
        return Ok(Reply::Answer(answer.to_string()));
    }
    let name = v
        .get("tool")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("the model's reply names no tool and gives no answer: {text}"))?;
    if !tools.iter().any(|t| t.name == name) {
        return Err(format!("the model called an unknown tool `{name}`"));
    }
    let arguments = v
        .get("arguments")
        .cloned()
        .unwrap_or_else(|| Value::Object(Default::default()));
    Ok(Reply::Call {
        name: name.to_string(),
        arguments: arguments.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calc() -> ToolSpec {
        ToolSpec {
            name: "calculator.evaluate".into(),
            description: "Evaluates arithmetic exactly.".into(),
            input_schema_json: r#"{"$schema":"x","type":"object","properties":{"expression":{"type":"string"},"title":{"type":"string","title":"T"}},"required":["expression"]}"#.into(),
        }
    }

    fn msg(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: ChatRole::from_name(role).unwrap_or_default().into(),
            content: content.into(),
            ..Default::default()
        }
    }

    #[test]
    fn roles_fold_into_three_with_tool_turns_named() {
        let mut asked = msg("assistant", "");
        asked.tool_calls.push(ToolCall {
            id: "c1".into(),
            name: "calculator.evaluate".into(),
            arguments_json: r#"{"expression":"17*23+4"}"#.into(),
        });
        let mut result = msg("tool", "395");
        result.tool_call_id = "c1".into();
        let folded = fold_messages(
            &[
                msg("system", "Be brief."),
                msg("user", "What is 17*23+4?"),
                asked,
                result,
            ],
            &[calc()],
        );
        let roles: Vec<_> = folded.iter().map(|m| m.role).collect();
        assert_eq!(roles, ["system", "user", "assistant", "user"]);
        assert!(folded[0].content.starts_with("Be brief."));
        assert!(folded[0].content.contains("calculator.evaluate"));
        // The same shape the grammar makes the model write.
        let call: serde_json::Value = serde_json::from_str(&folded[2].content).unwrap();
        assert_eq!(
            call,
            serde_json::json!({"tool": "calculator.evaluate", "arguments": {"expression": "17*23+4"}})
        );
        assert!(
            folded[3]
                .content
                .starts_with("Result of calculator.evaluate: 395\n")
        );
    }

    #[test]
    fn consecutive_turns_of_one_role_merge() {
        let folded = fold_messages(&[msg("user", "a"), msg("user", "b")], &[]);
        assert_eq!(folded.len(), 1);
        assert_eq!(folded[0].content, "a\n\nb");
    }

    #[test]
    fn the_schema_puts_the_tool_name_first_and_is_json() {
        let s = reply_schema(&[calc()], 2000, &[]).unwrap();
        let v: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["oneOf"].as_array().unwrap().len(), 2);
        assert!(s.find("\"tool\"").unwrap() < s.find("\"arguments\"").unwrap());
        assert!(!s.contains("$schema"));
        // The property named `title` stays; the keyword inside it goes; free
        // strings get a bound.
        let title = &v["oneOf"][0]["properties"]["arguments"]["properties"]["title"];
        assert_eq!(
            title,
            &serde_json::json!({"type": "string", "maxLength": 400}),
            "{s}"
        );
    }

    /// The schemas schemars writes for Rust types: `$defs` with `$ref`s,
    /// optional fields as `["string", "null"]`, unsigned integers.
    fn with_defs() -> ToolSpec {
        ToolSpec {
            name: "code.run_python".into(),
            description: String::new(),
            input_schema_json: serde_json::json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "$defs": {"InputFile": {"type": "object", "properties": {
                    "path": {"type": "string"},
                    "text": {"type": ["string", "null"], "default": null}},
                    "required": ["path"]}},
                "type": "object",
                "properties": {
                    "code": {"type": "string"},
                    "limit": {"type": ["integer", "null"], "format": "uint", "minimum": 0},
                    "files": {"type": ["array", "null"], "items": {"$ref": "#/$defs/InputFile"}},
                    "self": {"$ref": "#"}
                },
                "required": ["code"]
            })
            .to_string(),
        }
    }

    #[test]
    fn local_references_are_inlined_and_llama_cpp_takes_the_grammar() {
        let s = reply_schema(&[calc(), with_defs()], 2000, &[]).unwrap();
        assert!(!s.contains("$ref") && !s.contains("$defs"), "{s}");
        let v: Value = serde_json::from_str(&s).unwrap();
        let files = &v["oneOf"][1]["properties"]["arguments"]["properties"]["files"];
        assert_eq!(
            files["items"]["required"],
            serde_json::json!(["path"]),
            "{s}"
        );
        llama_cpp_2::json_schema_to_grammar(&s).unwrap();
        // A tool kept loose is only an object.
        let loose = reply_schema(&[with_defs()], 2000, &["code.run_python".into()]).unwrap();
        let v: Value = serde_json::from_str(&loose).unwrap();
        assert_eq!(
            v["oneOf"][0]["properties"]["arguments"],
            serde_json::json!({"type": "object"})
        );
    }

    #[test]
    fn a_bad_tool_schema_is_an_invalid_request() {
        let mut t = calc();
        t.input_schema_json = "{not json".into();
        assert!(matches!(
            reply_schema(&[t], 10, &[]),
            Err(EngineError::InvalidRequest(_))
        ));
    }

    #[test]
    fn replies_parse_into_calls_and_answers() {
        let tools = [calc()];
        assert_eq!(
            parse_reply(
                r#"{"tool":"calculator.evaluate","arguments":{"expression":"1+1"}}"#,
                &tools
            ),
            Ok(Reply::Call {
                name: "calculator.evaluate".into(),
                arguments: r#"{"expression":"1+1"}"#.into()
            })
        );
        assert_eq!(
            parse_reply(r#" {"answer":"395"} "#, &tools),
            Ok(Reply::Answer("395".into()))
        );
        assert!(parse_reply(r#"{"tool":"nope","arguments":{}}"#, &tools).is_err());
        assert!(parse_reply(r#"{"answer":"cut off"#, &tools).is_err());
    }
}
