//! Rows as read from SQL Server, independent of tiberius, and their stable hash.
//!
//! A [`SourceRow`] holds cells by *role* (`code`, `customer_name`, ...), not by column
//! name, so the model code and the hash do not change when a DBA maps another column
//! holding the same data.
//!
//! ## Row hash (snapshot diff)
//! SHA-256 over a canonical, length-prefixed serialisation: for each cell in role order
//! (alphabetical, so the order of the mapping does not matter), the role name, a type tag
//! and the value. SHA-256 rather than a 64-bit hash (FNV, SipHash): its output is fixed
//! by a standard (same hash on every platform, Rust version and run, unlike std's
//! randomly keyed `DefaultHasher`), and a collision, which would silently hide a change,
//! is out of reach; its cost is negligible next to reading the row over the network.
//! Trailing spaces of text are ignored (Batigest `CHAR` padding is not data); leading
//! and inner whitespace, case and accents are significant.

use std::collections::BTreeMap;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tiberius::{ColumnData, FromSql};

/// One value of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Text(String),
    Int(i64),
    /// Exact decimal as text (`12.5`), never through a float.
    Decimal(String),
    Float(f64),
    Bool(bool),
    Date(NaiveDate),
    DateTime(NaiveDateTime),
    Bytes(Vec<u8>),
}

impl Cell {
    /// Converts one tiberius value.
    ///
    /// # Errors
    /// A date the server sent out of chrono's range.
    pub fn from_column(data: &ColumnData<'static>) -> Result<Self, tiberius::error::Error> {
        Ok(match data {
            ColumnData::U8(v) => v.map_or(Self::Null, |v| Self::Int(v.into())),
            ColumnData::I16(v) => v.map_or(Self::Null, |v| Self::Int(v.into())),
            ColumnData::I32(v) => v.map_or(Self::Null, |v| Self::Int(v.into())),
            ColumnData::I64(v) => v.map_or(Self::Null, Self::Int),
            ColumnData::F32(v) => v.map_or(Self::Null, |v| Self::Float(v.into())),
            ColumnData::F64(v) => v.map_or(Self::Null, Self::Float),
            ColumnData::Bit(v) => v.map_or(Self::Null, Self::Bool),
            ColumnData::String(v) => v.as_ref().map_or(Self::Null, |s| Self::Text(s.to_string())),
            ColumnData::Guid(v) => v.map_or(Self::Null, |g| Self::Text(g.to_string())),
            ColumnData::Binary(v) => v.as_ref().map_or(Self::Null, |b| Self::Bytes(b.to_vec())),
            ColumnData::Numeric(v) => v.map_or(Self::Null, |n| {
                Self::Decimal(canonical_decimal(&n.to_string()))
            }),
            ColumnData::Xml(v) => v.as_ref().map_or(Self::Null, |x| Self::Text(x.to_string())),
            ColumnData::Date(_) => NaiveDate::from_sql(data)?.map_or(Self::Null, Self::Date),
            ColumnData::Time(_) => {
                NaiveTime::from_sql(data)?.map_or(Self::Null, |t| Self::Text(t.to_string()))
            }
            ColumnData::DateTimeOffset(_) => chrono::DateTime::<chrono::Utc>::from_sql(data)?
                .map_or(Self::Null, |t| Self::DateTime(t.naive_utc())),
            ColumnData::DateTime(_) | ColumnData::SmallDateTime(_) | ColumnData::DateTime2(_) => {
                NaiveDateTime::from_sql(data)?.map_or(Self::Null, Self::DateTime)
            }
        })
    }

    /// JSON form used in outbox payloads.
    #[must_use]
    pub fn to_json(&self) -> Value {
        match self {
            Self::Null => Value::Null,
            Self::Text(s) => json!(s.trim_end_matches(' ')),
            Self::Int(i) => json!(i),
            Self::Decimal(d) => json!(d),
            Self::Float(f) => json!(f),
            Self::Bool(b) => json!(b),
            Self::Date(d) => json!(d.format("%Y-%m-%d").to_string()),
            Self::DateTime(d) => json!(d.format("%Y-%m-%dT%H:%M:%S%.f").to_string()),
            Self::Bytes(b) => json!(hex(b)),
        }
    }

    fn hash_into(&self, hasher: &mut Sha256) {
        let (tag, bytes): (u8, Vec<u8>) = match self {
            Self::Null => (0, Vec::new()),
            Self::Text(s) => (1, s.trim_end_matches(' ').as_bytes().to_vec()),
            Self::Int(i) => (2, i.to_be_bytes().to_vec()),
            Self::Decimal(d) => (3, d.as_bytes().to_vec()),
            Self::Float(f) => (4, f.to_string().into_bytes()),
            Self::Bool(b) => (5, vec![u8::from(*b)]),
            Self::Date(d) => (6, d.format("%Y-%m-%d").to_string().into_bytes()),
            Self::DateTime(d) => (7, d.format("%Y-%m-%dT%H:%M:%S%.f").to_string().into_bytes()),
            Self::Bytes(b) => (8, b.clone()),
        };
        hasher.update([tag]);
        hash_bytes(hasher, &bytes);
    }
}

/// `12.500` → `12.5`, `3.000` → `3`: a column rescale is not a data change.
fn canonical_decimal(text: &str) -> String {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text.to_owned()
    }
}

fn hash_bytes(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_be_bytes());
    hasher.update(bytes);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One row of a captured table.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRow {
    /// The key, trailing spaces removed.
    pub key: String,
    /// Cells by role.
    pub cells: BTreeMap<&'static str, Cell>,
}

impl SourceRow {
    /// The cell of a role (`Null` when the role is not mapped).
    #[must_use]
    pub fn cell(&self, role: &str) -> &Cell {
        self.cells.get(role).unwrap_or(&Cell::Null)
    }

    /// Hex SHA-256 of the row (see the module documentation).
    #[must_use]
    pub fn hash(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(b"batisync-row-v1");
        for (role, cell) in &self.cells {
            hash_bytes(&mut hasher, role.as_bytes());
            cell.hash_into(&mut hasher);
        }
        hex(&hasher.finalize())
    }

    /// `{role: value}` for outbox payloads.
    #[must_use]
    pub fn to_json(&self) -> Value {
        Value::Object(
            self.cells
                .iter()
                .map(|(role, cell)| ((*role).to_owned(), cell.to_json()))
                .collect(),
        )
    }
}

/// Normalises a key as read (CHAR padding removed).
#[must_use]
pub fn normalise_key(raw: &str) -> String {
    raw.trim_end_matches(' ').to_owned()
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use tiberius::numeric::Numeric;

    use super::*;

    fn row(cells: &[(&'static str, Cell)]) -> SourceRow {
        SourceRow {
            key: "00000001".into(),
            cells: cells.iter().cloned().collect(),
        }
    }

    const PINNED_HASH: &str = "05f0c8bccdd88432643b75a6f2cba3260d2e854ae825d70a00961fec53a74540";

    #[test]
    fn the_hash_is_stable_across_runs() {
        let r = row(&[
            ("code", Cell::Text("00000001".into())),
            (
                "customer_name",
                Cell::Text("Société Générale du Bâtiment".into()),
            ),
            (
                "start_date",
                Cell::Date(NaiveDate::from_ymd_opt(2026, 3, 1).expect("date")),
            ),
            ("sold_hours", Cell::Decimal("12.5".into())),
        ]);
        // Pinned value: a change here re-sends every row of every snapshot-diff table.
        assert_eq!(r.hash(), PINNED_HASH);
        assert_eq!(r.hash().len(), 64);
        assert_eq!(r.hash(), r.clone().hash());
    }

    #[test]
    fn the_hash_ignores_mapping_order_and_char_padding_but_not_content() {
        let a = row(&[("a", Cell::Text("x".into())), ("b", Cell::Int(1))]);
        let b = row(&[("b", Cell::Int(1)), ("a", Cell::Text("x   ".into()))]);
        assert_eq!(a.hash(), b.hash());
        for changed in [
            row(&[("a", Cell::Text(" x".into())), ("b", Cell::Int(1))]),
            row(&[("a", Cell::Text("X".into())), ("b", Cell::Int(1))]),
            row(&[("a", Cell::Null), ("b", Cell::Int(1))]),
            row(&[("a", Cell::Text(String::new())), ("b", Cell::Int(1))]),
            row(&[("a", Cell::Text("x".into())), ("b", Cell::Text("1".into()))]),
            row(&[("a", Cell::Text("x".into()))]),
        ] {
            assert_ne!(a.hash(), changed.hash(), "{changed:?}");
        }
        // Length prefixes: moving bytes between cells changes the hash.
        let c = row(&[
            ("a", Cell::Text("ab".into())),
            ("b", Cell::Text("c".into())),
        ]);
        let d = row(&[
            ("a", Cell::Text("a".into())),
            ("b", Cell::Text("bc".into())),
        ]);
        assert_ne!(c.hash(), d.hash());
    }

    #[test]
    fn tiberius_values_become_cells() {
        let text = ColumnData::String(Some(Cow::from("Chantier Élysée  ")));
        assert_eq!(
            Cell::from_column(&text).expect("text"),
            Cell::Text("Chantier Élysée  ".into())
        );
        assert_eq!(
            Cell::from_column(&ColumnData::String(None)).expect("null"),
            Cell::Null
        );
        assert_eq!(
            Cell::from_column(&ColumnData::I32(Some(7))).expect("int"),
            Cell::Int(7)
        );
        let n = ColumnData::Numeric(Some(Numeric::new_with_scale(12_500, 3)));
        assert_eq!(
            Cell::from_column(&n).expect("num"),
            Cell::Decimal("12.5".into())
        );
        let dt = NaiveDate::from_ymd_opt(2026, 1, 2)
            .and_then(|d| d.and_hms_opt(8, 30, 0))
            .expect("datetime");
        let data = tiberius::IntoSql::into_sql(dt);
        assert_eq!(Cell::from_column(&data).expect("dt"), Cell::DateTime(dt));
        assert_eq!(Cell::DateTime(dt).to_json(), json!("2026-01-02T08:30:00"));
        assert_eq!(Cell::Text("AB  ".into()).to_json(), json!("AB"));
    }

    #[test]
    fn decimals_are_canonical() {
        assert_eq!(canonical_decimal("12.500"), "12.5");
        assert_eq!(canonical_decimal("3.000"), "3");
        assert_eq!(canonical_decimal("300"), "300");
        assert_eq!(normalise_key("0001    "), "0001");
    }
}
