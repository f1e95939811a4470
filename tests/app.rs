//! The whole worker: admin endpoints, metrics, a registered flow, and survival while
//! PostgreSQL is down.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use batisync::app::Application;
use batisync::dispatch::DispatchSettings;
use batisync::outbox::{capture, loads};
use common::handler::{Behavior, Recorder};
use common::{TestDb, event};
use tokio_util::sync::CancellationToken;

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.expect("admin listener answers");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_worker_delivers_and_reports_health_readiness_and_metrics() {
    let db = TestDb::new().await;
    let registry = batisync::metrics::init_prometheus().unwrap();
    let handler = Arc::new(Recorder::always(Behavior::Apply));
    let mut settings = db.app_settings();
    settings.outbox.maintenance_interval_ms = 100;
    let app = Application::build(settings, Some(registry))
        .await
        .unwrap()
        .with_flow("chantiers", handler.clone(), DispatchSettings::default());
    let base = format!("http://{}", app.local_addr().unwrap());
    let stop = CancellationToken::new();
    let running = tokio::spawn(app.run_until_stopped(stop.clone()));

    // Captured as a full load, as a poller reading a whole table does.
    let mut tx = db.pool.begin().await.unwrap();
    let mark = loads::event_mark(&mut tx).await.unwrap();
    let events = [event("A", 1), event("B", 1), event("C", 1)];
    capture(&mut tx, "chantiers", &events, None, false)
        .await
        .unwrap();
    let load = loads::record(&mut tx, "chantiers", "test:table", mark)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(load.total, 3);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while handler.applied.load(Ordering::SeqCst) < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "events not delivered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // the acks land
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while loads::latest(&db.pool).await.unwrap()[0].is_running() {
        assert!(tokio::time::Instant::now() < deadline, "load not finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // the gauges refresh

    let (health, _) = get(&format!("{base}/healthz")).await;
    let (ready, ready_body) = get(&format!("{base}/readyz")).await;
    let (_, metrics) = get(&format!("{base}/metrics")).await;
    stop.cancel();
    running.await.unwrap().unwrap();

    assert_eq!(health, 200);
    assert_eq!(ready, 200, "{ready_body}");
    assert!(
        metrics.contains("batisync_events_dispatched_total{flow=\"chantiers\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("batisync_propagation_latency_seconds_bucket"),
        "{metrics}"
    );
    for line in [
        "batisync_load_total{flow=\"chantiers\",otel_scope_name=\"batisync\"} 3",
        "batisync_load_done{flow=\"chantiers\",otel_scope_name=\"batisync\"} 3",
        "batisync_load_dead{flow=\"chantiers\",otel_scope_name=\"batisync\"} 0",
        "batisync_load_running{flow=\"chantiers\",otel_scope_name=\"batisync\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    assert_eq!(db.status_counts().await, [("done".to_string(), 3)]);
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_keeps_running_and_says_not_ready_while_postgres_is_unreachable() {
    let mut settings = batisync::settings::Settings::default();
    settings.admin.listen = "127.0.0.1:0".parse().unwrap();
    settings.postgres = common::server_settings();
    settings.postgres.port = 1; // nothing listens there
    settings.postgres.connect_timeout_ms = 200;
    let app = Application::build(settings, None).await.unwrap();
    let base = format!("http://{}", app.local_addr().unwrap());
    let stop = CancellationToken::new();
    let running = tokio::spawn(app.run_until_stopped(stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (health, _) = get(&format!("{base}/healthz")).await;
    let (ready, body) = get(&format!("{base}/readyz")).await;
    assert!(
        !running.is_finished(),
        "the worker must wait for PostgreSQL, not exit"
    );
    stop.cancel();
    let result = tokio::time::timeout(Duration::from_secs(20), running).await;

    assert_eq!(health, 200);
    assert_eq!(ready, 503);
    assert!(body.contains("not_ready"), "{body}");
    assert!(
        matches!(result, Ok(Ok(Ok(())))),
        "clean stop while waiting: {result:?}"
    );
}
