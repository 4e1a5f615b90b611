//! `hearth config show`: the effective configuration, each value with where
//! it came from (Hearth's default, the file, an environment variable), and
//! every set secret masked.

use anyhow::Result;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use hearth_mesh::Config;
use hearth_mesh::config::Origin;
use serde_json::{Value, json};

/// Prints the effective configuration: a table, or one JSON object with
/// the file read and each key's `value` and `from` (`default`, `file`,
/// `environment`, with the file's path or the variable's name).
pub fn show(json_out: bool, changed_only: bool) -> Result<()> {
    let file = Config::file()?;
    let mut shown = Config::explain(file.as_deref())?;
    if changed_only {
        shown.retain(|e| e.origin != Origin::Default);
    }
    if json_out {
        let values: serde_json::Map<String, Value> = shown
            .iter()
            .map(|e| {
                (
                    e.key.clone(),
                    json!({ "value": e.value, "origin": e.origin }),
                )
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "file": file, "values": values }))?
        );
        return Ok(());
    }
    match &file {
        Some(f) => println!("configuration file: {}", f.display()),
        None => println!(
            "configuration file: none (./hearth.toml, $XDG_CONFIG_HOME/hearth/hearth.toml or $HEARTH_CONFIG)"
        ),
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_header(["key", "value", "from"]);
    for e in &shown {
        let value = match &e.value {
            Value::String(s) => s.clone(),
            Value::Null => "(unset)".into(),
            v => v.to_string(),
        };
        t.add_row([e.key.clone(), value, e.origin.to_string()]);
    }
    println!("{t}");
    Ok(())
}
