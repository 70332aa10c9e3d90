//! One request followed across hops (docs/design.md, "Tracing a request"), with W3C Trace
//! Context (<https://www.w3.org/TR/trace-context/>):
//!
//! - every server (gRPC through [`Layer`], the HTTP door through its observing middleware)
//!   takes the caller's `traceparent`, or starts a trace when there is none or it is malformed;
//! - the request runs inside a `request{trace_id=…}` span, so every line it logs carries the
//!   trace id, and ends with one `answered` line with its outcome and time;
//! - the context is kept in a task-local while the request runs, and [`Propagate`] puts it on
//!   every call the request makes to the next hop (gateway → cache → store);
//! - the response carries `traceparent` back, so a caller learns the id to look up
//!   (`userctl logs --trace ID`).
//!
//! Nothing here keeps traces: the services' logs are the record.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use std::sync::Arc;

use rand::Rng as _;
use tonic::{Status, codegen::http, metadata::MetadataValue, service::Interceptor};
use tracing::Instrument as _;

use crate::requests::Recorder;

/// The header (and gRPC metadata key) that carries the context.
pub const HEADER: &str = "traceparent";

/// Where one request is in its trace: the trace it belongs to, the span of the hop that sent
/// it, and the trace flags (bit 0: sampled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: TraceId,
    pub parent_id: SpanId,
    pub flags: u8,
}

/// 16 bytes, never all zero; printed as 32 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(u128);

/// 8 bytes, never all zero; printed as 16 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(u64);

/// The sampled flag: we log every request, so traces we start are sampled.
const SAMPLED: u8 = 0x01;

impl TraceContext {
    /// A new trace, for a request that came without a (valid) `traceparent`.
    pub fn start() -> Self {
        let mut rng = rand::rng();
        Self {
            trace_id: TraceId(nonzero(|| rng.random())),
            parent_id: SpanId(nonzero(|| rng.random())),
            flags: SAMPLED,
        }
    }

    /// The context this hop hands on: the same trace and flags, with a span of its own.
    pub fn child(self) -> Self {
        Self {
            parent_id: SpanId(nonzero(|| rand::rng().random())),
            ..self
        }
    }

    /// Parses a `traceparent` value. Version 00 must be exactly four fields; a later version
    /// may append fields, which are ignored (the specification's forward compatibility);
    /// version ff, upper-case hex and all-zero ids are invalid.
    pub fn parse(value: &str) -> Option<Self> {
        let mut fields = value.split('-');
        let version = fields.next()?;
        let trace_id = fields.next()?;
        let parent_id = fields.next()?;
        let flags = fields.next()?;
        let version = hex(version, 2)? as u8;
        let valid_tail = match version {
            0x00 => fields.next().is_none(),
            0xff => false,
            _ => true,
        };
        if !valid_tail {
            return None;
        }
        Some(Self {
            trace_id: TraceId::parse(trace_id)?,
            parent_id: SpanId(
                u64::try_from(hex(parent_id, 16)?)
                    .ok()
                    .filter(|id| *id != 0)?,
            ),
            flags: hex(flags, 2)? as u8,
        })
    }
}

impl fmt::Display for TraceContext {
    /// The `traceparent` value, version 00.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id, self.parent_id, self.flags
        )
    }
}

impl TraceId {
    /// 32 lowercase hex digits, not all zero.
    pub fn parse(text: &str) -> Option<Self> {
        Some(Self(hex(text, 32).filter(|id| *id != 0)?))
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Exactly `digits` lowercase hex digits (the specification refuses upper case).
fn hex(text: &str, digits: usize) -> Option<u128> {
    let lowercase_hex = |byte: &u8| matches!(byte, b'0'..=b'9' | b'a'..=b'f');
    (text.len() == digits && text.as_bytes().iter().all(lowercase_hex))
        .then(|| u128::from_str_radix(text, 16).ok())
        .flatten()
}

/// Draws until the value is not zero, which the specification reserves for "invalid".
fn nonzero<T: Default + PartialEq>(mut draw: impl FnMut() -> T) -> T {
    loop {
        let value = draw();
        if value != T::default() {
            return value;
        }
    }
}

tokio::task_local! {
    /// The context the running request hands on to the next hop.
    static CURRENT: TraceContext;
}

/// The context of the request this task is serving, if any.
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(|context| *context).ok()
}

/// The context a request arrived with, or a new trace; then this hop's own.
pub(crate) fn arriving(headers: &http::HeaderMap) -> TraceContext {
    headers
        .get(HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(TraceContext::parse)
        .map_or_else(TraceContext::start, TraceContext::child)
}

/// Runs `serve` as one traced request: inside the request span and with `context` current, so
/// the calls it makes carry it on.
pub(crate) fn in_request<F: Future>(
    context: TraceContext,
    span: tracing::Span,
    serve: F,
) -> impl Future<Output = F::Output> {
    CURRENT.scope(context, serve).instrument(span)
}

/// Puts the current request's context on an outgoing gRPC call; a call made outside any
/// request (a probe, a discovery watch) goes without one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Propagate;

impl Interceptor for Propagate {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(context) = current()
            && let Ok(value) = MetadataValue::try_from(context.to_string())
        {
            request.metadata_mut().insert(HEADER, value);
        }
        Ok(request)
    }
}

/// Traces every call a gRPC server answers (see the module docs) and records it in the
/// server's [`Recorder`]. Health checks, reflection and the figures' own reads are logged only
/// at debug and not recorded: orchestrators, balancers and dashboards ask every few seconds.
#[derive(Debug, Clone)]
pub struct Layer {
    requests: Arc<Recorder>,
}

impl Layer {
    pub fn new(requests: Arc<Recorder>) -> Self {
        Self { requests }
    }
}

impl<S> tower::Layer<S> for Layer {
    type Service = Traced<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Traced {
            inner,
            requests: self.requests.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Traced<S> {
    inner: S,
    requests: Arc<Recorder>,
}

impl<S, RequestBody, ResponseBody> tower::Service<http::Request<RequestBody>> for Traced<S>
where
    S: tower::Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        let context = arriving(request.headers());
        let path = request.uri().path();
        let quiet = ["/grpc.health.", "/grpc.reflection.", "/userctl.requests."]
            .iter()
            .any(|prefix| path.starts_with(prefix));
        let rpc = rpc_name(path).to_owned();
        let span = tracing::info_span!("request", trace_id = %context.trace_id, rpc = %rpc);
        let requests = self.requests.clone();
        let started = Instant::now();
        // Called inside the scope too: a service may start its work in `call`.
        let serving = CURRENT.sync_scope(context, || self.inner.call(request));
        let answered = span.clone();
        Box::pin(async move {
            let mut result = in_request(context, span, serving).await;
            if let Ok(response) = &mut result {
                if let Ok(value) = http::HeaderValue::try_from(context.to_string()) {
                    response.headers_mut().insert(HEADER, value);
                }
                let code = grpc_code(response.headers());
                let elapsed = started.elapsed();
                if !quiet {
                    requests.record(&rpc, (code != "OK").then_some(code), elapsed);
                }
                let elapsed_us = elapsed.as_micros() as u64;
                answered.in_scope(|| match code {
                    _ if quiet => tracing::debug!(code = %code, elapsed_us, "answered"),
                    "Internal" | "Unknown" | "DataLoss" => {
                        tracing::warn!(code = %code, elapsed_us, "answered")
                    }
                    _ => tracing::info!(code = %code, elapsed_us, "answered"),
                });
            }
            result
        })
    }
}

/// `Gateway/WhoAmI` for `/userctl.gateway.v1.Gateway/WhoAmI`: the service and method, without
/// the package every call of a service shares.
fn rpc_name(path: &str) -> &str {
    path.rsplit_once('.').map_or(path, |(_, name)| name)
}

/// The call's gRPC status, when the response headers already say it (an error answered at
/// once); a call that succeeds says so later, in trailers.
fn grpc_code(headers: &http::HeaderMap) -> &'static str {
    let code = headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .unwrap_or(0);
    code_name(tonic::Code::from_i32(code))
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Cancelled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specifications_example_parses_and_prints_back() {
        let context = TraceContext::parse(EXAMPLE).expect("valid");
        assert_eq!(
            context.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(context.parent_id.to_string(), "00f067aa0ba902b7");
        assert_eq!(context.flags, 1);
        assert_eq!(context.to_string(), EXAMPLE);
    }

    #[test]
    fn malformed_values_are_refused() {
        for value in [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            // upper case, all-zero ids, wrong lengths, version ff, extra fields on 00
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(value), None, "{value:?}");
        }
    }

    #[test]
    fn a_later_version_may_carry_more_fields() {
        let value = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes";
        assert!(TraceContext::parse(value).is_some());
    }

    #[test]
    fn a_child_keeps_the_trace_and_flags_with_a_span_of_its_own() {
        let parent = TraceContext::parse(EXAMPLE).expect("valid");
        let child = parent.child();
        assert_eq!(child.trace_id, parent.trace_id);
        assert_eq!(child.flags, parent.flags);
        assert_ne!(child.parent_id, parent.parent_id);
    }

    #[test]
    fn a_started_trace_is_sampled_and_parses_back() {
        let started = TraceContext::start();
        assert_eq!(started.flags & SAMPLED, SAMPLED);
        assert_eq!(TraceContext::parse(&started.to_string()), Some(started));
    }

    #[test]
    fn an_rpc_is_named_by_service_and_method() {
        assert_eq!(
            rpc_name("/userctl.gateway.v1.Gateway/WhoAmI"),
            "Gateway/WhoAmI"
        );
        assert_eq!(rpc_name("/odd"), "/odd");
    }

    #[tokio::test]
    async fn calls_made_while_serving_carry_the_context_on() {
        let context = TraceContext::start();
        let sent = CURRENT
            .scope(context, async {
                Propagate
                    .call(tonic::Request::new(()))
                    .expect("never refuses")
            })
            .await;
        let value = sent.metadata().get(HEADER).expect("traceparent sent");
        assert_eq!(value.to_str().ok(), Some(context.to_string().as_str()));

        let outside = Propagate
            .call(tonic::Request::new(()))
            .expect("never refuses");
        assert!(outside.metadata().get(HEADER).is_none());
    }
}
