//! Why an event is a dead letter, as data (architecture guarantee 11).
//!
//! A flow names the reason when it refuses an event: a stable [`ReasonCode`] and its
//! parameters (the user id to map, the field that is too long, the HTTP status…). The
//! outbox stores both in their own columns (`dead_events.reason`, `reason_params`);
//! automatic re-drive and the console read them there, never the message text, so a
//! message can be reworded freely.

use serde_json::{Map, Value};

/// The kinds of dead letter. The string forms are stored: never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReasonCode {
    /// A BatiSimply user has no Batigest employee (`Salarie.codebs`); params `user_id`.
    EmployeeUnmapped,
    /// Several employees carry one BatiSimply user id; params `user_id`, `employees`.
    EmployeeAmbiguous,
    /// A time slot's project has no chantier code; params `project_id`, `slot_id`.
    UnknownChantier,
    /// Two slots (or a slot and a Batigest entry) map to one `SuiviMO` row; params
    /// `slot_id`, `row_key`, `other_slot`.
    SuivimoCollision,
    /// Several `SuiviMO` rows share the key of one slot; params `slot_id`, `row_key`,
    /// `rows`.
    SuivimoDuplicates,
    /// A value exceeds a limit of the target; params `key`, `field`, `max_chars`.
    TooLong,
    /// A value or payload cannot be used as it is; params `key`, `field` (when known).
    InvalidData,
    /// The target refused the request (a 4xx answer); params `key`, `status`.
    Refused,
    /// The target kept refusing our credentials until the attempts ran out.
    Credentials,
    /// The target stayed unreachable or failing until the attempts ran out; params
    /// `attempts`.
    GaveUp,
    /// Anything else, and dead letters recorded before reasons were stored.
    Other,
}

impl ReasonCode {
    /// Every code, for documentation and tests.
    pub const ALL: [Self; 11] = [
        Self::EmployeeUnmapped,
        Self::EmployeeAmbiguous,
        Self::UnknownChantier,
        Self::SuivimoCollision,
        Self::SuivimoDuplicates,
        Self::TooLong,
        Self::InvalidData,
        Self::Refused,
        Self::Credentials,
        Self::GaveUp,
        Self::Other,
    ];

    /// The stored form.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::EmployeeUnmapped => "employee-unmapped",
            Self::EmployeeAmbiguous => "employee-ambiguous",
            Self::UnknownChantier => "unknown-chantier",
            Self::SuivimoCollision => "suivimo-collision",
            Self::SuivimoDuplicates => "suivimo-duplicates",
            Self::TooLong => "too-long",
            Self::InvalidData => "invalid-data",
            Self::Refused => "refused",
            Self::Credentials => "credentials",
            Self::GaveUp => "gave-up",
            Self::Other => "other",
        }
    }

    /// The code of a stored form; unknown forms (a newer version's) read as `Other`.
    #[must_use]
    pub fn parse(stored: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|code| code.as_str() == stored)
            .unwrap_or(Self::Other)
    }
}

impl std::fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reason code with its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub code: ReasonCode,
    /// A JSON object; keys are documented on each [`ReasonCode`].
    pub params: Map<String, Value>,
}

impl Reason {
    /// A reason without parameters.
    #[must_use]
    pub fn new(code: ReasonCode) -> Self {
        Self {
            code,
            params: Map::new(),
        }
    }

    /// Adds one parameter.
    #[must_use]
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.params.insert(name.to_owned(), value.into());
        self
    }

    /// Reads a stored reason (its code and parameter object).
    #[must_use]
    pub fn from_stored(code: &str, params: Option<&Value>) -> Self {
        Self {
            code: ReasonCode::parse(code),
            params: params
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        }
    }

    /// A text parameter.
    #[must_use]
    pub fn text(&self, name: &str) -> Option<&str> {
        self.params.get(name).and_then(Value::as_str)
    }

    /// An integer parameter.
    #[must_use]
    pub fn int(&self, name: &str) -> Option<i64> {
        self.params.get(name).and_then(Value::as_i64)
    }

    /// The parameters as a JSON value, as stored.
    #[must_use]
    pub fn params_json(&self) -> Value {
        Value::Object(self.params.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_from_its_stored_form() {
        for code in ReasonCode::ALL {
            assert_eq!(ReasonCode::parse(code.as_str()), code);
        }
        assert_eq!(ReasonCode::parse("from-a-newer-version"), ReasonCode::Other);
    }

    #[test]
    fn parameters_survive_the_round_trip() {
        let reason = Reason::new(ReasonCode::EmployeeUnmapped).with("user_id", "3f2a-77");
        let stored = reason.params_json();
        let back = Reason::from_stored(reason.code.as_str(), Some(&stored));
        assert_eq!(back, reason);
        assert_eq!(back.text("user_id"), Some("3f2a-77"));
        assert_eq!(back.int("user_id"), None);
    }
}
