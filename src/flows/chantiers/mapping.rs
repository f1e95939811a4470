//! Pure mapping: a Batigest row → the outbox payload → a BatiSimply project.
//!
//! The payload of an upsert is the normalised [`Chantier`] as JSON. A row that cannot be
//! normalised is still captured, as `{"code": …, "invalid": {"field": …, "problem": …}}`,
//! so that it becomes a dead letter with its reason instead of vanishing (DOMAIN D28).

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::settings::ChantiersSettings;
use crate::batigest::spec::chantier_role as role;
use crate::batigest::{Chantier, FieldError, SourceRow};
use crate::batisimply::{Address, NewProject};

/// Every field name a payload error may name.
const ROLES: [&str; 10] = [
    role::CODE,
    role::CUSTOMER_NAME,
    role::LABEL,
    role::STATE,
    role::START_DATE,
    role::END_DATE,
    role::STREET,
    role::POSTCODE,
    role::CITY,
    role::SOLD_HOURS,
];

/// The outbox payload of a captured row: the normalised chantier, or why it is invalid.
#[must_use]
pub fn payload_of(row: &SourceRow) -> Value {
    match Chantier::from_row(row) {
        Ok(chantier) => serde_json::to_value(&chantier).unwrap_or_else(|e| {
            invalid_payload(
                &row.key,
                role::CODE,
                &format!("non sérialisable / {e}"),
                None,
            )
        }),
        Err(error) => invalid_payload(&row.key, error.field, &error.problem, error.max_chars),
    }
}

fn invalid_payload(code: &str, field: &str, problem: &str, max_chars: Option<usize>) -> Value {
    json!({
        "code": code,
        "invalid": { "field": field, "problem": problem, "max_chars": max_chars },
    })
}

/// Reads an upsert payload back into a chantier, re-checking the Batigest limits.
///
/// # Errors
/// A [`FieldError`] naming the chantier (`key`) and the field.
pub fn decode_chantier(key: &str, payload: &Value) -> Result<Chantier, FieldError> {
    let error = |field: &'static str, problem: String| FieldError {
        code: key.to_owned(),
        field,
        problem,
        max_chars: None,
    };
    if let Some(invalid) = payload.get("invalid") {
        let named = invalid.get("field").and_then(Value::as_str).unwrap_or("");
        let field = ROLES
            .iter()
            .find(|r| **r == named)
            .copied()
            .unwrap_or("row");
        let problem = invalid.get("problem").and_then(Value::as_str);
        let max_chars = invalid.get("max_chars").and_then(Value::as_u64);
        return Err(FieldError {
            max_chars: max_chars.and_then(|m| usize::try_from(m).ok()),
            ..error(
                field,
                problem.unwrap_or("donnée invalide / invalid data").into(),
            )
        });
    }
    let chantier: Chantier = serde_path_to_error::deserialize(payload).map_err(|e| {
        let path = e.path().to_string();
        let field = ROLES
            .iter()
            .find(|r| path.contains(**r))
            .copied()
            .unwrap_or("row");
        error(
            field,
            format!("valeur illisible / unreadable value: {}", e.inner()),
        )
    })?;
    let limits = [
        (role::CUSTOMER_NAME, &chantier.customer_name, 30),
        (role::STATE, &chantier.state, 1),
    ];
    for (field, value, max) in limits {
        let chars = value.as_deref().map_or(0, |v| v.chars().count());
        if chars > max {
            return Err(error(
                field,
                format!(
                    "{chars} caractères pour {max} au plus / {chars} characters, at most {max}"
                ),
            ));
        }
    }
    Ok(chantier)
}

/// The BatiSimply project a chantier becomes. Unknown fields are omitted, never
/// invented: no GPS point, no budget amount, defaults only from settings.
///
/// # Errors
/// A [`FieldError`] when the sold hours are not a number.
pub fn to_project(
    chantier: &Chantier,
    settings: &ChantiersSettings,
) -> Result<NewProject, FieldError> {
    let state = chantier.state.as_deref();
    let flag = |letters: &[String]| {
        (!letters.is_empty()).then(|| state.is_some_and(|s| letters.iter().any(|l| l == s)))
    };
    Ok(NewProject {
        code: chantier.code.as_str().to_owned(),
        name: chantier
            .customer_name
            .clone()
            .or_else(|| chantier.label.clone()),
        customer_name: chantier.customer_name.clone(),
        comment: chantier.label.clone(),
        hours_sold: sold_hours(chantier)?,
        start_estimated: chantier.start_date,
        end_estimated: chantier.end_date,
        address: address(chantier),
        budget: None,
        head_quarter_id: settings.head_quarter_id,
        project_manager: settings.project_manager.clone().map(Value::String),
        color: settings.project_color.clone(),
        is_archived: flag(&settings.archived_states),
        is_finished: flag(&settings.finished_states),
    })
}

fn sold_hours(chantier: &Chantier) -> Result<Option<f64>, FieldError> {
    let Some(text) = chantier.sold_hours.as_deref() else {
        return Ok(None);
    };
    match text.trim().parse::<f64>() {
        Ok(hours) if hours.is_finite() && hours >= 0.0 => Ok(Some(hours)),
        _ => Err(FieldError {
            code: chantier.code.as_str().to_owned(),
            field: role::SOLD_HOURS,
            problem: format!("nombre d'heures invalide / invalid number of hours: {text:?}"),
            max_chars: None,
        }),
    }
}

fn address(chantier: &Chantier) -> Option<Address> {
    let a = &chantier.address;
    let parts: Vec<&str> = [&a.street, &a.postcode, &a.city]
        .into_iter()
        .filter_map(|p| p.as_deref())
        .collect();
    if parts.is_empty() {
        return None;
    }
    Some(Address {
        street: a.street.clone(),
        postal_code: a.postcode.clone(),
        city: a.city.clone(),
        country_code: None,
        google_formatted_address: Some(parts.join(", ")),
        geo_point: None,
    })
}

/// The project as JSON, in the API's field names: stored with conflicts and hashed.
#[must_use]
pub fn project_json(project: &NewProject) -> Value {
    json!({
        "projectCode": project.code,
        "projectName": project.name,
        "customerName": project.customer_name,
        "comment": project.comment,
        "hoursSold": project.hours_sold,
        "startEstimated": project.start_estimated,
        "endEstimated": project.end_estimated,
        "address": project.address,
        "budget": project.budget,
        "headQuarterId": project.head_quarter_id,
        "projectManager": project.project_manager,
        "projectColor": project.color,
        "isArchived": project.is_archived,
        "isFinished": project.is_finished,
    })
}

/// A stable fingerprint of what would be written, stored in `links.last_hash`: an event
/// whose project has this hash was already applied.
#[must_use]
pub fn project_hash(project: &NewProject) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"chantiers-project-v1");
    hasher.update(project_json(project).to_string().as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
#[path = "mapping_tests.rs"]
mod tests;
