//! The dispatcher handler: applies one time-slot event to the `SuiviMO` ledger,
//! idempotently, through a [`LedgerWriter`] (SQL Server, or the simulated ledger).
//!
//! - A validated slot is written: employee through `Salarie.codebs`, chantier through
//!   `projectCode` only; the previous row of the slot (from `links`) is updated in place,
//!   moved, or the row inserted; never two rows for one slot.
//! - A slot no longer validated, or deleted, has its row removed (or kept, per
//!   `heures.on_unvalidated`).
//! - Latest modification wins: a row edited in Batigest is overwritten only when the
//!   slot changed after the latest known change of that row (batisync's write, or the
//!   moment batisync found the Batigest edit); `SuiviMO` keeps no edit time, so an edit
//!   made after our write but before a later slot change counts as older than that
//!   change. Every such decision is recorded in `batisync.conflicts`.
//! - Unmapped employee, unknown chantier, two slots on one `SuiviMO` key: dead letter
//!   with the fix in French and English; the first two are re-driven automatically once
//!   the missing link appears (see [`super::redrive`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::json;
use sqlx::PgPool;

use super::FLOW;
use super::batigest::{EmployeeDirectory, EmployeeSource};
use super::settings::{HeuresSettings, OnUnvalidated};
use super::slot::{SlotPayload, key_text, ledger_row, local_minute};
use super::store::{self, SlotLink};
use crate::batigest::EmployeeLookupError;
use crate::batigest::ledger::{
    Conflict as LedgerConflict, Decision, LedgerError, LedgerRow, LedgerWriter, SlotRemoval,
    SlotWrite, WriteReport,
};
use crate::batisimply::{BatisimplyClient, BatisimplyError};
use crate::dispatch::{Applied, DispatchError, Handler};
use crate::flows::conflicts::{Conflict, record_conflict};
use crate::flows::{api_error, db_error};
use crate::outbox::{Event, Operation, Reason, ReasonCode};

/// Start of the message of a slot whose user has no employee (its reason is
/// [`ReasonCode::EmployeeUnmapped`]).
const UNMAPPED_EMPLOYEE: &str = "salarié introuvable / unknown employee";
/// Start of the message of a slot whose project has no chantier code (its reason is
/// [`ReasonCode::UnknownChantier`]).
const UNKNOWN_CHANTIER: &str = "chantier introuvable / unknown chantier";

/// How long a project code read from the API is reused.
const PROJECT_CODE_TTL: Duration = Duration::from_secs(300);

/// Applies time-slot events to the ledger.
pub struct HeuresHandler<L, E> {
    ledger: Arc<L>,
    employees: Arc<EmployeeDirectory<E>>,
    codes: ProjectCodes,
    pool: PgPool,
    settings: Arc<HeuresSettings>,
    zone: Tz,
}

impl<L: LedgerWriter + 'static, E: EmployeeSource> Handler for HeuresHandler<L, E> {
    fn apply(&self, event: &Event) -> impl Future<Output = Result<Applied, DispatchError>> + Send {
        self.apply_event(event)
    }
}

impl<L: LedgerWriter, E: EmployeeSource> HeuresHandler<L, E> {
    /// A handler writing to `ledger`.
    ///
    /// # Errors
    /// The configured time zone is unknown (also refused by settings validation).
    pub fn new(
        ledger: Arc<L>,
        employees: Arc<EmployeeDirectory<E>>,
        client: BatisimplyClient,
        pool: PgPool,
        settings: Arc<HeuresSettings>,
    ) -> anyhow::Result<Self> {
        let zone = settings.tz().map_err(anyhow::Error::msg)?;
        Ok(Self {
            ledger,
            employees,
            codes: ProjectCodes::new(client, pool.clone()),
            pool,
            settings,
            zone,
        })
    }

    /// Applies one event (see the module documentation).
    ///
    /// # Errors
    /// [`DispatchError::Permanent`] naming the slot and the fix; transient errors for
    /// anything worth retrying (servers unreachable, locks).
    #[tracing::instrument(skip_all, fields(flow = FLOW, slot = %event.entity_key, event_id = event.id), err)]
    pub async fn apply_event(&self, event: &Event) -> Result<Applied, DispatchError> {
        let slot_id = event.entity_key.as_str();
        match event.operation {
            Operation::Delete => {
                self.remove(event, "supprimé dans BatiSimply / deleted")
                    .await
            }
            Operation::Upsert => {
                let slot: SlotPayload =
                    serde_json::from_value(event.payload.clone()).map_err(|e| {
                        DispatchError::permanent(
                            Reason::new(ReasonCode::InvalidData).with("key", slot_id),
                            format!(
                                "créneau {slot_id} : contenu illisible / unreadable payload: {e}"
                            ),
                        )
                    })?;
                if slot.is_validated() {
                    self.write(event, &slot).await
                } else {
                    let status = slot.status.as_deref().unwrap_or("absent");
                    let reason = format!("n'est plus validé / not validated ({status})");
                    self.remove(event, &reason).await
                }
            }
        }
    }

    /// When the slot last changed: its `lastModifiedDate` when sent, else capture time.
    fn slot_changed_at(event: &Event, slot: Option<&SlotPayload>) -> DateTime<Utc> {
        slot.and_then(|s| s.last_modified)
            .or(event.source_modified_at)
            .unwrap_or(event.captured_at)
    }

    /// Overwrite a Batigest edit only when the slot changed after the row's latest known
    /// change (or when BatiSimply always wins).
    fn slot_is_newer(&self, link: Option<&SlotLink>, slot_changed_at: DateTime<Utc>) -> bool {
        self.settings.batisimply_always_wins
            || link.is_some_and(|l| slot_changed_at > l.row_changed_at)
    }

    /// The row this slot must have: employee and chantier resolved, key validated later
    /// by the writer.
    async fn target_row(&self, slot: &SlotPayload) -> Result<LedgerRow, DispatchError> {
        let local = local_minute(slot.start, self.zone, self.settings.minute_rounding);
        let employees =
            self.employees.get().await.map_err(|e| {
                DispatchError::Transient(format!("Salarie (map of employees): {e}"))
            })?;
        let employee = employees.lookup(&slot.user_id).map_err(|e| {
            let (what, reason) = match &e {
                EmployeeLookupError::Unmapped { user_id } => (
                    UNMAPPED_EMPLOYEE,
                    Reason::new(ReasonCode::EmployeeUnmapped).with("user_id", user_id.as_str()),
                ),
                EmployeeLookupError::Ambiguous { user_id, codes } => (
                    "salarié ambigu / ambiguous employee",
                    Reason::new(ReasonCode::EmployeeAmbiguous)
                        .with("user_id", user_id.as_str())
                        .with("employees", codes.clone()),
                ),
            };
            let message = format!("{what}: créneau / slot {} du {local}: {e}", slot.id);
            DispatchError::permanent(reason.with("slot_id", slot.id.as_str()), message)
        })?;
        let chantier = self.codes.code_of(slot).await?;
        Ok(ledger_row(
            slot,
            employee,
            &chantier,
            self.zone,
            self.settings.minute_rounding,
        ))
    }

    async fn write(&self, event: &Event, slot: &SlotPayload) -> Result<Applied, DispatchError> {
        let row = self.target_row(slot).await?;
        let key = key_text(&row.key);
        if let Some(other) = store::slot_at_key(&self.pool, &key, &slot.id)
            .await
            .map_err(db_error)?
        {
            return Err(collision(&slot.id, &key, Some(&other)));
        }
        let link = store::load_link(&self.pool, &slot.id)
            .await
            .map_err(db_error)?;
        let changed_at = Self::slot_changed_at(event, Some(slot));
        let newer = self.slot_is_newer(link.as_ref(), changed_at);
        let write = SlotWrite {
            slot_id: slot.id.clone(),
            previous: link.as_ref().and_then(|l| l.row.clone()),
            row: row.clone(),
            overwrite_batigest_edits: newer,
        };
        let report = self.ledger.apply(&write).await.map_err(ledger_error)?;
        match report.decision {
            Decision::Insert | Decision::Update | Decision::Move | Decision::Unchanged => {
                if report.edited_in_batigest && report.wrote() {
                    self.conflict(event, link.as_ref(), changed_at, Some(&row), "source")
                        .await?;
                }
                store::save_link(
                    &self.pool,
                    &slot.id,
                    event.id,
                    &event.source_version,
                    Some(&row),
                    Utc::now(),
                )
                .await
                .map_err(db_error)?;
                Ok(Applied::new(written_summary(&report, &key)))
            }
            Decision::Conflict(
                LedgerConflict::EditedInBatigest(_) | LedgerConflict::DeletedInBatigest,
            ) => {
                self.conflict(event, link.as_ref(), changed_at, Some(&row), "target")
                    .await?;
                store::note_batigest_edit(&self.pool, &slot.id, Utc::now())
                    .await
                    .map_err(db_error)?;
                Ok(Applied::new(
                    "ligne modifiée dans Batigest conservée / Batigest edit kept (conflict recorded)",
                ))
            }
            Decision::Conflict(LedgerConflict::ForeignRow(_) | LedgerConflict::KeyOccupied(_)) => {
                Err(collision(&slot.id, &key, None))
            }
            Decision::Conflict(LedgerConflict::DuplicateRows(n)) => {
                Err(duplicates(&slot.id, &key, n))
            }
            Decision::Delete | Decision::AlreadyGone => {
                Err(unexpected(&slot.id, &format!("{:?}", report.decision)))
            }
        }
    }

    async fn remove(&self, event: &Event, reason: &str) -> Result<Applied, DispatchError> {
        let slot_id = event.entity_key.as_str();
        let link = store::load_link(&self.pool, slot_id)
            .await
            .map_err(db_error)?;
        let Some(previous) = link.as_ref().and_then(|l| l.row.clone()) else {
            return Ok(Applied::new(format!(
                "{reason}: rien d'écrit pour ce créneau / nothing written for this slot"
            )));
        };
        let key = key_text(&previous.key);
        if self.settings.on_unvalidated == OnUnvalidated::Keep {
            tracing::info!(slot = slot_id, %key, reason, "slot row kept (heures.on_unvalidated = keep)");
            return Ok(Applied::new(format!(
                "{reason}: ligne {key} conservée (on_unvalidated = keep) / row kept"
            )));
        }
        let slot: Option<SlotPayload> = serde_json::from_value(event.payload.clone()).ok();
        let changed_at = Self::slot_changed_at(event, slot.as_ref());
        let removal = SlotRemoval {
            slot_id: slot_id.to_owned(),
            previous,
            overwrite_batigest_edits: self.slot_is_newer(link.as_ref(), changed_at),
        };
        let report = self.ledger.remove(&removal).await.map_err(ledger_error)?;
        match report.decision {
            Decision::Delete | Decision::AlreadyGone => {
                if report.edited_in_batigest && report.wrote() {
                    self.conflict(event, link.as_ref(), changed_at, None, "source")
                        .await?;
                }
                store::save_link(
                    &self.pool,
                    slot_id,
                    event.id,
                    &event.source_version,
                    None,
                    Utc::now(),
                )
                .await
                .map_err(db_error)?;
                let done = if report.decision == Decision::Delete {
                    "ligne supprimée / row removed"
                } else {
                    "ligne déjà absente / row already gone"
                };
                Ok(Applied::new(format!("{reason}: {done} ({key})")))
            }
            Decision::Conflict(LedgerConflict::EditedInBatigest(_)) => {
                self.conflict(event, link.as_ref(), changed_at, None, "target")
                    .await?;
                store::note_batigest_edit(&self.pool, slot_id, Utc::now())
                    .await
                    .map_err(db_error)?;
                Ok(Applied::new(format!(
                    "{reason}: ligne modifiée dans Batigest conservée / Batigest edit kept ({key})"
                )))
            }
            Decision::Conflict(LedgerConflict::DuplicateRows(n)) => {
                Err(duplicates(slot_id, &key, n))
            }
            other => Err(unexpected(slot_id, &format!("{other:?}"))),
        }
    }

    /// Records a latest-modification-wins decision against a Batigest edit.
    async fn conflict(
        &self,
        event: &Event,
        link: Option<&SlotLink>,
        slot_changed_at: DateTime<Utc>,
        wanted: Option<&LedgerRow>,
        winner: &'static str,
    ) -> Result<(), DispatchError> {
        let rule = match (winner, self.settings.batisimply_always_wins) {
            ("source", true) => "batisimply_always_wins",
            ("source", false) => "latest_modification_wins: slot changed after the row",
            _ => "latest_modification_wins: Batigest edit newer than the slot's change",
        };
        let conflict = Conflict {
            flow: FLOW,
            key: &event.entity_key,
            event_id: event.id,
            winner,
            rule,
            source_modified_at: Some(slot_changed_at),
            target_modified_at: link.map(|l| l.row_changed_at),
            source_state: json!({ "slot": event.payload, "row": wanted }),
            target_state: json!({ "last_written": link.and_then(|l| l.row.as_ref()) }),
        };
        record_conflict(&self.pool, &conflict)
            .await
            .map_err(db_error)
    }
}

fn written_summary(report: &WriteReport, key: &str) -> String {
    let what = match report.decision {
        Decision::Insert => "ligne ajoutée / row inserted",
        Decision::Update => "ligne mise à jour / row updated",
        Decision::Move => "ligne déplacée / row moved",
        _ => "ligne déjà à jour / row already up to date",
    };
    format!("{what}: {key}")
}

fn collision(slot_id: &str, key: &str, other_slot: Option<&str>) -> DispatchError {
    let owner = other_slot.map_or_else(
        || "une ligne SuiviMO existante / an existing SuiviMO row".to_owned(),
        |other| format!("le créneau / slot {other}"),
    );
    let reason = Reason::new(ReasonCode::SuivimoCollision)
        .with("slot_id", slot_id)
        .with("row_key", key)
        .with("other_slot", other_slot);
    DispatchError::permanent(
        reason,
        format!(
            "collision: créneau / slot {slot_id} et {owner} donnent la même ligne SuiviMO \
         (chantier|salarié|date) {key} ; corriger l'un des deux dans BatiSimply, ou la ligne \
         dans Batigest, puis relancer / map to the same SuiviMO row: fix one of them, then \
         re-drive"
        ),
    )
}

fn duplicates(slot_id: &str, key: &str, rows: usize) -> DispatchError {
    let reason = Reason::new(ReasonCode::SuivimoDuplicates)
        .with("slot_id", slot_id)
        .with("row_key", key)
        .with("rows", rows);
    DispatchError::permanent(
        reason,
        format!(
            "créneau / slot {slot_id}: {rows} lignes SuiviMO pour la clé {key} ; n'en garder qu'une \
         dans Batigest puis relancer / {rows} SuiviMO rows share this key: keep one, then re-drive"
        ),
    )
}

fn ledger_error(error: LedgerError) -> DispatchError {
    if error.is_transient() {
        DispatchError::Transient(error.to_string())
    } else {
        let reason = match &error {
            LedgerError::InvalidRow { slot_id, .. } => {
                Reason::new(ReasonCode::InvalidData).with("key", slot_id.as_str())
            }
            LedgerError::Server(_) => Reason::new(ReasonCode::Refused),
        };
        DispatchError::permanent(reason, error.to_string())
    }
}

/// A ledger decision the handler did not ask for (a defect, kept as a dead letter).
fn unexpected(slot_id: &str, decision: &str) -> DispatchError {
    DispatchError::permanent(
        Reason::new(ReasonCode::Other)
            .with("key", slot_id)
            .with("decision", decision),
        format!("créneau {slot_id}: décision inattendue / unexpected decision {decision}"),
    )
}

/// Project id → chantier code, for slots sent without `projectCode`: the chantiers
/// flow's `links` first, then the project read from the API (cached). A BatiSimply id is
/// never used as a chantier code.
struct ProjectCodes {
    client: BatisimplyClient,
    pool: PgPool,
    cache: Mutex<HashMap<i64, (Instant, String)>>,
}

impl ProjectCodes {
    fn new(client: BatisimplyClient, pool: PgPool) -> Self {
        Self {
            client,
            pool,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, id: i64) -> Option<String> {
        let cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache
            .get(&id)
            .filter(|(at, _)| at.elapsed() < PROJECT_CODE_TTL)
            .map(|(_, code)| code.clone())
    }

    async fn code_of(&self, slot: &SlotPayload) -> Result<String, DispatchError> {
        if let Some(code) = slot.project_code() {
            return Ok(code.to_owned());
        }
        let id = slot.project_id;
        if let Some(code) = self.cached(id) {
            return Ok(code);
        }
        let linked: Option<String> = sqlx::query_scalar(
            "SELECT source_key FROM batisync.links WHERE flow = $1 AND target_id = $2 LIMIT 1",
        )
        .bind(crate::flows::chantiers::FLOW)
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        let code = match linked {
            Some(code) => Some(code),
            None => match self.client.get_project(id).await {
                Ok(project) => Some(project.data.code.trim().to_owned()).filter(|c| !c.is_empty()),
                Err(BatisimplyError::Permanent { status: 404, .. }) => None,
                Err(e) => {
                    return Err(api_error(
                        format!("créneau / slot {}", slot.id),
                        &slot.id,
                        e,
                    ));
                }
            },
        };
        let Some(code) = code else {
            let reason = Reason::new(ReasonCode::UnknownChantier)
                .with("project_id", id)
                .with("slot_id", slot.id.as_str());
            return Err(DispatchError::permanent(
                reason,
                format!(
                    "{UNKNOWN_CHANTIER}: créneau / slot {} : le projet BatiSimply {id} n'a pas de \
                 projectCode (code chantier Batigest) ; le renseigner dans BatiSimply / \
                 BatiSimply project {id} has no projectCode: set it to the Batigest chantier code",
                    slot.id
                ),
            ));
        };
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, (Instant::now(), code.clone()));
        Ok(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(e: &DispatchError) -> &Reason {
        e.reason().expect("a permanent refusal")
    }

    #[test]
    fn ledger_refusals_carry_their_reason_and_its_parameters() {
        let collided = collision("7", "CH|SAL|2026-11-02 08:00", Some("8"));
        assert_eq!(reason(&collided).code, ReasonCode::SuivimoCollision);
        assert_eq!(reason(&collided).text("other_slot"), Some("8"));
        assert_eq!(
            reason(&collided).text("row_key"),
            Some("CH|SAL|2026-11-02 08:00")
        );
        let doubled = duplicates("7", "CH|SAL|2026-11-02 08:00", 2);
        assert_eq!(reason(&doubled).code, ReasonCode::SuivimoDuplicates);
        assert_eq!(reason(&doubled).int("rows"), Some(2));
        let invalid = ledger_error(LedgerError::InvalidRow {
            slot_id: "7".into(),
            message: "NbH0 out of range".into(),
        });
        assert_eq!(reason(&invalid).code, ReasonCode::InvalidData);
    }
}
