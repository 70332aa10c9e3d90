//! Verifying the stack's access tokens in your own service, with the published keys alone: the
//! example the README shows, run by `tests/tokens.rs` against a real stack.
//!
//!     cargo run -p userctl-tests --example verify_token -- http://127.0.0.1:8080 "$TOKEN"
//!
//! A real service fetches the key set once, keeps it, and fetches it again when a token names a
//! key it does not have (a rotation publishes the new key seconds before it signs).

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header, jwk::JwkSet};
use serde::Deserialize;

/// The claims your service needs: who (`sub`, a user id) and which session (`sid`).
#[derive(Debug, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub sid: String,
    pub exp: u64,
}

/// Fetches the key set from the gateway's HTTP door, e.g. `http://127.0.0.1:8080`.
pub async fn fetch_keys(gateway_http: &str) -> Result<JwkSet, Box<dyn std::error::Error>> {
    let url = format!("{gateway_http}/.well-known/jwks.json");
    Ok(reqwest::get(url).await?.error_for_status()?.json().await?)
}

/// The token's claims when it is signed by one of `keys` and valid now for this stack.
pub fn verify(token: &str, keys: &JwkSet) -> Result<Claims, Box<dyn std::error::Error>> {
    let header = decode_header(token)?;
    let kid = header.kid.ok_or("the token names no key")?;
    let jwk = keys
        .find(&kid)
        .ok_or("unknown key: fetch the key set again")?;
    // The algorithm comes from the published key, never from the token's header.
    let alg: Algorithm = jwk
        .common
        .key_algorithm
        .ok_or("the key names no algorithm")?
        .to_string()
        .parse()?;
    let mut validation = Validation::new(alg);
    validation.set_issuer(&["userctl"]);
    validation.set_audience(&["userctl"]);
    Ok(decode::<Claims>(token, &DecodingKey::from_jwk(jwk)?, &validation)?.claims)
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(gateway_http), Some(token)) = (args.next(), args.next()) else {
        return Err("usage: verify_token GATEWAY_HTTP_URL TOKEN".into());
    };
    let keys = fetch_keys(&gateway_http).await?;
    let claims = verify(&token, &keys)?;
    println!(
        "user {} (session {}), valid until {}",
        claims.sub, claims.sid, claims.exp
    );
    Ok(())
}
