//! `userctl config`: the stack `up` would bring up, and where each value comes from.

use std::path::Path;

use crate::{
    args::{ConfigArgs, OutputFormat},
    config::StackConfig,
    error::{CliError, Result},
    home::ProjectHome,
    output,
};

pub fn show(home: &ProjectHome, file: Option<&Path>, args: ConfigArgs) -> Result<()> {
    let config = StackConfig::resolve(home, file, &args.stack)?;
    let entries = config.entries();
    match args.output {
        OutputFormat::Json => {
            let json = serde_json::json!({ "file": config.file, "values": entries });
            let text = serde_json::to_string_pretty(&json)
                .map_err(|err| CliError::failed(err.to_string()))?;
            println!("{text}");
        }
        OutputFormat::Table => {
            match &config.file {
                Some(path) => println!("stack file {}", path.display()),
                None => println!("no stack file (userctl.toml here, or --file PATH)"),
            }
            let rows: Vec<Vec<String>> = entries
                .into_iter()
                .map(|entry| {
                    let value = match entry.value {
                        serde_json::Value::Null => {
                            runtime_decides(entry.key).unwrap_or("-").to_owned()
                        }
                        serde_json::Value::String(text) => text,
                        other => other.to_string(),
                    };
                    vec![entry.key.to_owned(), value, entry.source]
                })
                .collect();
            print!("{}", output::table(&["key", "value", "source"], &rows));
        }
    }
    Ok(())
}

/// What an unset key means, in the table.
fn runtime_decides(key: &str) -> Option<&'static str> {
    match key {
        "store" => Some("(postgres on docker, sqlite on local)"),
        "usersvc" => Some("(beside userctl, else on PATH)"),
        "redis_url" => Some("(local runtime starts redis-server)"),
        _ => None,
    }
}
