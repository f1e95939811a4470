//! The outbox engine against a real PostgreSQL: capture, claim, order, retry, dead,
//! leases, supersede, re-drive, prune.

mod common;

use std::time::Duration;

use batisync::outbox::{CursorAdvance, NewEvent, OutboxError};
use common::{TestDb, event};
use serde_json::json;

const FLOW: &str = "chantiers";
const LEASE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn capturing_the_same_change_twice_stores_it_once() {
    let db = TestDb::new().await;
    let outbox = db.outbox();
    let batch = [event("A", 1), event("B", 1)];

    let first = outbox.capture(FLOW, &batch, None, false).await.unwrap();
    let second = outbox.capture(FLOW, &batch, None, false).await.unwrap();

    assert_eq!((first.inserted, first.duplicates), (2, 0));
    assert_eq!((second.inserted, second.duplicates), (0, 2));
    let total: i64 = db.scalar("SELECT count(*) FROM batisync.outbox").await;
    assert_eq!(total, 2);
    db.drop().await;
}

#[tokio::test]
async fn a_repeated_change_among_new_ones_is_skipped_without_breaking_the_transaction() {
    let db = TestDb::new().await;
    let outbox = db.outbox();
    let start = json!(1);
    let next = json!(2);
    outbox
        .capture(
            FLOW,
            &[event("A", 1)],
            Some(CursorAdvance {
                source: "src",
                expected: None,
                next: &start,
            }),
            false,
        )
        .await
        .unwrap();

    // In a caller's transaction with a write of its own, a batch repeating A@1 (and
    // B@1 twice): the new events and the caller's write commit, the repeats do not.
    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query("INSERT INTO batisync.cursors (source, position) VALUES ('other', '7')")
        .execute(&mut *tx)
        .await
        .unwrap();
    let report = batisync::outbox::capture(
        &mut tx,
        FLOW,
        &[event("A", 1), event("B", 1), event("B", 1), event("C", 1)],
        Some(CursorAdvance {
            source: "src",
            expected: Some(&start),
            next: &next,
        }),
        false,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    assert_eq!((report.inserted, report.duplicates), (2, 2));
    let stored: Vec<String> = sqlx::query_scalar(
        "SELECT entity_key || '@' || source_version FROM batisync.outbox ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(stored, ["A@1", "B@1", "C@1"]);
    let cursors: Vec<(String, serde_json::Value)> =
        sqlx::query_as("SELECT source, position FROM batisync.cursors ORDER BY source")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        cursors,
        [
            ("other".to_string(), json!(7)),
            ("src".to_string(), json!(2))
        ]
    );
    db.drop().await;
}

#[tokio::test]
async fn a_failure_in_the_middle_of_a_capture_leaves_neither_rows_nor_a_moved_cursor() {
    let db = TestDb::new().await;
    let outbox = db.outbox();
    let mut bad = event("B", 1);
    bad.entity_key = String::new(); // violates the CHECK constraint, after a good row
    let next = json!(42);
    let advance = CursorAdvance {
        source: "chantiers:ChantierDef",
        expected: None,
        next: &next,
    };

    let result = outbox
        .capture(FLOW, &[event("A", 1), bad], Some(advance), false)
        .await;

    assert!(
        matches!(result, Err(OutboxError::Database(_))),
        "{result:?}"
    );
    assert!(db.status_counts().await.is_empty());
    let cursors: i64 = db.scalar("SELECT count(*) FROM batisync.cursors").await;
    assert_eq!(cursors, 0);
    db.drop().await;
}

#[tokio::test]
async fn a_cursor_moved_by_someone_else_refuses_the_capture() {
    let db = TestDb::new().await;
    let outbox = db.outbox();
    let one = json!(1);
    let two = json!(2);
    let start = CursorAdvance {
        source: "s",
        expected: None,
        next: &one,
    };
    outbox
        .capture(FLOW, &[event("A", 1)], Some(start), false)
        .await
        .unwrap();

    // A second poller still believes there is no cursor.
    let stale = CursorAdvance {
        source: "s",
        expected: None,
        next: &two,
    };
    let result = outbox
        .capture(FLOW, &[event("A", 2)], Some(stale), false)
        .await;

    assert!(
        matches!(result, Err(OutboxError::CursorConflict { .. })),
        "{result:?}"
    );
    let position: serde_json::Value = db
        .scalar("SELECT position FROM batisync.cursors WHERE source = 's'")
        .await;
    assert_eq!(position, one);
    assert_eq!(db.status_counts().await, [("pending".to_string(), 1)]);
    db.drop().await;
}

#[tokio::test]
async fn a_claim_never_hands_out_two_events_of_one_key() {
    let db = TestDb::new().await;
    let outbox = db.outbox();
    outbox
        .capture(
            FLOW,
            &[event("A", 1), event("A", 2), event("B", 1)],
            None,
            false,
        )
        .await
        .unwrap();

    let first = outbox.claim(FLOW, "w1", 10, LEASE).await.unwrap();
    let second = outbox.claim(FLOW, "w2", 10, LEASE).await.unwrap();

    let keys: Vec<_> = first
        .iter()
        .map(|e| (e.entity_key.as_str(), e.source_version.as_str()))
        .collect();
    assert_eq!(keys, [("A", "1"), ("B", "1")]);
    assert!(second.is_empty(), "2 must wait for A@1: {second:?}");

    outbox
        .ack(FLOW, "w1", &[(first[0].id, "ok".into())])
        .await
        .unwrap();
    let third = outbox.claim(FLOW, "w2", 10, LEASE).await.unwrap();
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].source_version, "2");
    db.drop().await;
}

#[tokio::test]
async fn an_ack_from_a_worker_that_lost_its_lease_is_ignored() {
    let db = TestDb::new().await;
    let outbox = db.outbox();
    outbox
        .capture(FLOW, &[event("A", 1)], None, false)
        .await
        .unwrap();
    let claimed = outbox.claim(FLOW, "slow", 1, LEASE).await.unwrap();

    let acked = outbox
        .ack(FLOW, "someone-else", &[(claimed[0].id, "ok".into())])
        .await
        .unwrap();

    assert_eq!(acked, 0);
    assert_eq!(db.status_of(claimed[0].id).await, "in_flight");
    db.drop().await;
}

#[tokio::test]
async fn a_claimed_then_abandoned_event_comes_back_after_its_lease() {
    let db = TestDb::new().await;
    let outbox = db.outbox();
    outbox
        .capture(FLOW, &[event("A", 1)], None, false)
        .await
        .unwrap();
    let claimed = outbox.claim(FLOW, "crashed", 1, LEASE).await.unwrap();
    assert_eq!(
        outbox.rescue_expired().await.unwrap(),
        0,
        "the lease is still running"
    );
    // The worker "crashed": nobody acks. The lease ends (we move it into the past).
    sqlx::query("UPDATE batisync.queue SET locked_until = now() - interval '1 second'")
        .execute(&db.pool)
        .await
        .unwrap();

    let rescued = outbox.rescue_expired().await.unwrap();
    let again = outbox.claim(FLOW, "healthy", 1, LEASE).await.unwrap();

    assert_eq!(rescued, 1);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, claimed[0].id);
    assert_eq!(again[0].attempts, 2, "the abandoned attempt counts");
    let kind: String = db.scalar("SELECT kind FROM batisync.outbox_failures").await;
    assert_eq!(kind, "lease_expired");
    db.drop().await;
}

#[tokio::test]
async fn a_newer_event_supersedes_the_older_waiting_ones_of_its_key_but_not_its_head() {
    let db = TestDb::new().await;
    let outbox = db.outbox();
    outbox
        .capture(FLOW, &[event("A", 1), event("B", 1)], None, true)
        .await
        .unwrap();
    outbox
        .capture(FLOW, &[event("A", 2)], None, true)
        .await
        .unwrap();

    let report = outbox
        .capture(FLOW, &[event("A", 3), event("A", 4)], None, true)
        .await
        .unwrap();
    let heads = outbox.claim(FLOW, "w", 10, LEASE).await.unwrap();
    outbox
        .ack(FLOW, "w", &[(heads[0].id, "ok".into())])
        .await
        .unwrap();
    let next = outbox.claim(FLOW, "w", 10, LEASE).await.unwrap();

    assert_eq!(report.superseded, 2, "2 (stored) and A@3 (same batch)");
    let versions = |events: &[batisync::outbox::Event]| -> Vec<String> {
        events
            .iter()
            .map(|e| format!("{}@{}", e.entity_key, e.source_version))
            .collect()
    };
    assert_eq!(versions(&heads), ["A@1", "B@1"], "heads are not superseded");
    assert_eq!(versions(&next), ["A@4"]);
    let superseded_by: Option<i64> = sqlx::query_scalar(
        "SELECT superseded_by FROM batisync.outbox WHERE entity_key = 'A' AND source_version = '2'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(superseded_by, Some(next[0].id));
    db.drop().await;
}

#[tokio::test]
async fn redriving_a_dead_letter_queues_it_again_unless_a_newer_event_exists() {
    let db = TestDb::new().await;
    let outbox = db.outbox();
    outbox
        .capture(FLOW, &[event("A", 1), event("B", 1)], None, false)
        .await
        .unwrap();
    let claimed = outbox.claim(FLOW, "w", 10, LEASE).await.unwrap();
    let dead: Vec<_> = claimed
        .iter()
        .map(|e| batisync::outbox::Failure {
            event_id: e.id,
            kind: "permanent",
            message: "unknown employee".into(),
            retry_in: None,
            reason: Some(
                batisync::outbox::Reason::new(batisync::outbox::ReasonCode::EmployeeUnmapped)
                    .with("user_id", "u-1"),
            ),
        })
        .collect();
    outbox.fail(FLOW, "w", &dead).await.unwrap();
    let stored = common::dead_reasons(&db, FLOW, "A").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(
        (stored[0].code, stored[0].text("user_id")),
        (batisync::outbox::ReasonCode::EmployeeUnmapped, Some("u-1"))
    );
    // B moves on: a newer B is captured and delivered.
    outbox
        .capture(FLOW, &[event("B", 2)], None, false)
        .await
        .unwrap();
    let b2 = outbox.claim(FLOW, "w", 10, LEASE).await.unwrap();
    outbox
        .ack(FLOW, "w", &[(b2[0].id, "ok".into())])
        .await
        .unwrap();

    let report = outbox.redrive_all_dead(Some(FLOW)).await.unwrap();

    assert_eq!(report.requeued, [claimed[0].id]);
    assert_eq!(
        report.superseded,
        [claimed[1].id],
        "old B must not overwrite newer B"
    );
    let again = outbox.claim(FLOW, "w", 10, LEASE).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempts), (claimed[0].id, 1));
    db.drop().await;
}

#[tokio::test]
async fn a_dead_letter_does_not_block_the_next_events_of_its_key() {
    let db = TestDb::new().await;
    let outbox = db.outbox();
    outbox
        .capture(FLOW, &[event("A", 1), event("A", 2)], None, false)
        .await
        .unwrap();
    let first = outbox.claim(FLOW, "w", 10, LEASE).await.unwrap();
    let failure = batisync::outbox::Failure {
        event_id: first[0].id,
        kind: "permanent",
        message: "bad data".into(),
        retry_in: None,
        reason: None,
    };

    outbox.fail(FLOW, "w", &[failure]).await.unwrap();
    let stored = common::dead_reasons(&db, FLOW, "A").await;
    assert_eq!(stored[0].code, batisync::outbox::ReasonCode::Other);
    let next = outbox.claim(FLOW, "w", 10, LEASE).await.unwrap();

    assert_eq!(next.len(), 1);
    assert_eq!(next[0].source_version, "2");
    db.drop().await;
}

#[tokio::test]
async fn a_capture_in_the_callers_transaction_is_claimable_once_committed_and_not_before() {
    let db = TestDb::new().await;
    let outbox = db.outbox();
    let mut tx = db.pool.begin().await.unwrap();
    batisync::outbox::capture(&mut tx, FLOW, &[event("A", 1)], None, false)
        .await
        .unwrap();
    assert!(outbox.claim(FLOW, "w", 10, LEASE).await.unwrap().is_empty());

    tx.commit().await.unwrap();

    assert_eq!(outbox.claim(FLOW, "w", 10, LEASE).await.unwrap().len(), 1);
    db.drop().await;
}

#[tokio::test]
async fn a_capture_rolled_back_with_the_callers_transaction_leaves_nothing() {
    let db = TestDb::new().await;
    let outbox = db.outbox();
    let mut tx = db.pool.begin().await.unwrap();
    batisync::outbox::capture(&mut tx, FLOW, &[event("A", 1)], None, false)
        .await
        .unwrap();

    tx.rollback().await.unwrap();

    assert!(outbox.claim(FLOW, "w", 10, LEASE).await.unwrap().is_empty());
    assert!(db.status_counts().await.is_empty());
    db.drop().await;
}

#[tokio::test]
async fn delivered_events_past_retention_are_pruned() {
    let db = TestDb::new().await;
    let outbox = db.outbox();
    let batch: Vec<NewEvent> = (0..5).map(|i| event(&format!("K{i}"), 1)).collect();
    outbox.capture(FLOW, &batch, None, false).await.unwrap();
    let claimed = outbox.claim(FLOW, "w", 10, LEASE).await.unwrap();
    let done: Vec<_> = claimed.iter().map(|e| (e.id, "ok".to_string())).collect();
    outbox.ack(FLOW, "w", &done).await.unwrap();
    sqlx::query(
        "UPDATE batisync.outbox SET captured_at = now() - interval '41 days', finished_at = now() - interval '40 days' WHERE id <= $1",
    )
    .bind(claimed[2].id)
    .execute(&db.pool)
    .await
    .unwrap();

    let pruned = outbox
        .prune(Duration::from_secs(30 * 86_400), 2)
        .await
        .unwrap();

    assert_eq!(pruned, 3);
    assert_eq!(db.status_counts().await, [("done".to_string(), 2)]);
    db.drop().await;
}

/// The support queries in `sql/inspect/` run against the current schema, with events in
/// every state (the psql variables they use are given a value).
#[tokio::test]
async fn the_inspect_queries_run_on_the_current_schema() {
    let db = TestDb::new().await;
    let outbox = db.outbox();
    outbox
        .capture(
            FLOW,
            &[event("A", 1), event("A", 2), event("B", 1)],
            None,
            false,
        )
        .await
        .unwrap();
    let claimed = outbox.claim(FLOW, "w", 1, LEASE).await.unwrap();
    outbox
        .ack(FLOW, "w", &[(claimed[0].id, "ok".into())])
        .await
        .unwrap();
    outbox.claim(FLOW, "w", 10, LEASE).await.unwrap();

    let mut files: Vec<_> = std::fs::read_dir("sql/inspect")
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let sql: String = text
            .lines()
            .filter(|line| !line.starts_with('\\'))
            .map(|line| line.replace(":key", "'A'"))
            .collect::<Vec<_>>()
            .join("\n");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&db.pool)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    db.drop().await;
}

/// Keys are claimed in the order they started waiting. A key keeps its place for the
/// events that were already waiting when its previous event was claimed; an event
/// captured after that claim sends the key to the back of the line.
#[tokio::test]
async fn keys_are_served_in_the_order_they_started_waiting() {
    let db = TestDb::new().await;
    let outbox = db.outbox();
    let capture = |events: Vec<NewEvent>| {
        let outbox = outbox.clone();
        async move { outbox.capture(FLOW, &events, None, false).await.unwrap() }
    };
    let next = || async {
        let mut claimed = outbox.claim(FLOW, "w", 1, LEASE).await.unwrap();
        let event = claimed.pop().unwrap();
        (
            event.entity_key.clone(),
            event.source_version.clone(),
            event.id,
        )
    };
    let ack = |id: i64| {
        let outbox = outbox.clone();
        async move { outbox.ack(FLOW, "w", &[(id, "ok".into())]).await.unwrap() }
    };
    capture(vec![event("A", 1), event("B", 1)]).await;
    capture(vec![event("A", 2)]).await;

    let (key, version, id) = next().await;
    assert_eq!((key.as_str(), version.as_str()), ("A", "1"));
    ack(id).await;
    // A2 was waiting when A1 was claimed: A keeps its place, ahead of B (whose event
    // is older than A2).
    let (key, version, a2) = next().await;
    assert_eq!((key.as_str(), version.as_str()), ("A", "2"));

    // A3 arrives while A2 is being delivered: after A2, A goes behind B.
    tokio::time::sleep(Duration::from_millis(5)).await;
    capture(vec![event("A", 3)]).await;
    ack(a2).await;
    assert_eq!(next().await.0, "B");
    let (key, version, _) = next().await;
    assert_eq!((key.as_str(), version.as_str()), ("A", "3"));
    db.drop().await;
}

/// Upgrading from the schema where claims wrote outbox rows: a claim in progress ends
/// (its attempt stays counted), the queue order follows the heads, and delivery goes on
/// in per-key order.
#[tokio::test]
async fn an_upgrade_ends_old_claims_and_keeps_per_key_order() {
    let db = TestDb::migrated_to(Some(20261127122000)).await;
    for sql in [
        "INSERT INTO batisync.outbox (flow, entity_key, source_version, operation, payload, \
                status, attempts, locked_by, locked_until) VALUES \
         ('chantiers', 'A', '1', 'upsert', '{}', 'in_flight', 1, 'w', now() + interval '1 minute'), \
         ('chantiers', 'A', '2', 'upsert', '{}', 'waiting', 0, NULL, NULL), \
         ('chantiers', 'B', '1', 'upsert', '{}', 'pending', 2, NULL, NULL)",
        "INSERT INTO batisync.queue (flow, entity_key, event_id, locked_by, locked_until, next_attempt_at) \
         SELECT flow, entity_key, min(id), 'w', now() + interval '1 minute', now() + interval '1 minute' \
         FROM batisync.outbox WHERE entity_key = 'A' GROUP BY flow, entity_key",
        "INSERT INTO batisync.queue (flow, entity_key, event_id) \
         SELECT flow, entity_key, id FROM batisync.outbox WHERE entity_key = 'B'",
    ] {
        sqlx::query(sql).execute(&db.pool).await.unwrap();
    }

    batisync::db::migrator().run(&db.pool).await.unwrap();

    assert_eq!(
        db.status_counts().await,
        [("pending".to_string(), 2), ("waiting".to_string(), 1)]
    );
    let outbox = db.outbox();
    let claimed = outbox.claim(FLOW, "w2", 10, LEASE).await.unwrap();
    let seen: Vec<(&str, &str, i32)> = claimed
        .iter()
        .map(|e| (e.entity_key.as_str(), e.source_version.as_str(), e.attempts))
        .collect();
    assert_eq!(seen, [("A", "1", 2), ("B", "1", 3)]);
    let done: Vec<(i64, String)> = claimed.iter().map(|e| (e.id, "ok".into())).collect();
    assert_eq!(outbox.ack(FLOW, "w2", &done).await.unwrap(), 2);
    let next = outbox.claim(FLOW, "w2", 10, LEASE).await.unwrap();
    assert_eq!((next.len(), next[0].source_version.as_str()), (1, "2"));
    db.drop().await;
}

#[tokio::test]
async fn a_claimed_run_is_in_flight_kept_from_other_workers_and_never_superseded() {
    let db = TestDb::new().await;
    let outbox = db.outbox();
    let a: Vec<NewEvent> = (1..=5).map(|v| event("A", v)).collect();
    outbox.capture(FLOW, &a, None, false).await.unwrap();
    outbox
        .capture(FLOW, &[event("B", 1)], None, false)
        .await
        .unwrap();

    let run = outbox.claim_runs(FLOW, "w1", 10, 3, LEASE).await.unwrap();
    let other = outbox.claim_runs(FLOW, "w2", 10, 3, LEASE).await.unwrap();

    let claimed: Vec<String> = run
        .iter()
        .map(|e| format!("{}@{}", e.entity_key, e.source_version))
        .collect();
    assert_eq!(claimed, ["A@1", "A@2", "A@3", "B@1"]);
    assert!(other.is_empty(), "both keys are claimed: {other:?}");
    assert_eq!(
        db.states("A").await,
        [
            "1 in_flight 0",
            "2 in_flight 0",
            "3 in_flight 0",
            "4 waiting 0",
            "5 waiting 0"
        ]
    );

    // A newer event supersedes the waiting events after the run, not the run.
    let report = outbox
        .capture(FLOW, &[event("A", 6)], None, true)
        .await
        .unwrap();
    assert_eq!(report.superseded, 2, "4 and A@5");

    // An outcome for an event outside the claimed run is refused.
    let a6 = db
        .scalar::<i64>("SELECT id FROM batisync.outbox WHERE source_version = '6'")
        .await;
    assert_eq!(
        outbox.ack(FLOW, "w1", &[(a6, "ok".into())]).await.unwrap(),
        0
    );

    // Two of the three were delivered: the head moves to the third, which waits untried.
    let acked = outbox
        .ack(
            FLOW,
            "w1",
            &[(run[0].id, "ok".into()), (run[1].id, "ok".into())],
        )
        .await
        .unwrap();
    assert_eq!(acked, 2);
    assert_eq!(
        db.states("A").await,
        [
            "1 done 1",
            "2 done 1",
            "3 pending 0",
            "4 superseded 0",
            "5 superseded 0",
            "6 waiting 0"
        ]
    );
    let next = outbox.claim_runs(FLOW, "w2", 10, 3, LEASE).await.unwrap();
    let versions: Vec<&str> = next.iter().map(|e| e.source_version.as_str()).collect();
    assert_eq!(versions, ["3", "6"], "B stays claimed by w1");
    db.drop().await;
}

#[tokio::test]
async fn a_run_whose_lease_expired_comes_back_whole_with_one_attempt_counted_on_its_head() {
    let db = TestDb::new().await;
    let outbox = db.outbox();
    let a: Vec<NewEvent> = (1..=3).map(|v| event("A", v)).collect();
    outbox.capture(FLOW, &a, None, false).await.unwrap();
    let run = outbox
        .claim_runs(FLOW, "crashed", 10, 16, LEASE)
        .await
        .unwrap();
    assert_eq!(run.len(), 3);
    sqlx::query("UPDATE batisync.queue SET locked_until = now() - interval '1 second'")
        .execute(&db.pool)
        .await
        .unwrap();

    assert_eq!(outbox.rescue_expired().await.unwrap(), 1);
    let again = outbox
        .claim_runs(FLOW, "healthy", 10, 16, LEASE)
        .await
        .unwrap();

    let attempts: Vec<(String, i32)> = again
        .iter()
        .map(|e| (e.source_version.clone(), e.attempts))
        .collect();
    assert_eq!(
        attempts,
        [("1".into(), 2), ("2".into(), 1), ("3".into(), 1)],
        "the head's lost attempt counts, the others were not known to be tried"
    );
    let late = outbox
        .ack(FLOW, "crashed", &[(run[0].id, "ok".into())])
        .await
        .unwrap();
    assert_eq!(late, 0, "the crashed worker's claim is over");
    db.drop().await;
}

#[tokio::test]
async fn an_upgrade_to_runs_keeps_a_claim_in_progress_valid_for_its_worker() {
    let db = TestDb::migrated_to(Some(20261127130000)).await;
    let outbox = db.outbox();
    outbox
        .capture(FLOW, &[event("A", 1), event("A", 2)], None, false)
        .await
        .unwrap();
    // A claim as the previous version made it: the queue row's lease, no run.
    sqlx::query(
        "UPDATE batisync.queue SET locked_by = 'w', locked_until = now() + interval '1 minute', \
                claimed_at = now(), next_attempt_at = now() + interval '1 minute'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let head: i64 = db.scalar("SELECT event_id FROM batisync.queue").await;

    batisync::db::migrator().run(&db.pool).await.unwrap();

    assert_eq!(db.states("A").await, ["1 in_flight 0", "2 waiting 0"]);
    assert_eq!(
        outbox.ack(FLOW, "w", &[(head, "ok".into())]).await.unwrap(),
        1
    );
    let next = outbox.claim_runs(FLOW, "w2", 10, 16, LEASE).await.unwrap();
    assert_eq!((next.len(), next[0].source_version.as_str()), (1, "2"));
    db.drop().await;
}

/// Dead letters recorded before reasons were stored: the two kinds that re-drive by
/// themselves are recognised from the previous version's exact words, the rest are
/// `other`.
#[tokio::test]
async fn an_upgrade_gives_old_dead_letters_their_reason() {
    let db = TestDb::migrated_to(Some(20261127170000)).await;
    let unmapped = "salarié introuvable / unknown employee: créneau / slot 7 du 2026-11-02 \
                    08:00:00: utilisateur BatiSimply 3f2a-77 sans salarié : renseigner \
                    Salarie.codebs pour cet utilisateur / BatiSimply user 3f2a-77 is unmapped";
    let unknown = "chantier introuvable / unknown chantier: créneau / slot 8 : le projet \
                   BatiSimply 999 n'a pas de projectCode (code chantier Batigest)";
    for (key, error) in [
        ("7", unmapped),
        ("8", unknown),
        ("9", "chantier \"00000401\": 422"),
    ] {
        sqlx::query(
            "WITH e AS (INSERT INTO batisync.outbox (flow, entity_key, source_version, \
                        operation, payload, status, attempts, last_error, finished_at) \
                        VALUES ('heures', $1, '1', 'upsert', '{}', 'dead', 1, $2, now()) \
                        RETURNING id) \
             INSERT INTO batisync.dead_events (event_id, flow) SELECT id, 'heures' FROM e",
        )
        .bind(key)
        .bind(error)
        .execute(&db.pool)
        .await
        .unwrap();
    }

    batisync::db::migrator().run(&db.pool).await.unwrap();

    let reason = |key: &'static str| {
        let db = &db;
        async move { common::dead_reasons(db, "heures", key).await.remove(0) }
    };
    let (r7, r8, r9) = (reason("7").await, reason("8").await, reason("9").await);
    assert_eq!(
        (r7.code, r7.text("user_id")),
        (
            batisync::outbox::ReasonCode::EmployeeUnmapped,
            Some("3f2a-77")
        )
    );
    assert_eq!(
        (r8.code, r8.int("project_id")),
        (batisync::outbox::ReasonCode::UnknownChantier, Some(999))
    );
    assert_eq!(r9.code, batisync::outbox::ReasonCode::Other);
    db.drop().await;
}
