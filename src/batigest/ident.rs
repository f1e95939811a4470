//! Table and column names, the only part of a statement that cannot be a parameter.
//!
//! A name reaches T-SQL text only as an [`Ident`], which exists only when the configured
//! name is a plain identifier (ASCII letters, digits, underscore) AND the server listed it
//! in `INFORMATION_SCHEMA`. It is then written with the server's spelling, in brackets.

use std::fmt;

/// Longest identifier SQL Server accepts (`sysname`).
const MAX_IDENT_CHARS: usize = 128;

/// True for `[A-Za-z_][A-Za-z0-9_]*` of at most 128 characters.
#[must_use]
pub fn is_plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    name.len() <= MAX_IDENT_CHARS
        && (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A validated table or column name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident(String);

/// Why a configured name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentError {
    #[error("{0:?} n'est pas un identifiant simple / is not a plain identifier")]
    NotPlain(String),
    #[error("{0:?} est introuvable sur le serveur / does not exist on the server")]
    Unknown(String),
}

impl Ident {
    /// Resolves a configured name against the names the server reported (case-insensitive,
    /// as SQL Server's default collations are); returns the server's spelling.
    ///
    /// # Errors
    /// [`IdentError::NotPlain`] or [`IdentError::Unknown`].
    pub fn resolve<'a>(
        configured: &str,
        server_names: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, IdentError> {
        if !is_plain_identifier(configured) {
            return Err(IdentError::NotPlain(configured.to_owned()));
        }
        server_names
            .into_iter()
            .find(|n| n.eq_ignore_ascii_case(configured) && is_plain_identifier(n))
            .map(|n| Self(n.to_owned()))
            .ok_or_else(|| IdentError::Unknown(configured.to_owned()))
    }

    /// The name as the server spells it.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.0
    }

    /// `[name]`: safe because the name is plain (no `]` inside).
    #[must_use]
    pub fn quoted(&self) -> String {
        format!("[{}]", self.0)
    }

    /// A plain name trusted without a server round trip (tests only).
    #[cfg(test)]
    pub(crate) fn trusted(name: &str) -> Result<Self, IdentError> {
        Self::resolve(name, [name])
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `[schema].[table]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QualifiedTable {
    /// Schema, usually `dbo`.
    pub schema: Ident,
    /// Table.
    pub table: Ident,
}

impl QualifiedTable {
    /// `[dbo].[ChantierDef]`, for statement text and `OBJECT_ID(@P1)` parameters.
    #[must_use]
    pub fn quoted(&self) -> String {
        format!("{}.{}", self.schema.quoted(), self.table.quoted())
    }
}

impl fmt::Display for QualifiedTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_identifiers_are_letters_digits_and_underscores() {
        for ok in ["Code", "NbH0", "_x", "codebs", "Adr_Chantier2"] {
            assert!(is_plain_identifier(ok), "{ok}");
        }
        for bad in [
            "",
            "1Code",
            "Code]",
            "Co de",
            "Code;--",
            "[Code]",
            "Nom-Client",
            "Libellé",
            "a.b",
            "x'y",
            "Code\u{0}",
        ] {
            assert!(!is_plain_identifier(bad), "{bad:?}");
        }
        assert!(is_plain_identifier(&"a".repeat(128)));
        assert!(!is_plain_identifier(&"a".repeat(129)));
    }

    #[test]
    fn resolve_uses_the_server_spelling_and_refuses_unknown_names() {
        let server = ["Code", "NomClient"];
        let ident = Ident::resolve("nomclient", server).expect("known");
        assert_eq!(ident.quoted(), "[NomClient]");
        assert_eq!(
            Ident::resolve("CodeClient", server),
            Err(IdentError::Unknown("CodeClient".into()))
        );
        assert_eq!(
            Ident::resolve("Code]; DROP TABLE x; --", ["Code]; DROP TABLE x; --"]),
            Err(IdentError::NotPlain("Code]; DROP TABLE x; --".into()))
        );
    }

    #[test]
    fn qualified_tables_quote_both_parts() {
        let t = QualifiedTable {
            schema: Ident::trusted("dbo").expect("plain"),
            table: Ident::trusted("SuiviMO").expect("plain"),
        };
        assert_eq!(t.quoted(), "[dbo].[SuiviMO]");
        assert_eq!(t.to_string(), "dbo.SuiviMO");
    }
}
