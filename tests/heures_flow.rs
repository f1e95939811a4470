//! Flow heures end to end: BatiSimply simulator over HTTP → poller → PostgreSQL outbox
//! → dispatcher → simulated `SuiviMO` ledger (the same decisions as the SQL Server
//! writer; see `batigest_mssql.rs` for the real one).

#[path = "common/chantiers.rs"]
#[allow(dead_code)]
mod chantiers;
mod common;
#[path = "common/heures.rs"]
mod harness;

use std::collections::HashSet;
use std::time::Duration;

use batisync::batigest::ledger::{Hours, LedgerKey, LedgerValues};
use batisync::batisimply::sim::Faults;
use batisync::dispatch::Handler;
use batisync::flows::heures::{FLOW, HeuresSettings, OnUnvalidated};
use batisync::outbox::ReasonCode;
use chrono::{
    DateTime, Datelike, Duration as Span, DurationRound, NaiveDate, NaiveDateTime, Utc, Weekday,
};
use chrono_tz::Europe::Paris;
use common::TestDb;
use harness::{Harness, employee, settings, user};

fn local(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").expect("local time")
}

/// A start well inside the default watched window, on the minute.
fn recent(hours_ago: i64) -> DateTime<Utc> {
    let on_the_minute = Utc::now().duration_trunc(Span::minutes(1)).expect("minute");
    on_the_minute - Span::days(20) + Span::hours(hours_ago.rem_euclid(400))
}

/// 01:00 UTC on the most recent past last Sunday of `month` (March or October): the
/// instant of a European daylight-saving change.
fn last_change(month: u32) -> DateTime<Utc> {
    let now = Utc::now();
    let in_year = |year: i32| {
        let day = (25..=31)
            .rev()
            .filter_map(|d| NaiveDate::from_ymd_opt(year, month, d))
            .find(|d| d.weekday() == Weekday::Sun)
            .expect("a last Sunday");
        day.and_hms_opt(1, 0, 0).expect("01:00").and_utc()
    };
    let this_year = in_year(now.year());
    if this_year < now - Span::days(1) {
        this_year
    } else {
        in_year(now.year() - 1)
    }
}

/// Days back from now to watch `instant`, with a margin.
fn days_back_to(instant: DateTime<Utc>) -> u32 {
    u32::try_from((Utc::now() - instant).num_days() + 3).expect("days")
}

async fn conflicts(h: &Harness<batisync::batigest::ledger::MemoryLedger>) -> Vec<(String, String)> {
    sqlx::query_as("SELECT entity_key, winner FROM batisync.conflicts ORDER BY id")
        .fetch_all(&h.db.pool)
        .await
        .expect("conflicts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_validated_slots_become_a_thousand_rows_with_codes_local_times_and_hours() {
    // Arrange: 996 ordinary slots (some with odd seconds), and four on both sides of
    // the last March and October daylight-saving changes.
    let (march, october) = (last_change(3), last_change(10));
    let mut h = Harness::new(
        HeuresSettings {
            days_back: days_back_to(march.min(october)),
            ..settings()
        },
        Faults::default(),
    )
    .await;
    let base = (Utc::now() - Span::days(30))
        .duration_trunc(Span::minutes(1))
        .expect("minute");
    let mut expected = Vec::new();
    for i in 0..996_usize {
        let odd_seconds = if i % 7 == 0 { 57 } else { 0 };
        let start = base + Span::minutes(30 * i as i64) + Span::seconds(odd_seconds);
        let spec = h.slot(i % 10, i % 5, start);
        h.sim.insert_slot(&spec);
        let local_start = (start - Span::seconds(odd_seconds))
            .with_timezone(&Paris)
            .naive_local();
        expected.push((spec, local_start));
    }
    // Paris: October 03:00 CEST → 02:00 CET, March 02:00 CET → 03:00 CEST, at 01:00 UTC.
    let at = |change: DateTime<Utc>, minutes: i64, local_time: &str| {
        let day = change.date_naive().format("%Y-%m-%d");
        (
            change + Span::minutes(minutes),
            local(&format!("{day} {local_time}")),
        )
    };
    let dst = [
        (0, at(october, -30, "02:30")),
        (1, at(october, 30, "02:30")),
        (2, at(march, -30, "01:30")),
        (3, at(march, 30, "03:30")),
    ];
    for (n, (start, local_start)) in dst {
        let spec = h.slot(n, 0, start);
        h.sim.insert_slot(&spec);
        expected.push((spec, local_start));
    }

    // Act
    let report = h.poll().await;
    let outcome = h.drain().await;

    // Assert
    assert_eq!(
        (report.read, report.changed, report.captured.inserted),
        (1000, 1000, 1000)
    );
    assert_eq!((outcome.applied, outcome.dead), (1000, 0));
    let rows = h.rows();
    assert_eq!(rows.len(), 1000);
    let by_key: std::collections::HashMap<LedgerKey, LedgerValues> =
        rows.into_iter().map(|r| (r.key, r.values)).collect();
    for (spec, local_start) in &expected {
        let n: usize = spec.user_id[24..].parse().expect("user number");
        let key = LedgerKey {
            chantier: spec.project_code.clone().expect("code"),
            employee: employee(n),
            start: *local_start,
        };
        let values = by_key
            .get(&key)
            .unwrap_or_else(|| panic!("row for {key:?}"));
        assert_eq!(values.hours, Hours::from_minutes(240));
        assert_eq!(values.hours.to_decimal_string(), "4.0000");
        assert_eq!(
            (values.meal, values.journey),
            (n.is_multiple_of(2), n.is_multiple_of(3))
        );
    }
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_the_same_window_twice_enqueues_nothing_new() {
    // Arrange
    let mut h = Harness::new(settings(), Faults::default()).await;
    for i in 0..50 {
        h.sim
            .insert_slot(&h.slot(i % 10, i % 5, recent(i as i64 * 3)));
    }
    let first = h.poll().await;
    h.drain().await;

    // Act
    let second = h.poll().await;

    // Assert
    assert_eq!(first.captured.inserted, 50);
    assert_eq!((second.read, second.changed, second.vanished), (50, 0, 0));
    assert_eq!(second.captured.inserted, 0);
    assert!(first.load.is_some() && second.load.is_none());
    let events: i64 = h.db.scalar("SELECT count(*) FROM batisync.outbox").await;
    assert_eq!(events, 50);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_moved_in_time_to_another_chantier_or_employee_moves_its_row() {
    // Arrange
    let mut h = Harness::new(settings(), Faults::default()).await;
    let start = recent(0);
    let ids: Vec<String> = (0..3)
        .map(|i| h.sim.insert_slot(&h.slot(i, 0, start)))
        .collect();
    h.poll().await;
    h.drain().await;
    assert_eq!(h.rows().len(), 3);
    let (other_project, other_code) = (h.projects[1].id, h.projects[1].data.code.clone());

    // Act
    h.sim
        .update_slot(&ids[0], |s| s.start += Span::hours(2))
        .expect("move in time");
    h.sim
        .update_slot(&ids[1], |s| {
            s.project_id = other_project;
            s.project_code = Some(other_code.clone());
        })
        .expect("other chantier");
    h.sim
        .update_slot(&ids[2], |s| s.user_id = user(7))
        .expect("other employee");
    let report = h.poll().await;
    let outcome = h.drain().await;

    // Assert
    assert_eq!((report.changed, outcome.applied, outcome.dead), (3, 3, 0));
    let rows = h.rows();
    assert_eq!(rows.len(), 3, "moved, not duplicated: {rows:?}");
    let local_start = |t: DateTime<Utc>| t.with_timezone(&Paris).naive_local();
    let keys: HashSet<(String, String, NaiveDateTime)> = rows
        .into_iter()
        .map(|r| (r.key.chantier, r.key.employee, r.key.start))
        .collect();
    let code0 = h.projects[0].data.code.clone();
    let expected: HashSet<_> = [
        (
            code0.clone(),
            employee(0),
            local_start(start + Span::hours(2)),
        ),
        (other_code, employee(1), local_start(start)),
        (code0, employee(7), local_start(start)),
    ]
    .into_iter()
    .collect();
    assert_eq!(keys, expected);
    let outcomes = h.outcomes(&ids[0]).await;
    assert!(
        outcomes[1]
            .1
            .as_deref()
            .is_some_and(|o| o.contains("moved"))
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unvalidating_or_deleting_a_slot_removes_its_row() {
    // Arrange
    let mut h = Harness::new(settings(), Faults::default()).await;
    let ids: Vec<String> = (0..3)
        .map(|i| h.sim.insert_slot(&h.slot(i, 0, recent(i as i64))))
        .collect();
    h.poll().await;
    h.drain().await;
    assert_eq!(h.rows().len(), 3);

    // Act
    h.sim
        .update_slot(&ids[0], |s| s.status = "PENDING".into())
        .expect("unvalidate");
    h.sim.delete_slot(&ids[1]).expect("delete");
    let report = h.poll().await;
    let outcome = h.drain().await;

    // Assert
    assert_eq!((report.changed, report.vanished), (1, 1));
    assert_eq!((outcome.applied, outcome.dead), (2, 0));
    let rows = h.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].key.employee, employee(2));
    let deleted = h.outcomes(&ids[1]).await;
    assert!(
        deleted[1]
            .1
            .as_deref()
            .is_some_and(|o| o.contains("row removed"))
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_on_unvalidated_keep_the_row_stays_and_the_outcome_says_so() {
    // Arrange
    let keep = HeuresSettings {
        on_unvalidated: OnUnvalidated::Keep,
        ..settings()
    };
    let mut h = Harness::new(keep, Faults::default()).await;
    let id = h.sim.insert_slot(&h.slot(0, 0, recent(0)));
    h.poll().await;
    h.drain().await;

    // Act
    h.sim
        .update_slot(&id, |s| s.status = "REJECTED".into())
        .expect("reject");
    h.poll().await;
    h.drain().await;

    // Assert
    assert_eq!(h.rows().len(), 1);
    let outcomes = h.outcomes(&id).await;
    assert!(outcomes[1].1.as_deref().is_some_and(|o| o.contains("kept")));
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmapped_employee_is_a_dead_letter_then_delivered_once_codebs_is_filled() {
    // Arrange
    let mut h = Harness::new(settings(), Faults::default()).await;
    let id = h.sim.insert_slot(&h.slot(42, 0, recent(0)));
    h.sim.insert_slot(&h.slot(1, 0, recent(5)));
    h.poll().await;
    let first = h.drain().await;
    let outcomes = h.outcomes(&id).await;
    let error = outcomes[0].2.clone().unwrap_or_default();
    let reasons = h.dead_reasons(&id).await;

    // Act: the office fills Salarie.codebs; the poller's next map refresh re-drives.
    h.employees.set(&employee(42), Some(&user(42)));
    h.directory.refresh().await.expect("refresh");
    h.poller.refresh_and_redrive().await;
    let second = h.drain().await;

    // Assert
    assert_eq!((first.applied, first.dead), (1, 1));
    assert_eq!(outcomes[0].0, "dead");
    assert_eq!(reasons.len(), 1);
    assert_eq!(reasons[0].code, ReasonCode::EmployeeUnmapped);
    assert_eq!(reasons[0].text("user_id"), Some(user(42).as_str()));
    assert!(
        error.contains(&user(42)) && error.contains("Salarie.codebs"),
        "{error}"
    );
    assert_eq!((second.applied, second.dead), (1, 0));
    assert!(h.rows().iter().any(|r| r.key.employee == employee(42)));
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_ledger_write_and_the_ack_leaves_one_row_per_slot() {
    // Arrange: a worker claims, writes to the ledger, then dies (no ack, and for half
    // the slots not even the link row).
    let mut h = Harness::new(settings(), Faults::default()).await;
    let ids: Vec<String> = (0..10)
        .map(|i| h.sim.insert_slot(&h.slot(i, 0, recent(0))))
        .collect();
    h.poll().await;
    let claimed =
        h.db.outbox()
            .claim(FLOW, "crashed-worker", 100, Duration::from_millis(50))
            .await
            .expect("claim");
    assert_eq!(claimed.len(), 10);
    for event in &claimed {
        h.handler
            .apply(event)
            .await
            .expect("applied before the crash");
    }
    sqlx::query("DELETE FROM batisync.links WHERE flow = $1 AND source_key = ANY($2)")
        .bind(FLOW)
        .bind(&ids[..5])
        .execute(&h.db.pool)
        .await
        .expect("forget links");

    // Act: the lease expires, the events are rescued and dispatched again.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rescued = h.db.outbox().rescue_expired().await.expect("rescue");
    let outcome = h.drain().await;

    // Assert
    assert_eq!((rescued, outcome.applied, outcome.dead), (10, 10, 0));
    assert_eq!(h.rows().len(), 10, "no duplicate row");
    let outcomes = h.outcomes(&ids[0]).await;
    assert!(
        outcomes[0]
            .1
            .as_deref()
            .is_some_and(|o| o.contains("already up to date"))
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batigest_edit_newer_than_the_slot_wins_and_is_recorded() {
    // Arrange: a slot written, then its row edited in Batigest.
    let mut h = Harness::new(settings(), Faults::default()).await;
    let id = h.sim.insert_slot(&h.slot(0, 0, recent(0)));
    h.poll().await;
    h.drain().await;
    let row = h.rows().remove(0);
    let office = LedgerValues {
        hours: Hours::from_minutes(180),
        ..row.values
    };
    h.ledger.edit_as_batigest_user(&row.key, Some(office));

    // Act 1: the slot is captured again without having changed since our write (a
    // resync): Batigest's edit is the newer change.
    batisync::flows::heures::request_resync(&h.db.pool)
        .await
        .expect("resync");
    h.poll().await;
    h.drain().await;

    // Assert 1
    assert_eq!(h.rows()[0].values, office, "Batigest's edit kept");
    assert_eq!(conflicts(&h).await, vec![(id.clone(), "target".to_owned())]);

    // Act 2: the field corrects the slot afterwards: now BatiSimply is newer.
    h.sim
        .update_slot(&id, |s| s.minutes = 300)
        .expect("field edit");
    h.poll().await;
    h.drain().await;

    // Assert 2
    assert_eq!(h.rows()[0].values.hours, Hours::from_minutes(300));
    assert_eq!(
        conflicts(&h).await,
        vec![(id.clone(), "target".to_owned()), (id, "source".to_owned())]
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_percent_of_malformed_slots_are_reported_and_the_others_delivered() {
    // Arrange
    let faults = Faults {
        share_malformed_records: 0.1,
        ..Faults::default()
    };
    let mut h = Harness::new(settings(), faults).await;
    for i in 0..200 {
        h.sim.insert_slot(&h.slot(i % 10, i % 5, recent(i as i64)));
    }

    // Act
    let report = h.poll().await;
    let outcome = h.drain().await;

    // Assert: the malformed ones are reported with their id and field, never taken as
    // deleted; the others are delivered; the next clean read brings the rest.
    let rejected = report.rejected.len();
    assert!(
        (5..=50).contains(&rejected),
        "about 10 % rejected: {rejected}"
    );
    assert!(
        report
            .rejected
            .iter()
            .all(|r| r.record_id.is_some() && r.field == "startDate")
    );
    assert_eq!(report.read + rejected, 200);
    assert_eq!(report.vanished, 0);
    assert_eq!((outcome.applied, outcome.dead), (report.read, 0));
    assert_eq!(h.rows().len(), report.read);
    h.sim.set_faults(Faults::default());
    h.poll().await;
    h.drain().await;
    assert_eq!(h.rows().len(), 200);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_slots_on_one_suivimo_key_are_reported_not_overwritten() {
    // Arrange: the same employee and chantier at 02:30 CEST and 02:30 CET on the night
    // of the October change: one local time.
    let october = last_change(10);
    let watch = HeuresSettings {
        days_back: days_back_to(october),
        ..settings()
    };
    let mut h = Harness::new(watch, Faults::default()).await;
    let first = h
        .sim
        .insert_slot(&h.slot(0, 0, october - Span::minutes(30)));
    h.poll().await;
    h.drain().await;
    let second = h
        .sim
        .insert_slot(&h.slot(0, 0, october + Span::minutes(30)));

    // Act
    h.poll().await;
    let outcome = h.drain().await;

    // Assert
    assert_eq!(outcome.dead, 1);
    let error = h.outcomes(&second).await[0].2.clone().unwrap_or_default();
    assert!(error.starts_with("collision"), "{error}");
    assert!(error.contains(&first), "names the other slot: {error}");
    assert_eq!(h.rows().len(), 1);
    assert_eq!(h.rows()[0].values.hours, Hours::from_minutes(240));
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_modified_since_query_only_changes_are_read_and_a_sweep_finds_deletes() {
    // Arrange
    let memory = std::sync::Arc::new(batisync::batigest::ledger::MemoryLedger::new(
        batisync::batigest::ledger::LedgerLimits::default(),
    ));
    // No overlap margin here, so the modified-since answer holds exactly the changes.
    let no_overlap = HeuresSettings {
        overlap_secs: 0,
        ..settings()
    };
    let mut h = Harness::build(no_overlap, Faults::default(), memory, Some("modifiedSince")).await;
    let ids: Vec<String> = (0..20)
        .map(|i| h.sim.insert_slot(&h.slot(i % 10, i % 5, recent(i as i64))))
        .collect();
    // The query is sent at second precision: let the inserts fall in an earlier second.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let first = h.poll().await;
    h.drain().await;

    // Act: one slot corrected, one deleted.
    h.sim
        .update_slot(&ids[0], |s| s.minutes = 200)
        .expect("edit");
    h.sim.delete_slot(&ids[1]).expect("delete");
    let incremental = h.poll().await;
    h.drain().await;
    h.make_sweep_due().await;
    let sweep = h.poll().await;
    h.drain().await;

    // Assert
    assert!(first.window_read);
    assert_eq!((first.read, first.changed), (20, 20));
    assert!(!incremental.window_read);
    assert_eq!(
        (incremental.read, incremental.changed, incremental.vanished),
        (1, 1, 0)
    );
    assert!(sweep.window_read);
    assert_eq!((sweep.read, sweep.changed, sweep.vanished), (19, 0, 1));
    let rows = h.ledger.rows();
    assert_eq!(rows.len(), 19);
    assert!(
        rows.iter()
            .any(|r| r.values.hours == Hours::from_minutes(200))
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_without_code_is_a_dead_letter_until_its_chantier_is_known() {
    // Arrange: one slot on a project sent without projectCode but readable from the
    // API, one on a project BatiSimply does not know.
    let mut h = Harness::new(settings(), Faults::default()).await;
    let mut readable = h.slot(0, 2, recent(0));
    readable.project_code = None;
    let mut unknown = h.slot(1, 0, recent(1));
    (unknown.project_id, unknown.project_code) = (999, None);
    let readable_id = h.sim.insert_slot(&readable);
    let unknown_id = h.sim.insert_slot(&unknown);
    h.poll().await;
    let first = h.drain().await;
    let error = h.outcomes(&unknown_id).await[0]
        .2
        .clone()
        .unwrap_or_default();
    let reasons = h.dead_reasons(&unknown_id).await;

    // Act: the chantiers flow links project 999 to chantier CH999; next re-drive pass.
    sqlx::query(
        "INSERT INTO batisync.links (flow, source_key, target_id) VALUES ('chantiers', 'CH999', '999')",
    )
    .execute(&h.db.pool)
    .await
    .expect("link");
    h.directory.refresh().await.expect("refresh");
    h.poller.refresh_and_redrive().await;
    let second = h.drain().await;

    // Assert
    assert_eq!((first.applied, first.dead), (1, 1));
    assert_eq!(reasons.len(), 1);
    assert_eq!(reasons[0].code, ReasonCode::UnknownChantier);
    assert_eq!(reasons[0].int("project_id"), Some(999));
    assert!(
        error.contains("999") && error.contains("projectCode"),
        "{error}"
    );
    assert_eq!((second.applied, second.dead), (1, 0));
    let codes: HashSet<String> = h.rows().into_iter().map(|r| r.key.chantier).collect();
    let expected: HashSet<String> = [h.projects[2].data.code.clone(), "CH999".to_owned()].into();
    assert_eq!(codes, expected);
    assert!(
        h.outcomes(&readable_id).await[0]
            .1
            .as_deref()
            .is_some_and(|o| o.contains("inserted"))
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn between_full_reads_only_the_recent_days_are_read() {
    // Arrange: a slot 20 days old and one from yesterday; every poll reads the last 7 days,
    // the whole 40-day window only every deletion_sweep_secs.
    let last_week = HeuresSettings {
        recent_days: 7,
        ..settings()
    };
    let mut h = Harness::new(last_week, Faults::default()).await;
    let old = h.sim.insert_slot(&h.slot(0, 0, recent(0)));
    let yesterday = Utc::now().duration_trunc(Span::minutes(1)).expect("minute") - Span::days(1);
    let new = h.sim.insert_slot(&h.slot(1, 0, yesterday));
    let first = h.poll().await;
    h.drain().await;

    // Act: both corrected, then a read between sweeps, then a sweep.
    for id in [&old, &new] {
        h.sim.update_slot(id, |s| s.minutes = 120).expect("edit");
    }
    let between = h.poll().await;
    h.drain().await;
    h.make_sweep_due().await;
    let sweep = h.poll().await;
    h.drain().await;

    // Assert
    assert!(first.full_read);
    assert_eq!((first.read, first.changed), (2, 2));
    assert!(between.window_read && !between.full_read);
    assert_eq!((between.read, between.changed, between.vanished), (1, 1, 0));
    assert!(sweep.full_read);
    assert_eq!((sweep.read, sweep.changed, sweep.vanished), (2, 1, 0));
    assert!(
        h.rows()
            .iter()
            .all(|r| r.values.hours == Hours::from_minutes(120))
    );
    h.finish().await;
}
