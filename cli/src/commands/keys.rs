//! `keys list` and `keys rotate`: the stack's token signing keys (docs/design.md, "Signing
//! keys"). The key set lives in the project's home; `up` hands it to every gateway, which reads
//! it again every second.

use std::{path::Path, time::Duration};

use serde::Serialize;
use userctl_keys::{Algorithm, KeySet};

use super::stack::{converge_recorded, existing_runtime, not_up};
use crate::{
    args::{KeysArgs, KeysCommand, OutputArgs, OutputFormat, RotateArgs, StackArgs},
    config::StackConfig,
    error::{CliError, Result},
    home::{HomeError, ProjectHome, now_secs},
    output,
    stack::{RuntimeKind, Service, State},
};

/// How long a gateway may take to read a changed key set file: it reads it every second.
const KEY_READ_WITHIN: Duration = Duration::from_secs(2);

pub async fn run(home: &ProjectHome, file: Option<&Path>, args: KeysArgs) -> Result<()> {
    match args.command {
        KeysCommand::List(args) => list(home, args),
        KeysCommand::Rotate(args) => rotate(home, file, args).await,
    }
}

/// One key as `keys list` shows it.
#[derive(Serialize)]
struct Row<'a> {
    kid: &'a str,
    algorithm: Algorithm,
    state: &'static str,
    created_at: String,
    signs_from: Option<String>,
    retires_at: Option<String>,
}

fn list(home: &ProjectHome, args: OutputArgs) -> Result<()> {
    let set = key_set(home)?;
    let now = now_secs();
    let rows: Vec<Row<'_>> = set
        .keys()
        .iter()
        .map(|key| Row {
            kid: key.kid(),
            algorithm: key.algorithm(),
            state: set.state(key, now).name(),
            created_at: time(key.created_at()),
            signs_from: key.signs_from().map(time),
            retires_at: key.retires_at().map(time),
        })
        .collect();
    match args.output {
        OutputFormat::Json => {
            let json = serde_json::to_string_pretty(&rows)
                .map_err(|err| CliError::failed(format!("cannot encode the keys: {err}")))?;
            println!("{json}");
        }
        OutputFormat::Table => {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|row| {
                    vec![
                        row.kid.to_owned(),
                        row.algorithm.to_string(),
                        row.state.to_owned(),
                        row.signs_from.clone().unwrap_or_else(|| "-".into()),
                        row.retires_at.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            print!(
                "{}",
                output::table(&["KID", "ALG", "STATE", "SIGNS FROM", "RETIRES"], &cells)
            );
        }
    }
    Ok(())
}

/// A new key, in two steps so that no gateway ever meets a token signed with a key it does not
/// know: first it is published everywhere (pending), then it signs. Where the gateways read the
/// file where they run (local, docker), each step is a write and an `up` that copies it to
/// them, and the second waits until every gateway has read the first; on swarm each step is a
/// rolling update, finished before the next.
async fn rotate(home: &ProjectHome, file: Option<&Path>, args: RotateArgs) -> Result<()> {
    // A stopped stack is left exactly as it is: exit 4, no key made.
    let Some(recorded) = home.stack()? else {
        return Err(not_up(home));
    };
    let runtime = existing_runtime(home).await?;
    let serving = runtime
        .status()
        .await?
        .iter()
        .any(|status| status.service == Service::Gateway && status.state == State::Running);
    if !serving {
        return Err(CliError::unreachable(format!(
            "no gateway of project {} is running",
            home.name
        ))
        .with_hint("run `userctl up` first"));
    }
    let mut set = key_set(home)?;
    // The gateways' token lifetime, as `up` resolved it: a key retires that long after its
    // successor starts to sign.
    let token_ttl = StackConfig::resolve(home, file, &StackArgs::default())?.token_ttl;

    let kid = set
        .add(args.algorithm, now_secs())
        .map_err(HomeError::SigningKey)?;
    home.save_signing_keys(&set)?;
    converge_recorded(home, file).await?;
    if recorded.runtime != RuntimeKind::Swarm {
        tokio::time::sleep(KEY_READ_WITHIN).await;
    }

    let signs_from = now_secs();
    set.activate(&kid, signs_from, token_ttl.as_secs())
        .map_err(HomeError::SigningKey)?;
    home.save_signing_keys(&set)?;
    converge_recorded(home, file).await?;

    println!(
        "key {kid} ({}) signs from {}",
        args.algorithm,
        time(signs_from)
    );
    for key in set.keys().iter().filter(|key| key.kid() != kid) {
        if let Some(retires_at) = key.retires_at() {
            println!(
                "key {} stays published until {} (when the last token it signed has expired)",
                key.kid(),
                time(retires_at)
            );
        }
    }
    Ok(())
}

/// The project's key set; exit 4 when it has none (no `up` yet).
fn key_set(home: &ProjectHome) -> Result<KeySet> {
    home.signing_keys()?.ok_or_else(|| not_up(home))
}

fn time(secs: u64) -> String {
    output::timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
}
