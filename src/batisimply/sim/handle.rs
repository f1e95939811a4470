//! Handle on a running simulator: URLs, admin methods, counters, shutdown.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::data::{SimReject, slot_for};
use super::faults::Faults;
use super::state::SimState;
use crate::batisimply::api::WireId;
use crate::batisimply::model::{
    FromWire, ManagementStatus, NewProject, Project, ProjectId, TimeSlot,
};

/// Counters of a simulator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Requests per `METHOD /route` (admin routes excluded).
    pub routes: BTreeMap<String, u64>,
    /// 429 answers served.
    pub served_429: u64,
    /// 401 answers served by the API routes.
    pub served_401: u64,
    /// Access tokens issued.
    pub tokens_issued: u64,
    /// TCP connections accepted.
    pub connections: u64,
}

/// A running simulator; stops when [`SimHandle::shutdown`] is called or on drop.
pub struct SimHandle {
    /// Base URL of the API.
    pub base_url: String,
    /// Base URL of the SSO (same server).
    pub sso_url: String,
    state: Arc<SimState>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

fn to_project(wire: crate::batisimply::api::WireProject) -> Option<Project> {
    Project::from_wire(wire, None).ok()
}

impl SimHandle {
    pub(crate) fn new(
        base_url: String,
        state: Arc<SimState>,
        shutdown: CancellationToken,
        task: JoinHandle<()>,
    ) -> Self {
        Self {
            sso_url: base_url.clone(),
            base_url,
            state,
            shutdown,
            task: Some(task),
        }
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Current faults.
    #[must_use]
    pub fn faults(&self) -> Faults {
        self.state.faults()
    }

    /// Replaces the faults.
    pub fn set_faults(&self, faults: Faults) {
        self.state.set_faults(faults);
    }

    /// Changes the faults in place.
    pub fn update_faults(&self, change: impl FnOnce(&mut Faults)) {
        let mut faults = self.state.faults();
        change(&mut faults);
        self.state.set_faults(faults);
    }

    /// Revokes every token (the next API call gets a 401).
    pub fn revoke_tokens(&self) {
        self.state.revoke_tokens();
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> SimStats {
        let s = &self.state;
        SimStats {
            routes: s.route_counts(),
            served_429: s.served_429.load(Ordering::Relaxed),
            served_401: s.served_401.load(Ordering::Relaxed),
            tokens_issued: s.tokens_issued.load(Ordering::Relaxed),
            connections: s.connections.load(Ordering::Relaxed),
        }
    }

    /// Every project.
    #[must_use]
    pub fn projects(&self) -> Vec<Project> {
        self.state
            .projects()
            .into_iter()
            .filter_map(to_project)
            .collect()
    }

    /// Creates `count` generated projects.
    pub fn seed_projects(&self, count: usize) -> Vec<Project> {
        self.state
            .seed_projects(count)
            .into_iter()
            .filter_map(to_project)
            .collect()
    }

    /// Creates a project as the API would.
    ///
    /// # Errors
    /// [`SimReject`] on validation failure or duplicate code.
    pub fn insert_project(&self, project: &NewProject) -> Result<Project, SimReject> {
        let created = self.state.create_project(project.to_wire(None))?;
        to_project(created).ok_or_else(|| internal("created project unreadable"))
    }

    /// Edits a project as a field user would: JSON merge of wire fields
    /// (e.g. `{"projectName": "…"}`), bumping `lastModifiedDate`.
    ///
    /// # Errors
    /// [`SimReject`] 404 for an unknown id, 400 for an invalid patch.
    pub fn edit_project(
        &self,
        id: ProjectId,
        patch: &serde_json::Value,
    ) -> Result<Project, SimReject> {
        let edited = self.state.edit_project(id, patch)?;
        to_project(edited).ok_or_else(|| internal("edited project unreadable"))
    }

    /// Every time slot.
    #[must_use]
    pub fn slots(&self) -> Vec<TimeSlot> {
        self.state
            .slots_where(|_| true)
            .into_iter()
            .filter_map(|w| TimeSlot::from_wire(w, None).ok())
            .collect()
    }

    /// Creates `count` generated slots over the last 30 days.
    pub fn seed_slots(&self, count: usize) {
        self.state.seed_slots(count);
    }

    /// Creates a 4-hour pending slot on `project` starting at `start`; returns its id.
    pub fn add_slot(&self, project: &Project, start: DateTime<Utc>) -> String {
        let wire = project.data.to_wire(Some(project.id));
        let slot = self.state.add_slot(slot_for(&wire, start, 0));
        slot.id.map(|id| id.to_string()).unwrap_or_default()
    }

    /// Creates a slot as described; returns its id.
    pub fn insert_slot(&self, spec: &SlotSpec) -> String {
        let slot = self.state.add_slot(spec.to_wire());
        slot.id.map(|id| id.to_string()).unwrap_or_default()
    }

    /// Changes a slot as a field user or manager would (bumps its modification instant).
    ///
    /// # Errors
    /// [`SimReject`] 404 for an unknown id.
    pub fn update_slot(
        &self,
        id: &str,
        change: impl FnOnce(&mut SlotSpec),
    ) -> Result<(), SimReject> {
        self.state
            .change_slot(slot_id(id)?, |wire| {
                let mut spec = SlotSpec::from_wire(wire);
                change(&mut spec);
                let modified = wire.last_modified_date;
                *wire = crate::batisimply::api::WireTimeSlot {
                    id: wire.id.clone(),
                    last_modified_date: modified,
                    ..spec.to_wire()
                };
            })
            .map(|_| ())
    }

    /// Sets a slot's status to `VALIDATED`.
    ///
    /// # Errors
    /// [`SimReject`] 404 for an unknown id.
    pub fn validate_slot(&self, id: &str) -> Result<(), SimReject> {
        let status = ManagementStatus::Validated.as_str().to_owned();
        self.state
            .change_slot(slot_id(id)?, |s| s.management_status = Some(status))
            .map(|_| ())
    }

    /// Moves a slot.
    ///
    /// # Errors
    /// [`SimReject`] 404 for an unknown id.
    pub fn move_slot(
        &self,
        id: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<(), SimReject> {
        self.state
            .change_slot(slot_id(id)?, |s| {
                (s.start_date, s.end_date) = (Some(start), Some(end))
            })
            .map(|_| ())
    }

    /// Deletes a slot.
    ///
    /// # Errors
    /// [`SimReject`] 404 for an unknown id.
    pub fn delete_slot(&self, id: &str) -> Result<(), SimReject> {
        self.state.delete_slot(slot_id(id)?)
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn internal(message: &str) -> SimReject {
    SimReject {
        status: axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        message: message.to_owned(),
    }
}

fn slot_id(id: &str) -> Result<i64, SimReject> {
    match id.parse::<i64>() {
        Ok(n) => Ok(n),
        Err(_) => Err(SimReject {
            status: axum::http::StatusCode::NOT_FOUND,
            message: format!("Slot {} not found", WireId::Text(id.to_owned())),
        }),
    }
}

/// Listener counting accepted connections.
pub(crate) struct CountingListener {
    inner: TcpListener,
    state: Arc<SimState>,
}

impl CountingListener {
    pub(crate) fn new(inner: TcpListener, state: Arc<SimState>) -> Self {
        Self { inner, state }
    }
}

impl axum::serve::Listener for CountingListener {
    type Io = TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let accepted = axum::serve::Listener::accept(&mut self.inner).await;
        self.state.connections.fetch_add(1, Ordering::Relaxed);
        accepted
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A time slot as tests and the demo describe it.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotSpec {
    pub user_id: String,
    pub project_id: i64,
    /// `project.projectCode` (None: not sent).
    pub project_code: Option<String>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub minutes: u32,
    /// `managementStatus` (`VALIDATED`, `PENDING`, `REJECTED`…).
    pub status: String,
    pub packed_lunch: bool,
    pub journey: bool,
}

impl SlotSpec {
    fn to_wire(&self) -> crate::batisimply::api::WireTimeSlot {
        use crate::batisimply::api::{WireRef, WireSlotProject, WireTimeSlot};
        WireTimeSlot {
            start_date: Some(self.start),
            end_date: Some(self.end),
            user: Some(WireRef {
                id: Some(self.user_id.clone()),
            }),
            project: Some(WireSlotProject {
                id: Some(self.project_id),
                project_code: self.project_code.clone(),
            }),
            management_status: Some(self.status.clone()),
            total_time_minutes: Some(f64::from(self.minutes)),
            has_packed_lunch: Some(self.packed_lunch),
            has_home_to_work_journey: Some(self.journey),
            ..WireTimeSlot::default()
        }
    }

    fn from_wire(w: &crate::batisimply::api::WireTimeSlot) -> Self {
        let project = w.project.clone().unwrap_or_default();
        // Minutes stored by the simulator are whole and small.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let minutes = w.total_time_minutes.unwrap_or(0.0).round() as u32;
        Self {
            user_id: w
                .user
                .as_ref()
                .and_then(|u| u.id.clone())
                .unwrap_or_default(),
            project_id: project.id.unwrap_or_default(),
            project_code: project.project_code,
            start: w.start_date.unwrap_or_default(),
            end: w.end_date.unwrap_or_default(),
            minutes,
            status: w.management_status.clone().unwrap_or_default(),
            packed_lunch: w.has_packed_lunch.unwrap_or(false),
            journey: w.has_home_to_work_journey.unwrap_or(false),
        }
    }
}
