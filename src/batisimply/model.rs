//! Typed BatiSimply records and their conversion from the wire structures.

use chrono::{DateTime, NaiveDate, Utc};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::api::{self, WireProject, WireTimeSlot, project_fields, slot_fields};
use super::error::RecordError;

pub use super::api::{Address, GeoPoint, Money};

/// Numeric identifier of a BatiSimply project.
pub type ProjectId = i64;

/// A project as stored by BatiSimply.
#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    /// Server-side identifier.
    pub id: ProjectId,
    /// Business data of the project.
    pub data: NewProject,
    /// Last modification instant maintained by the server.
    pub last_modified: Option<DateTime<Utc>>,
}

/// The editable part of a project (body of create and update).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewProject {
    /// Project code (≤ 8 characters in Batigest).
    pub code: String,
    /// Display name.
    pub name: Option<String>,
    /// Customer name.
    pub customer_name: Option<String>,
    /// Free comment.
    pub comment: Option<String>,
    /// Hours sold, in hours.
    pub hours_sold: Option<f64>,
    /// Estimated start date.
    pub start_estimated: Option<NaiveDate>,
    /// Estimated end date.
    pub end_estimated: Option<NaiveDate>,
    /// Site address.
    pub address: Option<Address>,
    /// Budget.
    pub budget: Option<Money>,
    /// Head-quarter id.
    pub head_quarter_id: Option<i64>,
    /// Project manager, as sent by the API (shape not documented).
    pub project_manager: Option<Value>,
    /// Display colour.
    pub color: Option<String>,
    /// Archived flag.
    pub is_archived: Option<bool>,
    /// Finished flag.
    pub is_finished: Option<bool>,
}

/// Validation state of a time slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManagementStatus {
    /// Validated by a manager.
    Validated,
    /// Waiting for validation.
    Pending,
    /// Rejected by a manager.
    Rejected,
    /// Any other value, kept verbatim.
    Other(String),
}

impl From<&str> for ManagementStatus {
    fn from(value: &str) -> Self {
        match value {
            "VALIDATED" => Self::Validated,
            "PENDING" => Self::Pending,
            "REJECTED" => Self::Rejected,
            other => Self::Other(other.to_owned()),
        }
    }
}

/// A time slot entered by a field user.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeSlot {
    /// Identifier (number or string on the wire, kept as a string).
    pub id: String,
    /// Start instant.
    pub start: DateTime<Utc>,
    /// End instant.
    pub end: DateTime<Utc>,
    /// User id (UUID string).
    pub user_id: String,
    /// Project id.
    pub project_id: ProjectId,
    /// Project code, when sent.
    pub project_code: Option<String>,
    /// Validation state, when sent.
    pub status: Option<ManagementStatus>,
    /// Worked time, in minutes.
    pub total_minutes: u32,
    /// A packed lunch was taken.
    pub has_packed_lunch: bool,
    /// A home-to-work journey was made.
    pub has_home_to_work_journey: bool,
    /// Last modification instant, when sent.
    pub last_modified: Option<DateTime<Utc>>,
}

/// Records read from a list, and those rejected individually.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing<T> {
    /// Records read successfully.
    pub records: Vec<T>,
    /// Records that could not be read.
    pub rejected: Vec<RecordError>,
}

impl<T> Default for Listing<T> {
    fn default() -> Self {
        Self {
            records: Vec::new(),
            rejected: Vec::new(),
        }
    }
}

/// A wire record convertible to a typed record.
pub(crate) trait FromWire: Sized {
    type Wire: DeserializeOwned;
    fn from_wire(wire: Self::Wire, id: Option<String>) -> Result<Self, RecordError>;
}

fn missing(id: &Option<String>, field: &str) -> RecordError {
    RecordError {
        record_id: id.clone(),
        field: field.to_owned(),
        reason: "missing".to_owned(),
    }
}

impl FromWire for Project {
    type Wire = WireProject;
    fn from_wire(wire: WireProject, id: Option<String>) -> Result<Self, RecordError> {
        let project_id = wire.id.ok_or_else(|| missing(&id, project_fields::ID))?;
        let code = wire
            .project_code
            .clone()
            .ok_or_else(|| missing(&id, project_fields::PROJECT_CODE))?;
        let last_modified = wire.last_modified_date;
        let mut data = NewProject::from(wire);
        data.code = code;
        Ok(Self {
            id: project_id,
            data,
            last_modified,
        })
    }
}

impl From<WireProject> for NewProject {
    fn from(w: WireProject) -> Self {
        Self {
            code: w.project_code.unwrap_or_default(),
            name: w.project_name,
            customer_name: w.customer_name,
            comment: w.comment,
            hours_sold: w.hours_sold,
            start_estimated: w.start_estimated,
            end_estimated: w.end_estimated,
            address: w.address,
            budget: w.budget,
            head_quarter_id: w.head_quarter.and_then(|h| h.id),
            project_manager: w.project_manager,
            color: w.project_color,
            is_archived: w.is_archived,
            is_finished: w.is_finished,
        }
    }
}

impl NewProject {
    /// Wire body for create (`id` = None) or update (`id` in the body).
    pub(crate) fn to_wire(&self, id: Option<ProjectId>) -> WireProject {
        WireProject {
            id,
            project_code: Some(self.code.clone()),
            project_name: self.name.clone(),
            customer_name: self.customer_name.clone(),
            comment: self.comment.clone(),
            hours_sold: self.hours_sold,
            start_estimated: self.start_estimated,
            end_estimated: self.end_estimated,
            address: self.address.clone(),
            budget: self.budget.clone(),
            head_quarter: self.head_quarter_id.map(|id| api::WireRef { id: Some(id) }),
            project_manager: self.project_manager.clone(),
            project_color: self.color.clone(),
            is_archived: self.is_archived,
            is_finished: self.is_finished,
            last_modified_date: None,
        }
    }
}

impl FromWire for TimeSlot {
    type Wire = WireTimeSlot;
    fn from_wire(w: WireTimeSlot, id: Option<String>) -> Result<Self, RecordError> {
        let slot_id =
            w.id.map(|i| i.to_string())
                .ok_or_else(|| missing(&id, slot_fields::ID))?;
        let minutes = w
            .total_time_minutes
            .ok_or_else(|| missing(&id, slot_fields::TOTAL_TIME_MINUTES))?;
        if !(0.0..=f64::from(u32::MAX)).contains(&minutes) {
            return Err(RecordError {
                record_id: id,
                field: slot_fields::TOTAL_TIME_MINUTES.to_owned(),
                reason: format!("out of range: {minutes}"),
            });
        }
        let project = w.project.unwrap_or_default();
        Ok(Self {
            id: slot_id,
            start: w
                .start_date
                .ok_or_else(|| missing(&id, slot_fields::START_DATE))?,
            end: w
                .end_date
                .ok_or_else(|| missing(&id, slot_fields::END_DATE))?,
            user_id: w
                .user
                .and_then(|u| u.id)
                .ok_or_else(|| missing(&id, slot_fields::USER_ID))?,
            project_id: project
                .id
                .ok_or_else(|| missing(&id, slot_fields::PROJECT_ID))?,
            project_code: project.project_code,
            status: w.management_status.as_deref().map(ManagementStatus::from),
            // Bounded above; the API sends whole minutes, rounding absorbs float noise.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            total_minutes: minutes.round() as u32,
            has_packed_lunch: w.has_packed_lunch.unwrap_or(false),
            has_home_to_work_journey: w.has_home_to_work_journey.unwrap_or(false),
            last_modified: w.last_modified_date,
        })
    }
}

impl ManagementStatus {
    /// Wire value.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Self::Validated => "VALIDATED",
            Self::Pending => "PENDING",
            Self::Rejected => "REJECTED",
            Self::Other(other) => other,
        }
    }
}
