//! The reference page at `GET /`: register, log in and show the profile, in plain HTML and one
//! small script calling the same JSON API any frontend calls. Its files are compiled in, so the
//! binary serves it with nothing beside it.
//!
//! Everything it loads comes from this origin, so its Content-Security-Policy allows `'self'`
//! and nothing else: no inline script or style, no third-party host, no framing.

use axum::{
    http::{HeaderName, HeaderValue, header},
    response::{IntoResponse, Response},
};

const INDEX_HTML: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const APP_CSS: &str = include_str!("page/app.css");

/// Only this origin's files and API; forms post nowhere else; no page may frame this one.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'; object-src 'none'";

pub async fn index() -> Response {
    serve("text/html; charset=utf-8", INDEX_HTML)
}

pub async fn script() -> Response {
    serve("text/javascript; charset=utf-8", APP_JS)
}

pub async fn stylesheet() -> Response {
    serve("text/css; charset=utf-8", APP_CSS)
}

/// `body` as `content_type`, with the page's security headers. `no-cache` makes a browser
/// revalidate, so a new binary's page is never mixed with an old script.
fn serve(content_type: &'static str, body: &'static str) -> Response {
    let headers: [(HeaderName, HeaderValue); 5] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (headers, body).into_response()
}
