//! `register`, `login`, `whoami`, `logout`: the user flows against the gateway. A login saves
//! the access token and the refresh token (0600); `whoami` refreshes an expired access token by
//! itself; `logout` ends the session on the server, then forgets both.

use std::io::{BufRead as _, IsTerminal as _};

use serde::Serialize;
use tonic::transport::Channel;
use userctl_proto::gateway::v1::{
    LoginRequest, LogoutRequest, Profile, RefreshRequest, RegisterRequest, WhoAmIRequest,
    gateway_client::GatewayClient,
};

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
    home.save_tokens(&response.access_token, &response.refresh_token)?;
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
    let addr = client::gateway_addr(home, gateway)?;
    let mut gateway = client::gateway(&addr).await?;
    let token = live_token(home, &mut gateway).await?;
    let profile: Profile = gateway
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

/// Ends the session on the server, then forgets the tokens. A session the server no longer
/// knows (already ended, or from a wiped stack) is simply forgotten; a server that cannot be
/// reached keeps the tokens, so the session can still be ended.
pub async fn logout(home: &ProjectHome, gateway: Option<String>) -> Result<()> {
    if home.token()?.is_none() {
        home.forget_token()?;
        println!("not logged in");
        return Ok(());
    }
    let addr = client::gateway_addr(home, gateway)?;
    let mut gateway = client::gateway(&addr).await?;
    let ended = match live_token(home, &mut gateway).await {
        Ok(token) => match gateway
            .logout(client::authorized(LogoutRequest {}, &token)?)
            .await
        {
            Ok(_) => true,
            Err(status) if status.code() == tonic::Code::Unauthenticated => false,
            Err(status) => return Err(client::status_error(&status)),
        },
        // Expired and not refreshable: the session has ended already.
        Err(err) if err.exit == crate::error::Exit::Auth => false,
        Err(err) => return Err(err),
    };
    home.forget_token()?;
    if ended {
        println!("logged out: the session is ended on the server");
    } else {
        println!("logged out (the server had already ended the session)");
    }
    Ok(())
}

/// The saved access token, refreshed first when it has expired (the refresh token is spent and
/// both are saved anew). Exit 3 when there is none, or it cannot be refreshed.
async fn live_token(home: &ProjectHome, gateway: &mut GatewayClient<Channel>) -> Result<String> {
    let not_logged_in =
        || CliError::auth("not logged in").with_hint("run `userctl login --email YOU@EXAMPLE.COM`");
    let token = home.token()?.ok_or_else(not_logged_in)?;
    if !expired(&token) {
        return Ok(token);
    }
    // One refresh at a time: read the tokens again under the lock, another `userctl` may
    // have refreshed them meanwhile.
    let _lock = home.lock_tokens()?;
    let token = home.token()?.ok_or_else(not_logged_in)?;
    if !expired(&token) {
        return Ok(token);
    }
    let Some(refresh_token) = home.refresh_token()? else {
        return Err(
            CliError::auth("the saved token has expired").with_hint("run `userctl login` again")
        );
    };
    let response = gateway
        .refresh(RefreshRequest { refresh_token })
        .await
        .map_err(|status| {
            let err = client::status_error(&status);
            if err.exit == crate::error::Exit::Auth {
                CliError::auth("the session has ended").with_hint("run `userctl login` again")
            } else {
                err
            }
        })?
        .into_inner();
    home.save_tokens(&response.access_token, &response.refresh_token)?;
    Ok(response.access_token)
}

/// Whether the token's `exp` has come (read without checking the signature: the gateway does
/// that). A token whose expiry cannot be read is sent as it is, for the gateway to judge.
fn expired(token: &str) -> bool {
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
    #[derive(serde::Deserialize)]
    struct Expiry {
        exp: u64,
    }
    let exp = token
        .split('.')
        .nth(1)
        .and_then(|payload| URL_SAFE_NO_PAD.decode(payload).ok())
        .and_then(|json| serde_json::from_slice::<Expiry>(&json).ok())
        .map(|claims| claims.exp);
    exp.is_some_and(|exp| exp <= crate::home::now_secs())
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
