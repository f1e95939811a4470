//! The SQL Server step of `batisync check`: connection, TLS, login, database, mapped
//! columns, Change Tracking per table and permissions, each with a French / English
//! message saying what to fix.

use std::fmt;

use super::capture::strategy_summary;
use super::error::BatigestError;
use super::pool::{Pool, connect};
use super::read::read_ct_state;
use super::schema::{Mapping, load_server_columns, verify_mapping};
use super::settings::{BatigestSettings, Encryption};
use super::tsql;

/// One checked item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckStep {
    /// What was checked (`connection`, `tls`, `columns`, `change_tracking dbo.Salarie`...).
    pub name: String,
    /// `None` when fine, else what to do.
    pub failure: Option<String>,
    /// What was found (version, strategy, warnings).
    pub detail: String,
}

/// Every step run; steps after a failed connection are not run.
#[derive(Debug, Clone, Default)]
pub struct SqlServerCheck {
    pub steps: Vec<CheckStep>,
}

impl SqlServerCheck {
    /// True when every step succeeded.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.steps.iter().all(|s| s.failure.is_none())
    }

    fn push(&mut self, name: impl Into<String>, result: Result<String, String>) {
        let (failure, detail) = match result {
            Ok(detail) => (None, detail),
            Err(failure) => (Some(failure), String::new()),
        };
        self.steps.push(CheckStep {
            name: name.into(),
            failure,
            detail,
        });
    }
}

impl fmt::Display for SqlServerCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for step in &self.steps {
            match &step.failure {
                None => writeln!(f, "{:<32} OK  {}", step.name, step.detail)?,
                Some(failure) => writeln!(f, "{:<32} ÉCHEC / FAILED  {failure}", step.name)?,
            }
        }
        Ok(())
    }
}

/// The connection steps a connect error lets through, and the one it fails.
fn connection_steps(err: &BatigestError) -> (usize, &'static str) {
    match err {
        BatigestError::Tls { .. } => (1, "tls"),
        BatigestError::LoginFailed { .. } => (2, "login"),
        BatigestError::DatabaseUnavailable { .. } => (3, "database"),
        _ => (0, "connection"),
    }
}

const CONNECTION_STEPS: [&str; 3] = ["connection", "tls", "login"];

fn tls_detail(s: &BatigestSettings) -> String {
    let trust = match (&s.trust_ca_path, s.trust_server_certificate) {
        (Some(ca), _) => format!("CA {}", ca.display()),
        (None, true) => "tout certificat accepté / any certificate accepted".into(),
        (None, false) => "certificats du système / system trust store".into(),
    };
    match s.encryption {
        Encryption::Strict => format!("TDS 8.0 strict, {trust}"),
        Encryption::Required => format!("TLS requis / required, {trust}"),
        Encryption::Off => "NON CHIFFRÉ / NOT ENCRYPTED (login only): loopback tests only".into(),
    }
}

/// Runs every step against the configured server.
pub async fn check_sqlserver(settings: &BatigestSettings) -> SqlServerCheck {
    let mut report = SqlServerCheck::default();
    let mut client = match connect(settings).await {
        Ok(client) => client,
        Err(e) => {
            let (passed, failed) = connection_steps(&e);
            for name in CONNECTION_STEPS.iter().take(passed) {
                report.push(*name, Ok(String::new()));
            }
            report.push(failed, Err(e.to_string()));
            return report;
        }
    };
    report.push("connection", Ok(super::pool::server_label(settings)));
    report.push("tls", Ok(tls_detail(settings)));
    report.push("login", Ok(settings.user.clone()));
    let session = match client.simple_query(tsql::SESSION_INFO).await {
        Ok(stream) => stream.into_row().await.ok().flatten(),
        Err(_) => None,
    };
    let detail = session.map_or_else(String::new, |row| {
        let db = row.get::<&str, _>(0).unwrap_or_default().to_owned();
        format!(
            "{db}, SQL Server {}",
            row.get::<&str, _>(1).unwrap_or_default()
        )
    });
    report.push("database", Ok(detail));
    drop(client);

    let pool = Pool::new(BatigestSettings {
        pool_size: 1,
        max_attempts: 1,
        ..settings.clone()
    });
    let Some(mapping) = check_columns(&pool, &mut report).await else {
        return report;
    };
    for (spec, setting) in [
        (&mapping.chantier, settings.chantier.capture),
        (&mapping.salarie, settings.salarie.capture),
    ] {
        let result = read_ct_state(&pool, &spec.table.quoted())
            .await
            .map_err(|e| e.to_string());
        let step = result.and_then(|state| strategy_summary(setting, &state));
        report.push(format!("change_tracking {}", spec.table), step);
    }
    report.push("permissions", check_permissions(&pool, &mapping).await);
    report
}

async fn check_columns(pool: &Pool, report: &mut SqlServerCheck) -> Option<Mapping> {
    let columns = match load_server_columns(pool).await {
        Ok(columns) => columns,
        Err(e) => {
            report.push("columns", Err(e.to_string()));
            return None;
        }
    };
    match verify_mapping(pool.settings(), &columns) {
        Ok(mapping) => {
            let warnings: Vec<String> = mapping.warnings.iter().map(ToString::to_string).collect();
            report.push("columns", Ok(warnings.join("; ")));
            Some(mapping)
        }
        Err(problems) => {
            let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
            report.push("columns", Err(lines.join("; ")));
            None
        }
    }
}

async fn check_permissions(pool: &Pool, mapping: &Mapping) -> Result<String, String> {
    let names = [
        mapping.chantier.table.quoted(),
        mapping.salarie.table.quoted(),
        mapping.ledger.table.quoted(),
    ];
    let row = async {
        let mut conn = pool.get().await?;
        let rows = pool
            .fetch(
                conn.client(),
                tsql::PERMISSIONS,
                &[&names[0], &names[1], &names[2]],
            )
            .await?;
        conn.release();
        rows.into_iter()
            .next()
            .ok_or_else(|| BatigestError::Protocol("no row".into()))
    }
    .await
    .map_err(|e| e.to_string())?;
    let labels = [
        format!("SELECT {}", mapping.chantier.table),
        format!("SELECT {}", mapping.salarie.table),
        format!("SELECT {}", mapping.ledger.table),
        format!("INSERT {}", mapping.ledger.table),
        format!("UPDATE {}", mapping.ledger.table),
        format!("DELETE {}", mapping.ledger.table),
    ];
    let missing: Vec<&str> = labels
        .iter()
        .enumerate()
        .filter(|(i, _)| row.get::<i32, _>(*i) != Some(1))
        .map(|(_, label)| label.as_str())
        .collect();
    if missing.is_empty() {
        Ok(labels.join(", "))
    } else {
        Err(format!(
            "droits manquants / missing permissions: {}; exécuter / run \
             sql/mssql/create_batisync_login.sql",
            missing.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_errors_fail_the_right_step() {
        let login = BatigestError::LoginFailed { user: "u".into() };
        assert_eq!(connection_steps(&login), (2, "login"));
        let tls = BatigestError::Tls {
            server: "s".into(),
            detail: "d".into(),
        };
        assert_eq!(connection_steps(&tls), (1, "tls"));
        let down = BatigestError::Unreachable {
            server: "s".into(),
            detail: "d".into(),
        };
        assert_eq!(connection_steps(&down), (0, "connection"));
    }

    #[test]
    fn unencrypted_connections_are_called_out() {
        let s = BatigestSettings {
            encryption: Encryption::Off,
            ..BatigestSettings::default()
        };
        assert!(tls_detail(&s).contains("NOT ENCRYPTED"));
    }

    #[tokio::test]
    async fn an_unreachable_server_fails_the_connection_step_only() {
        let s = BatigestSettings {
            host: "127.0.0.1".into(),
            port: Some(9),
            database: "BTG".into(),
            connect_timeout_ms: 2_000,
            ..BatigestSettings::default()
        };
        let report = check_sqlserver(&s).await;
        assert_eq!(report.steps.len(), 1);
        assert!(!report.is_ok());
        let text = report.to_string();
        assert!(
            text.starts_with("connection") && text.contains("unreachable"),
            "{text}"
        );
    }
}
