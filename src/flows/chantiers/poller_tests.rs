use serde_json::json;

use super::*;
use crate::batigest::spec::chantier_role as role;
use crate::batigest::{Cell, Strategy};
use crate::flows::chantiers::simulated::sample_row;

fn upsert(n: usize, state: &str) -> Change {
    let mut row = sample_row(n);
    row.cells.insert(role::STATE, Cell::Text(state.into()));
    Change {
        key: row.key.clone(),
        operation: Operation::Upsert,
        row: Some(row),
        version: format!("v{n}"),
        own_write: false,
        committed_at: None,
    }
}

fn batch(changes: Vec<Change>) -> CaptureBatch {
    CaptureBatch {
        changes,
        next_cursor: json!({ "sim_version": 1 }),
        strategy: Strategy::ChangeTracking,
        full_snapshot: false,
        snapshot_delta: None,
    }
}

#[test]
fn the_state_filter_keeps_listed_states_deletes_and_invalid_rows() {
    let settings = ChantiersSettings {
        states: vec!["E".into()],
        ..ChantiersSettings::default()
    };
    let mut invalid = upsert(3, "T");
    if let Some(row) = invalid.row.as_mut() {
        row.cells
            .insert(role::START_DATE, Cell::Text("hier".into()));
    }
    let committed = "2026-11-27T09:30:00Z".parse().expect("time");
    let delete = Change {
        key: "00000004".into(),
        operation: Operation::Delete,
        row: None,
        version: "v4".into(),
        own_write: false,
        committed_at: Some(committed),
    };
    let changes = vec![upsert(1, "E"), upsert(2, "T"), invalid, delete];
    let (events, filtered) = to_events(&batch(changes), &settings);
    let keys: Vec<&str> = events.iter().map(|e| e.entity_key.as_str()).collect();
    assert_eq!(keys, ["00000001", "00000003", "00000004"]);
    assert_eq!(filtered, 1);
    assert_eq!(events[0].payload["code"], "00000001");
    assert!(events[1].payload.get("invalid").is_some());
    assert_eq!(events[2].operation, Operation::Delete);
    // The commit time where the source gave one, never the poll time.
    assert_eq!(events[0].source_modified_at, None);
    assert_eq!(events[2].source_modified_at, Some(committed));
}

#[test]
fn an_empty_code_gets_a_readable_key_and_our_own_writes_are_skipped() {
    let mut empty = upsert(1, "E");
    empty.key = "  ".into();
    let mut own = upsert(2, "E");
    own.own_write = true;
    let settings = ChantiersSettings::default();
    let (events, _) = to_events(&batch(vec![empty, own]), &settings);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].entity_key, EMPTY_CODE_KEY);
}

#[test]
fn lock_keys_are_stable_and_differ_per_source() {
    assert_eq!(
        lock_key("simulated:ChantierDef"),
        lock_key("simulated:ChantierDef")
    );
    assert_ne!(
        lock_key("simulated:ChantierDef"),
        lock_key("batigest:dbo.ChantierDef")
    );
}
