//! `batisync check --describe`: the mapped tables as the server has them (columns,
//! types, nullability, defaults, keys, identity, triggers, Change Tracking state), and
//! which `SuiviMO` columns the writer leaves unfilled, among them those that would make
//! an insert fail. Nobody has seen a real Batigest `SuiviMO`: this is how a site finds
//! out before the first write.
//!
//! Every read is one of the statements of `tsql`; a catalog the server does not offer
//! (triggers, for example) is reported as unknown with the server's reason, never as
//! "none".

use std::fmt;

use tiberius::Row;

use super::capture::strategy_summary;
use super::error::BatigestError;
use super::pool::Pool;
use super::read::read_ct_state;
use super::settings::BatigestSettings;
use super::tsql;

/// One column as the server has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDescription {
    pub name: String,
    /// `varchar(8)`, `decimal(9,4)`, `datetime`...
    pub sql_type: String,
    pub nullable: bool,
    /// The `DEFAULT` expression, if any.
    pub default: Option<String>,
    pub identity: bool,
    pub computed: bool,
    /// The setting that maps it (`suivi_mo.hours`...), if batisync uses it.
    pub mapped_as: Option<String>,
}

/// How batisync's insert treats a ledger column it does not write itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unfilled {
    /// `[batigest.suivimo_defaults]` gives it a value.
    SetByDefaultsSetting(String),
    /// The server fills it (identity, computed, rowversion) or its `DEFAULT` does.
    ServerFilled(&'static str),
    /// Left NULL.
    Null,
    /// NOT NULL, no default: every insert would fail.
    Blocking,
}

/// One mapped table.
#[derive(Debug, Clone)]
pub struct TableDescription {
    /// `dbo.SuiviMO`.
    pub name: String,
    pub columns: Vec<ColumnDescription>,
    /// `PRIMARY KEY PK_SuiviMO (Id)`, `UNIQUE ...`; `Err`: the server's reason.
    pub keys: Result<Vec<String>, String>,
    /// `trg_x (AFTER INSERT, UPDATE)`; `Err`: the server's reason.
    pub triggers: Result<Vec<String>, String>,
    /// The capture strategy batisync would use, and why (not for the ledger).
    pub change_tracking: String,
}

/// Everything `check --describe` prints.
#[derive(Debug, Clone, Default)]
pub struct Description {
    pub tables: Vec<TableDescription>,
    /// Ledger columns batisync does not write, and what happens to them on insert.
    pub ledger_unfilled: Vec<(String, Unfilled)>,
}

impl Description {
    /// Columns that make every insert fail.
    #[must_use]
    pub fn blocking(&self) -> Vec<&str> {
        self.ledger_unfilled
            .iter()
            .filter(|(_, u)| *u == Unfilled::Blocking)
            .map(|(c, _)| c.as_str())
            .collect()
    }
}

fn mapped_names(s: &BatigestSettings, table: &str) -> Vec<(String, String)> {
    let c = &s.chantier;
    let e = &s.salarie;
    let m = &s.suivi_mo;
    let list: Vec<(&str, &str)> = if table == c.table {
        vec![
            ("chantier.code", &c.code),
            ("chantier.customer_name", &c.customer_name),
            ("chantier.label", &c.label),
            ("chantier.state", &c.state),
            ("chantier.start_date", &c.start_date),
            ("chantier.end_date", &c.end_date),
            ("chantier.street", &c.street),
            ("chantier.postcode", &c.postcode),
            ("chantier.city", &c.city),
            ("chantier.sold_hours", &c.sold_hours),
        ]
    } else if table == e.table {
        vec![
            ("salarie.code", &e.code),
            ("salarie.name", &e.name),
            ("salarie.batisimply_id", &e.batisimply_id),
        ]
    } else {
        vec![
            ("suivi_mo.chantier", &m.chantier),
            ("suivi_mo.employee", &m.employee),
            ("suivi_mo.date", &m.date),
            ("suivi_mo.hours", &m.hours),
            ("suivi_mo.journey", &m.journey),
            ("suivi_mo.meal", &m.meal),
        ]
    };
    list.into_iter()
        .filter(|(_, column)| !column.is_empty())
        .map(|(setting, column)| (setting.to_owned(), column.to_owned()))
        .collect()
}

fn sql_type(
    data_type: &str,
    chars: Option<i32>,
    precision: Option<i32>,
    scale: Option<i32>,
) -> String {
    match (
        data_type.to_ascii_lowercase().as_str(),
        chars,
        precision,
        scale,
    ) {
        (_, Some(-1), _, _) => format!("{data_type}(max)"),
        (_, Some(n), _, _) => format!("{data_type}({n})"),
        ("decimal" | "numeric", _, Some(p), Some(s)) => format!("{data_type}({p},{s})"),
        _ => data_type.to_owned(),
    }
}

fn column_of(row: &Row, mapped: &[(String, String)]) -> ColumnDescription {
    let name = row.get::<&str, _>(0).unwrap_or_default().to_owned();
    let data_type = row.get::<&str, _>(1).unwrap_or_default();
    ColumnDescription {
        sql_type: sql_type(
            data_type,
            row.get::<i32, _>(2),
            row.get::<i32, _>(3),
            row.get::<i32, _>(4),
        ),
        nullable: row.get::<i32, _>(5) != Some(0),
        default: row.get::<&str, _>(6).map(str::to_owned),
        identity: row.get::<i32, _>(7) == Some(1),
        computed: row.get::<i32, _>(8) == Some(1),
        mapped_as: mapped
            .iter()
            .find(|(_, column)| column.eq_ignore_ascii_case(&name))
            .map(|(setting, _)| setting.clone()),
        name,
    }
}

/// What an insert that does not name `column` does with it.
fn unfilled(column: &ColumnDescription, s: &BatigestSettings) -> Unfilled {
    if let Some((_, value)) = s
        .suivimo_defaults
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(&column.name))
    {
        return Unfilled::SetByDefaultsSetting(value.to_string());
    }
    let lower = column.sql_type.to_ascii_lowercase();
    if column.identity {
        Unfilled::ServerFilled("IDENTITY")
    } else if column.computed {
        Unfilled::ServerFilled("calculée / computed")
    } else if lower == "timestamp" || lower == "rowversion" {
        Unfilled::ServerFilled("rowversion")
    } else if column.default.is_some() {
        Unfilled::ServerFilled("DEFAULT")
    } else if column.nullable {
        Unfilled::Null
    } else {
        Unfilled::Blocking
    }
}

async fn fetch_rows(
    pool: &Pool,
    sql: &'static str,
    params: &[&dyn tiberius::ToSql],
) -> Result<Vec<Row>, BatigestError> {
    let mut conn = pool.get().await?;
    let rows = pool.fetch(conn.client(), sql, params).await?;
    conn.release();
    Ok(rows)
}

fn keys_of(rows: &[Row]) -> Vec<String> {
    let mut keys: Vec<(String, String, Vec<String>)> = Vec::new();
    for row in rows {
        let name = row.get::<&str, _>(0).unwrap_or_default().to_owned();
        let kind = row.get::<&str, _>(1).unwrap_or_default().to_owned();
        let column = row.get::<&str, _>(2).unwrap_or_default().to_owned();
        match keys.iter_mut().find(|(n, _, _)| *n == name) {
            Some((_, _, columns)) => columns.push(column),
            None => keys.push((name, kind, vec![column])),
        }
    }
    keys.into_iter()
        .map(|(name, kind, columns)| format!("{kind} {name} ({})", columns.join(", ")))
        .collect()
}

fn triggers_of(rows: &[Row]) -> Vec<String> {
    let mut triggers: Vec<(String, String, Vec<String>)> = Vec::new();
    for row in rows {
        let name = row.get::<&str, _>(0).unwrap_or_default().to_owned();
        let disabled = row.get::<i32, _>(1) == Some(1);
        let instead = row.get::<i32, _>(2) == Some(1);
        let kind = match (instead, disabled) {
            (true, false) => "INSTEAD OF",
            (false, false) => "AFTER",
            (true, true) => "INSTEAD OF, désactivé / disabled,",
            (false, true) => "AFTER, désactivé / disabled,",
        };
        let event = row.get::<&str, _>(3).map(str::to_owned);
        match triggers.iter_mut().find(|(n, _, _)| *n == name) {
            Some((_, _, events)) => events.extend(event),
            None => triggers.push((name, kind.to_owned(), event.into_iter().collect())),
        }
    }
    triggers
        .into_iter()
        .map(|(name, kind, events)| format!("{name} ({kind} {})", events.join(", ")))
        .collect()
}

/// A server refusal as "unknown: reason"; a lost connection stays an error.
fn known<T>(result: Result<T, BatigestError>) -> Result<Result<T, String>, BatigestError> {
    match result {
        Ok(v) => Ok(Ok(v)),
        Err(e @ (BatigestError::Server { .. } | BatigestError::PermissionDenied { .. })) => {
            Ok(Err(e.to_string()))
        }
        Err(e) => Err(e),
    }
}

async fn describe_table(
    pool: &Pool,
    table: &str,
    capture: Option<super::settings::CaptureStrategy>,
) -> Result<TableDescription, BatigestError> {
    let s = pool.settings();
    let schema = s.schema.clone();
    let object = format!("[{schema}].[{table}]");
    let (schema_p, table_p) = (schema.as_str(), table);
    let mapped = mapped_names(s, table);
    let rows = fetch_rows(
        pool,
        tsql::DESCRIBE_COLUMNS,
        &[&schema_p, &table_p, &object.as_str()],
    )
    .await?;
    let columns = rows.iter().map(|r| column_of(r, &mapped)).collect();
    let keys = known(fetch_rows(pool, tsql::DESCRIBE_KEYS, &[&schema_p, &table_p]).await)?
        .map(|rows| keys_of(&rows));
    let triggers = known(fetch_rows(pool, tsql::DESCRIBE_TRIGGERS, &[&object.as_str()]).await)?
        .map(|rows| triggers_of(&rows));
    let change_tracking = match capture {
        Some(setting) => {
            let state = read_ct_state(pool, &object).await?;
            strategy_summary(setting, &state).unwrap_or_else(|e| e)
        }
        None => {
            let state = read_ct_state(pool, &object).await?;
            match state.unusable_because() {
                None => "Change Tracking activé / enabled".into(),
                Some(why) => why,
            }
        }
    };
    Ok(TableDescription {
        name: format!("{schema}.{table}"),
        columns,
        keys,
        triggers,
        change_tracking,
    })
}

/// Describes the three mapped tables (a table that does not exist has no columns).
///
/// # Errors
/// Connection failure, or the columns could not be read at all.
pub async fn describe(settings: &BatigestSettings) -> Result<Description, BatigestError> {
    let pool = Pool::new(BatigestSettings {
        pool_size: 1,
        ..settings.clone()
    });
    let s = settings;
    let mut tables = Vec::new();
    for (table, capture) in [
        (s.chantier.table.as_str(), Some(s.chantier.capture)),
        (s.salarie.table.as_str(), Some(s.salarie.capture)),
        (s.suivi_mo.table.as_str(), None),
    ] {
        tables.push(describe_table(&pool, table, capture).await?);
    }
    let ledger_unfilled = tables
        .last()
        .map(|ledger| {
            ledger
                .columns
                .iter()
                .filter(|c| c.mapped_as.is_none())
                .map(|c| (c.name.clone(), unfilled(c, s)))
                .collect()
        })
        .unwrap_or_default();
    Ok(Description {
        tables,
        ledger_unfilled,
    })
}

impl fmt::Display for Description {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for table in &self.tables {
            writeln!(f, "{}", table.name)?;
            if table.columns.is_empty() {
                writeln!(f, "  table introuvable / table not found")?;
                continue;
            }
            for c in &table.columns {
                let mut traits = vec![if c.nullable { "NULL" } else { "NOT NULL" }.to_owned()];
                if let Some(default) = &c.default {
                    traits.push(format!("DEFAULT {default}"));
                }
                if c.identity {
                    traits.push("IDENTITY".into());
                }
                if c.computed {
                    traits.push("calculée / computed".into());
                }
                let mapped = c
                    .mapped_as
                    .as_ref()
                    .map_or_else(String::new, |m| format!("  ← batigest.{m}"));
                writeln!(
                    f,
                    "  {:<20} {:<16} {}{mapped}",
                    c.name,
                    c.sql_type,
                    traits.join(", ")
                )?;
            }
            match &table.keys {
                Ok(keys) if keys.is_empty() => writeln!(f, "  clés / keys: aucune / none")?,
                Ok(keys) => writeln!(f, "  clés / keys: {}", keys.join("; "))?,
                Err(why) => writeln!(f, "  clés / keys: inconnues / unknown ({why})")?,
            }
            match &table.triggers {
                Ok(t) if t.is_empty() => writeln!(f, "  déclencheurs / triggers: aucun / none")?,
                Ok(t) => writeln!(f, "  déclencheurs / triggers: {}", t.join("; "))?,
                Err(why) => writeln!(f, "  déclencheurs / triggers: inconnus / unknown ({why})")?,
            }
            writeln!(f, "  Change Tracking: {}", table.change_tracking)?;
        }
        writeln!(
            f,
            "Colonnes de SuiviMO que batisync n'écrit pas / SuiviMO columns batisync does not write:"
        )?;
        for (column, how) in &self.ledger_unfilled {
            let text = match how {
                Unfilled::SetByDefaultsSetting(v) => {
                    format!("{v} (batigest.suivimo_defaults)")
                }
                Unfilled::ServerFilled(by) => {
                    format!("rempli par le serveur / filled by the server ({by})")
                }
                Unfilled::Null => "NULL".into(),
                Unfilled::Blocking => {
                    "BLOQUANT : NOT NULL sans défaut, chaque insertion échouerait ; \
                     renseigner [batigest.suivimo_defaults] / BLOCKING: NOT NULL without a \
                     default, every insert would fail; set [batigest.suivimo_defaults]"
                        .into()
                }
            };
            writeln!(f, "  {column:<20} {text}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, sql_type: &str, nullable: bool) -> ColumnDescription {
        ColumnDescription {
            name: name.into(),
            sql_type: sql_type.into(),
            nullable,
            default: None,
            identity: false,
            computed: false,
            mapped_as: None,
        }
    }

    #[test]
    fn unfilled_columns_are_blocking_only_when_nothing_fills_them() {
        let mut s = BatigestSettings::default();
        assert_eq!(
            unfilled(&column("Periode", "varchar(6)", false), &s),
            Unfilled::Blocking
        );
        assert_eq!(
            unfilled(&column("Note", "varchar(60)", true), &s),
            Unfilled::Null
        );
        let id = ColumnDescription {
            identity: true,
            ..column("Id", "int", false)
        };
        assert_eq!(unfilled(&id, &s), Unfilled::ServerFilled("IDENTITY"));
        let defaulted = ColumnDescription {
            default: Some("((0))".into()),
            ..column("NbH1", "decimal(9,4)", false)
        };
        assert_eq!(unfilled(&defaulted, &s), Unfilled::ServerFilled("DEFAULT"));
        s.suivimo_defaults.insert(
            "periode".into(),
            super::super::settings::DefaultValue::Text("202611".into()),
        );
        assert_eq!(
            unfilled(&column("Periode", "varchar(6)", false), &s),
            Unfilled::SetByDefaultsSetting("\"202611\"".into())
        );
    }

    #[test]
    fn types_read_as_a_dba_writes_them() {
        assert_eq!(sql_type("varchar", Some(8), None, None), "varchar(8)");
        assert_eq!(sql_type("nvarchar", Some(-1), None, None), "nvarchar(max)");
        assert_eq!(sql_type("decimal", None, Some(9), Some(4)), "decimal(9,4)");
        assert_eq!(sql_type("datetime", None, None, Some(3)), "datetime");
    }
}
