//! Flow chantiers end to end: simulated Batigest → poller → PostgreSQL outbox →
//! dispatcher → BatiSimply simulator over HTTP.

mod common;
#[path = "common/chantiers.rs"]
mod harness;

use batisync::outbox::ReasonCode;
use std::collections::HashMap;
use std::time::Duration;

use batisync::app::Application;
use batisync::batigest::Cell;
use batisync::batigest::spec::chantier_role as role;
use batisync::batisimply::BatisimplyClient;
use batisync::batisimply::sim::{Faults, SimHandle, Simulator};
use batisync::dispatch::Handler;
use batisync::flows::chantiers::{self, ChantiersSettings, FLOW, OnDelete, SimulatedBatigest};
use batisync::outbox::loads;
use common::TestDb;
use harness::Harness;
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn settings() -> ChantiersSettings {
    ChantiersSettings {
        poll_interval_ms: 100,
        head_quarter_id: Some(12),
        finished_states: vec!["T".into()],
        ..ChantiersSettings::default()
    }
}

async fn conflicts(h: &Harness) -> Vec<(String, String, String)> {
    sqlx::query_as("SELECT entity_key, winner, rule FROM batisync.conflicts ORDER BY id")
        .fetch_all(&h.db.pool)
        .await
        .expect("conflicts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_job_sites_become_exactly_five_hundred_projects_with_the_right_fields() {
    // Arrange
    let mut h = Harness::new(settings(), Faults::default()).await;
    h.batigest.seed(1, 500);

    // Act
    let captured = h.poll().await;
    let outcome = h.drain().await;

    // Assert
    assert_eq!((captured, outcome.applied, outcome.dead), (500, 500, 0));
    let projects = h.projects_by_code();
    assert_eq!(projects.len(), 500);
    assert!(
        projects.values().all(|p| p.len() == 1),
        "one project per code"
    );
    let p = h.project("00000042");
    assert_eq!(p.data.name.as_deref(), Some("Client 42 Hérault"));
    assert_eq!(p.data.customer_name.as_deref(), Some("Client 42 Hérault"));
    assert_eq!(p.data.comment.as_deref(), Some("Rénovation lot 42"));
    assert_eq!(p.data.hours_sold, Some(52.5));
    assert_eq!(p.data.head_quarter_id, Some(12));
    assert_eq!(p.data.is_finished, Some(false));
    assert_eq!(p.data.budget, None);
    let address = p.data.address.expect("address");
    assert_eq!(address.city.as_deref(), Some("Carcassonne"));
    assert_eq!(address.geo_point, None);
    let links: i64 = sqlx::query_scalar("SELECT count(*) FROM batisync.links WHERE flow = $1")
        .bind(FLOW)
        .fetch_one(&h.db.pool)
        .await
        .expect("links");
    assert_eq!(links, 500);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_in_batigest_propagates_and_an_unchanged_table_sends_nothing() {
    // Arrange
    let mut h = Harness::new(settings(), Faults::default()).await;
    h.batigest.seed(1, 3);
    h.poll().await;
    h.drain().await;

    // Act
    h.batigest.edit(
        "00000002",
        role::LABEL,
        Cell::Text("Toiture refaite".into()),
    );
    h.batigest
        .edit("00000002", role::STATE, Cell::Text("T".into()));
    let captured = h.poll().await;
    h.drain().await;
    let again = h.poll().await;

    // Assert
    assert_eq!((captured, again), (1, 0));
    let p = h.project("00000002");
    assert_eq!(p.data.comment.as_deref(), Some("Toiture refaite"));
    assert_eq!(p.data.is_finished, Some(true));
    assert_eq!(h.sim.projects().len(), 3);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_app_edit_newer_than_the_batigest_change_survives_and_is_recorded_as_a_conflict() {
    // Arrange
    let mut h = Harness::new(settings(), Faults::default()).await;
    h.batigest.seed(1, 1);
    h.poll().await;
    h.drain().await;
    let id = h.project("00000001").id;
    h.batigest
        .edit("00000001", role::LABEL, Cell::Text("Batigest".into()));
    h.poll().await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    h.sim
        .edit_project(id, &json!({ "comment": "terrain" }))
        .expect("field edit");

    // Act
    h.drain().await;

    // Assert
    assert_eq!(
        h.project("00000001").data.comment.as_deref(),
        Some("terrain")
    );
    let outcomes = h.outcomes("00000001").await;
    let last = outcomes
        .last()
        .and_then(|o| o.1.clone())
        .unwrap_or_default();
    assert!(last.starts_with("skipped"), "{last}");
    let expected = ("00000001".to_owned(), "target".to_owned());
    let found = conflicts(&h).await;
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].0.clone(), found[0].1.clone()), expected);
    let states: (serde_json::Value, serde_json::Value) =
        sqlx::query_as("SELECT source_state, target_state FROM batisync.conflicts")
            .fetch_one(&h.db.pool)
            .await
            .expect("states");
    assert_eq!(states.0["comment"], "Batigest");
    assert_eq!(states.1["comment"], "terrain");

    // A later Batigest change is newer than the field edit: Batigest wins.
    h.batigest
        .edit("00000001", role::LABEL, Cell::Text("Batigest 2".into()));
    h.poll().await;
    h.drain().await;
    assert_eq!(
        h.project("00000001").data.comment.as_deref(),
        Some("Batigest 2")
    );
    let found = conflicts(&h).await;
    assert_eq!(found.len(), 2);
    assert_eq!(found[1].1, "source");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batigest_always_wins_when_the_setting_says_so() {
    // Arrange
    let always = ChantiersSettings {
        batigest_always_wins: true,
        ..settings()
    };
    let mut h = Harness::new(always, Faults::default()).await;
    h.batigest.seed(1, 1);
    h.poll().await;
    h.drain().await;
    let id = h.project("00000001").id;
    h.batigest
        .edit("00000001", role::LABEL, Cell::Text("Batigest".into()));
    h.poll().await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    h.sim
        .edit_project(id, &json!({ "comment": "terrain" }))
        .expect("field edit");

    // Act
    h.drain().await;

    // Assert
    assert_eq!(
        h.project("00000001").data.comment.as_deref(),
        Some("Batigest")
    );
    let found = conflicts(&h).await;
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].1.as_str(), found[0].2.as_str()),
        ("source", "batigest_always_wins")
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_in_batigest_archives_the_project_or_is_ignored_per_setting() {
    for (on_delete, archived) in [(OnDelete::Archive, Some(true)), (OnDelete::Ignore, None)] {
        // Arrange
        let s = ChantiersSettings {
            on_delete,
            ..settings()
        };
        let mut h = Harness::new(s, Faults::default()).await;
        h.batigest.seed(1, 2);
        h.poll().await;
        h.drain().await;

        // Act
        h.batigest.delete("00000002");
        h.poll().await;
        h.drain().await;

        // Assert
        assert_eq!(
            h.project("00000002").data.is_archived,
            archived,
            "{on_delete:?}"
        );
        assert_eq!(h.project("00000001").data.is_archived, None);
        assert_eq!(h.sim.projects().len(), 2);
        h.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_api_call_and_before_the_ack_still_leaves_one_project_per_code() {
    // Arrange: a worker claims, writes to BatiSimply, then dies (no ack, and for half
    // the events not even the link row).
    let mut h = Harness::new(settings(), Faults::default()).await;
    h.batigest.seed(1, 20);
    h.poll().await;
    let claimed =
        h.db.outbox()
            .claim(FLOW, "crashed-worker", 100, Duration::from_millis(50))
            .await
            .expect("claim");
    assert_eq!(claimed.len(), 20);
    for event in &claimed {
        h.handler
            .apply(event)
            .await
            .expect("applied before the crash");
    }
    sqlx::query("DELETE FROM batisync.links WHERE source_key <= '00000010'")
        .execute(&h.db.pool)
        .await
        .expect("forget links");

    // Act: the lease expires, the events are rescued and dispatched again.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rescued = h.db.outbox().rescue_expired().await.expect("rescue");
    let outcome = h.drain().await;

    // Assert
    assert_eq!((rescued, outcome.applied, outcome.dead), (20, 20, 0));
    let projects = h.projects_by_code();
    assert_eq!(projects.len(), 20);
    assert!(projects.values().all(|p| p.len() == 1), "no duplicate");
    let outcomes = h.outcomes("00000001").await;
    assert_eq!(outcomes.len(), 1);
    assert_eq!(
        outcomes[0].1.as_deref().map(|o| o.starts_with("adopted")),
        Some(true)
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_of_429_and_503_answers_still_deliver_everything_and_nothing_goes_dead() {
    // Arrange
    let faults = Faults {
        share_429: 0.15,
        share_5xx: 0.15,
        retry_after_secs: 0,
        ..Faults::default()
    };
    let mut h = Harness::new(settings(), faults).await;
    h.batigest.seed(1, 100);
    h.poll().await;

    // Act
    let outcome = h.drain().await;

    // Assert
    assert_eq!((outcome.applied, outcome.dead), (100, 0));
    assert!(outcome.retried > 0, "faults were injected: {outcome:?}");
    let projects = h.projects_by_code();
    assert_eq!(projects.len(), 100);
    assert!(projects.values().all(|p| p.len() == 1), "no duplicate");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_the_simulator_rejects_with_422_goes_dead_with_the_reason_and_the_others_are_delivered()
 {
    // Arrange
    let mut h = Harness::new(settings(), Faults::default()).await;
    h.client.authenticate().await.expect("token");
    h.batigest.seed(1, 1);
    h.poll().await;
    h.sim.update_faults(|f| f.fail_next = vec![422]);

    // Act
    let first = h.drain().await;
    h.batigest.seed(2, 5);
    h.poll().await;
    let rest = h.drain().await;

    // Assert
    assert_eq!((first.dead, rest.applied, rest.dead), (1, 5, 0));
    let dead: Vec<(String, String)> =
        sqlx::query_as("SELECT entity_key, last_error FROM batisync.dead_letters")
            .fetch_all(&h.db.pool)
            .await
            .expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, "00000001");
    assert!(
        dead[0].1.contains("422") && dead[0].1.contains("00000001"),
        "{}",
        dead[0].1
    );
    let reasons = common::dead_reasons(&h.db, "chantiers", "00000001").await;
    assert_eq!(
        (reasons[0].code, reasons[0].int("status")),
        (ReasonCode::Refused, Some(422))
    );
    assert_eq!(h.sim.projects().len(), 5);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_batigest_rows_become_dead_letters_naming_the_chantier_and_the_field() {
    // Arrange
    let mut h = Harness::new(settings(), Faults::default()).await;
    let mut long = batisync::flows::chantiers::simulated::sample_row(1);
    long.key = "123456789".into();
    long.cells
        .insert(role::CODE, Cell::Text("123456789".into()));
    let mut bad_date = batisync::flows::chantiers::simulated::sample_row(2);
    bad_date
        .cells
        .insert(role::START_DATE, Cell::Text("31/02/2026".into()));
    h.batigest.upsert(long);
    h.batigest.upsert(bad_date);
    h.batigest.seed(3, 1);

    // Act
    h.poll().await;
    let outcome = h.drain().await;

    // Assert
    assert_eq!((outcome.applied, outcome.dead), (1, 2));
    let dead: HashMap<String, String> =
        sqlx::query_as("SELECT entity_key, last_error FROM batisync.dead_letters")
            .fetch_all(&h.db.pool)
            .await
            .expect("dead letters")
            .into_iter()
            .collect();
    assert!(
        dead["123456789"].contains("champ / field `code`"),
        "{dead:?}"
    );
    assert!(dead["00000002"].contains("start_date"), "{dead:?}");
    let long = common::dead_reasons(&h.db, "chantiers", "123456789").await;
    assert_eq!(
        (
            long[0].code,
            long[0].text("field"),
            long[0].int("max_chars")
        ),
        (ReasonCode::TooLong, Some("code"), Some(8))
    );
    let bad = common::dead_reasons(&h.db, "chantiers", "00000002").await;
    assert_eq!(
        (bad[0].code, bad[0].text("field")),
        (ReasonCode::InvalidData, Some("start_date"))
    );
    assert_eq!(h.sim.projects().len(), 1);
    h.finish().await;
}

/// One batisync process: its own admin port, client and dispatchers, the shared
/// simulated Batigest as source.
async fn start_instance(
    db: &TestDb,
    sim: &SimHandle,
    batigest: &SimulatedBatigest,
    stop: &CancellationToken,
) -> (
    BatisimplyClient,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let mut app_settings = db.app_settings();
    app_settings.outbox.maintenance_interval_ms = 200;
    let client = BatisimplyClient::new(harness::client_settings(sim)).expect("client");
    let app = Application::build(app_settings, None).await.expect("app");
    let dispatch = harness::dispatch_settings();
    let app = chantiers::register(
        app,
        &settings(),
        &dispatch,
        client.clone(),
        batigest.clone(),
    );
    let handle = tokio::spawn(app.run_until_stopped(stop.clone()));
    (client, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_instances_on_one_database_run_one_poller_and_both_dispatch_without_duplicates()
{
    // Arrange
    let db = TestDb::new().await;
    let sim = Simulator::builder()
        .spawn("127.0.0.1:0")
        .await
        .expect("sim");
    let batigest = SimulatedBatigest::new();
    let stop = CancellationToken::new();
    let (a, task_a) = start_instance(&db, &sim, &batigest, &stop).await;
    let (b, task_b) = start_instance(&db, &sim, &batigest, &stop).await;

    // Act
    batigest.seed(1, 300);
    let mut polled_locks = 0;
    // The poller's lock only (migrations take an advisory lock of their own): a bigint
    // key shows in pg_locks as classid (high half) and objid (low half).
    let key = chantiers::poller::lock_key(chantiers::simulated::SIMULATED_SOURCE);
    let (high, low) = (key >> 32 & 0xffff_ffff, key & 0xffff_ffff);
    while sim.projects().len() < 300 || polled_locks == 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        polled_locks = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
             AND classid::int8 = $1 AND objid::int8 = $2 AND objsubid = 1",
        )
        .bind(high)
        .bind(low)
        .fetch_one(&db.pool)
        .await
        .expect("locks");
        assert!(polled_locks <= 1, "at most one poller holds the lock");
    }
    stop.cancel();
    task_a.await.expect("join").expect("instance a");
    task_b.await.expect("join").expect("instance b");

    // Assert
    let mut codes: Vec<String> = sim.projects().into_iter().map(|p| p.data.code).collect();
    codes.sort();
    codes.dedup();
    assert_eq!(
        (codes.len(), sim.projects().len()),
        (300, 300),
        "no duplicate"
    );
    let (sent_a, sent_b) = (a.stats().requests_sent, b.stats().requests_sent);
    assert!(
        sent_a > 1 && sent_b > 1,
        "both dispatch: {sent_a} / {sent_b}"
    );
    sim.shutdown().await;
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_compares_every_project_and_rewrites_only_those_that_differ() {
    // Arrange
    let mut h = Harness::new(settings(), Faults::default()).await;
    h.batigest.seed(1, 10);
    h.poll().await;
    h.drain().await;
    let drifted = h.project("00000003").id;
    h.sim
        .edit_project(drifted, &json!({ "comment": "perdu" }))
        .expect("edit");
    let writes = |h: &Harness| -> u64 {
        let routes = h.sim.stats().routes;
        routes
            .iter()
            .filter(|(r, _)| r.starts_with("PUT /api") || r.starts_with("POST /api"))
            .map(|(_, n)| n)
            .sum()
    };
    let writes_before = writes(&h);
    assert_eq!(writes_before, 10);

    // Act
    let sources = [chantiers::simulated::SIMULATED_SOURCE.to_owned()];
    let forgotten = chantiers::request_resync(&h.db.pool, &sources)
        .await
        .expect("resync");
    let captured = h.poll().await;
    let outcome = h.drain().await;

    // Assert
    assert_eq!((forgotten, captured, outcome.applied), (1, 10, 10));
    assert_eq!(
        writes(&h),
        writes_before + 1,
        "only the drifted project is written"
    );
    let restored = h.project("00000003").data.comment;
    assert_eq!(restored.as_deref(), Some("Rénovation lot 3"));
    assert_eq!(h.sim.projects().len(), 10);
    let outcomes = h.outcomes("00000005").await;
    let last = outcomes
        .last()
        .and_then(|o| o.1.clone())
        .unwrap_or_default();
    assert!(last.starts_with("adopted"), "{last}");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_session_holds_a_poller_lock_until_it_releases_it() {
    let db = TestDb::new().await;
    let key = chantiers::poller::lock_key("simulated:ChantierDef");
    let first = chantiers::poller::PollerLock::try_acquire(&db.pool, key)
        .await
        .expect("lock");
    let first = first.expect("free lock taken");
    let second = chantiers::poller::PollerLock::try_acquire(&db.pool, key)
        .await
        .expect("lock");
    assert!(second.is_none(), "held by the first session");
    assert!(first.is_held().await);
    first.release().await;
    let third = chantiers::poller::PollerLock::try_acquire(&db.pool, key)
        .await
        .expect("lock");
    assert!(third.is_some(), "free again after release");
    db.drop().await;
}

async fn latest_load(h: &Harness) -> loads::LoadProgress {
    let latest = loads::latest(&h.db.pool).await.expect("loads");
    assert_eq!(latest.len(), 1, "one flow, one latest load: {latest:?}");
    latest.into_iter().next().expect("a load")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_initial_load_reports_done_over_total_with_a_rate_and_finishes_when_all_is_delivered() {
    // Arrange: one request will be refused (422), so one event goes dead.
    let mut h = Harness::new(settings(), Faults::default()).await;
    h.client.authenticate().await.expect("token");
    h.batigest.seed(1, 100);

    // Act
    let report = h.poller.try_poll_once().await.expect("poll");
    let before = latest_load(&h).await;
    h.sim.update_faults(|f| f.fail_next = vec![422]);
    let first = h.dispatcher.try_dispatch_batch().await.expect("dispatch");
    let midway = latest_load(&h).await;
    let unfinished = loads::finish_completed(&h.db.pool).await.expect("finish");
    h.drain().await;
    let finished = loads::finish_completed(&h.db.pool).await.expect("finish");
    let after = latest_load(&h).await;

    // Assert
    assert!(report.full_snapshot);
    let load = report.load.expect("a full snapshot records a load");
    assert_eq!(load.total, 100);
    assert_eq!(
        (before.id, before.total, before.done, before.dead),
        (load.id, 100, 0, 0)
    );
    assert_eq!((before.rate_per_s, before.eta), (None, None));
    assert!(before.is_running());
    // (Part of the batch may be retried when the machine is slow: count what happened.)
    let (applied, dead) = (first.applied as i64, first.dead as i64);
    assert_eq!((first.claimed, dead), (32, 1));
    assert!(applied > 0, "{first:?}");
    assert_eq!(
        (midway.done, midway.dead, midway.remaining()),
        (applied, 1, 100 - applied - 1)
    );
    let rate = midway.rate_per_s.expect("a rate once events are delivered");
    assert!(rate >= applied as f64 / 60.0, "{rate}");
    let eta = midway.eta.expect("an ETA while running");
    let expected = midway.remaining() as f64 / rate;
    assert!(
        (eta.as_secs_f64() - expected).abs() < 0.01,
        "{eta:?} at {rate}/s"
    );
    assert!(unfinished.is_empty(), "events are still open");
    assert_eq!(finished.len(), 1);
    assert_eq!(
        (finished[0].id, finished[0].done, finished[0].dead),
        (load.id, 99, 1)
    );
    assert!(!after.is_running());
    assert_eq!(
        (after.total, after.done, after.dead, after.eta),
        (100, 99, 1, None)
    );
    let again = loads::finish_completed(&h.db.pool).await.expect("finish");
    assert!(again.is_empty(), "a load finishes once");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_is_a_new_load_whose_superseded_events_count_as_done_and_edits_are_not_loads() {
    // Arrange: the first load, delivered; then an edit (not a load).
    let mut h = Harness::new(settings(), Faults::default()).await;
    h.batigest.seed(1, 5);
    let first = h.poller.try_poll_once().await.expect("poll").load;
    h.drain().await;
    h.batigest
        .edit("00000001", role::LABEL, Cell::Text("v2".into()));
    let edit = h.poller.try_poll_once().await.expect("poll");
    // A claimed, unacknowledged event of 00000002 keeps that key busy.
    let busy = h.db.outbox();
    h.batigest
        .edit("00000002", role::LABEL, Cell::Text("v2".into()));
    h.poller.try_poll_once().await.expect("poll");
    let claimed = busy
        .claim(FLOW, "slow-worker", 100, Duration::from_secs(60))
        .await
        .expect("claim");

    // Act: resync (every key again, 00000002's event waits behind the claimed one),
    // then 00000002 is edited again, superseding the load's waiting event.
    let sources = [chantiers::simulated::SIMULATED_SOURCE.to_owned()];
    chantiers::request_resync(&h.db.pool, &sources)
        .await
        .expect("resync");
    let resync = h.poller.try_poll_once().await.expect("poll");
    h.batigest
        .edit("00000002", role::LABEL, Cell::Text("v3".into()));
    h.poller.try_poll_once().await.expect("poll");
    let progress = latest_load(&h).await;

    // Assert
    assert!(first.is_some());
    assert_eq!((edit.full_snapshot, edit.load), (false, None));
    assert_eq!(claimed.len(), 2, "00000001 and 00000002 were claimed");
    let load = resync.load.expect("a resync records a load");
    assert_ne!(Some(load.id), first.map(|l| l.id));
    assert_eq!((load.total, progress.id), (5, load.id));
    assert_eq!(
        (progress.done, progress.dead, progress.remaining()),
        (1, 0, 4),
        "the superseded event counts as done"
    );
    assert!(progress.is_running());
    h.finish().await;
}
