//! The OpenAI-compatible HTTP provider: `POST {endpoint}/chat/completions`
//! (Ollama, llama.cpp server, vLLM, OpenAI) over hyper, http or https.
//!
//! The rest of the program is synchronous, so each call builds a small
//! current-thread tokio runtime, runs the request on it and drops it: no
//! threads are left behind and nothing stays in memory between calls.
//!
//! Time limits: `connect_timeout` bounds each TCP (and TLS) connection;
//! `timeout` bounds the whole call, retries and their waits included, so a
//! systemd unit can budget for it. A read that outlives it is a
//! [`LlmError::Timeout`] and is not retried: a model that needed that long
//! would need it again.
//!
//! Retries (at most `retries` more attempts) on 429, 5xx, connection
//! errors and connect timeouts, with exponential backoff and jitter, or
//! the server's `Retry-After` when it sends one. Other 4xx answers fail at
//! once: asking again cannot fix a wrong key or model name.

use std::collections::hash_map::RandomState;
use std::error::Error as StdError;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use super::{Answer, LlmError, Provider, Request, Usage};
use crate::config::LlmSettings;
use crate::config::values::format_duration;

const PROVIDER: &str = "openai";

/// Answers larger than this are refused (a summary is a few KiB; the cap
/// keeps a misbehaving server from filling a Pi's memory).
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// First backoff step in production; doubled on every retry.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);

/// Backoff never waits longer than this between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A `Retry-After` longer than this is not waited for: the call gives up
/// instead (a server asking for an hour will not be ready in two minutes,
/// and asking earlier than it said is rude).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// Sent before the prompt; the prompt itself carries the instructions.
const SYSTEM_MESSAGE: &str = "You are PiMainteno, a careful assistant for the maintainer of software projects on a small Linux server. Answer in Markdown.";

/// How much of a non-JSON error body is quoted in an error message.
const ERROR_SNIPPET: usize = 300;

pub struct OpenAi {
    settings: LlmSettings,
    backoff: Duration,
}

impl OpenAi {
    pub fn new(settings: &LlmSettings) -> Self {
        OpenAi {
            settings: settings.clone(),
            backoff: DEFAULT_BACKOFF,
        }
    }

    /// The first backoff step (doubled on each retry, with jitter). Tests
    /// use milliseconds; production keeps [`DEFAULT_BACKOFF`].
    pub fn with_backoff(mut self, base: Duration) -> Self {
        self.backoff = base;
        self
    }

    fn invalid(detail: impl Into<String>) -> LlmError {
        LlmError::Invalid {
            provider: PROVIDER,
            detail: detail.into(),
        }
    }

    fn failed(detail: impl Into<String>) -> LlmError {
        LlmError::Failed {
            provider: PROVIDER,
            detail: detail.into(),
        }
    }

    fn unavailable(detail: impl Into<String>) -> LlmError {
        LlmError::Unavailable {
            provider: PROVIDER,
            detail: detail.into(),
        }
    }

    fn timeout(&self) -> LlmError {
        LlmError::Timeout {
            provider: PROVIDER,
            after: self.settings.timeout,
        }
    }

    fn request_body(&self, prompt: &str, json: bool) -> Vec<u8> {
        let mut body = serde_json::json!({
            "messages": [
                {"role": "system", "content": SYSTEM_MESSAGE},
                {"role": "user", "content": prompt},
            ],
            "stream": false,
        });
        if json {
            // JSON mode (OpenAI, Ollama, llama.cpp, vLLM): the reply is one
            // JSON object. The caller still validates it.
            body["response_format"] = serde_json::json!({"type": "json_object"});
        }
        // llama.cpp's server serves one model and accepts a missing name;
        // the others need it, and the configuration asks for it.
        if let Some(model) = &self.settings.model {
            body["model"] = serde_json::Value::String(model.clone());
        }
        serde_json::to_vec(&body).expect("a JSON value always serializes")
    }

    async fn call(&self, url: &Uri, body: Bytes) -> Result<Answer, LlmError> {
        let mut http = HttpConnector::new();
        // The https connector wraps this one and needs it to accept https URIs.
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(self.settings.connect_timeout));
        if url.scheme_str() == Some("https") {
            // Roots are loaded only for https endpoints: a local Ollama on
            // plain http must work on a Pi without ca-certificates.
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
                .map_err(|e| {
                    Self::unavailable(format!(
                        "cannot load the system's CA certificates for {}: {e}; install the ca-certificates package (or set SSL_CERT_FILE)",
                        display_url(url)
                    ))
                })?
                .https_or_http()
                .enable_http1()
                .wrap_connector(http);
            let client = Client::builder(TokioExecutor::new()).build(https);
            self.attempts(&client, url, body).await
        } else {
            let client = Client::builder(TokioExecutor::new()).build(http);
            self.attempts(&client, url, body).await
        }
    }

    async fn attempts<C>(
        &self,
        client: &Client<C, Full<Bytes>>,
        url: &Uri,
        body: Bytes,
    ) -> Result<Answer, LlmError>
    where
        C: Connect + Clone + Send + Sync + 'static,
    {
        let deadline = crate::time::deadline(Instant::now(), self.settings.timeout);
        let attempts = self.settings.retries.saturating_add(1);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(self.timeout());
            }
            let outcome =
                tokio::time::timeout(remaining, self.send(client, url, body.clone())).await;
            let (error, retry_after) = match outcome {
                Err(_) => {
                    tracing::debug!(attempt, "no answer from {} in time", display_url(url));
                    return Err(self.timeout());
                }
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(Attempt::Fatal(e))) => return Err(e),
                Ok(Err(Attempt::Retry { error, retry_after })) => (error, retry_after),
            };
            if attempt >= attempts {
                return Err(with_note(error, &format!("after {attempt} attempts")));
            }
            let wait = match retry_after {
                Some(asked) if asked > MAX_RETRY_AFTER => {
                    return Err(with_note(
                        error,
                        &format!(
                            "the server asks to retry after {}, longer than the {} this program waits",
                            format_duration(asked),
                            format_duration(MAX_RETRY_AFTER)
                        ),
                    ));
                }
                Some(asked) => asked,
                None => backoff(self.backoff, attempt, jitter()),
            };
            if Instant::now() + wait >= deadline {
                return Err(with_note(
                    error,
                    &format!(
                        "after {attempt} attempts; no time left for another within the {} limit",
                        format_duration(self.settings.timeout)
                    ),
                ));
            }
            tracing::warn!(
                attempt,
                attempts,
                wait_ms = wait.as_millis() as u64,
                "attempt {attempt}/{attempts} failed: {error}; retrying in {:.1}s",
                wait.as_secs_f64()
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// One attempt: connect, send, read the whole answer.
    async fn send<C>(
        &self,
        client: &Client<C, Full<Bytes>>,
        url: &Uri,
        body: Bytes,
    ) -> Result<Answer, Attempt>
    where
        C: Connect + Clone + Send + Sync + 'static,
    {
        let mut req = hyper::Request::builder()
            .method(Method::POST)
            .uri(url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("pimainteno/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body))
            .map_err(|e| Attempt::Fatal(Self::failed(format!("cannot build the request: {e}"))))?;
        if let Some(key) = &self.settings.api_key {
            let mut value = HeaderValue::try_from(format!("Bearer {}", key.expose()))
                .map_err(|_| {
                    Attempt::Fatal(Self::failed(
                        "the API key contains characters not allowed in an HTTP header; check api_key_file",
                    ))
                })?;
            // Keeps it out of hyper's debug output.
            value.set_sensitive(true);
            req.headers_mut().insert(header::AUTHORIZATION, value);
        }

        let response = client
            .request(req)
            .await
            .map_err(|e| classify_send_error(&e, url))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let bytes = read_body(response.into_body()).await?;

        if status.is_success() {
            return parse_reply(&bytes).map_err(Attempt::Fatal);
        }
        let error = Self::failed(format!(
            "HTTP {} from {}: {}",
            status_text(status),
            display_url(url),
            error_message(&bytes)
        ));
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Err(Attempt::Retry { error, retry_after })
        } else {
            Err(Attempt::Fatal(error))
        }
    }
}

impl Provider for OpenAi {
    fn name(&self) -> &'static str {
        PROVIDER
    }
    fn model(&self) -> &str {
        self.settings.model.as_deref().unwrap_or("")
    }
    fn complete(&self, req: &Request<'_>) -> Result<Answer, LlmError> {
        let url = chat_url(&self.settings.endpoint)?;
        let body = Bytes::from(self.request_body(req.prompt, req.schema.is_some()));
        tracing::debug!(
            "POST {} (model \"{}\", {} bytes, timeout {})",
            display_url(&url),
            self.model(),
            body.len(),
            format_duration(self.settings.timeout)
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Self::failed(format!("cannot start the HTTP runtime: {e}")))?;
        runtime.block_on(self.call(&url, body))
    }
}

/// How one attempt ended when it did not produce an answer.
enum Attempt {
    /// Worth another try (429, 5xx, connection trouble).
    Retry {
        error: LlmError,
        retry_after: Option<Duration>,
    },
    /// Final: another try would get the same answer.
    Fatal(LlmError),
}

/// `{endpoint}/chat/completions`, whether or not the endpoint ends in `/`.
pub fn chat_url(endpoint: &str) -> Result<Uri, LlmError> {
    let url = format!("{}/chat/completions", endpoint.trim().trim_end_matches('/'));
    match url.parse::<Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => Ok(u),
        _ => Err(OpenAi::failed(format!(
            "\"{endpoint}\" is not an http(s) URL; set [llm] endpoint to e.g. \"http://127.0.0.1:11434/v1\""
        ))),
    }
}

/// The URL without any `user:password@` part, for messages and logs.
fn display_url(url: &Uri) -> String {
    let host = url.host().unwrap_or("");
    let port = url.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
    format!(
        "{}://{host}{port}{}",
        url.scheme_str().unwrap_or("http"),
        url.path()
    )
}

fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// Sort a failed send into "retry" (the server may come back) and "fatal".
fn classify_send_error(e: &hyper_util::client::legacy::Error, url: &Uri) -> Attempt {
    let detail = error_chain(e);
    if let Some(tls) = tls_error(e) {
        // A certificate or protocol mismatch does not fix itself.
        return Attempt::Fatal(OpenAi::unavailable(format!(
            "TLS with {} failed: {tls}; check that the endpoint really speaks https and that its certificate is trusted",
            display_url(url)
        )));
    }
    let error = if e.is_connect() {
        OpenAi::unavailable(format!("cannot connect to {}: {detail}", display_url(url)))
    } else {
        // Reset or closed before the answer was complete: the server went
        // away mid-request (restart, crash, out of memory).
        OpenAi::unavailable(format!(
            "the connection to {} failed: {detail}",
            display_url(url)
        ))
    };
    Attempt::Retry {
        error,
        retry_after: None,
    }
}

/// The causes of an error joined with `: `, without hyper-util's
/// uninformative top line ("client error (Connect)").
fn error_chain(e: &hyper_util::client::legacy::Error) -> String {
    let mut parts = Vec::new();
    let mut cause = e.source();
    while let Some(c) = cause {
        parts.push(c.to_string());
        cause = c.source();
    }
    if parts.is_empty() {
        e.to_string()
    } else {
        parts.dedup();
        parts.join(": ")
    }
}

/// The rustls error somewhere in the chain. hyper-rustls wraps it in an
/// io::Error inside another io::Error, and `io::Error::source()` skips
/// the wrapped error itself: hence `get_ref` first.
fn tls_error<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut cause: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(t) = c.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        cause = match c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => c.source(),
        };
    }
    None
}

async fn read_body(body: Incoming) -> Result<Bytes, Attempt> {
    match Limited::new(body, MAX_RESPONSE_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(Attempt::Fatal(OpenAi::invalid(format!(
                "the answer is larger than {} MiB",
                MAX_RESPONSE_BYTES / (1024 * 1024)
            ))))
        }
        Err(e) => Err(Attempt::Retry {
            error: OpenAi::unavailable(format!("the answer was cut off: {e}")),
            retry_after: None,
        }),
    }
}

/// Add a note to an error's detail ("after 4 attempts").
fn with_note(e: LlmError, note: &str) -> LlmError {
    match e {
        LlmError::Unavailable { provider, detail } => LlmError::Unavailable {
            provider,
            detail: format!("{detail} ({note})"),
        },
        LlmError::Failed { provider, detail } => LlmError::Failed {
            provider,
            detail: format!("{detail} ({note})"),
        },
        other => other,
    }
}

/// Backoff before the retry that follows attempt `attempt` (1-based):
/// `base * 2^(attempt-1)`, capped, scaled into `[1/2, 1]` by `jitter`
/// (in `[0, 1)`) so that clients that failed together do not come back
/// together.
pub fn backoff(base: Duration, attempt: u32, jitter: f64) -> Duration {
    let step = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(MAX_BACKOFF);
    step.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// A number in `[0, 1)` that differs from call to call. `RandomState` is
/// seeded from the OS, which is random enough for jitter and saves a crate.
fn jitter() -> f64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// `Retry-After`: delay-seconds or an HTTP-date (IMF-fixdate, e.g.
/// `Sun, 06 Nov 1994 08:49:37 GMT`). A date in the past means now.
/// `None` for anything else: the caller falls back to its own backoff.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = parse_http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn parse_http_date(s: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [wday, day, month, year, time, "GMT"] = parts[..] else {
        return None;
    };
    if !wday.ends_with(',') {
        return None;
    }
    let day: u32 = day.parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == month)? as u32
        + 1;
    let year: i64 = year.parse().ok()?;
    let hms: Vec<u64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, sec] = hms[..] else {
        return None;
    };
    if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let days = crate::time::days_from_civil(year, month, day);
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + m * 60 + sec;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// The server's own explanation in an error body: OpenAI's
/// `{"error": {"message": …}}`, Ollama's `{"error": "…"}`, vLLM's
/// `{"message": …}`; else the start of the body.
fn error_message(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let msg = match &v["error"] {
            serde_json::Value::String(s) => Some(s.as_str()),
            e => e["message"].as_str(),
        }
        .or_else(|| v["message"].as_str())
        .or_else(|| v["detail"].as_str());
        if let Some(m) = msg.filter(|m| !m.trim().is_empty()) {
            return one_line(m, ERROR_SNIPPET * 2);
        }
    }
    let text = String::from_utf8_lossy(body);
    if text.trim().is_empty() {
        "(empty body)".into()
    } else {
        one_line(&text, ERROR_SNIPPET)
    }
}

/// `s` on one line, at most `max` characters (journal lines stay readable).
fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(max + 1)
        .collect();
    if flat.chars().count() > max {
        format!("{}…", flat.chars().take(max).collect::<String>())
    } else {
        flat
    }
}

#[derive(Deserialize)]
struct Reply {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<ReplyUsage>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct ReplyUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_tokens_details: Option<PromptDetails>,
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct CompletionDetails {
    reasoning_tokens: Option<u64>,
}

/// The answer and usage of a 2xx body.
fn parse_reply(body: &[u8]) -> Result<Answer, LlmError> {
    // Strict: a body with a key twice (two `content`s) is refused, not
    // read as its last one.
    let value: serde_json::Value = super::json::strict_from_slice(body).map_err(|e| {
        OpenAi::invalid(format!(
            "the answer is not JSON ({e}): {}",
            one_line(&String::from_utf8_lossy(body), ERROR_SNIPPET)
        ))
    })?;
    // Some servers report errors with a 200 status.
    if value.get("error").is_some_and(|e| !e.is_null()) {
        return Err(OpenAi::failed(format!(
            "the server answered with an error: {}",
            error_message(body)
        )));
    }
    let reply: Reply = serde_json::from_value(value)
        .map_err(|e| OpenAi::invalid(format!("not a chat completion: {e}")))?;
    let choice = reply
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| OpenAi::invalid("the answer has no choices"))?;
    let text = match choice.message.and_then(|m| m.content) {
        Some(serde_json::Value::String(s)) => s,
        // Content as a list of parts (`[{"type": "text", "text": …}]`).
        Some(serde_json::Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        Some(serde_json::Value::Null) | None => String::new(),
        Some(other) => {
            return Err(OpenAi::invalid(format!(
                "choices[0].message.content is neither text nor parts: {}",
                one_line(&other.to_string(), ERROR_SNIPPET)
            )));
        }
    };
    if text.trim().is_empty() {
        let why = match choice.finish_reason.as_deref() {
            Some("length") => {
                " (finish_reason \"length\": the model used all its tokens, perhaps on reasoning)"
            }
            _ => "",
        };
        return Err(OpenAi::invalid(format!(
            "choices[0].message.content is empty{why}"
        )));
    }
    if choice.finish_reason.as_deref() == Some("length") {
        tracing::warn!(
            "the answer was cut off at the model's token limit (finish_reason \"length\")"
        );
    }
    let u = reply.usage.unwrap_or_default();
    let usage = Usage {
        input_tokens: u.prompt_tokens.unwrap_or(0),
        cached_input_tokens: u
            .prompt_tokens_details
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0),
        output_tokens: u.completion_tokens.unwrap_or(0),
        reasoning_output_tokens: u
            .completion_tokens_details
            .and_then(|d| d.reasoning_tokens)
            .unwrap_or(0),
    };
    Ok(Answer {
        text,
        usage,
        sandbox_error: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_url_handles_a_trailing_slash() {
        for endpoint in ["http://127.0.0.1:11434/v1", "http://127.0.0.1:11434/v1/"] {
            let u = chat_url(endpoint).unwrap();
            assert_eq!(u.to_string(), "http://127.0.0.1:11434/v1/chat/completions");
        }
        assert_eq!(
            chat_url("https://api.openai.com/v1").unwrap().to_string(),
            "https://api.openai.com/v1/chat/completions"
        );
        assert!(matches!(
            chat_url("ftp://example.org/v1"),
            Err(LlmError::Failed { .. })
        ));
        assert!(chat_url("not a url").is_err());
    }

    #[test]
    fn display_url_hides_credentials() {
        let u: Uri = "https://user:secret@example.org:8443/v1/chat/completions"
            .parse()
            .unwrap();
        assert_eq!(
            display_url(&u),
            "https://example.org:8443/v1/chat/completions"
        );
    }

    #[test]
    fn retry_after_in_seconds_and_as_a_date() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        // In the past: no wait.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        // `date -u -d @1795732472` = Thu Nov 26 22:34:32 UTC 2026
        assert_eq!(
            parse_http_date("Thu, 26 Nov 2026 22:34:32 GMT"),
            Some(UNIX_EPOCH + Duration::from_secs(1_795_732_472))
        );
        assert_eq!(
            parse_http_date("Tue, 29 Feb 2000 00:00:00 GMT"),
            Some(UNIX_EPOCH + Duration::from_secs(951_782_400))
        );
        for bad in [
            "",
            "-1",
            "1.5",
            "soon",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Foo 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_a_cap() {
        let base = Duration::from_secs(1);
        assert_eq!(
            backoff(base, 1, 0.999_999),
            Duration::from_secs(1).mul_f64(0.9999995)
        );
        assert_eq!(backoff(base, 1, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(base, 3, 0.0), Duration::from_secs(2));
        assert_eq!(backoff(base, 30, 0.0), MAX_BACKOFF / 2);
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
            let d = backoff(base, 2, j);
            assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(2));
        }
    }

    #[test]
    fn reads_answer_and_usage() {
        let body = br#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"Summary"},"finish_reason":"stop"}],
            "usage":{"prompt_tokens":120,"completion_tokens":30,"total_tokens":150,
            "prompt_tokens_details":{"cached_tokens":100},"completion_tokens_details":{"reasoning_tokens":12}}}"#;
        let a = parse_reply(body).unwrap();
        assert_eq!(a.text, "Summary");
        assert_eq!(
            a.usage,
            Usage {
                input_tokens: 120,
                cached_input_tokens: 100,
                output_tokens: 30,
                reasoning_output_tokens: 12
            }
        );
        // Ollama: no details, no usage at all is fine too.
        let a = parse_reply(br#"{"choices":[{"message":{"content":"ok"}}],"usage":{"prompt_tokens":5,"completion_tokens":2,"prompt_tokens_details":null}}"#).unwrap();
        assert_eq!(a.usage.total(), 7);
        let a = parse_reply(br#"{"choices":[{"message":{"content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}}]}"#).unwrap();
        assert_eq!((a.text.as_str(), a.usage), ("ab", Usage::default()));
    }

    #[test]
    fn unusable_answers_are_invalid() {
        for body in [
            &b"<html>Bad Gateway</html>"[..],
            br#"{"choices":[]}"#,
            br#"{"object":"list"}"#,
            br#"{"choices":[{"message":{"content":"  "}}]}"#,
            br#"{"choices":[{"message":{"content":null},"finish_reason":"length"}]}"#,
            br#"{"choices":[{"message":{"content":42}}]}"#,
            br#"{"choices":"nope"}"#,
            br#"{"choices":[{"message":{"content":"restart","content":"none"}}]}"#,
        ] {
            let e = parse_reply(body).unwrap_err();
            assert!(
                matches!(e, LlmError::Invalid { .. }),
                "{}: {e}",
                String::from_utf8_lossy(body)
            );
        }
        let e = parse_reply(br#"{"error":{"message":"model not loaded"}}"#).unwrap_err();
        assert!(matches!(e, LlmError::Failed { .. }));
        assert!(e.to_string().contains("model not loaded"));
    }

    #[test]
    fn error_messages_from_known_servers() {
        assert_eq!(
            error_message(br#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error"}}"#),
            "Incorrect API key provided"
        );
        assert_eq!(
            error_message(br#"{"error":"model \"x\" not found, try pulling it first"}"#),
            "model \"x\" not found, try pulling it first"
        );
        assert_eq!(
            error_message(br#"{"object":"error","message":"bad","code":400}"#),
            "bad"
        );
        assert_eq!(error_message(b"Bad\n  Gateway\n"), "Bad Gateway");
        assert_eq!(error_message(b""), "(empty body)");
        let long = "x".repeat(1000);
        assert_eq!(
            error_message(long.as_bytes()).chars().count(),
            ERROR_SNIPPET + 1
        );
    }
}
