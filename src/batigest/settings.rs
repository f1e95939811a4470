//! Settings of the Batigest (SQL Server) connection and of the column mapping.
//!
//! Every column batisync reads or writes is named here; nothing is guessed (defect D10).
//! Defaults follow `shared/DOMAIN.md` §1. An empty column name means "not mapped"
//! (only allowed for optional columns, see [`BatigestSettings::validate`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;

use crate::settings::SettingsError;

/// How the TDS connection is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encryption {
    /// TDS 8.0 strict encryption: TLS before the first TDS byte (SQL Server 2022+).
    Strict,
    /// Classic TLS negotiated at prelogin, refused if the server cannot encrypt.
    #[default]
    Required,
    /// Only the login packet is encrypted. For tests on a loopback network only.
    Off,
}

/// How batisync logs in to SQL Server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Authentication {
    /// SQL Server authentication (`user` and `password`; mixed mode on the server).
    #[default]
    Sql,
    /// Windows authentication with an explicit account (`user` = `DOMAIN\name`,
    /// `password`), through SSPI: Windows builds only.
    Windows,
    /// The Windows account batisync runs as (a service account), through SSPI: Windows
    /// builds only.
    Integrated,
}

/// How changes of a table are captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureStrategy {
    /// Change Tracking when it is enabled on the table and readable, else snapshot diff.
    #[default]
    Auto,
    /// Always Change Tracking (an error if it is off).
    ChangeTracking,
    /// Always read the whole table and compare row hashes kept in PostgreSQL.
    SnapshotDiff,
}

/// A constant batisync writes into an extra `SuiviMO` column when it inserts a row
/// (`[batigest.suivimo_defaults]`), for columns a dossier requires and batisync does
/// not otherwise fill. Checked against the column's type when the mapping is verified.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum DefaultValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl std::fmt::Display for DefaultValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bool(b) => write!(f, "{b}"),
            Self::Int(i) => write!(f, "{i}"),
            Self::Float(x) => write!(f, "{x}"),
            Self::Text(t) => write!(f, "{t:?}"),
        }
    }
}

/// Connection to the Batigest dossier and the column mapping.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatigestSettings {
    /// Host name or IP address of the SQL Server.
    pub host: String,
    /// TCP port; absent: 1433, or the port SQL Server Browser gives for `instance`.
    pub port: Option<u16>,
    /// Named instance (the `SAGEBAT` of `HOST\SAGEBAT`), resolved through SQL Server Browser.
    pub instance: Option<String>,
    /// Database (the Batigest dossier, e.g. `BTG_DOS_DEMO`).
    pub database: String,
    /// Database schema holding the Batigest tables.
    pub schema: String,
    /// `sql` (SQL Server login), `windows` (a Windows account) or `integrated` (the
    /// account batisync runs as); the last two only in Windows builds.
    pub authentication: Authentication,
    /// SQL login batisync connects as (see `sql/mssql/create_batisync_login.sql`), or
    /// `DOMAIN\name` with `authentication = "windows"`.
    pub user: String,
    /// Password of that login; prefer `password_file` or `BATISYNC__BATIGEST__PASSWORD`.
    pub password: SecretString,
    /// `strict` (TDS 8.0), `required` or `off`.
    pub encryption: Encryption,
    /// Accept any server certificate (self-signed Batigest servers). Prefer `trust_ca_path`.
    pub trust_server_certificate: bool,
    /// CA certificate (PEM or DER) that signed the server certificate; when set, it is
    /// used instead of `trust_server_certificate`.
    pub trust_ca_path: Option<PathBuf>,
    /// Application name shown to the DBA in `sys.dm_exec_sessions`.
    pub application_name: String,
    /// Largest time to open a connection (TCP, TLS and login), in milliseconds.
    pub connect_timeout_ms: u64,
    /// Largest wait for one server response, in milliseconds.
    pub query_timeout_ms: u64,
    /// Largest number of open connections.
    pub pool_size: u32,
    /// Attempts of an operation whose connection was lost before giving up.
    pub max_attempts: u32,
    /// Rows read per page by snapshot reads.
    pub snapshot_page_rows: u32,
    /// Shortest time between two snapshot-diff reads of a table (each reads the whole
    /// table), in milliseconds. Change Tracking polls keep `poll_interval_ms`.
    pub snapshot_interval_ms: u64,
    /// Bytes sent as `CHANGE_TRACKING_CONTEXT` with every write batisync makes.
    pub change_context: String,
    /// Job sites (`ChantierDef`).
    pub chantier: ChantierColumns,
    /// Employees (`Salarie`).
    pub salarie: SalarieColumns,
    /// Labour-hours ledger (`SuiviMO`).
    pub suivi_mo: SuiviMoColumns,
    /// Constant values for extra `SuiviMO` columns, written on insert (column name →
    /// value); `batisync check --describe` lists the columns that need one.
    pub suivimo_defaults: BTreeMap<String, DefaultValue>,
}

impl Default for BatigestSettings {
    fn default() -> Self {
        Self {
            host: "localhost".into(),
            port: None,
            instance: None,
            database: String::new(),
            schema: "dbo".into(),
            authentication: Authentication::Sql,
            user: "batisync".into(),
            password: SecretString::default(),
            encryption: Encryption::Required,
            trust_server_certificate: false,
            trust_ca_path: None,
            application_name: "batisync".into(),
            connect_timeout_ms: 10_000,
            query_timeout_ms: 30_000,
            pool_size: 4,
            max_attempts: 3,
            snapshot_page_rows: 1_000,
            snapshot_interval_ms: 30_000,
            change_context: "batisync".into(),
            chantier: ChantierColumns::default(),
            salarie: SalarieColumns::default(),
            suivi_mo: SuiviMoColumns::default(),
            suivimo_defaults: BTreeMap::new(),
        }
    }
}

/// Column mapping of `ChantierDef`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChantierColumns {
    /// Table name.
    pub table: String,
    /// Capture strategy for this table.
    pub capture: CaptureStrategy,
    /// Chantier code, the key (BatiSimply `projectCode`), at most 8 characters.
    pub code: String,
    /// Customer name, at most 30 characters.
    pub customer_name: String,
    /// Job-site label (empty: not mapped).
    pub label: String,
    /// State, one character.
    pub state: String,
    /// Planned start date.
    pub start_date: String,
    /// Planned end date.
    pub end_date: String,
    /// Site street (empty: not mapped).
    pub street: String,
    /// Site postal code (empty: not mapped).
    pub postcode: String,
    /// Site city (empty: not mapped).
    pub city: String,
    /// Numeric column holding sold labour hours (empty: not mapped; DOMAIN D11).
    pub sold_hours: String,
}

impl Default for ChantierColumns {
    fn default() -> Self {
        Self {
            table: "ChantierDef".into(),
            capture: CaptureStrategy::Auto,
            code: "Code".into(),
            customer_name: "NomClient".into(),
            label: "Libelle".into(),
            state: "Etat".into(),
            start_date: "DateDebut".into(),
            end_date: "DateFin".into(),
            street: "AdrChantier".into(),
            postcode: "CPChantier".into(),
            city: "VilleChantier".into(),
            sold_hours: String::new(),
        }
    }
}

/// Column mapping of `Salarie`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SalarieColumns {
    /// Table name.
    pub table: String,
    /// Capture strategy for this table.
    pub capture: CaptureStrategy,
    /// Employee code, the key written to `SuiviMO`.
    pub code: String,
    /// Employee name (empty: not mapped).
    pub name: String,
    /// Column holding the BatiSimply user id (UUID).
    pub batisimply_id: String,
}

impl Default for SalarieColumns {
    fn default() -> Self {
        Self {
            table: "Salarie".into(),
            capture: CaptureStrategy::Auto,
            code: "Code".into(),
            name: "Nom".into(),
            batisimply_id: "codebs".into(),
        }
    }
}

/// Column mapping of `SuiviMO`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SuiviMoColumns {
    /// Table name.
    pub table: String,
    /// Chantier code column.
    pub chantier: String,
    /// Employee code column.
    pub employee: String,
    /// Local start date and time of the slot, at minute precision.
    pub date: String,
    /// Decimal hours worked.
    pub hours: String,
    /// Column receiving the journey (trajet) flag as 0/1.
    pub journey: String,
    /// Column receiving the meal (panier) flag as 0/1.
    pub meal: String,
}

impl Default for SuiviMoColumns {
    fn default() -> Self {
        Self {
            table: "SuiviMO".into(),
            chantier: "CodeChantier".into(),
            employee: "CodeSalarie".into(),
            date: "Date".into(),
            hours: "NbH0".into(),
            journey: "NbH3".into(),
            meal: "NbH4".into(),
        }
    }
}

impl BatigestSettings {
    /// Checks what serde cannot: required values, identifier syntax, distinct columns.
    ///
    /// # Errors
    /// The first invalid key, named `<section>.<key>`.
    pub fn validate(&self, section: &str) -> Result<(), SettingsError> {
        let key = |k: &str| format!("{section}.{k}");
        if self.host.trim().is_empty() {
            return Err(SettingsError::invalid(key("host"), "must not be empty"));
        }
        if let Some(instance) = &self.instance
            && (instance.is_empty() || instance.contains('\\'))
        {
            return Err(SettingsError::invalid(
                key("instance"),
                "give the instance name only (SAGEBAT), the host goes in `host`",
            ));
        }
        if self.authentication != Authentication::Sql && !cfg!(windows) {
            return Err(SettingsError::invalid(
                key("authentication"),
                "l'authentification Windows n'existe que dans la version Windows de batisync ; \
                 utiliser authentication = \"sql\" / Windows authentication exists only in the \
                 Windows build of batisync; use authentication = \"sql\"",
            ));
        }
        for (name, value) in [
            ("pool_size", u64::from(self.pool_size)),
            ("max_attempts", u64::from(self.max_attempts)),
            ("snapshot_page_rows", u64::from(self.snapshot_page_rows)),
            ("snapshot_interval_ms", self.snapshot_interval_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("query_timeout_ms", self.query_timeout_ms),
        ] {
            if value == 0 {
                return Err(SettingsError::invalid(key(name), "must be at least 1"));
            }
        }
        if let Some(ca) = &self.trust_ca_path
            && !ca.is_file()
        {
            return Err(SettingsError::invalid(
                key("trust_ca_path"),
                format!("fichier introuvable / file not found: {}", ca.display()),
            ));
        }
        if self.change_context.is_empty() || self.change_context.len() > 128 {
            return Err(SettingsError::invalid(
                key("change_context"),
                "must hold 1 to 128 bytes",
            ));
        }
        self.validate_names(section)
    }

    fn validate_names(&self, section: &str) -> Result<(), SettingsError> {
        for (name, value, required) in self.all_names() {
            if value.is_empty() && !required {
                continue;
            }
            if !super::ident::is_plain_identifier(value) {
                return Err(SettingsError::invalid(
                    format!("{section}.{name}"),
                    format!(
                        "{value:?} n'est pas un nom de table/colonne simple / is not a plain \
                         table or column name (letters, digits, underscore)"
                    ),
                ));
            }
        }
        let s = &self.suivi_mo;
        let written = [
            &s.chantier,
            &s.employee,
            &s.date,
            &s.hours,
            &s.journey,
            &s.meal,
        ];
        for (i, a) in written.iter().enumerate() {
            if written[i + 1..].iter().any(|b| b.eq_ignore_ascii_case(a)) {
                return Err(SettingsError::invalid(
                    format!("{section}.suivi_mo"),
                    format!("column {a:?} is mapped twice"),
                ));
            }
        }
        for column in self.suivimo_defaults.keys() {
            let key = format!("{section}.suivimo_defaults.{column}");
            if !super::ident::is_plain_identifier(column) {
                return Err(SettingsError::invalid(
                    key,
                    "n'est pas un nom de colonne simple / is not a plain column name",
                ));
            }
            if written.iter().any(|w| w.eq_ignore_ascii_case(column)) {
                return Err(SettingsError::invalid(
                    key,
                    "colonne déjà écrite par batisync (batigest.suivi_mo) / column already \
                     written by batisync (batigest.suivi_mo)",
                ));
            }
        }
        Ok(())
    }

    /// Every configured name: (key, value, required).
    fn all_names(&self) -> Vec<(&'static str, &str, bool)> {
        let c = &self.chantier;
        let e = &self.salarie;
        let s = &self.suivi_mo;
        vec![
            ("schema", &self.schema, true),
            ("chantier.table", &c.table, true),
            ("chantier.code", &c.code, true),
            ("chantier.customer_name", &c.customer_name, true),
            ("chantier.label", &c.label, false),
            ("chantier.state", &c.state, true),
            ("chantier.start_date", &c.start_date, true),
            ("chantier.end_date", &c.end_date, true),
            ("chantier.street", &c.street, false),
            ("chantier.postcode", &c.postcode, false),
            ("chantier.city", &c.city, false),
            ("chantier.sold_hours", &c.sold_hours, false),
            ("salarie.table", &e.table, true),
            ("salarie.code", &e.code, true),
            ("salarie.name", &e.name, false),
            ("salarie.batisimply_id", &e.batisimply_id, true),
            ("suivi_mo.table", &s.table, true),
            ("suivi_mo.chantier", &s.chantier, true),
            ("suivi_mo.employee", &s.employee, true),
            ("suivi_mo.date", &s.date, true),
            ("suivi_mo.hours", &s.hours, true),
            ("suivi_mo.journey", &s.journey, true),
            ("suivi_mo.meal", &s.meal, true),
        ]
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn valid() -> BatigestSettings {
        BatigestSettings {
            database: "BTG_DOS_DEMO".into(),
            ..BatigestSettings::default()
        }
    }

    #[test]
    fn defaults_follow_the_domain_and_validate() {
        let s = valid();
        assert_eq!(s.salarie.batisimply_id, "codebs");
        assert_eq!(
            (s.suivi_mo.journey.as_str(), s.suivi_mo.meal.as_str()),
            ("NbH3", "NbH4")
        );
        assert_eq!(s.suivi_mo.hours, "NbH0");
        assert_eq!(s.encryption, Encryption::Required);
        assert!(!s.trust_server_certificate);
        s.validate("batigest").expect("defaults are valid");
    }

    #[test]
    fn toml_overrides_and_rejects_unknown_keys() {
        let s: BatigestSettings = toml::from_str(
            "host = \"srv\"\ninstance = \"SAGEBAT\"\ndatabase = \"D\"\npassword = \"pw\"\n\
             encryption = \"strict\"\n[suivi_mo]\njourney = \"NbH1\"\n[chantier]\ncapture = \"snapshot_diff\"",
        )
        .expect("valid toml");
        assert_eq!(s.encryption, Encryption::Strict);
        assert_eq!(s.suivi_mo.journey, "NbH1");
        assert_eq!(s.chantier.capture, CaptureStrategy::SnapshotDiff);
        assert_eq!(s.password.expose_secret(), "pw");
        assert!(!format!("{s:?}").contains("\"pw\""));
        assert!(toml::from_str::<BatigestSettings>("[chantier]\ncode_column = \"x\"").is_err());
        let s: BatigestSettings = toml::from_str(
            "[suivimo_defaults]\nPeriode = \"202611\"\nNbH1 = 0\nTaux = 1.5\nValide = true",
        )
        .expect("defaults");
        assert_eq!(
            s.suivimo_defaults.get("Periode"),
            Some(&DefaultValue::Text("202611".into()))
        );
        assert_eq!(s.suivimo_defaults.get("NbH1"), Some(&DefaultValue::Int(0)));
        assert_eq!(
            s.suivimo_defaults.get("Taux"),
            Some(&DefaultValue::Float(1.5))
        );
        assert_eq!(
            s.suivimo_defaults.get("Valide"),
            Some(&DefaultValue::Bool(true))
        );
    }

    #[test]
    fn validation_names_the_key() {
        let mut s = valid();
        s.chantier.customer_name = "Nom; DROP TABLE x".into();
        let err = s
            .validate("batigest")
            .expect_err("invalid name")
            .to_string();
        assert!(err.contains("batigest.chantier.customer_name"), "{err}");

        let mut s = valid();
        s.suivi_mo.meal = "NbH3".into();
        let err = s.validate("batigest").expect_err("twice").to_string();
        assert!(err.contains("mapped twice"), "{err}");

        let mut s = valid();
        s.instance = Some("SRV\\SAGEBAT".into());
        assert!(s.validate("batigest").is_err());

        let mut s = valid();
        s.authentication = Authentication::Integrated;
        assert_eq!(s.validate("batigest").is_ok(), cfg!(windows));

        let mut s = valid();
        s.trust_ca_path = Some("/nonexistent/ca.pem".into());
        let err = s.validate("batigest").expect_err("missing CA").to_string();
        assert!(err.contains("batigest.trust_ca_path"), "{err}");

        let mut s = valid();
        s.suivimo_defaults
            .insert("NbH0".into(), DefaultValue::Int(0));
        let err = s.validate("batigest").expect_err("written").to_string();
        assert!(err.contains("batigest.suivimo_defaults.NbH0"), "{err}");

        let mut s = valid();
        s.chantier.label = String::new();
        s.validate("batigest")
            .expect("optional column may be unmapped");
        s.chantier.code = String::new();
        assert!(s.validate("batigest").is_err());
    }
}
