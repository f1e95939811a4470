//! The dispatcher handler: applies one chantier event to BatiSimply, idempotently.
//!
//! Upsert: the project is found through `links` (else by `projectCode`, before any
//! create, so a retry after a crash never creates a second project), then created or
//! updated; latest modification wins against edits made in the field app. Delete:
//! the project is archived (or the delete ignored, per `chantiers.on_delete`).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::mapping::{decode_chantier, project_hash, project_json, to_project};
use super::settings::{ChantiersSettings, OnDelete};
use super::store::{self, Link, LinkWrite};
use crate::batigest::FieldError;
use crate::batisimply::{BatisimplyClient, BatisimplyError, NewProject, Project};
use crate::dispatch::{Applied, DispatchError, Handler};
use crate::flows::conflicts::{Conflict, record_conflict};
use crate::flows::db_error;
use crate::outbox::{Event, Operation, Reason, ReasonCode};

/// Applies chantier events to BatiSimply projects.
#[derive(Clone)]
pub struct ChantiersHandler {
    client: BatisimplyClient,
    pool: PgPool,
    settings: Arc<ChantiersSettings>,
}

/// The project an event is about, and whether `links` already knew it.
struct Found {
    project: Project,
    linked: bool,
}

impl Handler for ChantiersHandler {
    fn apply(&self, event: &Event) -> impl Future<Output = Result<Applied, DispatchError>> + Send {
        self.apply_event(event)
    }
}

impl ChantiersHandler {
    /// A handler writing through `client`, remembering projects in `pool`'s `links`.
    #[must_use]
    pub fn new(client: BatisimplyClient, pool: PgPool, settings: Arc<ChantiersSettings>) -> Self {
        Self {
            client,
            pool,
            settings,
        }
    }

    /// Applies one event (see the module documentation).
    ///
    /// # Errors
    /// [`DispatchError::Permanent`] for invalid data or a refusal of the API, naming the
    /// chantier; transient errors for everything worth retrying.
    #[tracing::instrument(skip_all, fields(flow = super::FLOW, key = %event.entity_key, event_id = event.id), err)]
    pub async fn apply_event(&self, event: &Event) -> Result<Applied, DispatchError> {
        match event.operation {
            Operation::Upsert => self.upsert(event).await,
            Operation::Delete => self.delete(event).await,
        }
    }

    async fn upsert(&self, event: &Event) -> Result<Applied, DispatchError> {
        let code = event.entity_key.as_str();
        let invalid = field_error;
        let chantier = decode_chantier(code, &event.payload).map_err(invalid)?;
        let desired = to_project(&chantier, &self.settings).map_err(invalid)?;
        let hash = project_hash(&desired);
        let link = store::load_link(&self.pool, code).await.map_err(db_error)?;
        if link.as_ref().and_then(|l| l.last_hash.as_deref()) == Some(hash.as_str()) {
            return Ok(Applied::new("already applied"));
        }
        let (written, verb) = match self.find(code, link.as_ref()).await? {
            None => self.create(&desired).await?,
            Some(found) if found.project.data == desired => (found.project, "adopted"),
            Some(found) => {
                if let Some(skipped) = self.target_wins(event, &desired, &found, link).await? {
                    return Ok(skipped);
                }
                (self.update(found.project.id, &desired).await?, "updated")
            }
        };
        self.remember(event, &written, &hash).await?;
        Ok(Applied::new(format!("{verb} project {}", written.id)))
    }

    async fn delete(&self, event: &Event) -> Result<Applied, DispatchError> {
        if self.settings.on_delete == OnDelete::Ignore {
            return Ok(Applied::new(
                "ignored delete (chantiers.on_delete = ignore)",
            ));
        }
        let code = event.entity_key.as_str();
        let link = store::load_link(&self.pool, code).await.map_err(db_error)?;
        let Some(found) = self.find(code, link.as_ref()).await? else {
            return Ok(Applied::new("nothing to archive: no project has this code"));
        };
        let mut archived = found.project.data.clone();
        archived.is_archived = Some(true);
        let hash = project_hash(&archived);
        if found.project.data.is_archived == Some(true) {
            self.remember(event, &found.project, &hash).await?;
            return Ok(Applied::new(format!(
                "project {} already archived",
                found.project.id
            )));
        }
        let written = self.update(found.project.id, &archived).await?;
        self.remember(event, &written, &hash).await?;
        Ok(Applied::new(format!("archived project {}", written.id)))
    }

    /// The project of `code`: by the linked id, else by code (a project created by an
    /// attempt that crashed before the ack, or by someone else).
    async fn find(&self, code: &str, link: Option<&Link>) -> Result<Option<Found>, DispatchError> {
        if let Some(id) = link.and_then(Link::project_id) {
            match self.client.get_project(id).await {
                Ok(project) => {
                    return Ok(Some(Found {
                        project,
                        linked: true,
                    }));
                }
                Err(BatisimplyError::Permanent { status: 404, .. }) => {
                    tracing::info!(code, id, "linked project is gone; looking it up by code");
                }
                Err(e) => return Err(api_error(code, e)),
            }
        }
        let found = self.client.find_project_by_code(code).await;
        let found = found.map_err(|e| api_error(code, e))?;
        Ok(found.map(|project| Found {
            project,
            linked: false,
        }))
    }

    /// Creates the project; a "duplicate projectCode" answer means it exists: update it.
    async fn create(&self, desired: &NewProject) -> Result<(Project, &'static str), DispatchError> {
        let code = desired.code.as_str();
        match self.client.create_project(desired).await {
            Ok(project) => Ok((project, "created")),
            Err(BatisimplyError::Permanent { status, message })
                if is_duplicate(status, &message) =>
            {
                let existing = self.client.find_project_by_code_fresh(code).await;
                let Some(existing) = existing.map_err(|e| api_error(code, e))? else {
                    return Err(DispatchError::Transient(format!(
                        "chantier {code:?}: BatiSimply dit le code en double mais ne le liste pas / \
                         BatiSimply reports a duplicate code but does not list it"
                    )));
                };
                Ok((self.update(existing.id, desired).await?, "updated existing"))
            }
            Err(e) => Err(api_error(code, e)),
        }
    }

    async fn update(&self, id: i64, desired: &NewProject) -> Result<Project, DispatchError> {
        let result = self.client.update_project(id, desired).await;
        result.map_err(|e| api_error(&desired.code, e))
    }

    /// Latest modification wins. When BatiSimply changed the project since our last
    /// write, records a conflict; returns the skip outcome when BatiSimply's change is
    /// the newer one and Batigest does not always win.
    async fn target_wins(
        &self,
        event: &Event,
        desired: &NewProject,
        found: &Found,
        link: Option<Link>,
    ) -> Result<Option<Applied>, DispatchError> {
        let ours = link.and_then(|l| l.target_modified_at);
        let theirs = found.project.last_modified;
        let (Some(ours), Some(theirs)) = (ours, theirs) else {
            return Ok(None);
        };
        if !found.linked || theirs <= ours {
            return Ok(None);
        }
        let source_at = event.source_modified_at.unwrap_or(event.captured_at);
        let always = self.settings.batigest_always_wins;
        let (winner, rule) = match (theirs > source_at, always) {
            (true, false) => ("target", "latest_modification_wins"),
            (true, true) => ("source", "batigest_always_wins"),
            (false, _) => ("source", "latest_modification_wins"),
        };
        let conflict = Conflict {
            flow: super::FLOW,
            key: &event.entity_key,
            event_id: event.id,
            winner,
            rule,
            source_modified_at: Some(source_at),
            target_modified_at: Some(theirs),
            source_state: project_json(desired),
            target_state: project_json(&found.project.data),
        };
        record_conflict(&self.pool, &conflict)
            .await
            .map_err(db_error)?;
        Ok((winner == "target").then(|| skipped(theirs, source_at)))
    }

    async fn remember(
        &self,
        event: &Event,
        written: &Project,
        hash: &str,
    ) -> Result<(), DispatchError> {
        let write = LinkWrite {
            code: &event.entity_key,
            project_id: written.id,
            event_id: event.id,
            source_version: &event.source_version,
            hash,
            target_modified_at: written.last_modified,
        };
        store::save_link(&self.pool, &write).await.map_err(db_error)
    }
}

fn skipped(theirs: DateTime<Utc>, source_at: DateTime<Utc>) -> Applied {
    Applied::new(format!(
        "skipped: BatiSimply edited the project at {theirs}, after the Batigest change at {source_at}"
    ))
}

fn is_duplicate(status: u16, message: &str) -> bool {
    let message = message.to_lowercase();
    status == 409 || (status == 400 && (message.contains("exist") || message.contains("duplicate")))
}

/// The one mapping from client errors to dispatch decisions.
fn api_error(code: &str, error: BatisimplyError) -> DispatchError {
    crate::flows::api_error(format!("chantier {code:?}"), code, error)
}

/// A Batigest value that cannot become a project field: too long, or unusable.
fn field_error(error: FieldError) -> DispatchError {
    let reason = match error.max_chars {
        Some(max) => Reason::new(ReasonCode::TooLong).with("max_chars", max),
        None => Reason::new(ReasonCode::InvalidData),
    };
    let reason = reason
        .with("key", error.code.as_str())
        .with("field", error.field);
    DispatchError::permanent(reason, error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_map_to_one_dispatch_decision_each() {
        let permanent = BatisimplyError::Permanent {
            status: 422,
            message: "bad".into(),
        };
        assert!(
            matches!(api_error("1", permanent), DispatchError::Permanent { reason, message }
                if message.contains("\"1\"") && reason.code == ReasonCode::Refused
                    && reason.int("status") == Some(422))
        );
        let limited = BatisimplyError::RateLimited {
            retry_after: Some(std::time::Duration::from_secs(2)),
        };
        assert!(matches!(
            api_error("1", limited),
            DispatchError::RateLimited {
                retry_after: Some(_),
                ..
            }
        ));
        let auth = BatisimplyError::Auth {
            status: Some(401),
            message: "check client_id".into(),
        };
        assert!(
            matches!(api_error("1", auth), DispatchError::Credentials(m) if m.contains("client_id"))
        );
    }

    #[test]
    fn duplicates_are_409_or_a_400_saying_so() {
        assert!(is_duplicate(409, ""));
        assert!(is_duplicate(400, "projectCode already exists: 1"));
        assert!(!is_duplicate(400, "Invalid id"));
        assert!(!is_duplicate(422, "already exists"));
    }
}
