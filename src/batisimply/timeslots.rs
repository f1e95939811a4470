//! Time-slot reads: bounded windows, split when the API finds them too large.

use std::collections::HashSet;

use chrono::{DateTime, Duration as Span, SecondsFormat, Utc};

use super::api;
use super::client::{BatisimplyClient, Call};
use super::error::BatisimplyError;
use super::model::{Listing, TimeSlot};
use super::parse::parse_list;

/// Windows shorter than this are never split further.
const MIN_WINDOW: Span = Span::minutes(1);

/// Full ISO-8601 UTC timestamp, as the API requires (`2025-05-01T00:00:00Z`).
pub(crate) fn iso(instant: DateTime<Utc>) -> String {
    instant.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Outcome of reading one window.
enum WindowRead {
    Done(Listing<TimeSlot>),
    TooLarge,
}

impl BatisimplyClient {
    /// Lists the time slots starting in `[start, end)`, in windows of at most
    /// `timeslot_max_window_days`, each slot once.
    ///
    /// # Errors
    /// Any [`BatisimplyError`] of the underlying calls; unreadable records are
    /// reported in [`Listing::rejected`] instead.
    #[tracing::instrument(skip_all, fields(start = %iso(start), end = %iso(end)), err)]
    pub async fn list_time_slots(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Listing<TimeSlot>, BatisimplyError> {
        let days = i64::from(self.inner.settings.timeslot_max_window_days.max(1));
        let mut pending = split_windows(start, end, Span::days(days));
        pending.reverse();
        let mut all = Listing::default();
        let mut seen = HashSet::new();
        while let Some((from, to)) = pending.pop() {
            match self.read_window(from, to).await? {
                WindowRead::Done(listing) => {
                    all.rejected.extend(listing.rejected);
                    all.records.extend(
                        listing
                            .records
                            .into_iter()
                            .filter(|s| seen.insert(s.id.clone())),
                    );
                }
                WindowRead::TooLarge => {
                    let middle = from + (to - from) / 2;
                    tracing::debug!(from = %iso(from), to = %iso(to), "window too large, splitting");
                    pending.push((middle, to));
                    pending.push((from, middle));
                }
            }
        }
        Ok(all)
    }

    /// Whether a modified-since query is configured (`timeslot_modified_since_param`).
    #[must_use]
    pub fn supports_modified_since(&self) -> bool {
        self.inner.settings.timeslot_modified_since_param.is_some()
    }

    /// Lists the time slots modified since `since`, if the API supports it.
    ///
    /// # Errors
    /// [`BatisimplyError::Unsupported`] when `timeslot_modified_since_param`
    /// is not configured; call errors otherwise.
    #[tracing::instrument(skip_all, fields(since = %iso(since)), err)]
    pub async fn list_time_slots_modified_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Listing<TimeSlot>, BatisimplyError> {
        let Some(param) = self.inner.settings.timeslot_modified_since_param.as_deref() else {
            return Err(BatisimplyError::Unsupported {
                what: "time slots modified since an instant: set timeslot_modified_since_param \
                       or read by date windows"
                    .to_owned(),
            });
        };
        let mut call = Call::get(api::TIMESLOTS_PATH.to_owned());
        call.query = vec![(param, iso(since))];
        let raw = self.call(&call).await?;
        parse_list(&raw.body)
    }

    /// Reads one window; reports it as too large when it should be split.
    async fn read_window(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<WindowRead, BatisimplyError> {
        let mut call = Call::get(api::TIMESLOTS_PATH.to_owned());
        call.query = vec![
            (api::PARAM_START_DATE, iso(from)),
            (api::PARAM_END_DATE, iso(to)),
        ];
        let splittable = to - from >= MIN_WINDOW * 2;
        match self.call(&call).await {
            Err(err) if splittable && is_too_large(&err) => Ok(WindowRead::TooLarge),
            Err(err) => Err(err),
            Ok(raw) => {
                let listing: Listing<TimeSlot> = parse_list(&raw.body)?;
                let count = listing.records.len() + listing.rejected.len();
                if splittable && count >= api::TIMESLOT_SUSPECT_TRUNCATION_RECORDS {
                    return Ok(WindowRead::TooLarge);
                }
                Ok(WindowRead::Done(listing))
            }
        }
    }
}

/// A 413, or a 400 whose message says the range or answer is too large.
fn is_too_large(err: &BatisimplyError) -> bool {
    match err {
        BatisimplyError::Permanent { status: 413, .. } => true,
        BatisimplyError::Permanent {
            status: 400,
            message,
        } => {
            let lower = message.to_lowercase();
            [
                "too large",
                "too big",
                "too many",
                "trop grand",
                "trop large",
            ]
            .iter()
            .any(|needle| lower.contains(needle))
        }
        _ => false,
    }
}

/// Cuts `[start, end)` into consecutive windows of at most `max`.
pub(crate) fn split_windows(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    max: Span,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut windows = Vec::new();
    let mut from = start;
    while from < end {
        let to = (from + max).min(end);
        windows.push((from, to));
        from = to;
    }
    windows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_range_without_gaps_or_overlaps() {
        let start = DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
            .expect("date")
            .with_timezone(&Utc);
        let end = start + Span::days(70);
        let windows = split_windows(start, end, Span::days(31));
        assert_eq!(windows.len(), 3);
        assert_eq!(windows[0].0, start);
        assert_eq!(windows[2].1, end);
        assert!(windows.windows(2).all(|w| w[0].1 == w[1].0));
        assert_eq!(iso(start), "2025-01-01T00:00:00Z");
    }

    #[test]
    fn too_large_is_recognised_from_413_or_a_400_message() {
        let permanent = |status, message: &str| BatisimplyError::Permanent {
            status,
            message: message.to_owned(),
        };
        assert!(is_too_large(&permanent(413, "")));
        assert!(is_too_large(&permanent(400, "Requested range too large")));
        assert!(!is_too_large(&permanent(400, "startDate is required")));
    }
}
