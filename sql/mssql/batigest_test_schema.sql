-- A Batigest-shaped schema for batisync's tests (tests/batigest_mssql.rs), created in an
-- empty database. NOT a copy of Batigest: the real column types are unverified
-- (shared/DOMAIN.md §8.1). Assumptions, each marked [assumed]:
--   * ChantierDef.Code varchar(8) primary key, NomClient varchar(30), Etat char(1):
--     limits read by the original connector from INFORMATION_SCHEMA (DOMAIN §1.2).
--   * DateDebut / DateFin datetime NOT NULL (reported NOT NULL by the original) [assumed datetime].
--   * Libelle, address columns: varchar of plausible lengths [assumed].
--   * Salarie.Code varchar(10) primary key, Nom varchar(40), codebs varchar(50) holding
--     the BatiSimply user UUID as text [assumed; codebs may be a user-added field].
--   * SuiviMO: no known unique constraint on (CodeChantier, CodeSalarie, Date), so none
--     here either (batisync guarantees one row per slot itself); an identity primary key
--     Id so that Change Tracking can be enabled on it [assumed]; NbH0..NbH4 decimal(9,4)
--     hours or counts [assumed; could be float in a real dossier]; Date datetime.
-- No GO separators: the tests send this file as one batch.

CREATE TABLE dbo.ChantierDef (
    Code          varchar(8)  NOT NULL CONSTRAINT PK_ChantierDef PRIMARY KEY,
    NomClient     varchar(30) NULL,
    Libelle       varchar(60) NULL,
    Etat          char(1)     NULL,
    DateDebut     datetime    NOT NULL,
    DateFin       datetime    NOT NULL,
    CodeClient    varchar(10) NULL,
    AdrChantier   varchar(60) NULL,
    CPChantier    varchar(10) NULL,
    VilleChantier varchar(40) NULL
);

CREATE TABLE dbo.Salarie (
    Code   varchar(10) NOT NULL CONSTRAINT PK_Salarie PRIMARY KEY,
    Nom    varchar(40) NULL,
    codebs varchar(50) NULL
);

CREATE TABLE dbo.SuiviMO (
    Id           int IDENTITY(1, 1) NOT NULL CONSTRAINT PK_SuiviMO PRIMARY KEY,
    CodeChantier varchar(8)   NOT NULL,
    CodeSalarie  varchar(10)  NOT NULL,
    [Date]       datetime     NOT NULL,
    NbH0         decimal(9,4) NOT NULL CONSTRAINT DF_SuiviMO_NbH0 DEFAULT 0,
    NbH1         decimal(9,4) NOT NULL CONSTRAINT DF_SuiviMO_NbH1 DEFAULT 0,
    NbH2         decimal(9,4) NOT NULL CONSTRAINT DF_SuiviMO_NbH2 DEFAULT 0,
    NbH3         decimal(9,4) NOT NULL CONSTRAINT DF_SuiviMO_NbH3 DEFAULT 0,
    NbH4         decimal(9,4) NOT NULL CONSTRAINT DF_SuiviMO_NbH4 DEFAULT 0
);

-- The functional key batisync looks rows up by (not unique, see above).
CREATE INDEX IX_SuiviMO_Key ON dbo.SuiviMO (CodeChantier, CodeSalarie, [Date]);
