//! `register`, `login`, `whoami`, `logout`: the user flows against the gateway.

use std::io::{BufRead as _, IsTerminal as _};

use serde::Serialize;
use userctl_proto::gateway::v1::{LoginRequest, Profile, RegisterRequest, WhoAmIRequest};

use crate::{
    args::{LoginArgs, OutputArgs, OutputFormat, RegisterArgs},
    client,
    error::{CliError, Result},
    home::ProjectHome,
    output,
};

pub async fn register(
    home: &ProjectHome,
    gateway: Option<String>,
    args: RegisterArgs,
) -> Result<()> {
    let password = read_password(args.password_stdin, true)?;
    let addr = client::gateway_addr(home, gateway)?;
    let request = RegisterRequest {
        email: args.email,
        full_name: args.name,
        password,
    };
    let profile = client::gateway(&addr)
        .await?
        .register(request)
        .await
        .map_err(|status| client::status_error(&status))?
        .into_inner();
    println!(
        "registered {} (id {})",
        output::printable(&profile.email),
        profile.id
    );
    Ok(())
}

pub async fn login(home: &ProjectHome, gateway: Option<String>, args: LoginArgs) -> Result<()> {
    let password = read_password(args.password_stdin, false)?;
    let addr = client::gateway_addr(home, gateway)?;
    let request = LoginRequest {
        email: args.email.clone(),
        password,
    };
    let response = client::gateway(&addr)
        .await?
        .login(request)
        .await
        .map_err(|status| client::status_error(&status))?
        .into_inner();
    home.save_token(&response.access_token)?;
    println!(
        "logged in as {}; the token expires at {}",
        output::printable(&args.email.trim().to_lowercase()),
        output::timestamp(response.expires_at)
    );
    Ok(())
}

/// The JSON scripts read: stable field names.
#[derive(Serialize)]
struct ProfileJson<'a> {
    id: i64,
    email: &'a str,
    full_name: &'a str,
    created_at: String,
}

pub async fn whoami(home: &ProjectHome, gateway: Option<String>, args: OutputArgs) -> Result<()> {
    let token = home.token()?.ok_or_else(|| {
        CliError::auth("not logged in").with_hint("run `userctl login --email YOU@EXAMPLE.COM`")
    })?;
    let addr = client::gateway_addr(home, gateway)?;
    let profile: Profile = client::gateway(&addr)
        .await?
        .who_am_i(client::authorized(WhoAmIRequest {}, &token)?)
        .await
        .map_err(|status| {
            let err = client::status_error(&status);
            if err.exit == crate::error::Exit::Auth {
                err.with_hint("run `userctl login` again")
            } else {
                err
            }
        })?
        .into_inner();
    match args.output {
        OutputFormat::Json => {
            let json = ProfileJson {
                id: profile.id,
                email: &profile.email,
                full_name: &profile.full_name,
                created_at: output::timestamp(profile.created_at),
            };
            let text = serde_json::to_string_pretty(&json)
                .map_err(|err| CliError::failed(err.to_string()))?;
            println!("{}", output::printable_json(&text));
        }
        OutputFormat::Table => {
            let rows = vec![
                vec!["id".into(), profile.id.to_string()],
                vec!["email".into(), output::printable(&profile.email)],
                vec!["name".into(), output::printable(&profile.full_name)],
                vec!["created".into(), output::timestamp(profile.created_at)],
            ];
            print!("{}", output::table(&["field", "value"], &rows));
        }
    }
    Ok(())
}

pub fn logout(home: &ProjectHome) -> Result<()> {
    if home.forget_token()? {
        println!("logged out");
    } else {
        println!("not logged in");
    }
    Ok(())
}

/// The first line of stdin with `--password-stdin`; otherwise a prompt without echo (twice when
/// `confirm`, for a new password).
fn read_password(from_stdin: bool, confirm: bool) -> Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|err| {
                CliError::failed(format!("cannot read the password from stdin: {err}"))
            })?;
        let password = line.trim_end_matches(['\n', '\r']).to_owned();
        if password.is_empty() {
            return Err(CliError::usage("no password on stdin").with_hint("pipe it in, e.g. `printf '%s\\n' \"$PW\" | userctl login --email E --password-stdin`"));
        }
        return Ok(password);
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::usage("no terminal to prompt for the password")
            .with_hint("pass --password-stdin and pipe the password in"));
    }
    let prompt = |text: &str| {
        rpassword::prompt_password(text)
            .map_err(|err| CliError::failed(format!("cannot read the password: {err}")))
    };
    let password = prompt("Password: ")?;
    if confirm && prompt("Repeat password: ")? != password {
        return Err(CliError::usage("the passwords do not match"));
    }
    Ok(password)
}
