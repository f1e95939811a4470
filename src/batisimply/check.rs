//! Connectivity check used by `batisync check`.

use std::fmt;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::client::BatisimplyClient;
use super::error::{BatisimplyError, TransientKind};

/// A step of the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStep {
    /// A token was obtained.
    Token,
    /// One project could be listed.
    ListProject,
    /// The last hour of time slots could be read.
    ReadTimeSlots,
}

/// Result of one step.
#[derive(Debug, Clone)]
pub struct StepResult {
    /// Which step.
    pub step: CheckStep,
    /// `None` on success, else an actionable French / English message.
    pub failure: Option<String>,
    /// Time spent on the step.
    pub elapsed: Duration,
}

/// Results of every step run (steps after a failed token step are skipped).
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Steps in order.
    pub steps: Vec<StepResult>,
}

impl CheckReport {
    /// True when every step succeeded.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.steps.iter().all(|s| s.failure.is_none())
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for step in &self.steps {
            let status = step.failure.as_deref().unwrap_or("OK");
            writeln!(
                f,
                "{:<14} {:>6} ms  {status}",
                format!("{:?}", step.step),
                step.elapsed.as_millis()
            )?;
        }
        Ok(())
    }
}

impl BatisimplyClient {
    /// Checks token, project list (`size=1`) and a one-hour time-slot read.
    pub async fn check(&self) -> CheckReport {
        let mut report = CheckReport::default();
        let token = timed(CheckStep::Token, self.authenticate()).await;
        let token_ok = token.failure.is_none();
        report.steps.push(token);
        if !token_ok {
            return report;
        }
        let list = async { self.project_page(0, 1).await.map(|_| ()) };
        report.steps.push(timed(CheckStep::ListProject, list).await);
        let now = Utc::now();
        let slots = async {
            self.list_time_slots(now - chrono::Duration::hours(1), now)
                .await
                .map(|_| ())
        };
        report
            .steps
            .push(timed(CheckStep::ReadTimeSlots, slots).await);
        report
    }
}

async fn timed(
    step: CheckStep,
    work: impl Future<Output = Result<(), BatisimplyError>>,
) -> StepResult {
    let started = Instant::now();
    let failure = work.await.err().map(|e| explain(&e));
    StepResult {
        step,
        failure,
        elapsed: started.elapsed(),
    }
}

/// Turns an error into an actionable French / English message.
#[must_use]
pub fn explain(err: &BatisimplyError) -> String {
    let advice = match err {
        BatisimplyError::Transient {
            kind: TransientKind::Connect,
            ..
        } => {
            "Serveur injoignable : vérifiez l'URL, le DNS et le pare-feu / Server unreachable: check the URL, DNS and firewall"
        }
        BatisimplyError::Transient {
            kind: TransientKind::Tls,
            ..
        } => {
            "Problème TLS : certificat ou proxy HTTPS à vérifier / TLS problem: check the certificate or HTTPS proxy"
        }
        BatisimplyError::Transient {
            kind: TransientKind::Timeout,
            ..
        } => {
            "Délai dépassé : réseau lent ou serveur surchargé / Timed out: slow network or overloaded server"
        }
        BatisimplyError::Permanent { status: 404, .. } => {
            "Adresse introuvable (404) : vérifiez api_base_url / Not found (404): check api_base_url"
        }
        BatisimplyError::Auth { message, .. } => return message.clone(),
        _ => "Erreur BatiSimply / BatiSimply error",
    };
    format!("{advice} ({err})")
}
