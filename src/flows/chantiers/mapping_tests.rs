use chrono::NaiveDate;
use serde_json::json;

use super::*;
use crate::batigest::Cell;

fn row(cells: Vec<(&'static str, Cell)>) -> SourceRow {
    let key = match cells.iter().find(|(r, _)| *r == role::CODE) {
        Some((_, Cell::Text(k))) => k.trim().to_owned(),
        _ => String::new(),
    };
    SourceRow {
        key,
        cells: cells.into_iter().collect(),
    }
}

fn text(s: &str) -> Cell {
    Cell::Text(s.into())
}

fn full_row() -> SourceRow {
    row(vec![
        (role::CODE, text("00000042")),
        (role::CUSTOMER_NAME, text("Bâtiments Hélène")),
        (role::LABEL, text("Réfection toiture")),
        (role::STATE, text("T")),
        (role::START_DATE, Cell::Date(date(2026, 3, 2))),
        (role::END_DATE, Cell::Date(date(2026, 6, 30))),
        (role::STREET, text("3 rue de la Loge")),
        (role::POSTCODE, text("34000")),
        (role::CITY, text("Montpellier")),
        (role::SOLD_HOURS, Cell::Decimal("120.5".into())),
    ])
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("date")
}

fn settings() -> ChantiersSettings {
    ChantiersSettings {
        head_quarter_id: Some(7),
        project_manager: Some("Jeanne Martin".into()),
        project_color: Some("#336699".into()),
        finished_states: vec!["T".into()],
        archived_states: vec!["A".into()],
        ..ChantiersSettings::default()
    }
}

fn map(row: &SourceRow, settings: &ChantiersSettings) -> Result<NewProject, FieldError> {
    let chantier = decode_chantier(&row.key, &payload_of(row))?;
    to_project(&chantier, settings)
}

#[test]
fn a_full_chantier_becomes_a_project_with_every_mapped_field() {
    let project = map(&full_row(), &settings()).expect("valid");
    assert_eq!(project.code, "00000042");
    assert_eq!(project.name.as_deref(), Some("Bâtiments Hélène"));
    assert_eq!(project.customer_name.as_deref(), Some("Bâtiments Hélène"));
    assert_eq!(project.comment.as_deref(), Some("Réfection toiture"));
    assert_eq!(project.start_estimated, Some(date(2026, 3, 2)));
    assert_eq!(project.end_estimated, Some(date(2026, 6, 30)));
    assert_eq!(project.hours_sold, Some(120.5));
    let address = project.address.expect("address");
    assert_eq!(address.city.as_deref(), Some("Montpellier"));
    assert_eq!(
        address.google_formatted_address.as_deref(),
        Some("3 rue de la Loge, 34000, Montpellier")
    );
    assert_eq!(address.geo_point, None, "a GPS point is never invented");
    assert_eq!(project.head_quarter_id, Some(7));
    assert_eq!(project.project_manager, Some(json!("Jeanne Martin")));
    assert_eq!(project.color.as_deref(), Some("#336699"));
    assert_eq!(project.budget, None, "no budget amount is known");
    assert_eq!(project.is_finished, Some(true));
    assert_eq!(project.is_archived, Some(false));
}

#[test]
fn unknown_fields_and_unset_defaults_are_omitted() {
    let minimal = row(vec![(role::CODE, text("7"))]);
    let project = map(&minimal, &ChantiersSettings::default()).expect("valid");
    assert_eq!(project.code, "7");
    assert_eq!(project.name, None);
    assert_eq!(project.address, None);
    assert_eq!(project.hours_sold, None);
    assert_eq!(project.head_quarter_id, None);
    assert_eq!(project.project_manager, None);
    assert_eq!(project.color, None);
    assert_eq!((project.is_finished, project.is_archived), (None, None));
}

#[test]
fn the_label_names_the_project_when_the_customer_is_unknown() {
    let r = row(vec![
        (role::CODE, text("8")),
        (role::LABEL, text("Toiture")),
    ]);
    let project = map(&r, &ChantiersSettings::default()).expect("valid");
    assert_eq!(project.name.as_deref(), Some("Toiture"));
    assert_eq!(project.customer_name, None);
}

#[test]
fn an_over_long_code_is_an_error_naming_the_chantier_and_the_field() {
    let err = map(&row(vec![(role::CODE, text("123456789"))]), &settings()).expect_err("9 chars");
    assert_eq!((err.code.as_str(), err.field), ("123456789", role::CODE));
    let message = err.to_string();
    assert!(
        message.contains("123456789") && message.contains("code"),
        "{message}"
    );
    assert!(
        message.contains("caractères") && message.contains("characters"),
        "{message}"
    );
}

#[test]
fn an_unparseable_date_is_an_error_naming_the_chantier_and_the_field() {
    let r = row(vec![
        (role::CODE, text("00000001")),
        (role::START_DATE, text("31/02/2026")),
    ]);
    let err = map(&r, &settings()).expect_err("text date");
    assert_eq!(
        (err.code.as_str(), err.field),
        ("00000001", role::START_DATE)
    );
    assert!(
        err.to_string().contains("date attendue / date expected"),
        "{err}"
    );
}

#[test]
fn a_tampered_payload_is_checked_again() {
    let payload = json!({ "code": "00000001", "customer_name": "x".repeat(31),
        "label": null, "state": null, "start_date": "2026-13-45", "end_date": null,
        "address": {"street": null, "postcode": null, "city": null}, "sold_hours": null });
    let err = decode_chantier("00000001", &payload).expect_err("bad date");
    assert_eq!(err.field, role::START_DATE, "{err}");
    let mut payload = payload;
    payload["start_date"] = json!(null);
    let err = decode_chantier("00000001", &payload).expect_err("long name");
    assert_eq!(err.field, role::CUSTOMER_NAME);
    let err = decode_chantier("", &json!({ "code": "" })).expect_err("empty code");
    assert_eq!(err.field, role::CODE, "{err}");
}

#[test]
fn sold_hours_that_are_not_a_number_are_an_error() {
    let mut chantier = decode_chantier("1", &payload_of(&full_row())).expect("valid");
    chantier.sold_hours = Some("douze".into());
    let err = to_project(&chantier, &settings()).expect_err("not a number");
    assert_eq!(err.field, role::SOLD_HOURS);
}

#[test]
fn the_hash_changes_with_the_project_and_only_then() {
    let a = map(&full_row(), &settings()).expect("valid");
    let mut b = a.clone();
    assert_eq!(project_hash(&a), project_hash(&b));
    b.comment = Some("autre".into());
    assert_ne!(project_hash(&a), project_hash(&b));
}
