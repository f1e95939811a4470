//! The mapping once resolved against the server: validated names, ready for statements.

use super::ident::{Ident, QualifiedTable};

/// Fixed role names of `ChantierDef` columns (the keys of a [`super::SourceRow`]).
pub mod chantier_role {
    pub const CODE: &str = "code";
    pub const CUSTOMER_NAME: &str = "customer_name";
    pub const LABEL: &str = "label";
    pub const STATE: &str = "state";
    pub const START_DATE: &str = "start_date";
    pub const END_DATE: &str = "end_date";
    pub const STREET: &str = "street";
    pub const POSTCODE: &str = "postcode";
    pub const CITY: &str = "city";
    pub const SOLD_HOURS: &str = "sold_hours";
}

/// Fixed role names of `Salarie` columns.
pub mod salarie_role {
    pub const CODE: &str = "code";
    pub const NAME: &str = "name";
    pub const BATISIMPLY_ID: &str = "batisimply_id";
}

/// One mapped column: its role in batisync and its validated name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedColumn {
    /// Fixed role name (`code`, `customer_name`, ...).
    pub role: &'static str,
    /// Column on the server.
    pub column: Ident,
}

/// A keyed table to capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    /// Cursor and snapshot-hash name, e.g. `batigest:dbo.ChantierDef`.
    pub source: String,
    /// The table.
    pub table: QualifiedTable,
    /// Its key column (the primary key, required by Change Tracking).
    pub key: Ident,
    /// Columns read, key included, in mapping order.
    pub columns: Vec<MappedColumn>,
}

/// The ledger (`SuiviMO`) as written.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerSpec {
    /// The table.
    pub table: QualifiedTable,
    /// Chantier code column.
    pub chantier: Ident,
    /// Employee code column.
    pub employee: Ident,
    /// Slot start column.
    pub date: Ident,
    /// Decimal hours column.
    pub hours: Ident,
    /// Journey flag column.
    pub journey: Ident,
    /// Meal flag column.
    pub meal: Ident,
    /// Longest chantier code the column holds (8 in Batigest).
    pub chantier_code_chars: usize,
    /// Longest employee code the column holds.
    pub employee_code_chars: usize,
    /// Extra columns written on insert with a constant (`[batigest.suivimo_defaults]`).
    pub extra: Vec<(Ident, super::settings::DefaultValue)>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn ident(name: &str) -> Ident {
        Ident::trusted(name).expect("plain test identifier")
    }

    fn table(name: &str) -> QualifiedTable {
        QualifiedTable {
            schema: ident("dbo"),
            table: ident(name),
        }
    }

    /// A small ChantierDef mapping: code, customer name, state.
    pub(crate) fn chantier_spec() -> TableSpec {
        TableSpec {
            source: "batigest:dbo.ChantierDef".into(),
            table: table("ChantierDef"),
            key: ident("Code"),
            columns: vec![
                MappedColumn {
                    role: chantier_role::CODE,
                    column: ident("Code"),
                },
                MappedColumn {
                    role: chantier_role::CUSTOMER_NAME,
                    column: ident("NomClient"),
                },
                MappedColumn {
                    role: chantier_role::STATE,
                    column: ident("Etat"),
                },
            ],
        }
    }

    pub(crate) fn ledger_spec() -> LedgerSpec {
        LedgerSpec {
            table: table("SuiviMO"),
            chantier: ident("CodeChantier"),
            employee: ident("CodeSalarie"),
            date: ident("Date"),
            hours: ident("NbH0"),
            journey: ident("NbH3"),
            meal: ident("NbH4"),
            chantier_code_chars: 8,
            employee_code_chars: 10,
            extra: Vec::new(),
        }
    }

    #[test]
    fn role_names_are_plain_identifiers() {
        use crate::batigest::ident::is_plain_identifier;
        for role in [
            chantier_role::CODE,
            chantier_role::CUSTOMER_NAME,
            chantier_role::LABEL,
            chantier_role::STATE,
            chantier_role::START_DATE,
            chantier_role::END_DATE,
            chantier_role::STREET,
            chantier_role::POSTCODE,
            chantier_role::CITY,
            chantier_role::SOLD_HOURS,
            salarie_role::CODE,
            salarie_role::NAME,
            salarie_role::BATISIMPLY_ID,
        ] {
            assert!(
                is_plain_identifier(role) && !role.starts_with("__"),
                "{role}"
            );
        }
    }
}
