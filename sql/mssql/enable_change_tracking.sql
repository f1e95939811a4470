-- Enables SQL Server Change Tracking for batisync on a Batigest dossier.
-- Run it in the dossier's database (e.g. `USE [BTG_DOS_DEMO];` first), as a member of
-- db_owner. Safe to run again: it only changes what is not already set.
--
-- What it does:
--   1. ALLOW_SNAPSHOT_ISOLATION ON: batisync reads changes under snapshot isolation, so
--      it never blocks Batigest users and sees one consistent version. (This does not
--      change how Batigest itself reads; READ_COMMITTED_SNAPSHOT is left untouched.)
--   2. Change Tracking on the database, with the retention and auto-cleanup below.
--      If batisync is stopped longer than the retention, it re-reads the tables once.
--   3. Change Tracking on ChantierDef, Salarie and SuiviMO (each needs a primary key).
--   4. VIEW CHANGE TRACKING on them for batisync's login, when its user exists (run
--      sql/mssql/create_batisync_login.sql first, or this script again after it).

-- ===== Settings =====
DECLARE @retention_days int     = 7;      -- CHANGE_RETENTION, in days
DECLARE @auto_cleanup   bit     = 1;      -- AUTO_CLEANUP ON (1) or OFF (0)
DECLARE @schema         sysname = N'dbo';
DECLARE @login          sysname = N'batisync';   -- batisync's user in this database
-- ====================

DECLARE @sql nvarchar(max);
DECLARE @options nvarchar(200) = N'CHANGE_RETENTION = ' + CAST(@retention_days AS nvarchar(10))
    + N' DAYS, AUTO_CLEANUP = ' + CASE WHEN @auto_cleanup = 1 THEN N'ON' ELSE N'OFF' END;

-- 1. Snapshot isolation for consistent, non-blocking reads.
IF (SELECT snapshot_isolation_state FROM sys.databases WHERE database_id = DB_ID()) <> 1
    ALTER DATABASE CURRENT SET ALLOW_SNAPSHOT_ISOLATION ON;

-- 2. Change Tracking on the database (or new retention settings if already on).
IF NOT EXISTS (SELECT 1 FROM sys.change_tracking_databases WHERE database_id = DB_ID())
    SET @sql = N'ALTER DATABASE CURRENT SET CHANGE_TRACKING = ON (' + @options + N');';
ELSE
    SET @sql = N'ALTER DATABASE CURRENT SET CHANGE_TRACKING (' + @options + N');';
EXEC sys.sp_executesql @sql;

-- 3. Change Tracking on the three tables.
DECLARE @table sysname;
DECLARE tables CURSOR LOCAL FAST_FORWARD FOR
    SELECT name FROM (VALUES (N'ChantierDef'), (N'Salarie'), (N'SuiviMO')) AS t(name);
OPEN tables;
FETCH NEXT FROM tables INTO @table;
WHILE @@FETCH_STATUS = 0
BEGIN
    DECLARE @object nvarchar(300) = QUOTENAME(@schema) + N'.' + QUOTENAME(@table);
    IF OBJECT_ID(@object, N'U') IS NULL
        RAISERROR(N'Table %s introuvable / not found: skipped', 10, 1, @object);
    ELSE IF OBJECTPROPERTY(OBJECT_ID(@object), N'TableHasPrimaryKey') = 0
        RAISERROR(N'Table %s sans clé primaire : Change Tracking impossible, batisync utilisera la comparaison d''instantanés / has no primary key: Change Tracking impossible, batisync will use snapshot diff', 10, 1, @object);
    ELSE IF NOT EXISTS (SELECT 1 FROM sys.change_tracking_tables WHERE object_id = OBJECT_ID(@object))
    BEGIN
        SET @sql = N'ALTER TABLE ' + @object + N' ENABLE CHANGE_TRACKING WITH (TRACK_COLUMNS_UPDATED = OFF);';
        EXEC sys.sp_executesql @sql;
    END;
    FETCH NEXT FROM tables INTO @table;
END;
CLOSE tables;
DEALLOCATE tables;

-- 4. batisync may read the changes.
IF DATABASE_PRINCIPAL_ID(@login) IS NOT NULL
BEGIN
    SET @sql = N'GRANT VIEW CHANGE TRACKING ON ' + QUOTENAME(@schema) + N'.' + QUOTENAME(N'ChantierDef') + N' TO ' + QUOTENAME(@login) + N';'
        + N' GRANT VIEW CHANGE TRACKING ON ' + QUOTENAME(@schema) + N'.' + QUOTENAME(N'Salarie') + N' TO ' + QUOTENAME(@login) + N';'
        + N' GRANT VIEW CHANGE TRACKING ON ' + QUOTENAME(@schema) + N'.' + QUOTENAME(N'SuiviMO') + N' TO ' + QUOTENAME(@login) + N';';
    EXEC sys.sp_executesql @sql;
END
ELSE
    RAISERROR(N'Utilisateur %s absent : exécuter create_batisync_login.sql puis ce script à nouveau / user %s not found: run create_batisync_login.sql, then this script again', 10, 1, @login, @login);

-- What is tracked now.
SELECT OBJECT_SCHEMA_NAME(t.object_id) AS [schema], OBJECT_NAME(t.object_id) AS [table],
       t.min_valid_version, CHANGE_TRACKING_CURRENT_VERSION() AS current_version,
       d.retention_period, d.retention_period_units_desc, d.is_auto_cleanup_on
FROM sys.change_tracking_tables AS t
CROSS JOIN sys.change_tracking_databases AS d
WHERE d.database_id = DB_ID();
