//! BatiSimply user id → `Salarie.Code`, built from `Salarie` rows and kept fresh from its
//! capture (DOMAIN §1.6, defect D16: no silent skip, no coin toss on duplicates).

use std::collections::{BTreeMap, BTreeSet};

use super::capture::Change;
use super::spec::salarie_role as role;
use super::value::{Cell, SourceRow};

/// Why a user id has no employee code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmployeeLookupError {
    #[error(
        "utilisateur BatiSimply {user_id} sans salarié : renseigner Salarie.codebs pour cet \
         utilisateur / BatiSimply user {user_id} is unmapped: fill Salarie.codebs for this user"
    )]
    Unmapped { user_id: String },
    #[error(
        "utilisateur BatiSimply {user_id} renseigné sur plusieurs salariés ({codes:?}) : n'en \
         garder qu'un dans Salarie.codebs / user {user_id} is set on several employees \
         ({codes:?}): keep only one in Salarie.codebs"
    )]
    Ambiguous { user_id: String, codes: Vec<String> },
}

/// The map and what prevents it from being complete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmployeeMap {
    /// Employee code → normalised BatiSimply id (`None`: empty `codebs`).
    ids_by_code: BTreeMap<String, Option<String>>,
}

/// Normalises a user id: trimmed, lower case (UUIDs compare case-insensitively).
fn normalise_id(raw: &str) -> Option<String> {
    let id = raw.trim().to_lowercase();
    (!id.is_empty()).then_some(id)
}

fn id_of(row: &SourceRow) -> Option<String> {
    match row.cell(role::BATISIMPLY_ID) {
        Cell::Text(s) => normalise_id(s),
        _ => None,
    }
}

impl EmployeeMap {
    /// Builds the map from a full read of `Salarie`.
    #[must_use]
    pub fn from_rows(rows: &[SourceRow]) -> Self {
        Self {
            ids_by_code: rows.iter().map(|r| (r.key.clone(), id_of(r))).collect(),
        }
    }

    /// Builds the map from `(employee code, BatiSimply id)` pairs (simulated sources).
    #[must_use]
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> Self {
        Self {
            ids_by_code: pairs
                .into_iter()
                .map(|(code, id)| (code.to_owned(), id.and_then(normalise_id)))
                .collect(),
        }
    }

    /// Applies a batch of `Salarie` changes (upserts and deletes by employee code).
    pub fn apply(&mut self, changes: &[Change]) {
        for change in changes {
            match &change.row {
                Some(row) => self.ids_by_code.insert(change.key.clone(), id_of(row)),
                None => self.ids_by_code.remove(&change.key),
            };
        }
    }

    /// The employee code of a BatiSimply user.
    ///
    /// # Errors
    /// Unmapped (no employee has this id) or ambiguous (several have it).
    pub fn lookup(&self, user_id: &str) -> Result<&str, EmployeeLookupError> {
        let wanted = normalise_id(user_id);
        let codes: Vec<&String> = self
            .ids_by_code
            .iter()
            .filter(|(_, id)| id.is_some() && *id == &wanted)
            .map(|(code, _)| code)
            .collect();
        match codes.as_slice() {
            [code] => Ok(code.as_str()),
            [] => Err(EmployeeLookupError::Unmapped {
                user_id: user_id.to_owned(),
            }),
            many => Err(EmployeeLookupError::Ambiguous {
                user_id: user_id.to_owned(),
                codes: many.iter().map(|c| (*c).clone()).collect(),
            }),
        }
    }

    /// Employees whose `codebs` is empty (their hours cannot be written).
    #[must_use]
    pub fn employees_without_id(&self) -> Vec<&str> {
        self.ids_by_code
            .iter()
            .filter(|(_, id)| id.is_none())
            .map(|(code, _)| code.as_str())
            .collect()
    }

    /// BatiSimply ids set on several employees, with their codes (to surface as errors).
    #[must_use]
    pub fn duplicate_ids(&self) -> BTreeMap<&str, Vec<&str>> {
        let mut by_id: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (code, id) in &self.ids_by_code {
            if let Some(id) = id {
                by_id.entry(id.as_str()).or_default().push(code.as_str());
            }
        }
        by_id.retain(|_, codes| codes.len() > 1);
        by_id
    }

    /// Number of employees usable for lookups.
    #[must_use]
    pub fn mapped_count(&self) -> usize {
        let dup: BTreeSet<&str> = self.duplicate_ids().into_keys().collect();
        self.ids_by_code
            .values()
            .flatten()
            .filter(|id| !dup.contains(id.as_str()))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use crate::outbox::Operation;

    use super::*;

    fn salarie(code: &str, id: Option<&str>) -> SourceRow {
        let mut cells = BTreeMap::new();
        cells.insert(role::CODE, Cell::Text(code.into()));
        cells.insert(
            role::BATISIMPLY_ID,
            id.map_or(Cell::Null, |i| Cell::Text(i.into())),
        );
        SourceRow {
            key: code.into(),
            cells,
        }
    }

    const U1: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
    const U2: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

    #[test]
    fn ids_map_to_codes_case_and_blank_insensitively() {
        let map =
            EmployeeMap::from_rows(&[salarie("DUPONT", Some(&format!(" {} ", U1.to_uppercase())))]);
        assert_eq!(map.lookup(U1), Ok("DUPONT"));
        assert_eq!(map.mapped_count(), 1);
    }

    #[test]
    fn empty_ids_are_ignored_and_reported() {
        let map = EmployeeMap::from_rows(&[
            salarie("A", None),
            salarie("B", Some("   ")),
            salarie("C", Some(U1)),
        ]);
        assert_eq!(map.employees_without_id(), vec!["A", "B"]);
        assert!(matches!(
            map.lookup(""),
            Err(EmployeeLookupError::Unmapped { .. })
        ));
    }

    #[test]
    fn duplicate_ids_are_errors_listing_the_codes() {
        let map = EmployeeMap::from_rows(&[
            salarie("A", Some(U1)),
            salarie("B", Some(U1)),
            salarie("C", Some(U2)),
        ]);
        let err = map.lookup(U1).expect_err("ambiguous");
        assert_eq!(
            err,
            EmployeeLookupError::Ambiguous {
                user_id: U1.into(),
                codes: vec!["A".into(), "B".into()]
            }
        );
        assert_eq!(map.duplicate_ids().get(U1), Some(&vec!["A", "B"]));
        assert_eq!(map.lookup(U2), Ok("C"));
        assert_eq!(map.mapped_count(), 1);
    }

    #[test]
    fn unknown_ids_give_the_french_fix() {
        let map = EmployeeMap::from_rows(&[]);
        let err = map.lookup(U2).expect_err("unmapped").to_string();
        assert!(err.contains("renseigner Salarie.codebs pour"), "{err}");
        assert!(err.contains(U2), "{err}");
    }

    #[test]
    fn captured_changes_keep_the_map_fresh() {
        let mut map = EmployeeMap::from_rows(&[salarie("A", Some(U1)), salarie("B", None)]);
        map.apply(&[
            Change {
                key: "B".into(),
                operation: Operation::Upsert,
                row: Some(salarie("B", Some(U2))),
                version: "1".into(),
                own_write: false,
                committed_at: None,
            },
            Change {
                key: "A".into(),
                operation: Operation::Delete,
                row: None,
                version: "1".into(),
                own_write: false,
                committed_at: None,
            },
        ]);
        assert_eq!(map.lookup(U2), Ok("B"));
        assert!(map.lookup(U1).is_err());
        assert!(map.employees_without_id().is_empty());
    }
}
