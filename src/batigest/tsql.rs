//! Every T-SQL statement batisync runs on the Batigest server, in one place for the DBA.
//!
//! Values are always parameters (`@P1`, `@P2`, ...: tiberius sends them through
//! `sp_executesql`). Table and column names come from the mapping and cannot be
//! parameters: templates mark them `{table}`, `{key}`, `{columns}`, `{hours}`, ... and
//! [`render`] fills them only with [`Ident`]s, names validated against
//! `INFORMATION_SCHEMA.COLUMNS` and written in brackets. No `MERGE` anywhere.

use super::ident::Ident;
use super::spec::{LedgerSpec, TableSpec};

/// Health check of a pooled connection before reuse.
pub(crate) const PING: &str = "SELECT 1";

/// Who and where we are, for `check`.
pub(crate) const SESSION_INFO: &str = "SELECT DB_NAME() AS database_name, \
     CAST(SERVERPROPERTY('ProductVersion') AS nvarchar(128)) AS product_version";

/// Columns of the mapped tables (existence, type family, length, and what an insert
/// must fill: nullability, default, identity or computed).
pub(crate) const TABLE_COLUMNS: &str = "SELECT c.TABLE_NAME, c.COLUMN_NAME, c.DATA_TYPE, \
     CAST(c.CHARACTER_MAXIMUM_LENGTH AS int) AS max_chars, \
     CASE WHEN c.IS_NULLABLE = 'NO' THEN 0 ELSE 1 END AS nullable, \
     CASE WHEN c.COLUMN_DEFAULT IS NULL THEN 0 ELSE 1 END AS has_default, \
     CAST(ISNULL(sc.is_identity, 0) | ISNULL(sc.is_computed, 0) AS int) AS generated \
     FROM INFORMATION_SCHEMA.COLUMNS AS c \
     LEFT JOIN sys.columns AS sc \
       ON sc.object_id = OBJECT_ID(QUOTENAME(c.TABLE_SCHEMA) + '.' + QUOTENAME(c.TABLE_NAME)) \
      AND sc.name = c.COLUMN_NAME \
     WHERE c.TABLE_SCHEMA = @P1 AND c.TABLE_NAME IN (@P2, @P3, @P4) \
     ORDER BY c.TABLE_NAME, c.ORDINAL_POSITION";

/// `check --describe`: every column of one table (`@P1` schema, `@P2` table, `@P3`
/// `[schema].[table]`) with type, nullability, default, identity and computed.
pub(crate) const DESCRIBE_COLUMNS: &str = "SELECT c.COLUMN_NAME, c.DATA_TYPE, \
     CAST(c.CHARACTER_MAXIMUM_LENGTH AS int) AS max_chars, \
     CAST(c.NUMERIC_PRECISION AS int) AS numeric_precision, \
     CAST(c.NUMERIC_SCALE AS int) AS numeric_scale, \
     CASE WHEN c.IS_NULLABLE = 'NO' THEN 0 ELSE 1 END AS nullable, \
     CAST(c.COLUMN_DEFAULT AS nvarchar(4000)) AS column_default, \
     CAST(ISNULL(sc.is_identity, 0) AS int) AS is_identity, \
     CAST(ISNULL(sc.is_computed, 0) AS int) AS is_computed \
     FROM INFORMATION_SCHEMA.COLUMNS AS c \
     LEFT JOIN sys.columns AS sc ON sc.object_id = OBJECT_ID(@P3) AND sc.name = c.COLUMN_NAME \
     WHERE c.TABLE_SCHEMA = @P1 AND c.TABLE_NAME = @P2 \
     ORDER BY c.ORDINAL_POSITION";

/// `check --describe`: primary key and unique constraints (`@P1` schema, `@P2` table).
pub(crate) const DESCRIBE_KEYS: &str = "SELECT tc.CONSTRAINT_NAME, tc.CONSTRAINT_TYPE, \
     k.COLUMN_NAME \
     FROM INFORMATION_SCHEMA.TABLE_CONSTRAINTS AS tc \
     JOIN INFORMATION_SCHEMA.KEY_COLUMN_USAGE AS k \
       ON k.CONSTRAINT_SCHEMA = tc.CONSTRAINT_SCHEMA AND k.CONSTRAINT_NAME = tc.CONSTRAINT_NAME \
     WHERE tc.TABLE_SCHEMA = @P1 AND tc.TABLE_NAME = @P2 \
       AND tc.CONSTRAINT_TYPE IN ('PRIMARY KEY', 'UNIQUE') \
     ORDER BY tc.CONSTRAINT_TYPE, tc.CONSTRAINT_NAME, k.ORDINAL_POSITION";

/// `check --describe`: triggers of one table (`@P1` = `[schema].[table]`) and their
/// events.
pub(crate) const DESCRIBE_TRIGGERS: &str = "SELECT t.name, \
     CAST(t.is_disabled AS int) AS is_disabled, \
     CAST(t.is_instead_of_trigger AS int) AS is_instead_of, \
     CAST(e.type_desc AS nvarchar(60)) AS event \
     FROM sys.triggers AS t \
     LEFT JOIN sys.trigger_events AS e ON e.object_id = t.object_id \
     WHERE t.parent_id = OBJECT_ID(@P1) \
     ORDER BY t.name, e.type_desc";

/// Change Tracking state of one table (`@P1` = `[schema].[table]`). The minimum valid
/// version is NULL when tracking is off for the table or not visible to us.
pub(crate) const CHANGE_TRACKING_STATE: &str = "SELECT \
     CHANGE_TRACKING_MIN_VALID_VERSION(OBJECT_ID(@P1)) AS min_valid_version, \
     CHANGE_TRACKING_CURRENT_VERSION() AS current_version, \
     CAST(ISNULL(HAS_PERMS_BY_NAME(@P1, 'OBJECT', 'VIEW CHANGE TRACKING'), 0) AS int) AS can_view, \
     CAST((SELECT snapshot_isolation_state FROM sys.databases WHERE database_id = DB_ID()) AS int) \
       AS snapshot_isolation_state";

/// Permissions of the login: SELECT on the two read tables, writes on the ledger.
pub(crate) const PERMISSIONS: &str = "SELECT \
     CAST(ISNULL(HAS_PERMS_BY_NAME(@P1, 'OBJECT', 'SELECT'), 0) AS int) AS chantier_select, \
     CAST(ISNULL(HAS_PERMS_BY_NAME(@P2, 'OBJECT', 'SELECT'), 0) AS int) AS salarie_select, \
     CAST(ISNULL(HAS_PERMS_BY_NAME(@P3, 'OBJECT', 'SELECT'), 0) AS int) AS ledger_select, \
     CAST(ISNULL(HAS_PERMS_BY_NAME(@P3, 'OBJECT', 'INSERT'), 0) AS int) AS ledger_insert, \
     CAST(ISNULL(HAS_PERMS_BY_NAME(@P3, 'OBJECT', 'UPDATE'), 0) AS int) AS ledger_update, \
     CAST(ISNULL(HAS_PERMS_BY_NAME(@P3, 'OBJECT', 'DELETE'), 0) AS int) AS ledger_delete";

/// Opens the consistent read of a Change Tracking capture. Needs
/// `ALLOW_SNAPSHOT_ISOLATION ON` (see `sql/mssql/enable_change_tracking.sql`).
pub(crate) const BEGIN_SNAPSHOT_READ: &str =
    "SET TRANSACTION ISOLATION LEVEL SNAPSHOT; BEGIN TRANSACTION;";

/// Ends the read and puts the pooled session back to the default isolation level.
pub(crate) const END_SNAPSHOT_READ: &str =
    "COMMIT TRANSACTION; SET TRANSACTION ISOLATION LEVEL READ COMMITTED;";

/// Versions read inside the snapshot transaction (`@P1` = `[schema].[table]`).
pub(crate) const CHANGE_TRACKING_VERSIONS: &str = "SELECT \
     CHANGE_TRACKING_CURRENT_VERSION() AS current_version, \
     CHANGE_TRACKING_MIN_VALID_VERSION(OBJECT_ID(@P1)) AS min_valid_version";

/// Net changes since `@P1` (the stored version). The row is absent (`__exists` = 0)
/// when it was deleted: a delete carries only the key. `{commit_select}` and
/// `{commit_join}` are [`COMMIT_TIME_SELECT`] and [`COMMIT_TIME_JOIN`] where the server
/// lets us read `sys.dm_tran_commit_table`, else [`NO_COMMIT_TIME_SELECT`] and nothing.
pub(crate) const CHANGES_SINCE: &str = "SELECT ct.SYS_CHANGE_VERSION AS [__version], \
     ct.SYS_CHANGE_OPERATION AS [__operation], ct.SYS_CHANGE_CONTEXT AS [__context], \
     ct.{key} AS [__key], CASE WHEN t.{key} IS NULL THEN 0 ELSE 1 END AS [__exists], \
     {commit_select}, {columns} \
     FROM CHANGETABLE(CHANGES {table}, @P1) AS ct \
     LEFT JOIN {table} AS t ON t.{key} = ct.{key}{commit_join} \
     ORDER BY ct.SYS_CHANGE_VERSION, ct.{key}";

/// The commit time of a change (server local time brought to UTC with the server's
/// current offset), from the commit table Change Tracking versions point into.
pub(crate) const COMMIT_TIME_SELECT: &str = "DATEADD(minute, \
     -DATEPART(TZOFFSET, SYSDATETIMEOFFSET()), tc.commit_time) AS [__committed_at]";
/// The join that [`COMMIT_TIME_SELECT`] reads.
pub(crate) const COMMIT_TIME_JOIN: &str =
    " LEFT JOIN sys.dm_tran_commit_table AS tc ON tc.commit_ts = ct.SYS_CHANGE_VERSION";
/// No commit time visible: the events carry none.
pub(crate) const NO_COMMIT_TIME_SELECT: &str = "CAST(NULL AS datetime2) AS [__committed_at]";

/// Does the server let us read commit times (`VIEW SERVER STATE` on SQL Server)?
pub(crate) const COMMIT_TIME_PROBE: &str =
    "SELECT TOP (0) commit_ts, commit_time FROM sys.dm_tran_commit_table";

/// First page of a keyset-paginated full read (`@P1` = page size).
pub(crate) const FIRST_PAGE: &str = "SELECT TOP (@P1) t.{key} AS [__key], {columns} \
     FROM {table} AS t ORDER BY t.{key}";

/// Next page after key `@P2` (`@P1` = page size).
pub(crate) const NEXT_PAGE: &str = "SELECT TOP (@P1) t.{key} AS [__key], {columns} \
     FROM {table} AS t WHERE t.{key} > @P2 ORDER BY t.{key}";

/// Which of `{params}` (`@P1, @P2, ...`: stored keys of the previous snapshot) still
/// exist: a snapshot diff looks for deletes with it only when some key was not met.
pub(crate) const KEYS_PRESENT: &str =
    "SELECT t.{key} AS [__key] FROM {table} AS t WHERE t.{key} IN ({params})";

/// One ledger write: errors abort and roll back the whole transaction (on any failure the
/// connection is also dropped, which rolls back whatever is still open).
pub(crate) const BEGIN_WRITE: &str = "SET XACT_ABORT ON; BEGIN TRANSACTION;";
/// Commits a ledger write.
pub(crate) const COMMIT: &str = "COMMIT TRANSACTION;";

/// Reads and locks the ledger rows of one key until the end of the transaction
/// (`@P1` chantier, `@P2` employee, `@P3` date).
pub(crate) const LEDGER_READ: &str = "SELECT {hours} AS hours, {journey} AS journey, \
     {meal} AS meal FROM {table} WITH (UPDLOCK, HOLDLOCK) \
     WHERE {chantier} = @P1 AND {employee} = @P2 AND {date} = @P3";

/// Prefix of every ledger write when Change Tracking is on for the ledger: our context
/// (`@P1`, as the `varbinary(128)` the clause needs) lets a capture of `SuiviMO` tell our
/// writes from those of Batigest users. Without tracking, `@P1` is sent but unused.
const TAG: &str = "DECLARE @ctx varbinary(128) = CAST(@P1 AS varbinary(128)); \
     WITH CHANGE_TRACKING_CONTEXT (@ctx) ";

/// Rewrites the row of key (`@P2`, `@P3`, `@P4`) with key (`@P5`, `@P6`, `@P7`) and values
/// `@P8` hours, `@P9` journey, `@P10` meal; `@P1` is our Change Tracking context.
pub(crate) const LEDGER_UPDATE: &str = "UPDATE {table} WITH (UPDLOCK, HOLDLOCK) \
     SET {chantier} = @P5, {employee} = @P6, {date} = @P7, \
     {hours} = @P8, {journey} = @P9, {meal} = @P10 \
     WHERE {chantier} = @P2 AND {employee} = @P3 AND {date} = @P4";

/// Inserts a row when the update touched none; `{extra_columns}` / `{extra_values}` are
/// the `[batigest.suivimo_defaults]` columns and their parameters `@P8...`.
pub(crate) const LEDGER_INSERT: &str = "INSERT INTO {table} ({chantier}, {employee}, {date}, {hours}, {journey}, {meal}{extra_columns}) \
     VALUES (@P2, @P3, @P4, @P5, @P6, @P7{extra_values})";

/// Removes the row of a slot that is no longer eligible.
pub(crate) const LEDGER_DELETE: &str =
    "DELETE FROM {table} WHERE {chantier} = @P2 AND {employee} = @P3 AND {date} = @P4";

/// Sets (or clears, with NULL) one employee's BatiSimply id from the console:
/// `@P1` the id, `@P2` the employee code. Only with `admin.allow_codebs_write`.
pub(crate) const EMPLOYEE_SET_BATISIMPLY_ID: &str =
    "UPDATE {table} SET {batisimply_id} = @P1 WHERE {key} = @P2";

/// Fills `{name}` placeholders with already-quoted, validated fragments.
fn render(template: &'static str, parts: &[(&str, String)]) -> String {
    parts
        .iter()
        .fold(template.to_owned(), |sql, (name, fragment)| {
            sql.replace(&format!("{{{name}}}"), fragment)
        })
}

/// `t.[Column] AS [role], ...`: roles are fixed plain names, columns validated idents.
fn select_list(spec: &TableSpec) -> String {
    spec.columns
        .iter()
        .map(|c| format!("t.{} AS [{}]", c.column.quoted(), c.role))
        .collect::<Vec<_>>()
        .join(", ")
}

fn table_parts(spec: &TableSpec) -> [(&'static str, String); 3] {
    [
        ("table", spec.table.quoted()),
        ("key", spec.key.quoted()),
        ("columns", select_list(spec)),
    ]
}

/// [`CHANGES_SINCE`] for a table, with the commit time when `commit_time` is true.
pub(crate) fn changes_since(spec: &TableSpec, commit_time: bool) -> String {
    let (select, join) = if commit_time {
        (COMMIT_TIME_SELECT, COMMIT_TIME_JOIN)
    } else {
        (NO_COMMIT_TIME_SELECT, "")
    };
    let mut parts = table_parts(spec).to_vec();
    parts.push(("commit_select", select.to_owned()));
    parts.push(("commit_join", join.to_owned()));
    render(CHANGES_SINCE, &parts)
}

/// [`KEYS_PRESENT`] for `count` keys (`@P1` to `@P{count}`).
pub(crate) fn keys_present(spec: &TableSpec, count: usize) -> String {
    let params: Vec<String> = (1..=count).map(|i| format!("@P{i}")).collect();
    render(
        KEYS_PRESENT,
        &[
            ("table", spec.table.quoted()),
            ("key", spec.key.quoted()),
            ("params", params.join(", ")),
        ],
    )
}

/// [`FIRST_PAGE`] for a table.
pub(crate) fn first_page(spec: &TableSpec) -> String {
    render(FIRST_PAGE, &table_parts(spec))
}

/// [`NEXT_PAGE`] for a table.
pub(crate) fn next_page(spec: &TableSpec) -> String {
    render(NEXT_PAGE, &table_parts(spec))
}

/// [`EMPLOYEE_SET_BATISIMPLY_ID`] for the `Salarie` mapping; `None` when the mapping has
/// no BatiSimply id column.
pub(crate) fn employee_set_batisimply_id(spec: &TableSpec) -> Option<String> {
    let column = spec
        .columns
        .iter()
        .find(|c| c.role == super::spec::salarie_role::BATISIMPLY_ID)?;
    Some(render(
        EMPLOYEE_SET_BATISIMPLY_ID,
        &[
            ("table", spec.table.quoted()),
            ("batisimply_id", column.column.quoted()),
            ("key", spec.key.quoted()),
        ],
    ))
}

fn ledger_parts(spec: &LedgerSpec) -> Vec<(&'static str, String)> {
    let q = Ident::quoted;
    let extra_columns: String = spec
        .extra
        .iter()
        .map(|(column, _)| format!(", {}", column.quoted()))
        .collect();
    let extra_values: String = (0..spec.extra.len())
        .map(|i| format!(", @P{}", i + 8))
        .collect();
    vec![
        ("extra_columns", extra_columns),
        ("extra_values", extra_values),
        ("table", spec.table.quoted()),
        ("chantier", q(&spec.chantier)),
        ("employee", q(&spec.employee)),
        ("date", q(&spec.date)),
        ("hours", q(&spec.hours)),
        ("journey", q(&spec.journey)),
        ("meal", q(&spec.meal)),
    ]
}

/// The four ledger statements for a mapping.
#[derive(Debug, Clone)]
pub(crate) struct LedgerStatements {
    pub read: String,
    pub update: String,
    pub insert: String,
    pub delete: String,
}

impl LedgerStatements {
    /// `tagged`: prefix writes with [`TAG`] (Change Tracking on for the ledger).
    pub(crate) fn new(spec: &LedgerSpec, tagged: bool) -> Self {
        let parts = ledger_parts(spec);
        let tag = if tagged { TAG } else { "" };
        Self {
            read: render(LEDGER_READ, &parts),
            update: format!("{tag}{}", render(LEDGER_UPDATE, &parts)),
            insert: format!("{tag}{}", render(LEDGER_INSERT, &parts)),
            delete: format!("{tag}{}", render(LEDGER_DELETE, &parts)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batigest::spec::tests::{chantier_spec, ledger_spec};

    #[test]
    fn change_tracking_statement_joins_the_table_and_names_every_column() {
        let sql = changes_since(&chantier_spec(), false);
        assert_eq!(
            sql,
            "SELECT ct.SYS_CHANGE_VERSION AS [__version], ct.SYS_CHANGE_OPERATION AS \
             [__operation], ct.SYS_CHANGE_CONTEXT AS [__context], ct.[Code] AS [__key], CASE \
             WHEN t.[Code] IS NULL THEN 0 ELSE 1 END AS [__exists], CAST(NULL AS datetime2) \
             AS [__committed_at], t.[Code] AS [code], \
             t.[NomClient] AS [customer_name], t.[Etat] AS [state] FROM CHANGETABLE(CHANGES \
             [dbo].[ChantierDef], @P1) AS ct LEFT JOIN [dbo].[ChantierDef] AS t ON t.[Code] = \
             ct.[Code] ORDER BY ct.SYS_CHANGE_VERSION, ct.[Code]"
        );
        let timed = changes_since(&chantier_spec(), true);
        assert!(
            timed.contains(
                "LEFT JOIN sys.dm_tran_commit_table AS tc ON tc.commit_ts = ct.SYS_CHANGE_VERSION \
                 ORDER BY"
            ),
            "{timed}"
        );
        assert!(
            timed.contains("tc.commit_time) AS [__committed_at]"),
            "{timed}"
        );
    }

    #[test]
    fn snapshot_statements_are_keyset_paginated() {
        let spec = chantier_spec();
        assert_eq!(
            first_page(&spec),
            "SELECT TOP (@P1) t.[Code] AS [__key], t.[Code] AS [code], t.[NomClient] AS \
             [customer_name], t.[Etat] AS [state] FROM [dbo].[ChantierDef] AS t ORDER BY t.[Code]"
        );
        let next = next_page(&spec);
        assert!(
            next.contains("WHERE t.[Code] > @P2 ORDER BY t.[Code]"),
            "{next}"
        );
        assert!(!next.contains('{'), "{next}");
        assert_eq!(
            keys_present(&spec, 3),
            "SELECT t.[Code] AS [__key] FROM [dbo].[ChantierDef] AS t WHERE t.[Code] IN \
             (@P1, @P2, @P3)"
        );
    }

    #[test]
    fn ledger_statements_lock_tag_and_never_merge() {
        let s = LedgerStatements::new(&ledger_spec(), true);
        assert!(
            s.read
                .contains("FROM [dbo].[SuiviMO] WITH (UPDLOCK, HOLDLOCK)")
        );
        assert!(
            s.read
                .starts_with("SELECT [NbH0] AS hours, [NbH3] AS journey, [NbH4] AS meal")
        );
        for sql in [&s.update, &s.insert, &s.delete] {
            assert!(
                sql.starts_with(
                    "DECLARE @ctx varbinary(128) = CAST(@P1 AS varbinary(128)); \
                     WITH CHANGE_TRACKING_CONTEXT (@ctx) "
                ),
                "{sql}"
            );
        }
        assert!(
            s.update.contains(
                "UPDATE [dbo].[SuiviMO] WITH (UPDLOCK, HOLDLOCK) SET [CodeChantier] = @P5"
            )
        );
        assert!(
            s.insert
                .contains("([CodeChantier], [CodeSalarie], [Date], [NbH0], [NbH3], [NbH4])")
        );
        let mut with_defaults = ledger_spec();
        with_defaults.extra = vec![
            (
                crate::batigest::spec::tests::ident("Periode"),
                crate::batigest::settings::DefaultValue::Text("202611".into()),
            ),
            (
                crate::batigest::spec::tests::ident("NbH1"),
                crate::batigest::settings::DefaultValue::Int(0),
            ),
        ];
        let insert = LedgerStatements::new(&with_defaults, false).insert;
        assert!(
            insert.ends_with(
                "[NbH4], [Periode], [NbH1]) VALUES (@P2, @P3, @P4, @P5, @P6, @P7, @P8, @P9)"
            ),
            "{insert}"
        );
        let plain = LedgerStatements::new(&ledger_spec(), false);
        assert!(
            plain.insert.starts_with("INSERT INTO [dbo].[SuiviMO]"),
            "{}",
            plain.insert
        );
        assert!(
            plain.delete.starts_with("DELETE FROM [dbo].[SuiviMO]"),
            "{}",
            plain.delete
        );
        for sql in [&s.read, &s.update, &s.insert, &s.delete] {
            assert!(
                !sql.contains('{') && !sql.to_uppercase().contains("MERGE"),
                "{sql}"
            );
        }
    }

    #[test]
    fn the_employee_id_update_touches_only_the_mapped_column_of_one_code() {
        use crate::batigest::spec::tests::ident;
        use crate::batigest::spec::{MappedColumn, salarie_role};
        let mut spec = chantier_spec();
        spec.table.table = ident("Salarie");
        spec.columns = vec![
            MappedColumn {
                role: salarie_role::CODE,
                column: ident("Code"),
            },
            MappedColumn {
                role: salarie_role::BATISIMPLY_ID,
                column: ident("codebs"),
            },
        ];
        assert_eq!(
            employee_set_batisimply_id(&spec).as_deref(),
            Some("UPDATE [dbo].[Salarie] SET [codebs] = @P1 WHERE [Code] = @P2")
        );
        spec.columns.pop();
        assert_eq!(employee_set_batisimply_id(&spec), None);
    }

    #[test]
    fn fixed_statements_use_parameters_only() {
        for sql in [
            TABLE_COLUMNS,
            CHANGE_TRACKING_STATE,
            PERMISSIONS,
            CHANGE_TRACKING_VERSIONS,
        ] {
            assert!(sql.contains("@P1") && !sql.contains('{'), "{sql}");
        }
        assert!(BEGIN_SNAPSHOT_READ.contains("ISOLATION LEVEL SNAPSHOT"));
        assert!(END_SNAPSHOT_READ.ends_with("READ COMMITTED;"));
    }
}
