//! `/metrics` in the Prometheus text format, and the middleware that gives every HTTP request a
//! trace, a span, a deadline, a count and a latency.
//!
//! The `prometheus` crate without its default `protobuf` feature: a handful of small
//! dependencies for counters, labelled vectors, histograms and a correct text encoder, and a
//! registry per gateway (no global state), so many gateways in one test process keep their own
//! figures.

use std::{sync::Arc, time::Instant};

use super::envelope::Rejection;
use crate::{gateway::service::LoginCounters, requests::Recorder, trace};
use axum::{
    extract::{MatchedPath, Request, State},
    http::{HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
    TextEncoder,
};

/// Longest an HTTP request may run, as for gRPC (`server::REQUEST_TIMEOUT`).
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Seconds; from a cached profile read (~1 ms) to a queued password hash (~seconds).
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, thiserror::Error)]
#[error("cannot register the gateway's metrics")]
pub struct MetricsError(#[from] prometheus::Error);

pub struct Metrics {
    registry: Registry,
    /// By method, route template (never the raw path, which a client controls) and status.
    requests: IntCounterVec,
    latency: HistogramVec,
    logins: LoginCounters,
}

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new_custom(Some("userctl_gateway".into()), None)?;
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests answered"),
            &["method", "route", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time to answer an HTTP request",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["method", "route"],
        )?;
        let logins = LoginCounters {
            failed: IntCounter::new(
                "login_failures_total",
                "Logins refused for a wrong password or unknown account (gRPC and HTTP)",
            )?,
            throttled: IntCounter::new(
                "logins_throttled_total",
                "Logins refused because the account or peer was locked out (gRPC and HTTP)",
            )?,
            registrations_throttled: IntCounter::new(
                "registrations_throttled_total",
                "Registrations refused because the peer spent its registration budget",
            )?,
            hashing_busy: IntCounter::new(
                "hashing_busy_total",
                "Registrations and logins refused because their peer had its share of password hashes queued",
            )?,
        };
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(logins.failed.clone()))?;
        registry.register(Box::new(logins.throttled.clone()))?;
        registry.register(Box::new(logins.registrations_throttled.clone()))?;
        registry.register(Box::new(logins.hashing_busy.clone()))?;
        Ok(Self {
            registry,
            requests,
            latency,
            logins,
        })
    }

    /// The counters the gateway service increments.
    pub fn login_counters(&self) -> LoginCounters {
        self.logins.clone()
    }

    /// Everything, in the text exposition format.
    pub fn render(&self) -> Response {
        let encoder = TextEncoder::new();
        let mut text = Vec::new();
        match encoder.encode(&self.registry.gather(), &mut text) {
            Ok(()) => (
                [(header::CONTENT_TYPE, encoder.format_type().to_owned())],
                text,
            )
                .into_response(),
            Err(err) => {
                tracing::error!(%err, "cannot encode metrics");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    }
}

/// Wraps every request (matched or not, CORS preflights included) in its trace
/// ([`crate::trace`]: the caller's `traceparent` or a new one, returned on the response), a
/// span, a deadline, the request count and latency, and one `answered` line.
pub async fn observe(
    State((metrics, requests)): State<(Arc<Metrics>, Arc<Recorder>)>,
    request: Request,
    next: Next,
) -> Response {
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let context = trace::arriving(request.headers());
    let span = tracing::info_span!(
        "request",
        trace_id = %context.trace_id,
        method = %method,
        route = %route
    );
    let started = Instant::now();
    let serving = tokio::time::timeout(REQUEST_TIMEOUT, next.run(request));
    let mut response = match trace::in_request(context, span.clone(), serving).await {
        Ok(response) => response,
        Err(_) => Rejection::TimedOut.into_response(),
    };
    if let Ok(value) = HeaderValue::try_from(context.to_string()) {
        response.headers_mut().insert(trace::HEADER, value);
    }
    let elapsed = started.elapsed();
    let status = response.status();
    let elapsed_us = elapsed.as_micros() as u64;
    // Probes and scrapes come every few seconds from proxies and collectors.
    let quiet = matches!(route.as_str(), "/healthz" | "/readyz" | "/metrics");
    if !quiet {
        let failed = status.is_client_error() || status.is_server_error();
        requests.record(
            &format!("{method} {route}"),
            failed.then(|| status.as_str()),
            elapsed,
        );
    }
    span.in_scope(|| {
        let status = status.as_u16();
        if status >= 500 {
            tracing::warn!(status, elapsed_us, "answered");
        } else if quiet {
            tracing::debug!(status, elapsed_us, "answered");
        } else {
            tracing::info!(status, elapsed_us, "answered");
        }
    });
    metrics
        .requests
        .with_label_values(&[method, route.as_str(), status.as_str()])
        .inc();
    metrics
        .latency
        .with_label_values(&[method, route.as_str()])
        .observe(elapsed.as_secs_f64());
    response
}

/// The method as a label: the nine standard methods by name, anything else as one `other`,
/// since a client can send any token as a method and each new label value is a new series
/// kept for the life of the process. (The route is bounded the same way: a route template, or
/// one `unmatched`.)
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}
