//! Full loads (initial load, resync): recording one with its snapshot, and its progress.
//!
//! A poller that captured a full snapshot records a load in the same transaction
//! ([`event_mark`] before the capture, [`record`] after it). The load's events are the
//! flow's outbox rows in an id range; their statuses give the progress (done, dead,
//! rate over the last minute, ETA) without any counter to keep in step. Any flow can
//! use it: nothing here is specific to `chantiers`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::OutboxError;

/// The rate of a running load is measured over this trailing window (or since the
/// load started, when that is shorter).
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// A load just recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct LoadStarted {
    pub id: i64,
    /// Events of the snapshot.
    pub total: i64,
}

/// Progress of a load: the figures `batisync status`, the metrics and the logs show.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadProgress {
    pub id: i64,
    pub flow: String,
    /// Cursor name of the source read in full.
    pub source: String,
    pub started_at: DateTime<Utc>,
    /// Set once no event of the load is waiting, pending or in flight.
    pub finished_at: Option<DateTime<Utc>>,
    /// Events of the snapshot.
    pub total: i64,
    /// Delivered or superseded by a newer state of the same entity.
    pub done: i64,
    /// Dead letters.
    pub dead: i64,
    /// Events finished per second: over the last [`RATE_WINDOW`] while running, on
    /// average over the whole load once finished. `None` before anything is measurable.
    pub rate_per_s: Option<f64>,
    /// Time left at the current rate; `None` when finished or nothing moves yet.
    pub eta: Option<Duration>,
    /// Time since the start (until the finish, for a finished load).
    pub elapsed: Duration,
}

impl LoadProgress {
    /// True while events of the load are still to be delivered.
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.finished_at.is_none()
    }

    /// Events neither done nor dead.
    #[must_use]
    pub fn remaining(&self) -> i64 {
        (self.total - self.done - self.dead).max(0)
    }

    /// Share finished (done or dead), from 0 to 1; 1 for an empty load.
    #[must_use]
    pub fn fraction(&self) -> f64 {
        if self.total <= 0 {
            return 1.0;
        }
        (self.done + self.dead) as f64 / self.total as f64
    }

    /// One line for logs and the command line: `1200/5000 (24.0 %), 19.8/s, ETA 3 min 12 s`.
    #[must_use]
    pub fn summary(&self) -> String {
        let rate = self
            .rate_per_s
            .map_or_else(|| "- /s".to_owned(), |r| format!("{r:.1}/s"));
        let mut line = format!(
            "{}/{} ({:.1} %), {rate}",
            self.done,
            self.total,
            self.fraction() * 100.0
        );
        if self.dead > 0 {
            line.push_str(&format!(", {} dead", self.dead));
        }
        if self.is_running() {
            let eta = self.eta.map_or_else(|| "?".to_owned(), format_duration);
            line.push_str(&format!(", ETA {eta}"));
        } else {
            line.push_str(&format!(", in {}", format_duration(self.elapsed)));
        }
        line
    }
}

/// The raw counts of one load, as the query returns them.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct LoadCounts {
    pub id: i64,
    pub flow: String,
    pub source: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub total: i64,
    /// Events still waiting, pending or in flight (0 once finished).
    pub open: i64,
    pub dead: i64,
    /// Events done or superseded within the rate window (running loads only).
    pub recent: i64,
    /// Seconds since the start, until the finish for a finished load.
    pub elapsed_s: f64,
}

impl LoadCounts {
    /// The progress these counts describe. Rows pruned from the outbox count as done:
    /// only delivered events are pruned.
    #[must_use]
    pub fn progress(self) -> LoadProgress {
        let elapsed = Duration::from_secs_f64(self.elapsed_s.max(0.0));
        let done = (self.total - self.open - self.dead).max(0);
        let (rate_per_s, eta) = if self.finished_at.is_some() {
            let rate = (self.elapsed_s > 0.0).then(|| done as f64 / self.elapsed_s);
            (rate, None)
        } else {
            let window = self.elapsed_s.clamp(1.0, RATE_WINDOW.as_secs_f64());
            let rate = self.recent as f64 / window;
            let eta = (rate > 0.0).then(|| Duration::from_secs_f64(self.open as f64 / rate));
            ((self.recent > 0).then_some(rate), eta)
        };
        LoadProgress {
            id: self.id,
            flow: self.flow,
            source: self.source,
            started_at: self.started_at,
            finished_at: self.finished_at,
            total: self.total,
            done,
            dead: self.dead,
            rate_per_s,
            eta,
            elapsed,
        }
    }
}

/// The highest outbox id so far: call it in the capture's transaction, before the
/// capture, and hand it to [`record`].
///
/// # Errors
/// Database errors.
pub async fn event_mark(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM batisync.outbox")
        .fetch_one(conn)
        .await
}

/// Records the load of a full snapshot just captured, in the capture's transaction:
/// its events are the rows of `flow` stored after `mark` (see [`event_mark`]). A
/// snapshot that stored nothing is recorded as finished.
///
/// # Errors
/// Database errors.
#[tracing::instrument(skip_all, fields(flow, source), err)]
pub async fn record(
    conn: &mut PgConnection,
    flow: &str,
    source: &str,
    mark: i64,
) -> Result<LoadStarted, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO batisync.loads (flow, source, total, first_event_id, last_event_id, finished_at, dead)
         SELECT $1, $2, count(*), min(id), max(id),
                CASE WHEN count(*) = 0 THEN now() END, CASE WHEN count(*) = 0 THEN 0 END
         FROM batisync.outbox WHERE flow = $1 AND id > $3
         RETURNING id, total",
    )
    .bind(flow)
    .bind(source)
    .bind(mark)
    .fetch_one(conn)
    .await
}

/// The counts of each flow's latest load, running or finished.
const LATEST_LOADS: &str = r#"
SELECT l.id, l.flow, l.source, l.started_at, l.finished_at, l.total,
       s.open,
       CASE WHEN l.finished_at IS NULL THEN s.dead ELSE coalesce(l.dead, 0) END AS dead,
       s.recent,
       extract(epoch FROM coalesce(l.finished_at, now()) - l.started_at)::float8 AS elapsed_s
FROM (SELECT DISTINCT ON (flow) * FROM batisync.loads ORDER BY flow, id DESC) l
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE o.status IN ('waiting', 'pending')) AS open,
           count(*) FILTER (WHERE o.status = 'dead') AS dead,
           count(*) FILTER (WHERE o.status IN ('done', 'superseded')
                            AND o.finished_at > now() - make_interval(secs => $1)) AS recent
    FROM batisync.outbox o
    WHERE l.finished_at IS NULL AND o.flow = l.flow
      AND o.id BETWEEN l.first_event_id AND l.last_event_id
) s
ORDER BY l.flow
"#;

/// Progress of the latest load of every flow that had one (running or finished).
///
/// # Errors
/// Database errors.
pub async fn latest(pool: &PgPool) -> Result<Vec<LoadProgress>, OutboxError> {
    let rows: Vec<LoadCounts> = sqlx::query_as(LATEST_LOADS)
        .bind(RATE_WINDOW.as_secs_f64())
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(LoadCounts::progress).collect())
}

/// Marks finished the running loads none of whose events is still open, and returns
/// them (with their final counts).
///
/// # Errors
/// Database errors.
pub async fn finish_completed(pool: &PgPool) -> Result<Vec<LoadProgress>, OutboxError> {
    let rows: Vec<LoadCounts> = sqlx::query_as(
        "UPDATE batisync.loads l
         SET finished_at = now(),
             dead = (SELECT count(*) FROM batisync.outbox o
                     WHERE o.flow = l.flow AND o.status = 'dead'
                       AND o.id BETWEEN l.first_event_id AND l.last_event_id)
         WHERE l.finished_at IS NULL
           AND NOT EXISTS (
               SELECT 1 FROM batisync.outbox o
               WHERE o.flow = l.flow AND o.id BETWEEN l.first_event_id AND l.last_event_id
                 AND o.status IN ('waiting', 'pending'))
         RETURNING l.id, l.flow, l.source, l.started_at, l.finished_at, l.total,
                   0::int8 AS open, l.dead, 0::int8 AS recent,
                   extract(epoch FROM l.finished_at - l.started_at)::float8 AS elapsed_s",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(LoadCounts::progress).collect())
}

/// `42 s`, `3 min 12 s`, `2 h 05 min`.
#[must_use]
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s < 60 => format!("{s} s"),
        s if s < 3_600 => format!("{} min {:02} s", s / 60, s % 60),
        s => format!("{} h {:02} min", s / 3_600, (s % 3_600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(total: i64, open: i64, dead: i64, recent: i64, elapsed_s: f64) -> LoadCounts {
        LoadCounts {
            id: 1,
            flow: "f".into(),
            source: "s".into(),
            started_at: Utc::now(),
            finished_at: None,
            total,
            open,
            dead,
            recent,
            elapsed_s,
        }
    }

    #[test]
    fn a_running_load_measures_its_rate_over_the_last_minute_and_derives_the_eta() {
        let p = counts(5_000, 2_000, 10, 1_200, 300.0).progress();
        assert_eq!((p.done, p.dead, p.remaining()), (2_990, 10, 2_000));
        assert_eq!(p.rate_per_s, Some(20.0));
        assert_eq!(p.eta, Some(Duration::from_secs(100)));
        assert!(
            p.summary()
                .starts_with("2990/5000 (60.0 %), 20.0/s, 10 dead, ETA 1 min 40 s")
        );
    }

    #[test]
    fn a_young_load_divides_by_its_age_and_a_stalled_one_has_no_eta() {
        let young = counts(100, 60, 0, 40, 2.0).progress();
        assert_eq!(young.rate_per_s, Some(20.0));
        assert_eq!(young.eta, Some(Duration::from_secs(3)));
        let stalled = counts(100, 100, 0, 0, 500.0).progress();
        assert_eq!((stalled.rate_per_s, stalled.eta), (None, None));
        assert!(
            stalled.summary().ends_with("ETA ?"),
            "{}",
            stalled.summary()
        );
    }

    #[test]
    fn a_finished_load_reports_its_average_rate_and_duration() {
        let mut c = counts(1_000, 0, 0, 0, 50.0);
        c.finished_at = Some(Utc::now());
        let p = c.progress();
        assert!(!p.is_running());
        assert_eq!((p.done, p.rate_per_s, p.eta), (1_000, Some(20.0), None));
        assert!(p.summary().ends_with("in 50 s"), "{}", p.summary());
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(format_duration(Duration::from_secs(42)), "42 s");
        assert_eq!(format_duration(Duration::from_secs(192)), "3 min 12 s");
        assert_eq!(format_duration(Duration::from_secs(7_500)), "2 h 05 min");
    }
}
