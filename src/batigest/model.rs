//! Normalised Batigest entities built from [`SourceRow`]s.
//!
//! Rules: text loses the trailing spaces of `CHAR` columns and surrounding blanks; an
//! empty text is absent; accents are kept as they are; a value over a Batigest limit is an
//! error naming the chantier and the field, never truncated (DOMAIN §5.7, D28).

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::spec::chantier_role as role;
use super::value::{Cell, SourceRow};

/// Longest `ChantierDef.Code`.
pub const CHANTIER_CODE_MAX_CHARS: usize = 8;
/// Longest `ChantierDef.NomClient`.
pub const CUSTOMER_NAME_MAX_CHARS: usize = 30;
/// `ChantierDef.Etat` is one character.
pub const STATE_MAX_CHARS: usize = 1;

/// A value that cannot become a model field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("chantier {code:?}, champ / field `{field}`: {problem}")]
pub struct FieldError {
    /// The chantier (or employee) the row belongs to.
    pub code: String,
    /// The field (role) in error.
    pub field: &'static str,
    /// What is wrong, French / English.
    pub problem: String,
    /// The limit, when the value is too long.
    pub max_chars: Option<usize>,
}

/// A validated chantier code: 1 to 8 characters, no surrounding blanks.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ChantierCode(String);

impl ChantierCode {
    /// Trims and checks a code.
    ///
    /// # Errors
    /// Empty, or longer than 8 characters (never truncated).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let code = raw.trim();
        if code.is_empty() {
            return Err("code vide / empty code".into());
        }
        let chars = code.chars().count();
        if chars > CHANTIER_CODE_MAX_CHARS {
            return Err(format!(
                "code de {chars} caractères, Batigest en accepte {CHANTIER_CODE_MAX_CHARS} / \
                 code of {chars} characters, Batigest holds {CHANTIER_CODE_MAX_CHARS}"
            ));
        }
        Ok(Self(code.to_owned()))
    }

    /// The code.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ChantierCode {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ChantierCode> for String {
    fn from(code: ChantierCode) -> Self {
        code.0
    }
}

/// Site address; every part optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub street: Option<String>,
    pub postcode: Option<String>,
    pub city: Option<String>,
}

/// A job site as batisync sends it on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chantier {
    /// `ChantierDef.Code` = BatiSimply `projectCode`.
    pub code: ChantierCode,
    /// Customer name (at most 30 characters).
    pub customer_name: Option<String>,
    /// Job-site label.
    pub label: Option<String>,
    /// State letter (`E` is assumed to mean *en cours*, unverified).
    pub state: Option<String>,
    /// Planned start.
    pub start_date: Option<NaiveDate>,
    /// Planned end.
    pub end_date: Option<NaiveDate>,
    /// Site address.
    pub address: Address,
    /// Sold labour hours as an exact decimal, when a column is mapped.
    pub sold_hours: Option<String>,
}

impl Chantier {
    /// Builds a chantier from a captured row.
    ///
    /// # Errors
    /// The first field that cannot be used, with the chantier code and the field name.
    pub fn from_row(row: &SourceRow) -> Result<Self, FieldError> {
        let code = ChantierCode::parse(&row.key).map_err(|problem| FieldError {
            code: row.key.clone(),
            field: role::CODE,
            max_chars: (!row.key.trim().is_empty()).then_some(CHANTIER_CODE_MAX_CHARS),
            problem,
        })?;
        let f = Fields {
            row,
            code: code.as_str(),
        };
        Ok(Self {
            customer_name: f.text(role::CUSTOMER_NAME, Some(CUSTOMER_NAME_MAX_CHARS))?,
            label: f.text(role::LABEL, None)?,
            state: f.text(role::STATE, Some(STATE_MAX_CHARS))?,
            start_date: f.date(role::START_DATE)?,
            end_date: f.date(role::END_DATE)?,
            address: Address {
                street: f.text(role::STREET, None)?,
                postcode: f.text(role::POSTCODE, None)?,
                city: f.text(role::CITY, None)?,
            },
            sold_hours: f.decimal(role::SOLD_HOURS)?,
            code,
        })
    }
}

/// Field readers that name the chantier in their errors.
pub(crate) struct Fields<'a> {
    pub row: &'a SourceRow,
    pub code: &'a str,
}

impl Fields<'_> {
    fn error(&self, field: &'static str, problem: String) -> FieldError {
        FieldError {
            code: self.code.to_owned(),
            field,
            problem,
            max_chars: None,
        }
    }

    /// Trimmed text, `None` when NULL or blank; over `max_chars` is an error.
    pub(crate) fn text(
        &self,
        field: &'static str,
        max_chars: Option<usize>,
    ) -> Result<Option<String>, FieldError> {
        let text = match self.row.cell(field) {
            Cell::Null => return Ok(None),
            Cell::Text(s) => s.trim().to_owned(),
            Cell::Int(i) => i.to_string(),
            Cell::Decimal(d) => d.clone(),
            other => {
                return Err(self.error(
                    field,
                    format!("texte attendu / text expected, got {other:?}"),
                ));
            }
        };
        if text.is_empty() {
            return Ok(None);
        }
        let chars = text.chars().count();
        match max_chars {
            Some(max) if chars > max => Err(FieldError {
                max_chars: Some(max),
                ..self.error(
                    field,
                    format!(
                        "{chars} caractères pour {max} au plus / {chars} characters, at most {max}"
                    ),
                )
            }),
            _ => Ok(Some(text)),
        }
    }

    fn date(&self, field: &'static str) -> Result<Option<NaiveDate>, FieldError> {
        match self.row.cell(field) {
            Cell::Null => Ok(None),
            Cell::Date(d) => Ok(Some(*d)),
            Cell::DateTime(dt) => Ok(Some(dt.date())),
            other => Err(self.error(
                field,
                format!("date attendue / date expected, got {other:?}"),
            )),
        }
    }

    fn decimal(&self, field: &'static str) -> Result<Option<String>, FieldError> {
        match self.row.cell(field) {
            Cell::Null => Ok(None),
            Cell::Decimal(d) => Ok(Some(d.clone())),
            Cell::Int(i) => Ok(Some(i.to_string())),
            Cell::Float(f) if f.is_finite() => Ok(Some(f.to_string())),
            other => Err(self.error(
                field,
                format!("nombre attendu / number expected, got {other:?}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: Vec<(&'static str, Cell)>) -> SourceRow {
        let key = match cells.iter().find(|(r, _)| *r == role::CODE) {
            Some((_, Cell::Text(k))) => k.trim_end().to_owned(),
            _ => String::new(),
        };
        SourceRow {
            key,
            cells: cells.into_iter().collect(),
        }
    }

    fn text(s: &str) -> Cell {
        Cell::Text(s.into())
    }

    #[test]
    fn a_full_row_is_normalised() {
        let start = NaiveDate::from_ymd_opt(2026, 3, 2).expect("date");
        let chantier = Chantier::from_row(&row(vec![
            (role::CODE, text("00000042")),
            (role::CUSTOMER_NAME, text("Bâtiments Hélène Ÿ      ")),
            (role::LABEL, text("  Réfection toiture  ")),
            (role::STATE, text("E")),
            (
                role::START_DATE,
                Cell::DateTime(start.and_hms_opt(0, 0, 0).expect("t")),
            ),
            (role::END_DATE, Cell::Null),
            (role::STREET, text("")),
            (role::POSTCODE, text("34000")),
            (role::CITY, text("Montpellier")),
            (role::SOLD_HOURS, Cell::Decimal("120.5".into())),
        ]))
        .expect("valid row");
        assert_eq!(chantier.code.as_str(), "00000042");
        assert_eq!(
            chantier.customer_name.as_deref(),
            Some("Bâtiments Hélène Ÿ")
        );
        assert_eq!(chantier.label.as_deref(), Some("Réfection toiture"));
        assert_eq!(chantier.start_date, Some(start));
        assert_eq!(chantier.end_date, None);
        assert_eq!(chantier.address.street, None);
        assert_eq!(chantier.address.city.as_deref(), Some("Montpellier"));
        assert_eq!(chantier.sold_hours.as_deref(), Some("120.5"));
    }

    #[test]
    fn nulls_and_unmapped_columns_are_absent() {
        let chantier = Chantier::from_row(&row(vec![
            (role::CODE, text("7       ")),
            (role::CUSTOMER_NAME, Cell::Null),
        ]))
        .expect("valid row");
        assert_eq!(chantier.code.as_str(), "7");
        assert_eq!(chantier.customer_name, None);
        assert_eq!(chantier.sold_hours, None);
    }

    #[test]
    fn over_long_values_are_errors_naming_chantier_and_field() {
        let err = Chantier::from_row(&row(vec![
            (role::CODE, text("00000001")),
            (role::CUSTOMER_NAME, text(&"é".repeat(31))),
        ]))
        .expect_err("31 characters");
        assert_eq!(
            (err.code.as_str(), err.field),
            ("00000001", role::CUSTOMER_NAME)
        );
        assert!(err.to_string().contains("31 caractères pour 30"), "{err}");
        // 30 accented characters are 60 bytes but fit.
        Chantier::from_row(&row(vec![
            (role::CODE, text("00000001")),
            (role::CUSTOMER_NAME, text(&"é".repeat(30))),
        ]))
        .expect("30 characters fit");

        let err = Chantier::from_row(&row(vec![(role::CODE, text("123456789"))]))
            .expect_err("9-character code");
        assert_eq!(err.field, role::CODE);
        let err = Chantier::from_row(&row(vec![
            (role::CODE, text("1")),
            (role::STATE, text("EN")),
        ]))
        .expect_err("two-letter state");
        assert_eq!(err.field, role::STATE);
    }

    #[test]
    fn wrong_types_and_empty_codes_are_errors() {
        let err = Chantier::from_row(&row(vec![
            (role::CODE, text("1")),
            (role::START_DATE, text("01/02/2026")),
        ]))
        .expect_err("text date");
        assert_eq!(err.field, role::START_DATE);
        assert!(Chantier::from_row(&row(vec![(role::CODE, text("   "))])).is_err());
    }

    #[test]
    fn codes_round_trip_through_json_and_are_validated() {
        let code = ChantierCode::parse(" 0001 ").expect("valid");
        assert_eq!(
            serde_json::to_value(&code).expect("json"),
            serde_json::json!("0001")
        );
        assert!(serde_json::from_value::<ChantierCode>(serde_json::json!("123456789")).is_err());
    }
}
