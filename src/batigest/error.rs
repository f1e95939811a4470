//! Errors of the Batigest layer, one variant per failure a person must react to, each
//! with a French / English message saying what to do. No message ever holds a password.

/// Where the connection stood when an error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Opening the connection (TCP, TLS, login).
    Connect,
    /// Running statements on an open connection.
    Work,
}

/// What an error message needs to name (never the password).
#[derive(Debug, Clone)]
pub struct ErrorContext {
    /// `host[\instance][:port]`.
    pub server: String,
    pub user: String,
    pub database: String,
    pub timeout_ms: u64,
}

/// A failure of the Batigest layer.
#[derive(Debug, thiserror::Error)]
pub enum BatigestError {
    #[error(
        "serveur SQL Server {server} injoignable : vérifier l'hôte, le port ou l'instance \
         (service SQL Server Browser, UDP 1434), le pare-feu et que le service tourne / SQL \
         Server {server} unreachable: check host, port or instance (SQL Server Browser \
         service, UDP 1434), the firewall and that the service runs ({detail})"
    )]
    Unreachable { server: String, detail: String },
    #[error(
        "connexion refusée pour l'identifiant {user} (erreur 18456) : vérifier l'identifiant, \
         le mot de passe et que l'authentification SQL Server est activée / login failed for \
         {user} (error 18456): check the login, the password and that SQL Server \
         authentication (mixed mode) is enabled"
    )]
    LoginFailed { user: String },
    #[error(
        "base {database} introuvable ou inaccessible pour {user} (erreur {code}) : vérifier le \
         nom du dossier et exécuter sql/mssql/create_batisync_login.sql / database {database} \
         does not exist or {user} has no access to it (error {code}): check the dossier name \
         and run sql/mssql/create_batisync_login.sql"
    )]
    DatabaseUnavailable {
        database: String,
        user: String,
        code: u32,
    },
    #[error(
        "problème TLS avec {server} : certificat non reconnu ou chiffrement refusé ; pour un \
         certificat auto-signé renseigner trust_ca_path (ou trust_server_certificate = true), \
         avant SQL Server 2022 utiliser encryption = \"required\" / TLS problem with {server}: \
         certificate not trusted or encryption refused; for a self-signed certificate set \
         trust_ca_path (or trust_server_certificate = true), before SQL Server 2022 use \
         encryption = \"required\" ({detail})"
    )]
    Tls { server: String, detail: String },
    #[error(
        "délai de {timeout_ms} ms dépassé ({phase:?}) : réseau lent, serveur surchargé ou \
         verrou tenu / timed out after {timeout_ms} ms ({phase:?}): slow network, overloaded \
         server or a lock held"
    )]
    Timeout { phase: Phase, timeout_ms: u64 },
    #[error("connexion perdue, nouvel essai / connection lost, will retry: {detail}")]
    ConnectionLost { detail: String },
    #[error(
        "isolation SNAPSHOT refusée (erreur 3952) : exécuter \
         sql/mssql/enable_change_tracking.sql (ALLOW_SNAPSHOT_ISOLATION ON) / SNAPSHOT \
         isolation not allowed (error 3952): run sql/mssql/enable_change_tracking.sql"
    )]
    SnapshotIsolationOff,
    #[error(
        "droit manquant (erreur {code}) : exécuter sql/mssql/create_batisync_login.sql / \
         permission denied (error {code}): run sql/mssql/create_batisync_login.sql: {message}"
    )]
    PermissionDenied { code: u32, message: String },
    #[error("erreur SQL Server / SQL Server error {code}: {message}")]
    Server {
        code: u32,
        message: String,
        transient: bool,
    },
    #[error("correspondance des colonnes / column mapping: {0}")]
    Mapping(String),
    #[error("Change Tracking inutilisable sur / unusable on {table}: {reason}")]
    ChangeTrackingUnavailable { table: String, reason: String },
    #[error("réponse inattendue du serveur / unexpected server answer: {0}")]
    Protocol(String),
    #[error("paramètre / setting: {0}")]
    Config(String),
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] sqlx::Error),
}

impl BatigestError {
    /// Classifies a tiberius error.
    #[must_use]
    pub fn from_tiberius(err: tiberius::error::Error, phase: Phase, ctx: &ErrorContext) -> Self {
        use tiberius::error::Error as E;
        match err {
            E::Io {
                kind: std::io::ErrorKind::TimedOut,
                ..
            } => Self::Timeout {
                phase,
                timeout_ms: ctx.timeout_ms,
            },
            E::Io { message, .. } if phase == Phase::Connect => Self::Unreachable {
                server: ctx.server.clone(),
                detail: message,
            },
            E::Io { message, .. } => Self::ConnectionLost { detail: message },
            E::Tls(detail) => Self::Tls {
                server: ctx.server.clone(),
                detail,
            },
            E::Server(token) => Self::from_server_code(token.code(), token.message(), ctx),
            E::Routing { host, port } => Self::Protocol(format!(
                "redirection vers / redirected to {host}:{port} (Azure SQL gateway not supported)"
            )),
            other => Self::Protocol(other.to_string()),
        }
    }

    /// Classifies an error number the server sent.
    #[must_use]
    pub fn from_server_code(code: u32, message: &str, ctx: &ErrorContext) -> Self {
        match code {
            // 18452: a Windows login from a domain the server does not trust.
            18456 | 18452 => Self::LoginFailed {
                user: ctx.user.clone(),
            },
            // Cannot open the database (4060), it does not exist (911), no access (916).
            4060 | 911 | 916 => Self::DatabaseUnavailable {
                database: ctx.database.clone(),
                user: ctx.user.clone(),
                code,
            },
            3952 => Self::SnapshotIsolationOff,
            229 | 230 | 262 | 300 | 8189 => Self::PermissionDenied {
                code,
                message: message.to_owned(),
            },
            // Deadlock victim, lock timeout, snapshot update conflict, database in
            // transition, session killed, connection closed by the server.
            1205 | 1222 | 3960 | 952 | 40613 | 596 | 233 | 10053 | 10054 => Self::Server {
                code,
                message: message.to_owned(),
                transient: true,
            },
            _ => Self::Server {
                code,
                message: message.to_owned(),
                transient: false,
            },
        }
    }

    /// Worth retrying later (with a fresh connection).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Timeout { .. } | Self::ConnectionLost { .. } => true,
            Self::Server { transient, .. } => *transient,
            Self::Postgres(e) => matches!(e, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ErrorContext {
        ErrorContext {
            server: "srv\\SAGEBAT".into(),
            user: "batisync".into(),
            database: "BTG_DOS_DEMO".into(),
            timeout_ms: 5_000,
        }
    }

    fn io(kind: std::io::ErrorKind) -> tiberius::error::Error {
        tiberius::error::Error::Io {
            kind,
            message: "os error".into(),
        }
    }

    #[test]
    fn io_errors_depend_on_the_phase() {
        let c = ctx();
        let e = BatigestError::from_tiberius(
            io(std::io::ErrorKind::ConnectionRefused),
            Phase::Connect,
            &c,
        );
        assert!(matches!(e, BatigestError::Unreachable { .. }) && e.is_transient());
        assert!(e.to_string().contains("injoignable") && e.to_string().contains("unreachable"));
        let e =
            BatigestError::from_tiberius(io(std::io::ErrorKind::ConnectionReset), Phase::Work, &c);
        assert!(matches!(e, BatigestError::ConnectionLost { .. }) && e.is_transient());
        let e = BatigestError::from_tiberius(io(std::io::ErrorKind::TimedOut), Phase::Work, &c);
        assert!(matches!(
            e,
            BatigestError::Timeout {
                timeout_ms: 5_000,
                ..
            }
        ));
    }

    #[test]
    fn server_codes_map_to_actionable_kinds() {
        let c = ctx();
        let login = BatigestError::from_server_code(18456, "Login failed for user 'batisync'.", &c);
        assert!(matches!(login, BatigestError::LoginFailed { .. }) && !login.is_transient());
        assert!(login.to_string().contains("18456") && login.to_string().contains("mot de passe"));
        let db = BatigestError::from_server_code(4060, "Cannot open database", &c);
        assert!(db.to_string().contains("BTG_DOS_DEMO"));
        let missing = BatigestError::from_server_code(911, "database does not exist", &c);
        assert!(
            matches!(
                missing,
                BatigestError::DatabaseUnavailable { code: 911, .. }
            ),
            "{missing}"
        );
        assert!(missing.to_string().contains("(error 911)"));
        assert!(matches!(
            BatigestError::from_server_code(3952, "", &c),
            BatigestError::SnapshotIsolationOff
        ));
        assert!(matches!(
            BatigestError::from_server_code(229, "denied", &c),
            BatigestError::PermissionDenied { .. }
        ));
        assert!(BatigestError::from_server_code(1205, "deadlock", &c).is_transient());
        assert!(!BatigestError::from_server_code(2627, "duplicate key", &c).is_transient());
    }

    #[test]
    fn tls_errors_explain_the_trust_settings() {
        let e = BatigestError::from_tiberius(
            tiberius::error::Error::Tls("bad cert".into()),
            Phase::Connect,
            &ctx(),
        );
        let text = e.to_string();
        assert!(
            text.contains("trust_ca_path") && text.contains("strict") || text.contains("required"),
            "{text}"
        );
        assert!(!e.is_transient());
    }
}
