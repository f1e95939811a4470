-- Creates the least-privilege SQL login batisync connects with, and its user in the
-- Batigest dossier. Run it in the dossier's database (e.g. `USE [BTG_DOS_DEMO];` first)
-- as a sysadmin (CREATE LOGIN) or with the login already created by one.
--
-- Rights granted, and nothing else:
--   * SELECT on ChantierDef and Salarie (read-only sources);
--   * SELECT, INSERT, UPDATE, DELETE on SuiviMO (the hours ledger). SELECT is needed
--     because batisync reads the row of a slot (with a lock) before rewriting it, and
--     because UPDATE/DELETE with a WHERE clause require it.
-- Then set `batigest.user` and `batigest.password_file` in batisync's settings.

-- ===== Settings =====
DECLARE @login    sysname       = N'batisync';
DECLARE @password nvarchar(128) = N'CHANGE-ME';   -- a long random password; never commit it
DECLARE @schema   sysname       = N'dbo';
-- ====================

IF @password = N'CHANGE-ME'
    THROW 50000, N'Choisir un mot de passe dans @password / set @password first', 1;

DECLARE @sql nvarchar(max);

IF NOT EXISTS (SELECT 1 FROM sys.server_principals WHERE name = @login)
BEGIN
    -- The password policy applies (CHECK_POLICY is ON by default on SQL Server).
    SET @sql = N'CREATE LOGIN ' + QUOTENAME(@login) + N' WITH PASSWORD = '
        + QUOTENAME(@password, N'''') + N', DEFAULT_DATABASE = '
        + QUOTENAME(DB_NAME()) + N';';
    EXEC sys.sp_executesql @sql;
END;

IF NOT EXISTS (SELECT 1 FROM sys.database_principals WHERE name = @login)
BEGIN
    SET @sql = N'CREATE USER ' + QUOTENAME(@login) + N' FOR LOGIN ' + QUOTENAME(@login)
        + N' WITH DEFAULT_SCHEMA = ' + QUOTENAME(@schema) + N';';
    EXEC sys.sp_executesql @sql;
END;

DECLARE @chantier nvarchar(300) = QUOTENAME(@schema) + N'.' + QUOTENAME(N'ChantierDef');
DECLARE @salarie  nvarchar(300) = QUOTENAME(@schema) + N'.' + QUOTENAME(N'Salarie');
DECLARE @ledger   nvarchar(300) = QUOTENAME(@schema) + N'.' + QUOTENAME(N'SuiviMO');
DECLARE @who      nvarchar(300) = QUOTENAME(@login);

SET @sql = N'GRANT SELECT ON ' + @chantier + N' TO ' + @who + N';'
    + N' GRANT SELECT ON ' + @salarie + N' TO ' + @who + N';'
    + N' GRANT SELECT, INSERT, UPDATE, DELETE ON ' + @ledger + N' TO ' + @who + N';';
EXEC sys.sp_executesql @sql;

-- VIEW CHANGE TRACKING is granted by sql/mssql/enable_change_tracking.sql (run it after
-- this script where Change Tracking is wanted): servers without Change Tracking do not
-- know that permission, and batisync reads them by snapshot diff.

-- OPTIONAL, for "latest modification wins" with Change Tracking: the commit time of each
-- change (sys.dm_tran_commit_table) needs VIEW SERVER STATE (SQL Server 2019 and
-- earlier) or VIEW SERVER PERFORMANCE STATE (2022). Without it events carry no commit
-- time. Server-level: run in master as a sysadmin.
-- GRANT VIEW SERVER STATE TO [batisync];

-- OPTIONAL, only for sites that set admin.allow_codebs_write = true (the console's
-- Salariés page then writes an employee's BatiSimply id). Uncomment, and use the mapped
-- column name if yours is not codebs. Nothing else of Salarie becomes writable.
-- SET @sql = N'GRANT UPDATE (' + QUOTENAME(N'codebs') + N') ON ' + @salarie + N' TO ' + @who + N';';
-- EXEC sys.sp_executesql @sql;
-- In plain words: GRANT UPDATE (codebs) ON dbo.Salarie TO [batisync];

-- What the login may do now.
SELECT OBJECT_SCHEMA_NAME(p.major_id) AS [schema], OBJECT_NAME(p.major_id) AS [table],
       p.permission_name, p.state_desc
FROM sys.database_permissions AS p
WHERE p.grantee_principal_id = DATABASE_PRINCIPAL_ID(@login)
ORDER BY [table], p.permission_name;
