//! Data operations shared by the API handlers and the admin surface.

use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use super::state::{SimData, SimState, lock};
use crate::batisimply::api::{WireId, WireProject, WireRef, WireSlotProject, WireTimeSlot};

/// Longest project code accepted (Batigest limit).
const MAX_CODE_CHARS: usize = 8;

/// A refusal with its HTTP status and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct SimReject {
    /// HTTP status to answer.
    pub status: StatusCode,
    /// Message sent in the JSON body.
    pub message: String,
}

fn reject(status: StatusCode, message: impl Into<String>) -> SimReject {
    SimReject {
        status,
        message: message.into(),
    }
}

fn validate(project: &WireProject) -> Result<String, SimReject> {
    let code = project.project_code.clone().unwrap_or_default();
    if code.trim().is_empty() || code.chars().count() > MAX_CODE_CHARS {
        return Err(reject(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("projectCode must have 1 to {MAX_CODE_CHARS} characters"),
        ));
    }
    Ok(code)
}

impl SimState {
    fn duplicate(&self, data: &SimData, code: &str, except: Option<i64>) -> Option<SimReject> {
        let taken = data
            .projects
            .values()
            .any(|p| p.project_code.as_deref() == Some(code) && p.id != except);
        let status =
            StatusCode::from_u16(self.config.duplicate_status).unwrap_or(StatusCode::CONFLICT);
        taken.then(|| reject(status, format!("projectCode already exists: {code}")))
    }

    /// Creates a project (API `POST`) and saves the state.
    pub(crate) fn create_project(&self, project: WireProject) -> Result<WireProject, SimReject> {
        let created = self.insert_project(project)?;
        self.persist();
        Ok(created)
    }

    /// Creates a project without saving the state.
    fn insert_project(&self, mut project: WireProject) -> Result<WireProject, SimReject> {
        if project.id.is_some() {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "A new project cannot already have an id",
            ));
        }
        let code = validate(&project)?;
        let mut data = lock(&self.data);
        if let Some(dup) = self.duplicate(&data, &code, None) {
            return Err(dup);
        }
        data.next_project_id += 1;
        let id = data.next_project_id;
        project.id = Some(id);
        project.last_modified_date = Some(Utc::now());
        data.projects.insert(id, project.clone());
        Ok(project)
    }

    /// Replaces a project (API `PUT`, id in the body).
    pub(crate) fn update_project(
        &self,
        mut project: WireProject,
    ) -> Result<WireProject, SimReject> {
        let id = project
            .id
            .ok_or_else(|| reject(StatusCode::BAD_REQUEST, "Invalid id: null"))?;
        let code = validate(&project)?;
        let mut data = lock(&self.data);
        if !data.projects.contains_key(&id) {
            return Err(reject(
                StatusCode::NOT_FOUND,
                format!("Project {id} not found"),
            ));
        }
        if let Some(dup) = self.duplicate(&data, &code, Some(id)) {
            return Err(dup);
        }
        project.last_modified_date = Some(Utc::now());
        data.projects.insert(id, project.clone());
        drop(data);
        self.persist();
        Ok(project)
    }

    /// Edits fields of a project as a field user would (JSON merge).
    pub(crate) fn edit_project(&self, id: i64, patch: &Value) -> Result<WireProject, SimReject> {
        let current = self
            .project(id)
            .ok_or_else(|| reject(StatusCode::NOT_FOUND, format!("Project {id} not found")))?;
        let mut value = serde_json::to_value(current)
            .map_err(|e| reject(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        if let (Value::Object(target), Value::Object(changes)) = (&mut value, patch) {
            target.extend(changes.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        let mut edited: WireProject = serde_json::from_value(value)
            .map_err(|e| reject(StatusCode::BAD_REQUEST, e.to_string()))?;
        edited.id = Some(id);
        edited.last_modified_date = Some(Utc::now());
        lock(&self.data).projects.insert(id, edited.clone());
        self.persist();
        Ok(edited)
    }

    pub(crate) fn project(&self, id: i64) -> Option<WireProject> {
        lock(&self.data).projects.get(&id).cloned()
    }

    pub(crate) fn projects(&self) -> Vec<WireProject> {
        lock(&self.data).projects.values().cloned().collect()
    }

    /// Creates `count` generated projects.
    pub(crate) fn seed_projects(&self, count: usize) -> Vec<WireProject> {
        let first = lock(&self.data).next_project_id + 1;
        let created = (0..count)
            .filter_map(|n| {
                let number = first + n as i64;
                self.insert_project(WireProject {
                    project_code: Some(format!("SIM{number:05}")),
                    project_name: Some(format!("Chantier simulé {number}")),
                    customer_name: Some(format!("Client {}", number % 17)),
                    hours_sold: Some(40.0 + number as f64),
                    ..WireProject::default()
                })
                .ok()
            })
            .collect();
        self.persist();
        created
    }

    /// Adds a time slot (admin), assigning its id, and saves the state.
    pub(crate) fn add_slot(&self, slot: WireTimeSlot) -> WireTimeSlot {
        let added = self.insert_slot(slot);
        self.persist();
        added
    }

    /// Adds a time slot without saving the state.
    fn insert_slot(&self, mut slot: WireTimeSlot) -> WireTimeSlot {
        let mut data = lock(&self.data);
        data.next_slot_id += 1;
        let id = data.next_slot_id;
        slot.id = Some(WireId::Number(id));
        slot.last_modified_date = Some(Utc::now());
        data.slots.insert(id, slot.clone());
        slot
    }

    /// Applies `change` to a slot and bumps its modification instant.
    pub(crate) fn change_slot(
        &self,
        id: i64,
        change: impl FnOnce(&mut WireTimeSlot),
    ) -> Result<WireTimeSlot, SimReject> {
        let mut data = lock(&self.data);
        let slot = data
            .slots
            .get_mut(&id)
            .ok_or_else(|| reject(StatusCode::NOT_FOUND, format!("Slot {id} not found")))?;
        change(slot);
        slot.last_modified_date = Some(Utc::now());
        let slot = slot.clone();
        drop(data);
        self.persist();
        Ok(slot)
    }

    pub(crate) fn delete_slot(&self, id: i64) -> Result<(), SimReject> {
        let removed = lock(&self.data).slots.remove(&id);
        self.persist();
        removed
            .map(|_| ())
            .ok_or_else(|| reject(StatusCode::NOT_FOUND, format!("Slot {id} not found")))
    }

    /// Slots matching `keep`.
    pub(crate) fn slots_where(&self, keep: impl Fn(&WireTimeSlot) -> bool) -> Vec<WireTimeSlot> {
        lock(&self.data)
            .slots
            .values()
            .filter(|s| keep(s))
            .cloned()
            .collect()
    }

    /// Creates `count` slots over the last 30 days on existing projects.
    pub(crate) fn seed_slots(&self, count: usize) {
        let mut projects = self.projects();
        if projects.is_empty() {
            projects = self.seed_projects(1);
        }
        let now = Utc::now();
        for (n, project) in (0..count).zip(projects.iter().cycle()) {
            let start = now - Duration::hours(1 + (n as i64 * 7) % (30 * 24));
            self.insert_slot(slot_for(project, start, n));
        }
        self.persist();
    }
}

/// A generated slot of `n`-dependent user on `project`.
pub(crate) fn slot_for(project: &WireProject, start: DateTime<Utc>, n: usize) -> WireTimeSlot {
    WireTimeSlot {
        start_date: Some(start),
        end_date: Some(start + Duration::hours(4)),
        user: Some(WireRef {
            id: Some(format!("00000000-0000-4000-8000-{:012}", n % 5)),
        }),
        project: Some(WireSlotProject {
            id: project.id,
            project_code: project.project_code.clone(),
        }),
        management_status: Some("PENDING".to_owned()),
        total_time_minutes: Some(240.0),
        has_packed_lunch: Some(n.is_multiple_of(2)),
        has_home_to_work_journey: Some(n.is_multiple_of(3)),
        ..WireTimeSlot::default()
    }
}
