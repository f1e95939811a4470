//! Verifies the column mapping against `INFORMATION_SCHEMA.COLUMNS` (existence, type
//! family, length) and resolves it into [`Mapping`]: the only source of names in SQL.

use std::fmt;

use super::error::BatigestError;
use super::ident::{Ident, QualifiedTable};
use super::pool::Pool;
use super::settings::{BatigestSettings, DefaultValue};
use super::spec::{LedgerSpec, MappedColumn, TableSpec, chantier_role as cr, salarie_role as sr};
use super::tsql;

/// One row of `INFORMATION_SCHEMA.COLUMNS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerColumn {
    pub table: String,
    pub column: String,
    /// `varchar`, `datetime`, ...
    pub data_type: String,
    /// Character length; -1 for `(max)`, `None` for non-text types.
    pub max_chars: Option<i32>,
    /// NULL allowed.
    pub nullable: bool,
    /// The column has a `DEFAULT`.
    pub has_default: bool,
    /// `IDENTITY` or computed: the server fills it, an insert must not name it.
    pub generated: bool,
}

impl ServerColumn {
    /// An insert that does not name this column fails (NOT NULL, no default, not filled
    /// by the server).
    #[must_use]
    pub fn required_on_insert(&self) -> bool {
        let server_filled = self.generated
            || matches!(
                self.data_type.to_ascii_lowercase().as_str(),
                "timestamp" | "rowversion"
            );
        !self.nullable && !self.has_default && !server_filled
    }
}

/// Families of SQL types batisync can read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Text,
    Date,
    Number,
}

impl Family {
    fn of(data_type: &str) -> Option<Self> {
        match data_type.to_ascii_lowercase().as_str() {
            "char" | "varchar" | "nchar" | "nvarchar" | "text" | "ntext" | "uniqueidentifier" => {
                Some(Self::Text)
            }
            "date" | "datetime" | "datetime2" | "smalldatetime" | "datetimeoffset" => {
                Some(Self::Date)
            }
            "tinyint" | "smallint" | "int" | "bigint" | "decimal" | "numeric" | "float"
            | "real" | "money" | "smallmoney" | "bit" => Some(Self::Number),
            _ => None,
        }
    }
}

/// A length rule on a text column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    Any,
    /// The column must hold this many characters (we write or must read values this long).
    AtLeast(i32),
    /// Values over this limit would be rejected row by row (a warning).
    AtMost(i32),
}

/// What is wrong with one mapped column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingProblem {
    /// `schema.table.column`.
    pub column: String,
    /// Settings key that names it.
    pub setting: &'static str,
    /// What was expected and what was found (French / English).
    pub message: String,
    /// False for warnings (the mapping still works).
    pub fatal: bool,
}

impl fmt::Display for MappingProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (batigest.{}): {}",
            self.column, self.setting, self.message
        )
    }
}

/// The mapping, resolved.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub chantier: TableSpec,
    pub salarie: TableSpec,
    pub ledger: LedgerSpec,
    /// Non-fatal findings to log and show in `check`.
    pub warnings: Vec<MappingProblem>,
}

struct Expect {
    setting: &'static str,
    role: &'static str,
    family: Family,
    length: Length,
}

fn expect(setting: &'static str, role: &'static str, family: Family, length: Length) -> Expect {
    Expect {
        setting,
        role,
        family,
        length,
    }
}

/// Resolves tables and columns one by one, collecting every problem.
struct Resolver<'a> {
    schema: &'a str,
    server: &'a [ServerColumn],
    problems: Vec<MappingProblem>,
}

impl Resolver<'_> {
    fn problem(&mut self, column: String, setting: &'static str, message: String, fatal: bool) {
        self.problems.push(MappingProblem {
            column,
            setting,
            message,
            fatal,
        });
    }

    fn table(&mut self, setting: &'static str, name: &str) -> Option<QualifiedTable> {
        let names = self.server.iter().map(|c| c.table.as_str());
        let schema = Ident::resolve(self.schema, [self.schema]).ok();
        match (schema, Ident::resolve(name, names)) {
            (Some(schema), Ok(table)) => Some(QualifiedTable { schema, table }),
            _ => {
                let message = "table introuvable ou invisible pour cet identifiant / table \
                               missing or not visible to this login"
                    .to_owned();
                self.problem(format!("{}.{name}", self.schema), setting, message, true);
                None
            }
        }
    }

    fn column(&mut self, table: &QualifiedTable, name: &str, e: &Expect) -> Option<MappedColumn> {
        let label = format!("{table}.{name}");
        let in_table: Vec<&ServerColumn> = self
            .server
            .iter()
            .filter(|c| c.table == table.table.name())
            .collect();
        let Ok(column) = Ident::resolve(name, in_table.iter().map(|c| c.column.as_str())) else {
            self.problem(
                label,
                e.setting,
                "colonne introuvable / column does not exist".into(),
                true,
            );
            return None;
        };
        let found = in_table.iter().find(|c| c.column == column.name())?;
        if Family::of(&found.data_type) != Some(e.family) {
            let message = format!(
                "type {:?} attendu, trouvé {} / expected a {:?} type, found {}",
                e.family, found.data_type, e.family, found.data_type
            );
            self.problem(label, e.setting, message, true);
            return None;
        }
        self.check_length(label, e, found.max_chars);
        Some(MappedColumn {
            role: e.role,
            column,
        })
    }

    fn check_length(&mut self, label: String, e: &Expect, found: Option<i32>) {
        let Some(found) = found.filter(|n| *n > 0) else {
            return;
        };
        match e.length {
            Length::AtLeast(n) if found < n => {
                let message = format!(
                    "{found} caractères, il en faut au moins {n} / holds {found} characters, \
                     needs at least {n}"
                );
                self.problem(label, e.setting, message, true);
            }
            Length::AtMost(n) if found > n => {
                let message = format!(
                    "{found} caractères, batisync refusera les valeurs de plus de {n} / holds \
                     {found} characters, values over {n} will be rejected"
                );
                self.problem(label, e.setting, message, false);
            }
            _ => {}
        }
    }

    fn max_chars(&self, table: &QualifiedTable, column: &Ident) -> Option<usize> {
        self.server
            .iter()
            .find(|c| c.table == table.table.name() && c.column == column.name())
            .and_then(|c| c.max_chars)
            .and_then(|n| usize::try_from(n).ok())
    }
}

/// Checks the mapping against the server's columns.
///
/// # Errors
/// Every problem found (fatal ones and warnings), when at least one is fatal.
pub fn verify_mapping(
    s: &BatigestSettings,
    server: &[ServerColumn],
) -> Result<Mapping, Vec<MappingProblem>> {
    let mut r = Resolver {
        schema: &s.schema,
        server,
        problems: Vec::new(),
    };
    let chantier = resolve_chantier(&mut r, s);
    let salarie = resolve_salarie(&mut r, s);
    let ledger = resolve_ledger(&mut r, s);
    match (chantier, salarie, ledger) {
        (Some(chantier), Some(salarie), Some(ledger)) if r.problems.iter().all(|p| !p.fatal) => {
            Ok(Mapping {
                chantier,
                salarie,
                ledger,
                warnings: r.problems,
            })
        }
        _ => Err(r.problems),
    }
}

fn resolve_keyed(
    r: &mut Resolver<'_>,
    table_setting: &'static str,
    table_name: &str,
    source: &str,
    wanted: &[(Expect, &str)],
) -> Option<TableSpec> {
    let table = r.table(table_setting, table_name)?;
    let mut columns = Vec::new();
    for (e, name) in wanted.iter().filter(|(_, name)| !name.is_empty()) {
        columns.extend(r.column(&table, name, e));
    }
    if columns.len() != wanted.iter().filter(|(_, n)| !n.is_empty()).count() {
        return None;
    }
    let key = columns.first()?.column.clone();
    Some(TableSpec {
        source: format!("{source}:{table}"),
        table,
        key,
        columns,
    })
}

fn resolve_chantier(r: &mut Resolver<'_>, s: &BatigestSettings) -> Option<TableSpec> {
    use Family::*;
    let c = &s.chantier;
    let wanted = [
        (
            expect("chantier.code", cr::CODE, Text, Length::AtMost(8)),
            c.code.as_str(),
        ),
        (
            expect(
                "chantier.customer_name",
                cr::CUSTOMER_NAME,
                Text,
                Length::AtMost(30),
            ),
            &c.customer_name,
        ),
        (
            expect("chantier.label", cr::LABEL, Text, Length::Any),
            &c.label,
        ),
        (
            expect("chantier.state", cr::STATE, Text, Length::AtMost(1)),
            &c.state,
        ),
        (
            expect("chantier.start_date", cr::START_DATE, Date, Length::Any),
            &c.start_date,
        ),
        (
            expect("chantier.end_date", cr::END_DATE, Date, Length::Any),
            &c.end_date,
        ),
        (
            expect("chantier.street", cr::STREET, Text, Length::Any),
            &c.street,
        ),
        (
            expect("chantier.postcode", cr::POSTCODE, Text, Length::Any),
            &c.postcode,
        ),
        (
            expect("chantier.city", cr::CITY, Text, Length::Any),
            &c.city,
        ),
        (
            expect("chantier.sold_hours", cr::SOLD_HOURS, Number, Length::Any),
            &c.sold_hours,
        ),
    ];
    resolve_keyed(r, "chantier.table", &c.table, "batigest", &wanted)
}

fn resolve_salarie(r: &mut Resolver<'_>, s: &BatigestSettings) -> Option<TableSpec> {
    use Family::*;
    let e = &s.salarie;
    let wanted = [
        (
            expect("salarie.code", sr::CODE, Text, Length::Any),
            e.code.as_str(),
        ),
        (expect("salarie.name", sr::NAME, Text, Length::Any), &e.name),
        (
            expect(
                "salarie.batisimply_id",
                sr::BATISIMPLY_ID,
                Text,
                Length::AtLeast(36),
            ),
            &e.batisimply_id,
        ),
    ];
    resolve_keyed(r, "salarie.table", &e.table, "batigest", &wanted)
}

fn resolve_ledger(r: &mut Resolver<'_>, s: &BatigestSettings) -> Option<LedgerSpec> {
    use Family::*;
    let m = &s.suivi_mo;
    let table = r.table("suivi_mo.table", &m.table)?;
    let mut col = |setting, name: &str, family, length| {
        r.column(&table, name, &expect(setting, "ledger", family, length))
            .map(|c| c.column)
    };
    let chantier = col("suivi_mo.chantier", &m.chantier, Text, Length::AtLeast(8));
    let employee = col("suivi_mo.employee", &m.employee, Text, Length::Any);
    let date = col("suivi_mo.date", &m.date, Date, Length::Any);
    let hours = col("suivi_mo.hours", &m.hours, Number, Length::Any);
    let journey = col("suivi_mo.journey", &m.journey, Number, Length::Any);
    let meal = col("suivi_mo.meal", &m.meal, Number, Length::Any);
    let extra = resolve_defaults(r, s, &table);
    let written: Vec<Option<&Ident>> = vec![
        chantier.as_ref(),
        employee.as_ref(),
        date.as_ref(),
        hours.as_ref(),
        journey.as_ref(),
        meal.as_ref(),
    ];
    let mut names: Vec<&str> = written.iter().flatten().map(|i| i.name()).collect();
    names.extend(extra.iter().map(|(c, _)| c.name()));
    report_unfilled(r, &table, &names);
    let (chantier, employee) = (chantier?, employee?);
    let chantier_code_chars = r.max_chars(&table, &chantier).unwrap_or(8).min(8);
    let employee_code_chars = r.max_chars(&table, &employee).unwrap_or(usize::MAX);
    Some(LedgerSpec {
        extra,
        table,
        chantier,
        employee,
        date: date?,
        hours: hours?,
        journey: journey?,
        meal: meal?,
        chantier_code_chars,
        employee_code_chars,
    })
}

/// The ledger columns of `[batigest.suivimo_defaults]`, each checked: it exists, the
/// server does not fill it itself, and the value fits its type.
fn resolve_defaults(
    r: &mut Resolver<'_>,
    s: &BatigestSettings,
    table: &QualifiedTable,
) -> Vec<(Ident, DefaultValue)> {
    let mut extra = Vec::new();
    for (name, value) in &s.suivimo_defaults {
        let label = format!("{table}.{name}");
        let in_table: Vec<&ServerColumn> = r
            .server
            .iter()
            .filter(|c| c.table == table.table.name())
            .collect();
        let Ok(column) = Ident::resolve(name, in_table.iter().map(|c| c.column.as_str())) else {
            r.problem(
                label,
                "suivimo_defaults",
                "colonne introuvable / column does not exist".into(),
                true,
            );
            continue;
        };
        let Some(found) = in_table.iter().find(|c| c.column == column.name()) else {
            continue;
        };
        if let Err(message) = default_fits(found, value) {
            r.problem(label, "suivimo_defaults", message, true);
            continue;
        }
        extra.push((column, value.clone()));
    }
    extra
}

/// Whether `value` can be written into `column` (French / English reason if not).
fn default_fits(column: &ServerColumn, value: &DefaultValue) -> Result<(), String> {
    if column.generated {
        return Err(
            "colonne remplie par le serveur (IDENTITY ou calculée) / column filled \
                    by the server (IDENTITY or computed)"
                .into(),
        );
    }
    let family = Family::of(&column.data_type);
    let fits = match (family, value) {
        (Some(Family::Text), DefaultValue::Text(text)) => {
            let chars = i32::try_from(text.chars().count()).unwrap_or(i32::MAX);
            match column.max_chars.filter(|n| *n > 0) {
                Some(max) if chars > max => {
                    return Err(format!(
                        "{chars} caractères pour {max} au plus / {chars} characters, the \
                         column holds {max}"
                    ));
                }
                _ => true,
            }
        }
        (Some(Family::Number), DefaultValue::Int(_) | DefaultValue::Float(_)) => true,
        (Some(Family::Number), DefaultValue::Bool(_)) => {
            column.data_type.eq_ignore_ascii_case("bit")
        }
        (Some(Family::Date), DefaultValue::Text(_)) => true,
        _ => false,
    };
    if fits {
        Ok(())
    } else {
        Err(format!(
            "la valeur {value} ne convient pas au type {} / value {value} does not fit type {}",
            column.data_type, column.data_type
        ))
    }
}

/// Ledger columns nobody fills although an insert needs them: fatal, with the fix.
fn report_unfilled(r: &mut Resolver<'_>, table: &QualifiedTable, written: &[&str]) {
    let unfilled: Vec<String> = r
        .server
        .iter()
        .filter(|c| c.table == table.table.name() && c.required_on_insert())
        .filter(|c| !written.iter().any(|w| w.eq_ignore_ascii_case(&c.column)))
        .map(|c| c.column.clone())
        .collect();
    for column in unfilled {
        let message = format!(
            "NOT NULL sans valeur par défaut et non écrite par batisync : chaque insertion \
             échouerait ; donner une valeur dans [batigest.suivimo_defaults] ({column} = …) / \
             NOT NULL without a default and not written by batisync: every insert would \
             fail; give a value in [batigest.suivimo_defaults] ({column} = …)"
        );
        r.problem(
            format!("{table}.{column}"),
            "suivimo_defaults",
            message,
            true,
        );
    }
}

/// Reads the columns of the three mapped tables.
///
/// # Errors
/// Connection or query failure.
pub async fn load_server_columns(pool: &Pool) -> Result<Vec<ServerColumn>, BatigestError> {
    let s = pool.settings();
    let (schema, t1, t2, t3) = (
        s.schema.clone(),
        s.chantier.table.clone(),
        s.salarie.table.clone(),
        s.suivi_mo.table.clone(),
    );
    pool.run("read INFORMATION_SCHEMA.COLUMNS", |client, pool| {
        let params = (schema.clone(), t1.clone(), t2.clone(), t3.clone());
        Box::pin(async move {
            let rows = client
                .query(
                    tsql::TABLE_COLUMNS,
                    &[&params.0, &params.1, &params.2, &params.3],
                )
                .await
                .map_err(|e| pool.work_error(e))?
                .into_first_result()
                .await
                .map_err(|e| pool.work_error(e))?;
            Ok(rows
                .iter()
                .map(|row| ServerColumn {
                    table: row.get::<&str, _>(0).unwrap_or_default().to_owned(),
                    column: row.get::<&str, _>(1).unwrap_or_default().to_owned(),
                    data_type: row.get::<&str, _>(2).unwrap_or_default().to_owned(),
                    max_chars: row.get::<i32, _>(3),
                    nullable: row.get::<i32, _>(4) != Some(0),
                    has_default: row.get::<i32, _>(5) == Some(1),
                    generated: row.get::<i32, _>(6) == Some(1),
                })
                .collect())
        })
    })
    .await
}

/// Loads and verifies the mapping (start-up and `check`).
///
/// # Errors
/// [`BatigestError::Mapping`] listing every fatal problem, or a connection failure.
pub async fn load_mapping(pool: &Pool) -> Result<Mapping, BatigestError> {
    let columns = load_server_columns(pool).await?;
    verify_mapping(pool.settings(), &columns).map_err(|problems| {
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        BatigestError::Mapping(lines.join("; "))
    })
}

#[cfg(test)]
mod tests;
