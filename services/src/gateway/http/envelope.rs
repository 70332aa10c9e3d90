//! The wire format of the HTTP API, kept from the design this project follows: every answer is
//! `{"Result": …, "Error": null}` or `{"Result": null, "Error": {"Code", "Message"}}` with
//! PascalCase members, and request members are matched case-insensitively as Go's
//! `encoding/json` did, so a frontend written for the original works unchanged.

use std::collections::BTreeMap;

use axum::{
    Json,
    body::Bytes,
    extract::{FromRequest, Request},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::gateway::validate::Violations;

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Envelope<T> {
    pub result: Option<T>,
    pub error: Option<ErrorBody>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ErrorBody {
    /// Stable and machine-readable: the gRPC code name where there is one (`INVALID_ARGUMENT`,
    /// `UNAUTHENTICATED`…), else an HTTP one (`NOT_FOUND`, `PAYLOAD_TOO_LARGE`…).
    pub code: &'static str,
    /// For people; every broken field rule is in it.
    pub message: String,
    /// Validation failures only: the reason per request member, for a form to show beside
    /// each input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<BTreeMap<&'static str, &'static str>>,
}

/// 200 with `result`.
pub fn success<T: Serialize>(result: T) -> Response {
    Json(Envelope {
        result: Some(result),
        error: None,
    })
    .into_response()
}

/// `status` with an error envelope.
pub fn failure(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response {
    error_response(status, code, message.into(), None)
}

/// 400 naming every broken rule, with the members as the client spelled them, in the order of
/// the original's forms.
pub fn invalid(violations: &Violations) -> Response {
    const FORM_ORDER: [&str; 4] = ["full_name", "email", "password", "confirm_password"];
    let mut violations = violations.clone();
    violations.sort_by_key(|(field, _)| FORM_ORDER.iter().position(|name| name == field));
    let message = violations
        .iter()
        .map(|(field, reason)| format!("{}: {reason}", member(field)))
        .collect::<Vec<_>>()
        .join("; ");
    let fields = violations
        .iter()
        .map(|(field, reason)| (member(field), *reason))
        .collect();
    error_response(
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        message,
        Some(fields),
    )
}

fn error_response(
    status: StatusCode,
    code: &'static str,
    message: String,
    fields: Option<BTreeMap<&'static str, &'static str>>,
) -> Response {
    let body = Envelope::<()> {
        result: None,
        error: Some(ErrorBody {
            code,
            message,
            fields,
        }),
    };
    (status, Json(body)).into_response()
}

/// The JSON member for a field named as in the protobuf messages and [`Violations`].
fn member(field: &str) -> &'static str {
    match field {
        "email" => "Email",
        "full_name" => "FullName",
        "password" => "Password",
        "confirm_password" => "ConfirmPassword",
        _ => "Body",
    }
}

/// Why a request was refused before it reached the gateway's rules: these have no gRPC
/// counterpart (protobuf decoding and message limits cover them there).
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error("not JSON")]
    NotJson,
    #[error("body too large")]
    TooLarge,
    #[error("unreadable body")]
    Unreadable,
    #[error("bad JSON: {0}")]
    BadJson(String),
    #[error("no such route")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("timed out")]
    TimedOut,
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        match self {
            Self::NotJson => failure(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "send the body as JSON with `Content-Type: application/json`",
            ),
            Self::TooLarge => failure(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                format!(
                    "the body is larger than {} KiB",
                    crate::server::MAX_REQUEST_BYTES / 1024
                ),
            ),
            Self::Unreadable => failure(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "the body could not be read",
            ),
            Self::BadJson(message) => failure(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message),
            Self::NotFound => failure(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "no such route; see /api/openapi.json",
            ),
            Self::MethodNotAllowed => failure(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "this route does not take that method; see /api/openapi.json",
            ),
            Self::TimedOut => failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "the request took too long; retry shortly",
            ),
        }
    }
}

/// A request body that is a JSON object, sent as JSON and within the body limit.
#[derive(Debug)]
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = Rejection;

    async fn from_request(request: Request, state: &S) -> Result<Self, Rejection> {
        if !is_json(request.headers()) {
            return Err(Rejection::NotJson);
        }
        // `Bytes` honours the router's `DefaultBodyLimit`, declared length or not.
        let bytes =
            Bytes::from_request(request, state)
                .await
                .map_err(|rejection| match rejection.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => Rejection::TooLarge,
                    _ => Rejection::Unreadable,
                })?;
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(object)) => Ok(Self(object)),
            Ok(_) => Err(Rejection::BadJson("the body must be a JSON object".into())),
            Err(err) => Err(Rejection::BadJson(format!(
                "the body is not valid JSON: {err}"
            ))),
        }
    }
}

/// `application/json`, with or without parameters, or any `application/*+json`.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl JsonObject {
    /// The string member `name` (exact spelling first, then any case); absent or `null` is
    /// empty, so the gateway's rules report it as required. Another type is a violation
    /// against `field`.
    pub fn string(&self, name: &str, field: &'static str, violations: &mut Violations) -> String {
        let value = self.0.get(name).or_else(|| {
            self.0
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value)
        });
        match value {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(value)) => value.clone(),
            Some(_) => {
                violations.push((field, "must be a string"));
                String::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(json: Value) -> JsonObject {
        match json {
            Value::Object(map) => JsonObject(map),
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn members_match_exactly_first_then_in_any_case() {
        let body =
            object(serde_json::json!({"email": "lower", "Password": "exact", "PASSWORD": "upper"}));
        let mut violations = Violations::new();
        assert_eq!(body.string("Email", "email", &mut violations), "lower");
        assert_eq!(
            body.string("Password", "password", &mut violations),
            "exact"
        );
        assert_eq!(body.string("FullName", "full_name", &mut violations), "");
        assert!(violations.is_empty());
    }

    #[test]
    fn a_member_of_another_type_is_a_violation() {
        let body = object(serde_json::json!({"Email": 5, "FullName": null}));
        let mut violations = Violations::new();
        assert_eq!(body.string("Email", "email", &mut violations), "");
        assert_eq!(body.string("FullName", "full_name", &mut violations), "");
        assert_eq!(violations, [("email", "must be a string")]);
    }

    #[test]
    fn json_content_types_are_recognised() {
        let headers = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().expect("header"));
            headers
        };
        for json in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/problem+json",
        ] {
            assert!(is_json(&headers(json)), "{json}");
        }
        for other in [
            "text/plain;charset=UTF-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            assert!(!is_json(&headers(other)), "{other}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }
}
