//! Settings of the chantiers flow (`[chantiers]`).

use serde::Deserialize;

use crate::dispatch::DispatchSettings;
use crate::settings::SettingsError;

/// What a chantier deleted in Batigest does to its BatiSimply project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDelete {
    /// The project is kept and marked archived (`isArchived = true`).
    Archive,
    /// Nothing is sent; the project stays as it is.
    Ignore,
}

/// The chantiers flow: Batigest job sites → BatiSimply projects.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChantiersSettings {
    /// Run this flow's poller and dispatchers in `batisync run`.
    pub enabled: bool,
    /// Time between two reads of `ChantierDef`, in milliseconds.
    pub poll_interval_ms: u64,
    /// `Etat` letters to sync (e.g. `["E"]`); empty: every state.
    pub states: Vec<String>,
    /// A chantier deleted in Batigest: `archive` its project or `ignore` it.
    pub on_delete: OnDelete,
    /// Batigest wins even over a newer edit made in the field app (conflicts are still
    /// recorded).
    pub batigest_always_wins: bool,
    /// BatiSimply agency (`headQuarter.id`) of the projects; unset: not sent.
    pub head_quarter_id: Option<i64>,
    /// Project manager sent with every project; unset: not sent.
    pub project_manager: Option<String>,
    /// Display colour of the projects (`#rrggbb`); unset: not sent.
    pub project_color: Option<String>,
    /// ISO 4217 currency of budgets. No budget is sent while Batigest has no budget
    /// column mapped: an amount is never invented.
    pub budget_currency: String,
    /// `Etat` letters meaning the job site is finished (`isFinished`); empty: not sent.
    pub finished_states: Vec<String>,
    /// `Etat` letters meaning the job site is archived (`isArchived`); empty: not sent.
    pub archived_states: Vec<String>,
    /// Dispatch settings of this flow; unset: the top-level `[dispatch]` section.
    pub dispatch: Option<DispatchSettings>,
}

impl Default for ChantiersSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            poll_interval_ms: 1_000,
            states: Vec::new(),
            on_delete: OnDelete::Archive,
            batigest_always_wins: false,
            head_quarter_id: None,
            project_manager: None,
            project_color: None,
            budget_currency: "EUR".to_owned(),
            finished_states: Vec::new(),
            archived_states: Vec::new(),
            dispatch: None,
        }
    }
}

impl ChantiersSettings {
    /// Checks the settings found under `section`.
    ///
    /// # Errors
    /// [`SettingsError::Invalid`] naming the offending key.
    pub fn validate(&self, section: &str) -> Result<(), SettingsError> {
        let key = |name: &str| format!("{section}.{name}");
        if self.poll_interval_ms < 100 {
            return Err(SettingsError::invalid(
                key("poll_interval_ms"),
                "must be at least 100",
            ));
        }
        for (name, letters) in [
            ("states", &self.states),
            ("finished_states", &self.finished_states),
            ("archived_states", &self.archived_states),
        ] {
            if letters.iter().any(|s| s.chars().count() != 1) {
                return Err(SettingsError::invalid(
                    key(name),
                    "each state is one letter (ChantierDef.Etat)",
                ));
            }
        }
        self.validate_defaults(&key)?;
        if let Some(dispatch) = &self.dispatch {
            dispatch.validate(&key("dispatch"))?;
        }
        Ok(())
    }

    fn validate_defaults(&self, key: &dyn Fn(&str) -> String) -> Result<(), SettingsError> {
        if self.head_quarter_id.is_some_and(|id| id <= 0) {
            return Err(SettingsError::invalid(
                key("head_quarter_id"),
                "must be a positive BatiSimply id",
            ));
        }
        let color_ok = |c: &str| {
            c.len() == 7 && c.starts_with('#') && c[1..].chars().all(|d| d.is_ascii_hexdigit())
        };
        if self.project_color.as_deref().is_some_and(|c| !color_ok(c)) {
            return Err(SettingsError::invalid(
                key("project_color"),
                "must look like #9b1ff1",
            ));
        }
        let currency = &self.budget_currency;
        if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(SettingsError::invalid(
                key("budget_currency"),
                "must be an ISO 4217 code such as EUR",
            ));
        }
        Ok(())
    }

    /// The dispatch settings of the flow: its own, else the process-wide ones.
    #[must_use]
    pub fn dispatch_or<'a>(&'a self, fallback: &'a DispatchSettings) -> &'a DispatchSettings {
        self.dispatch.as_ref().unwrap_or(fallback)
    }

    /// Whether a chantier in state `state` is synced (the `states` filter).
    #[must_use]
    pub fn selects(&self, state: Option<&str>) -> bool {
        self.states.is_empty() || state.is_some_and(|s| self.states.iter().any(|x| x == s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_send_nothing_invented() {
        let s = ChantiersSettings::default();
        s.validate("chantiers").expect("valid defaults");
        assert_eq!(s.head_quarter_id, None);
        assert_eq!(s.project_manager, None);
        assert!(s.finished_states.is_empty());
    }

    #[test]
    fn bad_values_are_refused_with_their_key() {
        let s = ChantiersSettings {
            finished_states: vec!["TE".into()],
            ..ChantiersSettings::default()
        };
        let err = s.validate("chantiers").expect_err("two letters");
        assert_eq!(err.key(), Some("chantiers.finished_states"));
        let s = ChantiersSettings {
            project_color: Some("violet".into()),
            ..ChantiersSettings::default()
        };
        let err = s.validate("chantiers").expect_err("colour");
        assert_eq!(err.key(), Some("chantiers.project_color"));
    }

    #[test]
    fn the_state_filter_keeps_listed_states_only() {
        let s = ChantiersSettings {
            states: vec!["E".into()],
            ..ChantiersSettings::default()
        };
        assert!(s.selects(Some("E")));
        assert!(!s.selects(Some("T")));
        assert!(!s.selects(None));
        assert!(ChantiersSettings::default().selects(None));
    }
}
