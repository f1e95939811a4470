//! The last warnings and errors of the process, kept in memory for the Journal page.
//!
//! [`layer`] is installed with the log subscriber (see `telemetry`); it copies events at
//! WARN and above into a bounded ring. Log events never carry secrets (settings keep
//! them in `SecretString`), so the ring does not either.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock, PoisonError};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

/// Lines kept.
const CAPACITY: usize = 500;

/// One captured log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    pub at: DateTime<Utc>,
    pub level: String,
    pub target: String,
    pub message: String,
    /// Structured fields as `key=value`.
    pub fields: String,
}

/// Held only to push or copy, never across an await.
fn ring() -> &'static Mutex<VecDeque<LogLine>> {
    static RING: OnceLock<Mutex<VecDeque<LogLine>>> = OnceLock::new();
    RING.get_or_init(|| Mutex::new(VecDeque::with_capacity(CAPACITY)))
}

/// The captured lines, newest first, optionally only those containing `needle`
/// (case-insensitive).
#[must_use]
pub fn recent(needle: Option<&str>) -> Vec<LogLine> {
    let needle = needle.map(str::to_lowercase).filter(|n| !n.is_empty());
    let lines = ring().lock().unwrap_or_else(PoisonError::into_inner);
    lines
        .iter()
        .rev()
        .filter(|l| {
            needle.as_ref().is_none_or(|n| {
                l.message.to_lowercase().contains(n)
                    || l.fields.to_lowercase().contains(n)
                    || l.target.to_lowercase().contains(n)
            })
        })
        .cloned()
        .collect()
}

fn push(line: LogLine) {
    let mut lines = ring().lock().unwrap_or_else(PoisonError::into_inner);
    if lines.len() == CAPACITY {
        lines.pop_front();
    }
    lines.push_back(line);
}

/// The layer copying WARN and ERROR events into the ring.
#[must_use]
pub fn layer() -> RingLayer {
    RingLayer
}

/// See [`layer`].
pub struct RingLayer;

impl<S: Subscriber> Layer<S> for RingLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > Level::WARN {
            return;
        }
        let mut visitor = Collect::default();
        event.record(&mut visitor);
        push(LogLine {
            at: Utc::now(),
            level: level.to_string(),
            target: event.metadata().target().to_owned(),
            message: visitor.message,
            fields: visitor.fields.trim().to_owned(),
        });
    }
}

#[derive(Default)]
struct Collect {
    message: String,
    fields: String,
}

impl Visit for Collect {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn warnings_are_kept_and_searchable_and_info_is_not() {
        let subscriber = tracing_subscriber::registry().with(layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("routine line zq1");
            tracing::warn!(flow = "chantiers", "poll failed zq1");
        });
        let found = recent(Some("ZQ1"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].level, "WARN");
        assert!(found[0].fields.contains("flow=chantiers"));
    }
}
