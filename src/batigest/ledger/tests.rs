//! The ledger decision, exhaustively, and the simulated ledger.

use chrono::NaiveDate;

use super::*;

fn at(h: u32, m: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2026, 11, 27)
        .and_then(|d| d.and_hms_opt(h, m, 0))
        .expect("valid time")
}

fn key(chantier: &str, h: u32) -> LedgerKey {
    LedgerKey {
        chantier: chantier.into(),
        employee: "DUPONT".into(),
        start: at(h, 0),
    }
}

fn values(minutes: u32) -> LedgerValues {
    LedgerValues {
        hours: Hours::from_minutes(minutes),
        journey: true,
        meal: false,
    }
}

fn row(chantier: &str, h: u32, minutes: u32) -> LedgerRow {
    LedgerRow {
        key: key(chantier, h),
        values: values(minutes),
    }
}

const A: LedgerValues = LedgerValues {
    hours: Hours(10_000),
    journey: false,
    meal: false,
};
const B: LedgerValues = LedgerValues {
    hours: Hours(20_000),
    journey: false,
    meal: false,
};
const C: LedgerValues = LedgerValues {
    hours: Hours(30_000),
    journey: true,
    meal: true,
};

fn r(k: &LedgerKey, v: LedgerValues) -> LedgerRow {
    LedgerRow {
        key: k.clone(),
        values: v,
    }
}

#[test]
fn first_write_inserts_or_recognises_its_own_row() {
    let new = r(&key("1", 8), B);
    assert_eq!(decide_write(None, &new, &[], &[], false), Decision::Insert);
    assert_eq!(
        decide_write(None, &new, &[B], &[B], false),
        Decision::Unchanged
    );
    assert_eq!(
        decide_write(None, &new, &[A], &[A], false),
        Decision::Conflict(Conflict::ForeignRow(A))
    );
    assert_eq!(decide_write(None, &new, &[A], &[A], true), Decision::Update);
}

#[test]
fn same_key_updates_in_place_unless_edited_in_batigest() {
    let k = key("1", 8);
    let (prev, new) = (r(&k, A), r(&k, B));
    let d = |found: &[LedgerValues], overwrite| {
        decide_write(Some(&prev), &new, found, found, overwrite)
    };
    assert_eq!(d(&[A], false), Decision::Update);
    assert_eq!(d(&[B], false), Decision::Unchanged);
    assert_eq!(
        d(&[C], false),
        Decision::Conflict(Conflict::EditedInBatigest(C))
    );
    assert_eq!(d(&[C], true), Decision::Update);
    assert_eq!(
        d(&[], false),
        Decision::Conflict(Conflict::DeletedInBatigest)
    );
    assert_eq!(d(&[], true), Decision::Insert);
    assert_eq!(
        d(&[A, A], true),
        Decision::Conflict(Conflict::DuplicateRows(2))
    );
}

#[test]
fn a_moved_key_rewrites_the_old_row_never_adds_one() {
    let (old, new_k) = (key("1", 8), key("2", 9));
    let (prev, new) = (r(&old, A), r(&new_k, B));
    let d = |p: &[LedgerValues], n: &[LedgerValues], o| decide_write(Some(&prev), &new, p, n, o);
    assert_eq!(d(&[A], &[], false), Decision::Move);
    assert_eq!(
        d(&[C], &[], false),
        Decision::Conflict(Conflict::EditedInBatigest(C))
    );
    assert_eq!(d(&[C], &[], true), Decision::Move);
    // Moved before a lost acknowledgement: nothing left to do.
    assert_eq!(d(&[], &[B], false), Decision::Unchanged);
    // The new key is taken: never merge two rows, even when told to overwrite.
    assert_eq!(
        d(&[A], &[C], true),
        Decision::Conflict(Conflict::KeyOccupied(C))
    );
    assert_eq!(
        d(&[A], &[B], true),
        Decision::Conflict(Conflict::KeyOccupied(B))
    );
    assert_eq!(
        d(&[], &[C], true),
        Decision::Conflict(Conflict::KeyOccupied(C))
    );
    assert_eq!(
        d(&[], &[], false),
        Decision::Conflict(Conflict::DeletedInBatigest)
    );
    assert_eq!(d(&[], &[], true), Decision::Insert);
    assert_eq!(
        d(&[A], &[C, C], true),
        Decision::Conflict(Conflict::DuplicateRows(2))
    );
}

#[test]
fn removal_deletes_only_what_we_wrote() {
    let prev = r(&key("1", 8), A);
    assert_eq!(decide_removal(&prev, &[A], false), Decision::Delete);
    assert_eq!(decide_removal(&prev, &[], false), Decision::AlreadyGone);
    assert_eq!(
        decide_removal(&prev, &[C], false),
        Decision::Conflict(Conflict::EditedInBatigest(C))
    );
    assert_eq!(decide_removal(&prev, &[C], true), Decision::Delete);
    assert_eq!(
        decide_removal(&prev, &[A, A], true),
        Decision::Conflict(Conflict::DuplicateRows(2))
    );
}

#[test]
fn hours_are_minutes_over_sixty_rounded_to_four_decimals() {
    assert_eq!(Hours::from_minutes(90).to_decimal_string(), "1.5000");
    assert_eq!(Hours::from_minutes(50).to_decimal_string(), "0.8333");
    assert_eq!(Hours::from_minutes(20).to_decimal_string(), "0.3333");
    assert_eq!(Hours::from_minutes(1).to_decimal_string(), "0.0167");
    assert_eq!(Hours::from_minutes(0), Hours(0));
    assert_eq!(
        Hours::from_cell(&Cell::Float(0.833_333_31)),
        Some(Hours::from_minutes(50))
    );
    assert_eq!(
        Hours::from_cell(&Cell::Decimal("1.50".into())),
        Some(Hours(15_000))
    );
    assert_eq!(Hours::from_cell(&Cell::Int(2)), Some(Hours(20_000)));
    assert_eq!(Hours::from_cell(&Cell::Null), None);
}

#[test]
fn keys_are_validated_never_truncated() {
    let limits = LedgerLimits::default();
    key("00000001", 8).validate(limits).expect("valid");
    let err = key("000000001", 8)
        .validate(limits)
        .expect_err("9 characters");
    assert!(err.contains("never truncated"), "{err}");
    assert!(key("", 8).validate(limits).is_err());
    assert!(key("1 ", 8).validate(limits).is_err());
    let mut k = key("1", 8);
    k.start = k.start.with_second(57).expect("second");
    assert!(k.validate(limits).is_err());
}

fn write(previous: Option<LedgerRow>, row: LedgerRow) -> SlotWrite {
    SlotWrite {
        slot_id: "slot-1".into(),
        previous,
        row,
        overwrite_batigest_edits: false,
    }
}

#[tokio::test]
async fn memory_ledger_inserts_updates_moves_and_removes_one_row() {
    let ledger = MemoryLedger::new(LedgerLimits::default());
    let first = row("1", 8, 60);
    let report = ledger
        .apply(&write(None, first.clone()))
        .await
        .expect("insert");
    assert_eq!(
        (report.decision, report.edited_in_batigest),
        (Decision::Insert, false)
    );

    let longer = row("1", 8, 90);
    let report = ledger
        .apply(&write(Some(first.clone()), longer.clone()))
        .await
        .expect("update");
    assert_eq!(report.decision, Decision::Update);
    assert_eq!(ledger.rows(), vec![longer.clone()]);

    let moved = row("2", 10, 90);
    let report = ledger
        .apply(&write(Some(longer.clone()), moved.clone()))
        .await
        .expect("move");
    assert_eq!(report.decision, Decision::Move);
    assert_eq!(ledger.rows(), vec![moved.clone()]);

    // Applying the same write again (a redelivery) changes nothing.
    let report = ledger
        .apply(&write(Some(longer), moved.clone()))
        .await
        .expect("again");
    assert_eq!(report.decision, Decision::Unchanged);
    assert_eq!(ledger.rows().len(), 1);

    let removal = SlotRemoval {
        slot_id: "slot-1".into(),
        previous: moved,
        overwrite_batigest_edits: false,
    };
    assert_eq!(
        ledger.remove(&removal).await.expect("remove").decision,
        Decision::Delete
    );
    assert_eq!(
        ledger.remove(&removal).await.expect("again").decision,
        Decision::AlreadyGone
    );
    assert!(ledger.rows().is_empty());
}

#[tokio::test]
async fn memory_ledger_reports_edits_made_in_batigest() {
    let ledger = MemoryLedger::new(LedgerLimits::default());
    let first = row("1", 8, 60);
    ledger
        .apply(&write(None, first.clone()))
        .await
        .expect("insert");
    ledger.edit_as_batigest_user(&first.key, Some(values(45)));

    let mut next = write(Some(first.clone()), row("1", 8, 120));
    let report = ledger.apply(&next).await.expect("conflict is a report");
    assert_eq!(
        report.decision,
        Decision::Conflict(Conflict::EditedInBatigest(values(45)))
    );
    assert!(report.edited_in_batigest && !report.wrote());
    assert_eq!(ledger.rows()[0].values, values(45));

    next.overwrite_batigest_edits = true;
    let report = ledger.apply(&next).await.expect("overwrite");
    assert_eq!(report.decision, Decision::Update);
    assert!(report.edited_in_batigest);
    assert_eq!(ledger.rows(), vec![row("1", 8, 120)]);
}

#[tokio::test]
async fn memory_ledger_refuses_over_long_codes() {
    let ledger = MemoryLedger::new(LedgerLimits::default());
    let err = ledger
        .apply(&write(None, row("123456789", 8, 60)))
        .await
        .expect_err("too long");
    assert!(matches!(err, LedgerError::InvalidRow { .. }) && !err.is_transient());
    assert!(ledger.rows().is_empty());
}
