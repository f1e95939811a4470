//! Every BatiSimply path, query parameter, header and JSON field name.
//!
//! The wire structures below mirror the JSON exchanged with the API (and
//! served by the simulator). All their fields are optional so that a record
//! with a missing field can be reported individually; the typed model in
//! [`super::model`] enforces what is required.

use serde::{Deserialize, Serialize};

/// Keycloak token endpoint, relative to the SSO base URL (`{realm}` is replaced).
pub(crate) const TOKEN_PATH_TEMPLATE: &str = "/auth/realms/{realm}/protocol/openid-connect/token";
/// Project collection (list, create, update).
pub(crate) const PROJECTS_PATH: &str = "/api/project";
/// Time slots of all users.
pub(crate) const TIMESLOTS_PATH: &str = "/api/timeSlotManagement/allUsers";

/// Pagination: 0-based page index.
pub(crate) const PARAM_PAGE: &str = "page";
/// Pagination: page size.
pub(crate) const PARAM_SIZE: &str = "size";
/// Time-slot window start (full ISO UTC timestamp).
pub(crate) const PARAM_START_DATE: &str = "startDate";
/// Time-slot window end (full ISO UTC timestamp).
pub(crate) const PARAM_END_DATE: &str = "endDate";
/// Largest page size the API accepts.
pub(crate) const MAX_PAGE_SIZE: u32 = 2000;
/// A time-slot answer with at least this many records may have been truncated.
pub(crate) const TIMESLOT_SUSPECT_TRUNCATION_RECORDS: usize = 2000;

/// Header carrying the total number of records of a paginated list.
pub(crate) const HEADER_TOTAL_COUNT: &str = "x-total-count";
/// Keys under which a list may be wrapped in an object, in order of preference.
pub(crate) const LIST_WRAPPER_KEYS: [&str; 4] = ["elements", "content", "data", "items"];
/// Record identifier field (used to name a rejected record).
pub(crate) const FIELD_ID: &str = "id";
/// Keys that may carry a human message in an error body.
pub(crate) const ERROR_MESSAGE_KEYS: [&str; 5] =
    ["message", "detail", "title", "error_description", "error"];

/// OAuth2 form fields and grant names.
pub(crate) mod oauth {
    pub(crate) const GRANT_TYPE: &str = "grant_type";
    pub(crate) const CLIENT_ID: &str = "client_id";
    pub(crate) const CLIENT_SECRET: &str = "client_secret";
    pub(crate) const USERNAME: &str = "username";
    pub(crate) const PASSWORD: &str = "password";
    pub(crate) const SCOPE: &str = "scope";
    pub(crate) const REFRESH_TOKEN: &str = "refresh_token";
    pub(crate) const GRANT_PASSWORD: &str = "password";
    pub(crate) const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
    pub(crate) const GRANT_REFRESH_TOKEN: &str = "refresh_token";
}

/// Token endpoint success answer (no `Debug`: it carries tokens).
#[derive(Clone, Default, Serialize, Deserialize)]
pub(crate) struct WireToken {
    pub access_token: String,
    pub expires_in: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_expires_in: Option<u64>,
    #[serde(default)]
    pub token_type: Option<String>,
}

/// Token endpoint error answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct WireTokenError {
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

/// Geographic point of an address.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct GeoPoint {
    /// Longitude in degrees.
    #[serde(rename = "xLon")]
    pub lon_deg: f64,
    /// Latitude in degrees.
    #[serde(rename = "yLat")]
    pub lat_deg: f64,
}

/// Postal address of a project.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Address {
    /// Street line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub street: Option<String>,
    /// Postal code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    /// City.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// ISO country code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country_code: Option<String>,
    /// Address as formatted by Google.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub google_formatted_address: Option<String>,
    /// Optional coordinates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub geo_point: Option<GeoPoint>,
}

/// An amount of money.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Money {
    /// Amount in `currency` units (e.g. euros, not cents).
    pub amount: f64,
    /// ISO 4217 currency code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

/// Reference to another entity by id.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub(crate) struct WireRef<I> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<I>,
}

/// A project as exchanged on the wire.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireProject {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hours_sold: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_estimated: Option<chrono::NaiveDate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_estimated: Option<chrono::NaiveDate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<Money>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_quarter: Option<WireRef<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_manager: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_color: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_archived: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_finished: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_modified_date: Option<chrono::DateTime<chrono::Utc>>,
}

/// Project reference inside a time slot.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireSlotProject {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_code: Option<String>,
}

/// Identifier that may be sent as a number or a string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum WireId {
    Number(i64),
    Text(String),
}

impl std::fmt::Display for WireId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Text(s) => f.write_str(s),
        }
    }
}

/// A time slot as exchanged on the wire.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireTimeSlot {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<WireId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_date: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_date: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<WireRef<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<WireSlotProject>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub management_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_time_minutes: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub has_packed_lunch: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub has_home_to_work_journey: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_modified_date: Option<chrono::DateTime<chrono::Utc>>,
}

/// JSON names of required time-slot fields, used in per-record errors.
pub(crate) mod slot_fields {
    pub(crate) const ID: &str = "id";
    pub(crate) const START_DATE: &str = "startDate";
    pub(crate) const END_DATE: &str = "endDate";
    pub(crate) const USER_ID: &str = "user.id";
    pub(crate) const PROJECT_ID: &str = "project.id";
    pub(crate) const TOTAL_TIME_MINUTES: &str = "totalTimeMinutes";
}

/// JSON names of required project fields, used in per-record errors.
pub(crate) mod project_fields {
    pub(crate) const ID: &str = "id";
    pub(crate) const PROJECT_CODE: &str = "projectCode";
}

/// Builds the token endpoint path for a realm.
pub(crate) fn token_path(realm: &str) -> String {
    TOKEN_PATH_TEMPLATE.replace("{realm}", realm)
}

/// Path of one project.
pub(crate) fn project_path(id: i64) -> String {
    format!("{PROJECTS_PATH}/{id}")
}
