//! Runs (one per poll that captured events) against a real PostgreSQL: recorded by the
//! poll's transaction, and summarised from the outbox for the console's journal.

mod common;
#[allow(dead_code)] // the harness serves several test files
#[path = "common/chantiers.rs"]
mod harness;

use std::time::Duration;

use batisync::batisimply::sim::Faults;
use batisync::flows::chantiers::{ChantiersSettings, FLOW};
use batisync::outbox::runs::{self, RunFilter};
use batisync::outbox::{self, Failure, loads};
use common::{TestDb, event};
use harness::Harness;

const LEASE: Duration = Duration::from_secs(60);

fn everything(limit: i64) -> RunFilter<'static> {
    RunFilter {
        flow: "",
        text: "",
        limit,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_that_captures_events_records_one_run_and_an_empty_poll_none() {
    // Arrange
    let mut h = Harness::new(ChantiersSettings::default(), Faults::default()).await;
    h.batigest.seed(1, 3);

    // Act
    let first = h.poller.try_poll_once().await.expect("first poll");
    let second = h.poller.try_poll_once().await.expect("second poll");

    // Assert
    let run = first.run.expect("the first poll is a run");
    assert_eq!(run.total, 3);
    assert_eq!(first.captured.inserted, 3);
    assert_eq!((second.captured.inserted, second.run), (0, None));
    let stored: i64 = h.db.scalar("SELECT count(*) FROM batisync.runs").await;
    assert_eq!(stored, 1);
    let outcome = h.drain().await;
    assert_eq!(outcome.applied, 3);
    let summaries = runs::recent(&h.db.pool, &everything(10)).await.unwrap();
    assert_eq!(summaries.len(), 1);
    let s = &summaries[0];
    assert_eq!((s.id, s.flow.as_str(), s.total), (run.id, FLOW, 3));
    assert_eq!((s.ok, s.dead, s.open, s.retried), (3, 0, 0, 0));
    assert!(s.duration().is_some(), "finished runs have a duration");
    h.finish().await;
}

/// Captures `keys` as one poll would: mark, capture, record, in one transaction.
async fn capture_run(db: &TestDb, flow: &str, keys: &[&str]) -> Option<runs::RunStarted> {
    let mut tx = db.pool.begin().await.unwrap();
    let mark = loads::event_mark(&mut tx).await.unwrap();
    let events: Vec<_> = keys.iter().map(|k| event(k, 1)).collect();
    outbox::capture(&mut tx, flow, &events, None, true)
        .await
        .unwrap();
    let run = runs::record(&mut tx, flow, mark).await.unwrap();
    tx.commit().await.unwrap();
    run
}

#[tokio::test]
async fn a_run_counts_its_delivered_retried_dead_conflicting_and_open_events() {
    // Arrange: a run of four events in flow "a", and a later run in flow "b".
    let db = TestDb::new().await;
    let run = capture_run(&db, "a", &["OK", "RETRY", "DEAD", "OPEN"])
        .await
        .expect("a run");
    assert_eq!(run.total, 4);
    assert_eq!(capture_run(&db, "a", &[]).await, None, "nothing captured");
    capture_run(&db, "b", &["OTHER"]).await.expect("run b");
    let out = db.outbox();
    let id = |key: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT id FROM batisync.outbox WHERE flow = 'a' AND entity_key = $1",
            )
            .bind(key)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let (ok, retry, dead) = (id("OK").await, id("RETRY").await, id("DEAD").await);

    // Act: OK delivered; RETRY fails once then is delivered; DEAD fails for good; OPEN
    // is never claimed; one conflict decided on OK.
    let claimed = out.claim("a", "w", 3, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 3);
    let failure = |event_id, retry_in| Failure {
        event_id,
        kind: "transient",
        message: "boom".into(),
        retry_in,
        reason: None,
    };
    out.record(
        "a",
        "w",
        &[(ok, "created".into())],
        &[failure(retry, Some(Duration::ZERO)), failure(dead, None)],
    )
    .await
    .unwrap();
    db.make_retries_due().await;
    let again = out.claim("a", "w", 10, LEASE).await.unwrap();
    let open_id = id("OPEN").await;
    let redelivered: Vec<(i64, String)> = again
        .iter()
        .filter(|e| e.id == retry)
        .map(|e| (e.id, "updated".to_owned()))
        .collect();
    assert_eq!(redelivered.len(), 1);
    out.ack("a", "w", &redelivered).await.unwrap();
    let leftover: Vec<i64> = again
        .iter()
        .map(|e| e.id)
        .filter(|i| *i == open_id)
        .collect();
    out.release("a", "w", &leftover).await.unwrap();
    sqlx::query(
        "INSERT INTO batisync.conflicts (flow, entity_key, event_id, winner, rule) \
         VALUES ('a', 'OK', $1, 'source', 'test')",
    )
    .bind(ok)
    .execute(&db.pool)
    .await
    .unwrap();

    // Assert
    let all = runs::recent(&db.pool, &everything(10)).await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.flow.as_str()).collect::<Vec<_>>(),
        ["b", "a"]
    );
    let a = &all[1];
    assert_eq!(a.id, run.id);
    assert_eq!(
        (
            a.total,
            a.ok,
            a.superseded,
            a.retried,
            a.dead,
            a.conflicts,
            a.open
        ),
        (4, 2, 0, 1, 1, 1, 1)
    );
    assert_eq!(a.duration(), None, "an open event: still running");
    let only_a = RunFilter {
        flow: "a",
        ..everything(10)
    };
    assert_eq!(runs::recent(&db.pool, &only_a).await.unwrap().len(), 1);
    let by_key = RunFilter {
        text: "dead",
        ..everything(10)
    };
    let found = runs::recent(&db.pool, &by_key).await.unwrap();
    assert_eq!(found.iter().map(|r| r.id).collect::<Vec<_>>(), [run.id]);
    let nothing = RunFilter {
        text: "no such text",
        ..everything(10)
    };
    assert!(runs::recent(&db.pool, &nothing).await.unwrap().is_empty());
    assert_eq!(
        runs::prune(&db.pool, Duration::from_secs(3_600))
            .await
            .unwrap(),
        0
    );
    assert_eq!(runs::prune(&db.pool, Duration::ZERO).await.unwrap(), 2);
    db.drop().await;
}
