//! A time slot as the outbox carries it, its content hash, and the pure conversions to a
//! `SuiviMO` row: UTC → local time at minute precision, minutes → decimal hours.
//!
//! Rounding rule (documented in the README and `config/batisync.example.toml`): the UTC
//! start is first brought to the minute (`truncate`, the default and what the original
//! tool wrote, drops the seconds: 08:59:57 → 08:59; `nearest` rounds half up: 08:59:30 →
//! 09:00), then converted to the configured zone. A UTC instant has exactly one local
//! time, so daylight-saving changes need no guess; in the October change two different
//! instants can give the same local time, and two slots of one employee on one chantier
//! then map to one `SuiviMO` key: that collision is reported, never overwritten.

use chrono::{DateTime, DurationRound, NaiveDateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::settings::MinuteRounding;
use crate::batigest::ledger::{Hours, LedgerKey, LedgerRow, LedgerValues};
use crate::batisimply::{ManagementStatus, TimeSlot};

/// The captured content of a time slot (payload of an `upsert` event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotPayload {
    pub id: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub user_id: String,
    pub project_id: i64,
    pub project_code: Option<String>,
    /// `managementStatus` as sent (`VALIDATED`, `PENDING`…), if sent.
    pub status: Option<String>,
    pub total_minutes: u32,
    pub packed_lunch: bool,
    pub home_to_work_journey: bool,
    /// `lastModifiedDate` as sent, if sent (not part of the content hash).
    pub last_modified: Option<DateTime<Utc>>,
}

impl From<&TimeSlot> for SlotPayload {
    fn from(s: &TimeSlot) -> Self {
        Self {
            id: s.id.clone(),
            start: s.start,
            end: s.end,
            user_id: s.user_id.clone(),
            project_id: s.project_id,
            project_code: s.project_code.clone(),
            status: s.status.as_ref().map(|st| st.as_str().to_owned()),
            total_minutes: s.total_minutes,
            packed_lunch: s.has_packed_lunch,
            home_to_work_journey: s.has_home_to_work_journey,
            last_modified: s.last_modified,
        }
    }
}

impl SlotPayload {
    /// Hex SHA-256 of the content, modification instant left out: a slot re-saved
    /// without change is not a change.
    #[must_use]
    pub fn content_hash(&self) -> String {
        let content = Self {
            last_modified: None,
            ..self.clone()
        };
        // Serialising a struct of plain fields cannot fail; an empty input would only
        // make every slot look changed once.
        let bytes = serde_json::to_vec(&content).unwrap_or_default();
        hex(&Sha256::digest(&bytes))
    }

    /// Only validated slots are written to Batigest.
    #[must_use]
    pub fn is_validated(&self) -> bool {
        self.status.as_deref().map(ManagementStatus::from) == Some(ManagementStatus::Validated)
    }

    /// The chantier code the slot names through `projectCode`, if any (trimmed). A
    /// BatiSimply project id is never used as a code.
    #[must_use]
    pub fn project_code(&self) -> Option<&str> {
        self.project_code
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The local start of a slot at minute precision (see the module's rounding rule).
#[must_use]
pub fn local_minute(start: DateTime<Utc>, zone: Tz, rounding: MinuteRounding) -> NaiveDateTime {
    let minute = TimeDelta::minutes(1);
    let rounded = match rounding {
        MinuteRounding::Truncate => start.duration_trunc(minute),
        MinuteRounding::Nearest => start.duration_round(minute),
    }
    // Only fails for instants near the ends of chrono's range, never sent by the API.
    .unwrap_or(start);
    let local = rounded.with_timezone(&zone).naive_local();
    // Zones with second offsets (before 1900) still give a whole minute.
    local.duration_trunc(minute).unwrap_or(local)
}

/// The `SuiviMO` row of a validated slot, once its employee and chantier are known.
#[must_use]
pub fn ledger_row(
    slot: &SlotPayload,
    employee: &str,
    chantier: &str,
    zone: Tz,
    rounding: MinuteRounding,
) -> LedgerRow {
    LedgerRow {
        key: LedgerKey {
            chantier: chantier.to_owned(),
            employee: employee.to_owned(),
            start: local_minute(slot.start, zone, rounding),
        },
        values: LedgerValues {
            hours: Hours::from_minutes(slot.total_minutes),
            journey: slot.home_to_work_journey,
            meal: slot.packed_lunch,
        },
    }
}

/// The target identity of a ledger row, as `links.target_id` keeps it.
#[must_use]
pub fn key_text(key: &LedgerKey) -> String {
    format!(
        "{}|{}|{}",
        key.chantier,
        key.employee,
        key.start.format("%Y-%m-%d %H:%M")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Europe::Paris;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("instant")
            .with_timezone(&Utc)
    }

    fn local(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").expect("local")
    }

    #[test]
    fn winter_and_summer_offsets_are_applied() {
        let t = MinuteRounding::Truncate;
        assert_eq!(
            local_minute(utc("2025-01-15T07:00:00Z"), Paris, t),
            local("2025-01-15 08:00")
        );
        assert_eq!(
            local_minute(utc("2025-07-15T07:00:00Z"), Paris, t),
            local("2025-07-15 09:00")
        );
    }

    #[test]
    fn both_sides_of_the_march_and_october_changes() {
        let t = MinuteRounding::Truncate;
        // 30 March 2025: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
        assert_eq!(
            local_minute(utc("2025-03-30T00:59:00Z"), Paris, t),
            local("2025-03-30 01:59")
        );
        assert_eq!(
            local_minute(utc("2025-03-30T01:00:00Z"), Paris, t),
            local("2025-03-30 03:00")
        );
        // 26 October 2025: 03:00 CEST falls back to 02:00 CET (01:00 UTC); 02:30 local
        // happens twice.
        assert_eq!(
            local_minute(utc("2025-10-26T00:30:00Z"), Paris, t),
            local("2025-10-26 02:30")
        );
        assert_eq!(
            local_minute(utc("2025-10-26T01:30:00Z"), Paris, t),
            local("2025-10-26 02:30")
        );
        assert_eq!(
            local_minute(utc("2025-10-26T02:00:00Z"), Paris, t),
            local("2025-10-26 03:00")
        );
    }

    #[test]
    fn seconds_are_truncated_or_rounded_as_configured() {
        let odd = utc("2025-05-02T06:59:57Z");
        assert_eq!(
            local_minute(odd, Paris, MinuteRounding::Truncate),
            local("2025-05-02 08:59")
        );
        assert_eq!(
            local_minute(odd, Paris, MinuteRounding::Nearest),
            local("2025-05-02 09:00")
        );
        assert_eq!(
            local_minute(utc("2025-05-02T06:59:29Z"), Paris, MinuteRounding::Nearest),
            local("2025-05-02 08:59")
        );
    }

    fn payload() -> SlotPayload {
        SlotPayload {
            id: "7".into(),
            start: utc("2025-05-02T06:00:00Z"),
            end: utc("2025-05-02T10:00:00Z"),
            user_id: "u".into(),
            project_id: 42,
            project_code: Some(" CH001 ".into()),
            status: Some("VALIDATED".into()),
            total_minutes: 225,
            packed_lunch: true,
            home_to_work_journey: false,
            last_modified: None,
        }
    }

    #[test]
    fn the_row_carries_codes_hours_and_flags() {
        let p = payload();
        let code = p.project_code().expect("code");
        let row = ledger_row(&p, "SAL01", code, Paris, MinuteRounding::Truncate);
        assert_eq!(row.key.chantier, "CH001");
        assert_eq!(row.key.start, local("2025-05-02 08:00"));
        assert_eq!(row.values.hours.to_decimal_string(), "3.7500");
        assert!(row.values.meal && !row.values.journey);
        assert_eq!(key_text(&row.key), "CH001|SAL01|2025-05-02 08:00");
    }

    #[test]
    fn the_hash_ignores_the_modification_instant_only() {
        let p = payload();
        let touched = SlotPayload {
            last_modified: Some(Utc::now()),
            ..p.clone()
        };
        assert_eq!(p.content_hash(), touched.content_hash());
        assert_eq!(p.content_hash().len(), 64);
        let moved = SlotPayload {
            total_minutes: 240,
            ..p.clone()
        };
        assert_ne!(p.content_hash(), moved.content_hash());
        assert!(p.is_validated());
        let pending = SlotPayload {
            status: Some("PENDING".into()),
            ..p
        };
        assert!(!pending.is_validated());
    }
}
