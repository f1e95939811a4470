//! Settings of the heures flow (`[heures]`).

use chrono_tz::Tz;
use serde::Deserialize;

use crate::dispatch::DispatchSettings;
use crate::settings::SettingsError;

/// What happens to the `SuiviMO` row of a slot that is no longer `VALIDATED` or was
/// deleted in BatiSimply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnvalidated {
    /// The row is deleted from `SuiviMO`.
    Remove,
    /// The row stays; the event's outcome says so (visible in the console and outbox).
    Keep,
}

/// How a local start time is brought to the minute `SuiviMO.Date` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MinuteRounding {
    /// Seconds are dropped: 08:59:57 → 08:59 (what the original tool wrote, so rows it
    /// wrote keep their key).
    Truncate,
    /// To the nearest minute, half up: 08:59:30 → 09:00, 08:59:29 → 08:59.
    Nearest,
}

/// The heures flow: validated BatiSimply time slots → Batigest `SuiviMO`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeuresSettings {
    /// Run this flow's poller and dispatchers in `batisync run`.
    pub enabled: bool,
    /// Time between two reads of the time slots, in milliseconds.
    pub poll_interval_ms: u64,
    /// Days before now watched for new, changed and deleted slots.
    pub days_back: u32,
    /// Days after now watched (slots entered in advance).
    pub days_ahead: u32,
    /// Days before now read on every poll; older slots of the watched window are read
    /// every `deletion_sweep_secs` (`recent_days >= days_back`: the whole window every
    /// poll).
    pub recent_days: u32,
    /// Margin against clock skew, in seconds: a modified-since read starts this much
    /// before the previous read, and slots this close to the window's edges are never
    /// taken as deleted when they are missing.
    pub overlap_secs: u64,
    /// How often the whole watched window is read, in seconds: changes to slots older
    /// than `recent_days` and deleted slots (a modified-since answer cannot show them)
    /// are seen within this delay.
    pub deletion_sweep_secs: u64,
    /// Time zone of `SuiviMO.Date` (IANA name).
    pub timezone: String,
    /// `truncate` or `nearest`: how seconds are brought to the minute.
    pub minute_rounding: MinuteRounding,
    /// A slot leaving `VALIDATED`, or deleted: `remove` its `SuiviMO` row or `keep` it.
    pub on_unvalidated: OnUnvalidated,
    /// BatiSimply wins even over a `SuiviMO` row edited in Batigest after the slot's last
    /// change (conflicts are still recorded).
    pub batisimply_always_wins: bool,
    /// How often the employee map (`Salarie.codebs`) is read again, in seconds.
    pub employee_refresh_secs: u64,
    /// Dispatch settings of this flow; unset: the top-level `[dispatch]` section.
    pub dispatch: Option<DispatchSettings>,
}

impl Default for HeuresSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            poll_interval_ms: 15_000,
            days_back: 35,
            days_ahead: 7,
            recent_days: 7,
            overlap_secs: 120,
            deletion_sweep_secs: 600,
            timezone: "Europe/Paris".to_owned(),
            minute_rounding: MinuteRounding::Truncate,
            on_unvalidated: OnUnvalidated::Remove,
            batisimply_always_wins: false,
            employee_refresh_secs: 60,
            dispatch: None,
        }
    }
}

impl HeuresSettings {
    /// Checks the settings found under `section`.
    ///
    /// # Errors
    /// [`SettingsError::Invalid`] naming the offending key.
    pub fn validate(&self, section: &str) -> Result<(), SettingsError> {
        let key = |name: &str| format!("{section}.{name}");
        if self.poll_interval_ms < 1_000 {
            return Err(SettingsError::invalid(
                key("poll_interval_ms"),
                "must be at least 1000 (the API is shared with the chantiers flow)",
            ));
        }
        if self.days_back == 0 || self.days_back > 400 {
            return Err(SettingsError::invalid(
                key("days_back"),
                "must be between 1 and 400",
            ));
        }
        if self.days_ahead > 400 {
            return Err(SettingsError::invalid(
                key("days_ahead"),
                "must be at most 400",
            ));
        }
        if self.recent_days == 0 {
            return Err(SettingsError::invalid(
                key("recent_days"),
                "must be at least 1",
            ));
        }
        if self.overlap_secs > 86_400 {
            return Err(SettingsError::invalid(
                key("overlap_secs"),
                "must be at most 86400 (one day)",
            ));
        }
        if self.deletion_sweep_secs < 60 {
            return Err(SettingsError::invalid(
                key("deletion_sweep_secs"),
                "must be at least 60",
            ));
        }
        if self.employee_refresh_secs < 5 {
            return Err(SettingsError::invalid(
                key("employee_refresh_secs"),
                "must be at least 5",
            ));
        }
        self.tz()
            .map_err(|message| SettingsError::invalid(key("timezone"), &message))?;
        if let Some(dispatch) = &self.dispatch {
            dispatch.validate(&key("dispatch"))?;
        }
        Ok(())
    }

    /// The configured time zone.
    ///
    /// # Errors
    /// A message when the name is not an IANA zone.
    pub fn tz(&self) -> Result<Tz, String> {
        self.timezone.parse::<Tz>().map_err(|_| {
            format!(
                "\"{}\" is not an IANA time zone name (e.g. Europe/Paris)",
                self.timezone
            )
        })
    }

    /// The dispatch settings of the flow: its own, else the process-wide ones.
    #[must_use]
    pub fn dispatch_or<'a>(&'a self, fallback: &'a DispatchSettings) -> &'a DispatchSettings {
        self.dispatch.as_ref().unwrap_or(fallback)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        let s = HeuresSettings::default();
        s.validate("heures").expect("valid defaults");
        assert_eq!(s.tz().expect("zone"), chrono_tz::Europe::Paris);
    }

    #[test]
    fn bad_values_are_refused_with_their_key() {
        let s = HeuresSettings {
            timezone: "Paris".into(),
            ..HeuresSettings::default()
        };
        let err = s.validate("heures").expect_err("zone");
        assert_eq!(err.key(), Some("heures.timezone"));
        let s = HeuresSettings {
            poll_interval_ms: 10,
            ..HeuresSettings::default()
        };
        let err = s.validate("heures").expect_err("interval");
        assert_eq!(err.key(), Some("heures.poll_interval_ms"));
    }
}
