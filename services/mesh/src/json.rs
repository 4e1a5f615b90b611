//! JSON in canonical form, for comparing and digesting values that different
//! writers may serialize with their keys in different orders (tool
//! definitions at the toolhost, a model's tool-call arguments in the agent
//! loop).

use serde_json::Value;

/// Serializes JSON with object keys sorted at every level, so a digest does
/// not depend on the order a writer happens to put keys in.
pub fn canonical(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&map[k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}
