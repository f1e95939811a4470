//! Dispatchers against a real PostgreSQL: order under concurrency, retry timing, dead
//! letters, panics, hangs, shutdown, NOTIFY wake-ups.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use batisync::dispatch::{BatchOutcome, DispatchSettings, Dispatcher, Runtime, spawn_workers};
use batisync::outbox::NewEvent;
use batisync::outbox::notify::{Wakers, listen_until_stopped};
use chrono::{DateTime, Utc};
use common::handler::{Behavior, Recorder};
use common::{TestDb, event};

const FLOW: &str = "heures";

fn settings() -> DispatchSettings {
    DispatchSettings {
        backoff_base_ms: 1_000,
        backoff_cap_ms: 60_000,
        backoff_jitter: 0.0,
        max_attempts: 3,
        handler_timeout_ms: 2_000,
        lease_ms: 10_000,
        ..DispatchSettings::default()
    }
}

fn dispatcher(
    db: &TestDb,
    handler: &Arc<Recorder>,
    settings: DispatchSettings,
) -> Dispatcher<Recorder> {
    Dispatcher::new(
        db.outbox(),
        FLOW,
        "test-worker".into(),
        handler.clone(),
        settings,
        Wakers::default(),
    )
}

/// Starts the notification listener and `settings.workers` workers.
fn start(
    db: &TestDb,
    handler: &Arc<Recorder>,
    settings: &DispatchSettings,
    grace: Duration,
) -> Runtime {
    let rt = Runtime::new(db.outbox(), grace);
    rt.tracker.spawn(listen_until_stopped(
        db.pool.clone(),
        rt.wakers.clone(),
        rt.stop.clone(),
    ));
    spawn_workers(&rt, FLOW, handler.clone(), settings);
    rt
}

async fn stop(rt: Runtime) {
    rt.stop.cancel();
    rt.tracker.close();
    rt.tracker.wait().await;
}

async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_over_100_keys_are_applied_once_each_and_in_key_order_by_8_workers() {
    ten_thousand_events_by_8_workers(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_claimed_in_runs_are_applied_once_each_and_in_key_order_by_8_workers() {
    ten_thousand_events_by_8_workers(16).await;
}

async fn ten_thousand_events_by_8_workers(run_length: i64) {
    let db = TestDb::new().await;
    let handler = Arc::new(Recorder::always(Behavior::Apply));
    let settings = DispatchSettings {
        workers: 8,
        batch_size: 64,
        run_length,
        ..settings()
    };
    let rt = start(&db, &handler, &settings, Duration::from_secs(5));

    for chunk in 0..10u64 {
        let batch: Vec<NewEvent> = (chunk * 1_000..(chunk + 1) * 1_000)
            .map(|i| event(&format!("key{:03}", i % 100), i / 100))
            .collect();
        db.outbox()
            .capture(FLOW, &batch, None, false)
            .await
            .unwrap();
    }
    wait_for("10,000 applications", async || {
        handler.applied.load(Ordering::SeqCst) >= 10_000
    })
    .await;
    wait_for("10,000 acks", async || {
        db.status_counts().await == [("done".to_string(), 10_000)]
    })
    .await;
    stop(rt).await;

    assert_eq!(
        handler.applied.load(Ordering::SeqCst),
        10_000,
        "each applied exactly once"
    );
    assert_eq!(
        handler.overlaps.load(Ordering::SeqCst),
        0,
        "two events of one key at once"
    );
    let by_key = handler.seen_by_key();
    assert_eq!(by_key.len(), 100);
    for (key, versions) in by_key {
        let expected: Vec<String> = (0..100).map(|v: u64| v.to_string()).collect();
        assert_eq!(versions, expected, "order of {key}");
    }
    db.drop().await;
}

async fn next_attempt_delay(db: &TestDb) -> Duration {
    let (next, failed): (DateTime<Utc>, DateTime<Utc>) = sqlx::query_as(
        "SELECT o.next_attempt_at, f.failed_at FROM batisync.outbox o \
         JOIN batisync.outbox_failures f ON f.event_id = o.id ORDER BY f.id DESC LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    (next - failed).to_std().unwrap()
}

#[tokio::test]
async fn retries_follow_the_exponential_backoff_then_the_event_goes_dead_with_its_error() {
    let db = TestDb::new().await;
    let handler = Arc::new(Recorder::always(Behavior::Transient));
    let worker = dispatcher(&db, &handler, settings());
    db.outbox()
        .capture(FLOW, &[event("A", 1)], None, false)
        .await
        .unwrap();

    let mut delays = Vec::new();
    for _ in 0..2 {
        let outcome = worker.try_dispatch_batch().await.unwrap();
        assert_eq!(
            outcome,
            BatchOutcome {
                claimed: 1,
                retried: 1,
                ..BatchOutcome::default()
            }
        );
        delays.push(next_attempt_delay(&db).await);
        assert_eq!(
            worker.try_dispatch_batch().await.unwrap(),
            BatchOutcome::default(),
            "not due yet"
        );
        db.make_retries_due().await;
    }
    let last = worker.try_dispatch_batch().await.unwrap();

    assert_eq!(delays, [Duration::from_secs(1), Duration::from_secs(2)]);
    assert_eq!(last.dead, 1);
    let (status, error): (String, String) =
        sqlx::query_as("SELECT status, last_error FROM batisync.outbox")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(status, "dead");
    assert!(
        error.contains("target unavailable") && error.contains("3 attempts"),
        "{error}"
    );
    let reasons = common::dead_reasons(&db, FLOW, "A").await;
    assert_eq!(
        (reasons[0].code, reasons[0].int("attempts")),
        (batisync::outbox::ReasonCode::GaveUp, Some(3))
    );
    let failures: i64 = db
        .scalar("SELECT count(*) FROM batisync.outbox_failures")
        .await;
    assert_eq!(failures, 3);
    db.drop().await;
}

#[tokio::test]
async fn jittered_delays_stay_within_their_share_of_the_backoff() {
    let db = TestDb::new().await;
    let handler = Arc::new(Recorder::always(Behavior::Transient));
    let worker = dispatcher(
        &db,
        &handler,
        DispatchSettings {
            backoff_jitter: 0.5,
            max_attempts: 10,
            ..settings()
        },
    );
    let batch: Vec<NewEvent> = (0..20).map(|i| event(&format!("K{i}"), 1)).collect();
    db.outbox()
        .capture(FLOW, &batch, None, false)
        .await
        .unwrap();

    worker.try_dispatch_batch().await.unwrap();

    let delays: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM o.next_attempt_at - f.failed_at)::float8 FROM batisync.outbox o \
         JOIN batisync.outbox_failures f ON f.event_id = o.id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(delays.len(), 16, "one batch of 16");
    assert!(delays.iter().all(|d| (0.5..=1.0).contains(d)), "{delays:?}");
    assert!(
        delays.iter().any(|d| *d != delays[0]),
        "jitter spreads retries: {delays:?}"
    );
    db.drop().await;
}

#[tokio::test]
async fn a_retry_after_hint_sets_the_next_attempt_and_never_exhausts_the_budget() {
    let db = TestDb::new().await;
    let handler = Arc::new(Recorder::always(Behavior::RateLimited(
        Duration::from_secs(7),
    )));
    let worker = dispatcher(&db, &handler, settings());
    db.outbox()
        .capture(FLOW, &[event("A", 1)], None, false)
        .await
        .unwrap();

    for _ in 0..5 {
        worker.try_dispatch_batch().await.unwrap();
        assert_eq!(next_attempt_delay(&db).await, Duration::from_secs(7));
        db.make_retries_due().await;
    }

    assert_eq!(db.status_counts().await, [("pending".to_string(), 1)]);
    db.drop().await;
}

#[tokio::test]
async fn a_permanent_error_is_dead_at_once_and_the_other_events_are_delivered() {
    let db = TestDb::new().await;
    let handler = Arc::new(Recorder::new(|e| {
        if e.entity_key == "BAD" {
            Behavior::Permanent
        } else {
            Behavior::Apply
        }
    }));
    let worker = dispatcher(&db, &handler, settings());
    db.outbox()
        .capture(
            FLOW,
            &[event("A", 1), event("BAD", 1), event("C", 1)],
            None,
            false,
        )
        .await
        .unwrap();

    let outcome = worker.try_dispatch_batch().await.unwrap();

    assert_eq!(
        outcome,
        BatchOutcome {
            claimed: 3,
            applied: 2,
            retried: 0,
            dead: 1
        }
    );
    let error: String = db
        .scalar("SELECT last_error FROM batisync.dead_letters")
        .await;
    assert_eq!(error, "code too long");
    let reasons = common::dead_reasons(&db, FLOW, "BAD").await;
    assert_eq!(
        (reasons[0].code, reasons[0].text("key")),
        (batisync::outbox::ReasonCode::TooLong, Some("BAD"))
    );
    db.drop().await;
}

#[tokio::test]
async fn a_panicking_handler_costs_one_retry_not_the_process() {
    let db = TestDb::new().await;
    let handler = Arc::new(Recorder::new(|e| {
        if e.attempts == 1 {
            Behavior::Panic
        } else {
            Behavior::Apply
        }
    }));
    let worker = dispatcher(&db, &handler, settings());
    db.outbox()
        .capture(FLOW, &[event("A", 1)], None, false)
        .await
        .unwrap();

    let first = worker.try_dispatch_batch().await.unwrap();
    db.make_retries_due().await;
    let second = worker.try_dispatch_batch().await.unwrap();

    assert_eq!((first.retried, second.applied), (1, 1));
    let kind: String = db.scalar("SELECT kind FROM batisync.outbox_failures").await;
    assert_eq!(kind, "panic");
    db.drop().await;
}

#[tokio::test]
async fn a_hanging_handler_is_cut_off_by_its_timeout_and_retried() {
    let db = TestDb::new().await;
    let handler = Arc::new(Recorder::new(|e| {
        if e.attempts == 1 {
            Behavior::Hang(Duration::from_secs(3600))
        } else {
            Behavior::Apply
        }
    }));
    let worker = dispatcher(
        &db,
        &handler,
        DispatchSettings {
            handler_timeout_ms: 100,
            ..settings()
        },
    );
    db.outbox()
        .capture(FLOW, &[event("A", 1)], None, false)
        .await
        .unwrap();

    let first = worker.try_dispatch_batch().await.unwrap();
    db.make_retries_due().await;
    let second = worker.try_dispatch_batch().await.unwrap();

    assert_eq!((first.retried, second.applied), (1, 1));
    let message: String = db
        .scalar("SELECT message FROM batisync.outbox_failures")
        .await;
    assert!(message.contains("100 ms"), "{message}");
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_claims_that_do_not_finish_within_the_grace_period() {
    let db = TestDb::new().await;
    let handler = Arc::new(Recorder::always(Behavior::Hang(Duration::from_secs(3600))));
    let settings = DispatchSettings {
        workers: 1,
        handler_timeout_ms: 60_000,
        lease_ms: 120_000,
        ..settings()
    };
    let rt = start(&db, &handler, &settings, Duration::from_millis(200));
    db.outbox()
        .capture(FLOW, &[event("A", 1)], None, false)
        .await
        .unwrap();
    wait_for("the claim", async || {
        db.status_counts().await == [("in_flight".to_string(), 1)]
    })
    .await;

    stop(rt).await;

    let (status, attempts, locked_by): (String, i32, Option<String>) =
        sqlx::query_as("SELECT status, attempts, locked_by FROM batisync.events")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), attempts, locked_by), ("pending", 0, None));
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_work_finish_within_the_grace_period() {
    let db = TestDb::new().await;
    let handler = Arc::new(Recorder::always(Behavior::Hang(Duration::from_millis(300))));
    let settings = DispatchSettings {
        workers: 1,
        ..settings()
    };
    let rt = start(&db, &handler, &settings, Duration::from_secs(30));
    db.outbox()
        .capture(FLOW, &[event("A", 1)], None, false)
        .await
        .unwrap();
    wait_for("the claim", async || {
        db.status_counts().await == [("in_flight".to_string(), 1)]
    })
    .await;

    stop(rt).await;

    assert_eq!(db.status_counts().await, [("done".to_string(), 1)]);
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captured_event_is_picked_up_long_before_the_fallback_poll_thanks_to_notify() {
    let db = TestDb::new().await;
    let handler = Arc::new(Recorder::always(Behavior::Apply));
    let settings = DispatchSettings {
        workers: 2,
        fallback_poll_ms: 600_000,
        ..settings()
    };
    let rt = start(&db, &handler, &settings, Duration::from_secs(5));
    // Let both workers find nothing and go to sleep for the (10-minute) fallback.
    tokio::time::sleep(Duration::from_millis(500)).await;

    for i in 0..3 {
        db.outbox()
            .capture(FLOW, &[event("A", i)], None, false)
            .await
            .unwrap();
        let applied = tokio::time::timeout(Duration::from_secs(30), async {
            while handler.applied.load(Ordering::SeqCst) <= i {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(
            applied.is_ok(),
            "event {i} not picked up within 30 s (fallback is 600 s)"
        );
    }
    stop(rt).await;
    db.drop().await;
}

async fn capture_versions(db: &TestDb, key: &str, versions: std::ops::RangeInclusive<u64>) {
    let events: Vec<NewEvent> = versions.map(|v| event(key, v)).collect();
    db.outbox()
        .capture(FLOW, &events, None, false)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_run_stops_at_its_first_failure_and_its_later_events_wait_untried() {
    let db = TestDb::new().await;
    let handler = Arc::new(Recorder::new(|e| {
        if e.source_version == "2" && e.attempts == 1 {
            Behavior::Transient
        } else {
            Behavior::Apply
        }
    }));
    let worker = dispatcher(&db, &handler, settings());
    capture_versions(&db, "A", 1..=5).await;

    let first = worker.try_dispatch_batch().await.unwrap();
    let early = worker.try_dispatch_batch().await.unwrap();
    assert_eq!(
        first,
        BatchOutcome {
            claimed: 5,
            applied: 1,
            retried: 1,
            dead: 0
        }
    );
    assert_eq!(
        db.states("A").await,
        [
            "1 done 1",
            "2 pending 1",
            "3 waiting 0",
            "4 waiting 0",
            "5 waiting 0"
        ]
    );
    assert_eq!(early.claimed, 0, "nothing of A before its retry is due");

    db.make_retries_due().await;
    let second = worker.try_dispatch_batch().await.unwrap();

    assert_eq!(second.applied, 4);
    assert_eq!(handler.seen_by_key()["A"], ["1", "2", "2", "3", "4", "5"]);
    db.drop().await;
}

#[tokio::test]
async fn a_dead_event_ends_its_run_and_the_next_claim_starts_after_it() {
    let db = TestDb::new().await;
    let handler = Arc::new(Recorder::new(|e| {
        if e.source_version == "2" {
            Behavior::Permanent
        } else {
            Behavior::Apply
        }
    }));
    let worker = dispatcher(&db, &handler, settings());
    capture_versions(&db, "A", 1..=5).await;

    let first = worker.try_dispatch_batch().await.unwrap();
    let states_after_first = db.states("A").await;
    let second = worker.try_dispatch_batch().await.unwrap();

    assert_eq!((first.applied, first.dead), (1, 1));
    assert_eq!(
        states_after_first,
        [
            "1 done 1",
            "2 dead 1",
            "3 pending 0",
            "4 waiting 0",
            "5 waiting 0"
        ]
    );
    assert_eq!((second.claimed, second.applied), (3, 3));
    assert_eq!(handler.seen_by_key()["A"], ["1", "2", "3", "4", "5"]);
    db.drop().await;
}

#[tokio::test]
async fn a_run_starts_no_event_that_could_outlast_three_quarters_of_its_lease() {
    let db = TestDb::new().await;
    // Each event takes 1 s. With a lease of 4 s and a timeout of 1.5 s, an event may
    // start until 1.5 s after the claim (1.5 + 1.5 = 3 s, three quarters of the lease):
    // the first two start (at 0 and 1 s), the third (at 2 s) does not.
    let handler = Arc::new(Recorder::always(Behavior::Hang(Duration::from_secs(1))));
    let settings = DispatchSettings {
        lease_ms: 4_000,
        handler_timeout_ms: 1_500,
        run_budget_ms: 60_000,
        ..settings()
    };
    let worker = dispatcher(&db, &handler, settings);
    capture_versions(&db, "A", 1..=4).await;

    let outcome = worker.try_dispatch_batch().await.unwrap();

    assert_eq!((outcome.claimed, outcome.applied), (4, 2));
    assert_eq!(
        db.states("A").await,
        ["1 done 1", "2 done 1", "3 pending 0", "4 waiting 0"]
    );
    db.drop().await;
}

#[tokio::test]
async fn a_run_starts_no_event_once_its_batch_has_used_its_time_budget() {
    let db = TestDb::new().await;
    // Each event of A takes 0.6 s; B's one event is instant. With a budget of 1 s, A's
    // second event starts (at 0.6 s), its third (at 1.2 s) does not: the batch ends
    // instead of keeping B claimed behind a slow run.
    let handler = Arc::new(Recorder::new(|e| {
        if e.entity_key == "A" {
            Behavior::Hang(Duration::from_millis(600))
        } else {
            Behavior::Apply
        }
    }));
    let settings = DispatchSettings {
        run_budget_ms: 1_000,
        ..settings()
    };
    let worker = dispatcher(&db, &handler, settings);
    capture_versions(&db, "A", 1..=4).await;
    capture_versions(&db, "B", 1..=1).await;

    let outcome = worker.try_dispatch_batch().await.unwrap();

    assert_eq!((outcome.claimed, outcome.applied), (5, 3));
    assert_eq!(
        db.states("A").await,
        ["1 done 1", "2 done 1", "3 pending 0", "4 waiting 0"]
    );
    assert_eq!(db.states("B").await, ["1 done 1"]);
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_a_run_records_what_was_applied_and_leaves_the_rest_waiting() {
    let db = TestDb::new().await;
    let handler = Arc::new(Recorder::always(Behavior::Hang(Duration::from_millis(500))));
    let settings = DispatchSettings {
        workers: 1,
        ..settings()
    };
    let rt = start(&db, &handler, &settings, Duration::from_secs(30));
    capture_versions(&db, "A", 1..=10).await;
    wait_for("the run's claim", async || {
        db.status_counts().await == [("in_flight".to_string(), 10)]
    })
    .await;

    stop(rt).await;

    // The event being applied when the stop came finished; no later one started.
    assert_eq!(handler.seen_by_key()["A"], ["1"]);
    assert_eq!(
        db.states("A").await[..3],
        ["1 done 1", "2 pending 0", "3 waiting 0"]
    );
    db.drop().await;
}
