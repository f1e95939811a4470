//! Automatic re-drive: a slot dead-lettered because its user had no employee, or its
//! project no chantier code, goes back to the queue as soon as the missing link exists
//! (someone filled `Salarie.codebs`, or the project got its `projectCode`). Checked by
//! the poller after each refresh of the employee map; nobody has to click anything.

use std::collections::HashSet;

use serde_json::Value;
use sqlx::PgPool;

use super::FLOW;
use super::slot::SlotPayload;
use crate::batigest::EmployeeMap;
use crate::batisimply::BatisimplyClient;
use crate::outbox::{Outbox, OutboxError, ReasonCode};

/// Dead letters looked at per pass.
const PASS_LIMIT: i64 = 1_000;

/// Re-drives the dead letters whose missing link now exists; returns how many.
///
/// # Errors
/// Database errors. A failing project listing only skips the chantier part.
pub async fn redrive_resolved(
    outbox: &Outbox,
    employees: &EmployeeMap,
    client: &BatisimplyClient,
) -> Result<usize, OutboxError> {
    let pool = outbox.pool();
    let dead: Vec<(i64, String, Value)> = sqlx::query_as(
        "SELECT o.id, d.reason, o.payload
           FROM batisync.dead_events d JOIN batisync.outbox o ON o.id = d.event_id
          WHERE d.flow = $1 AND d.reason = ANY($2)
          ORDER BY d.event_id
          LIMIT $3",
    )
    .bind(FLOW)
    .bind([
        ReasonCode::EmployeeUnmapped.as_str(),
        ReasonCode::UnknownChantier.as_str(),
    ])
    .bind(PASS_LIMIT)
    .fetch_all(pool)
    .await?;
    if dead.is_empty() {
        return Ok(0);
    }
    let codes = ProjectCodeIndex::load(pool, client, &dead).await?;
    let ready: Vec<i64> = dead
        .into_iter()
        .filter_map(|(id, reason, payload)| {
            let slot: SlotPayload = serde_json::from_value(payload).ok()?;
            let resolved = if ReasonCode::parse(&reason) == ReasonCode::EmployeeUnmapped {
                employees.lookup(&slot.user_id).is_ok()
            } else {
                slot.project_code().is_some() || codes.knows(slot.project_id)
            };
            resolved.then_some(id)
        })
        .collect();
    if ready.is_empty() {
        return Ok(0);
    }
    let report = outbox.redrive(&ready).await?;
    tracing::info!(
        flow = FLOW,
        requeued = report.requeued.len(),
        superseded = report.superseded.len(),
        "dead letters re-driven: their employee or chantier is now known"
    );
    Ok(report.requeued.len())
}

/// Which BatiSimply projects have a chantier code now (only read when a dead letter
/// needs it).
struct ProjectCodeIndex {
    known: HashSet<i64>,
}

impl ProjectCodeIndex {
    async fn load(
        pool: &PgPool,
        client: &BatisimplyClient,
        dead: &[(i64, String, Value)],
    ) -> Result<Self, OutboxError> {
        let mut known = HashSet::new();
        let unknown = ReasonCode::UnknownChantier.as_str();
        if !dead.iter().any(|(_, reason, _)| reason == unknown) {
            return Ok(Self { known });
        }
        let linked: Vec<String> = sqlx::query_scalar(
            "SELECT target_id FROM batisync.links WHERE flow = $1 AND target_id IS NOT NULL",
        )
        .bind(crate::flows::chantiers::FLOW)
        .fetch_all(pool)
        .await?;
        known.extend(linked.iter().filter_map(|id| id.parse::<i64>().ok()));
        match client.list_projects().await {
            Ok(listing) => known.extend(
                listing
                    .records
                    .iter()
                    .filter(|p| !p.data.code.trim().is_empty())
                    .map(|p| p.id),
            ),
            Err(error) => {
                tracing::warn!(flow = FLOW, %error, "cannot list BatiSimply projects; chantier dead letters wait for the next pass");
            }
        }
        Ok(Self { known })
    }

    fn knows(&self, project_id: i64) -> bool {
        self.known.contains(&project_id)
    }
}
