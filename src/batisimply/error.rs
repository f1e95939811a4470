//! Error types and the single classification of HTTP outcomes.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use super::api;

/// Longest API message kept in an error, in characters.
const MAX_MESSAGE_CHARS: usize = 500;

/// Actionable message for rejected credentials (French / English).
pub(crate) const CREDENTIALS_REJECTED: &str = "Identifiants BatiSimply refusés : vérifiez client_id, \
client_secret, username et password / BatiSimply credentials rejected: check client_id, \
client_secret, username and password";

/// Actionable message for an account lacking rights (French / English).
pub(crate) const FORBIDDEN: &str = "Le compte BatiSimply n'a pas les droits nécessaires (403) : \
demandez l'accès à l'administrateur / The BatiSimply account lacks the required rights (403): \
ask the administrator for access";

/// Why a transient failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransientKind {
    /// The server could not be reached (DNS, refused connection, reset).
    Connect,
    /// A TLS handshake or certificate problem.
    Tls,
    /// The connect or request timeout elapsed.
    Timeout,
    /// The server answered a 5xx status.
    Server,
    /// Any other network failure (e.g. a body cut short).
    Network,
}

/// Errors returned by the BatiSimply client. Messages never contain secrets.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BatisimplyError {
    /// A failure that may disappear if the request is retried later.
    #[error("BatiSimply transient failure ({kind:?}{}): {message}", status_suffix(*.status))]
    Transient {
        /// Failure kind.
        kind: TransientKind,
        /// HTTP status, if the server answered.
        status: Option<u16>,
        /// Human-readable cause.
        message: String,
    },
    /// The server asked us to slow down (HTTP 429).
    #[error("BatiSimply rate limit reached (429), retry after {retry_after:?}")]
    RateLimited {
        /// Delay requested by the server, if any.
        retry_after: Option<Duration>,
    },
    /// The server refused the request; retrying will not help.
    #[error("BatiSimply refused the request ({status}): {message}")]
    Permanent {
        /// HTTP status.
        status: u16,
        /// The API's message (truncated).
        message: String,
    },
    /// Credentials were rejected or the account lacks rights.
    #[error("{message}")]
    Auth {
        /// HTTP status, if any.
        status: Option<u16>,
        /// Actionable message (French / English).
        message: String,
    },
    /// The client is misconfigured (bad URL, bad setting).
    #[error("BatiSimply configuration error: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },
    /// A whole answer could not be decoded.
    #[error("BatiSimply answer could not be decoded: {message}")]
    Decode {
        /// Decoder message.
        message: String,
    },
    /// The operation is not supported with the current settings.
    #[error("BatiSimply operation unsupported: {what}")]
    Unsupported {
        /// What is unsupported and how to enable it.
        what: String,
    },
}

fn status_suffix(status: Option<u16>) -> String {
    status.map(|s| format!(", HTTP {s}")).unwrap_or_default()
}

impl BatisimplyError {
    /// Whether retrying later may succeed (transient failures and 429).
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Transient { .. } | Self::RateLimited { .. })
    }

    /// Delay requested by the server before retrying, if any.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// True when the request surely had no effect on the server (connection
    /// never established, 429 or 503), so even a `POST` may be re-sent.
    pub(crate) fn certainly_not_processed(&self) -> bool {
        match self {
            Self::RateLimited { .. } => true,
            Self::Transient { kind, status, .. } => {
                matches!(kind, TransientKind::Connect | TransientKind::Tls) || *status == Some(503)
            }
            _ => false,
        }
    }

    /// HTTP status carried by the error, if any.
    #[must_use]
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Transient { status, .. } | Self::Auth { status, .. } => *status,
            Self::Permanent { status, .. } => Some(*status),
            Self::RateLimited { .. } => Some(429),
            _ => None,
        }
    }

    pub(crate) fn decode(err: impl std::fmt::Display) -> Self {
        Self::Decode {
            message: truncate(&err.to_string()),
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::Config {
            message: message.into(),
        }
    }
}

/// A record of a list that could not be read; the rest of the list was kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record {} rejected: field `{field}`: {reason}", record_id.as_deref().unwrap_or("<unknown id>"))]
pub struct RecordError {
    /// The record's id, if it could be read.
    pub record_id: Option<String>,
    /// JSON path of the offending field.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A raw HTTP answer with a success status.
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Classifies the outcome of one HTTP attempt: the only place mapping
/// statuses and transport errors to [`BatisimplyError`].
pub(crate) fn classify(
    outcome: Result<RawResponse, reqwest::Error>,
) -> Result<RawResponse, BatisimplyError> {
    let raw = match outcome {
        Ok(raw) => raw,
        Err(err) => return Err(classify_transport(&err)),
    };
    let status = raw.status;
    if status.is_success() {
        return Ok(raw);
    }
    let code = status.as_u16();
    let message = api_message(&raw.body);
    Err(match code {
        429 => BatisimplyError::RateLimited {
            retry_after: parse_retry_after(&raw.headers),
        },
        401 => BatisimplyError::Auth {
            status: Some(code),
            message: CREDENTIALS_REJECTED.into(),
        },
        403 => BatisimplyError::Auth {
            status: Some(code),
            message: FORBIDDEN.into(),
        },
        408 | 500..=599 => BatisimplyError::Transient {
            kind: TransientKind::Server,
            status: Some(code),
            message,
        },
        _ => BatisimplyError::Permanent {
            status: code,
            message,
        },
    })
}

/// Words of rustls / hyper-rustls messages revealing a TLS failure (rustls is
/// not a direct dependency, so its error type cannot be downcast).
const TLS_HINTS: [&str; 7] = [
    "certificate",
    "tls",
    "handshake",
    "corrupt message",
    "invalidcontenttype",
    "peer misbehaved",
    "received fatal alert",
];

/// Maps a transport-level failure (no HTTP answer).
fn classify_transport(err: &reqwest::Error) -> BatisimplyError {
    if err.is_builder() {
        return BatisimplyError::config(format!("invalid request: {}", chain(err)));
    }
    if err.is_decode() {
        return BatisimplyError::decode(chain(err));
    }
    let text = chain(err);
    let lower = text.to_lowercase();
    let kind = if err.is_timeout() || lower.contains("timed out") {
        TransientKind::Timeout
    } else if TLS_HINTS.iter().any(|hint| lower.contains(hint)) {
        TransientKind::Tls
    } else if err.is_connect() {
        TransientKind::Connect
    } else {
        TransientKind::Network
    };
    BatisimplyError::Transient {
        kind,
        status: None,
        message: truncate(&text),
    }
}

/// The error and its sources, joined (URLs carry no secret: none is sent in queries).
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Extracts the API's message from an error body (JSON field or raw text).
pub(crate) fn api_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let from_json = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|value| {
            api::ERROR_MESSAGE_KEYS
                .iter()
                .find_map(|key| value.get(key).and_then(|v| v.as_str()).map(str::to_owned))
        });
    truncate(from_json.as_deref().unwrap_or(text.trim()))
}

/// Truncates to [`MAX_MESSAGE_CHARS`] characters.
pub(crate) fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Parses `Retry-After` as delta-seconds or as an HTTP date.
pub(crate) fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(retry_after: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(RETRY_AFTER, retry_after.parse().expect("header value"));
        map
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let in_a_minute = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(60));
        assert_eq!(
            parse_retry_after(&headers("7")),
            Some(Duration::from_secs(7))
        );
        let from_date = parse_retry_after(&headers(&in_a_minute)).expect("date parsed");
        assert!(from_date > Duration::from_secs(50) && from_date <= Duration::from_secs(60));
        assert_eq!(
            parse_retry_after(&headers("Wed, 21 Oct 2015 07:28:00 GMT")),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after(&headers("soon")), None);
    }

    #[test]
    fn api_message_prefers_json_message_and_truncates() {
        assert_eq!(
            api_message(br#"{"message":"projectCode too long"}"#),
            "projectCode too long"
        );
        assert_eq!(api_message(b"  plain text  "), "plain text");
        let long = "x".repeat(2 * MAX_MESSAGE_CHARS);
        assert_eq!(
            api_message(long.as_bytes()).chars().count(),
            MAX_MESSAGE_CHARS + 1
        );
    }

    #[test]
    fn statuses_are_classified_once() {
        let answer = |code: u16| {
            let status = StatusCode::from_u16(code).expect("status");
            classify(Ok(RawResponse {
                status,
                headers: HeaderMap::new(),
                body: Vec::new(),
            }))
        };
        for code in [429, 500, 502, 503, 504] {
            assert!(answer(code).expect_err("failure").is_retryable(), "{code}");
        }
        for code in [400, 404, 409, 422, 401, 403] {
            assert!(!answer(code).expect_err("failure").is_retryable(), "{code}");
        }
        assert!(answer(201).is_ok());
    }
}
