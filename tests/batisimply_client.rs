//! BatiSimply client against the in-process simulator, over real HTTP.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use batisync::batisimply::sim::{Faults, SimConfig, SimHandle, Simulator};
use batisync::batisimply::{
    BatisimplyClient, BatisimplyError, BatisimplySettings, NewProject, TransientKind,
};
use chrono::Utc;

async fn start_sim(faults: Faults) -> SimHandle {
    Simulator::builder()
        .faults(faults)
        .spawn("127.0.0.1:0")
        .await
        .expect("simulator starts")
}

async fn start_sim_with(config: SimConfig, faults: Faults) -> SimHandle {
    Simulator::builder()
        .config(config)
        .faults(faults)
        .spawn("127.0.0.1:0")
        .await
        .expect("simulator starts")
}

/// Settings matching the simulator defaults, fast retries, no rate limit to speak of.
fn settings_for(sim: &SimHandle) -> BatisimplySettings {
    BatisimplySettings {
        api_base_url: sim.base_url.clone(),
        sso_base_url: sim.sso_url.clone(),
        client_id: "batisync".to_owned(),
        client_secret: "sim-secret".into(),
        username: "sim-user".to_owned(),
        password: "sim-password".into(),
        rate_limit_per_sec: 1_000,
        rate_limit_burst: 1_000,
        retry_base_ms: 10,
        retry_cap_ms: 5_000,
        request_timeout_ms: 10_000,
        ..BatisimplySettings::default()
    }
}

fn client(settings: BatisimplySettings) -> BatisimplyClient {
    BatisimplyClient::new(settings).expect("client builds")
}

fn project(code: &str) -> NewProject {
    NewProject {
        code: code.to_owned(),
        name: Some(format!("Chantier {code}")),
        ..NewProject::default()
    }
}

#[tokio::test]
async fn logs_in_and_renews_the_token_before_it_expires() {
    // Arrange: 3 s tokens, renewed 1 s before expiry.
    let sim = start_sim(Faults {
        token_lifetime_secs: 3,
        ..Faults::default()
    })
    .await;
    let id = sim.seed_projects(1)[0].id;
    let client = client(BatisimplySettings {
        token_renew_margin_secs: 1,
        ..settings_for(&sim)
    });

    // Act
    client.get_project(id).await.expect("first call");
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    client.get_project(id).await.expect("second call");

    // Assert: renewed proactively, never rejected.
    assert_eq!(sim.stats().tokens_issued, 2);
    assert_eq!(sim.stats().served_401, 0);
    assert_eq!(client.stats().tokens_fetched, 2);
}

#[tokio::test]
async fn a_401_triggers_one_renewal_then_the_call_succeeds() {
    // Arrange
    let sim = start_sim(Faults::default()).await;
    let id = sim.seed_projects(1)[0].id;
    let client = client(settings_for(&sim));
    client.authenticate().await.expect("login");
    sim.revoke_tokens();

    // Act
    let fetched = client.get_project(id).await;

    // Assert
    assert_eq!(fetched.expect("call succeeds after renewal").id, id);
    assert_eq!(sim.stats().served_401, 1);
    assert_eq!(sim.stats().tokens_issued, 2);
    assert_eq!(client.stats().renewals_after_401, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_parallel_callers_share_a_single_token_request() {
    // Arrange
    let sim = start_sim(Faults::default()).await;
    let id = sim.seed_projects(1)[0].id;
    let client = client(settings_for(&sim));
    let burst = || futures::future::join_all((0..20).map(|_| client.get_project(id)));

    // Act: first login, then a renewal after every token is revoked.
    let first = burst().await;
    let issued_after_login = sim.stats().tokens_issued;
    sim.revoke_tokens();
    let second = burst().await;

    // Assert
    assert!(first.iter().chain(&second).all(Result::is_ok));
    assert_eq!(issued_after_login, 1);
    assert_eq!(sim.stats().tokens_issued, 2);
}

#[tokio::test]
async fn pagination_returns_every_project_exactly_once() {
    // Arrange
    let sim = start_sim(Faults::default()).await;
    sim.seed_projects(95);
    let client = client(BatisimplySettings {
        page_size: 20,
        ..settings_for(&sim)
    });

    // Act
    let listing = client.list_projects().await.expect("list");

    // Assert
    let mut ids: Vec<_> = listing.records.iter().map(|p| p.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 95);
    assert_eq!(listing.records.len(), 95);
    assert!(listing.rejected.is_empty());
    assert_eq!(sim.stats().routes.get("GET /api/project"), Some(&5));
}

#[tokio::test]
async fn unknown_codes_share_one_list_refresh_until_the_cache_is_old_or_freshness_is_asked() {
    // Arrange
    let sim = start_sim(Faults::default()).await;
    let seeded = sim.seed_projects(45);
    let client = client(BatisimplySettings {
        page_size: 20,
        ..settings_for(&sim)
    });
    let lists = || {
        sim.stats()
            .routes
            .get("GET /api/project")
            .copied()
            .unwrap_or(0)
    };

    // Act
    let known = client
        .find_project_by_code(&seeded[0].data.code)
        .await
        .expect("find");
    let after_first = lists();
    for code in ["NEW1", "NEW2", "NEW3"] {
        assert!(
            client
                .find_project_by_code(code)
                .await
                .expect("find")
                .is_none()
        );
    }
    let after_misses = lists();
    let fresh = client
        .find_project_by_code_fresh("NEW4")
        .await
        .expect("fresh");

    // Assert
    assert_eq!(known.map(|p| p.id), Some(seeded[0].id));
    assert_eq!(after_first, 3, "one refresh: 45 projects in pages of 20");
    assert_eq!(after_misses, 3, "recent refresh: misses are trusted");
    assert!(fresh.is_none());
    assert_eq!(lists(), 6, "a fresh lookup re-reads the list");
}

#[tokio::test]
async fn bare_array_answers_are_paginated_like_wrapped_ones() {
    // Arrange: list answers as a bare JSON array.
    let config = SimConfig {
        list_shape: batisync::batisimply::sim::ListShape::BareArray,
        ..SimConfig::default()
    };
    let sim = start_sim_with(config, Faults::default()).await;
    sim.seed_projects(45);
    let client = client(BatisimplySettings {
        page_size: 20,
        ..settings_for(&sim)
    });

    // Act
    let listing = client.list_projects().await.expect("list");

    // Assert
    assert_eq!(listing.records.len(), 45);
}

#[tokio::test]
async fn a_429_with_retry_after_2_delays_the_retry_by_at_least_2_seconds() {
    // Arrange
    let sim = start_sim(Faults::default()).await;
    let id = sim.seed_projects(1)[0].id;
    let client = client(settings_for(&sim));
    client.authenticate().await.expect("login");
    sim.update_faults(|f| (f.retry_after_secs, f.fail_next) = (2, vec![429]));

    // Act
    let started = Instant::now();
    let fetched = client.get_project(id).await;
    let elapsed = started.elapsed();

    // Assert
    assert!(fetched.is_ok());
    assert!(
        elapsed >= Duration::from_secs(2),
        "retried after {elapsed:?}"
    );
    assert_eq!(client.stats().rate_limited_429, 1);
    assert_eq!(sim.stats().served_429, 1);
}

#[tokio::test]
async fn two_503_answers_are_retried_then_the_call_succeeds() {
    // Arrange
    let sim = start_sim(Faults::default()).await;
    let id = sim.seed_projects(1)[0].id;
    let client = client(settings_for(&sim));
    client.authenticate().await.expect("login");
    sim.update_faults(|f| f.fail_next = vec![503, 503]);

    // Act
    let fetched = client.get_project(id).await;

    // Assert
    assert!(fetched.is_ok());
    assert_eq!(client.stats().retries, 2);
}

#[tokio::test]
async fn persistent_503_ends_as_a_retryable_error_after_max_retries() {
    // Arrange
    let sim = start_sim(Faults::default()).await;
    let client = client(BatisimplySettings {
        max_retries: 2,
        ..settings_for(&sim)
    });
    client.authenticate().await.expect("login");
    sim.update_faults(|f| f.outage_until = Some(Utc::now() + chrono::Duration::minutes(5)));

    // Act
    let err = client.get_project(1).await.expect_err("outage");

    // Assert
    assert!(err.is_retryable());
    assert_eq!(err.status(), Some(503));
    assert_eq!(client.stats().retries, 2);
}

#[tokio::test]
async fn a_422_surfaces_as_permanent_with_the_api_message() {
    // Arrange
    let sim = start_sim(Faults::default()).await;
    let client = client(settings_for(&sim));

    // Act
    let err = client
        .create_project(&project("TOOLONGCODE"))
        .await
        .expect_err("invalid code");

    // Assert
    assert!(!err.is_retryable());
    match err {
        BatisimplyError::Permanent { status, message } => {
            assert_eq!(status, 422);
            assert!(message.contains("projectCode"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn projects_are_created_found_by_code_and_updated_with_the_id_in_the_body() {
    // Arrange
    let sim = start_sim(Faults::default()).await;
    sim.seed_projects(3);
    let client = client(settings_for(&sim));

    // Act
    let created = client
        .create_project(&project("CH001"))
        .await
        .expect("create");
    let found = client.find_project_by_code("CH001").await.expect("find");
    let mut changed = project("CH001");
    changed.hours_sold = Some(12.5);
    let updated = client
        .update_project(created.id, &changed)
        .await
        .expect("update");
    let duplicate = client
        .create_project(&project("CH001"))
        .await
        .expect_err("duplicate");
    let unknown = client
        .update_project(9_999, &project("X"))
        .await
        .expect_err("unknown");
    let missing = client
        .find_project_by_code("NOPE")
        .await
        .expect("find missing");

    // Assert
    assert_eq!(found.map(|p| p.id), Some(created.id));
    assert_eq!(updated.data.hours_sold, Some(12.5));
    assert!(updated.last_modified >= created.last_modified);
    assert_eq!(duplicate.status(), Some(409));
    assert_eq!(unknown.status(), Some(404));
    assert!(missing.is_none());
}

#[tokio::test]
async fn a_malformed_record_is_reported_while_the_rest_of_the_page_is_returned() {
    // Arrange: 30 % of records lose their startDate (seeded, deterministic).
    let sim = start_sim(Faults {
        share_malformed_records: 0.3,
        ..Faults::default()
    })
    .await;
    sim.seed_slots(10);
    let client = client(settings_for(&sim));
    let now = Utc::now();

    // Act
    let listing = client
        .list_time_slots(now - chrono::Duration::days(40), now)
        .await
        .expect("list");

    // Assert
    assert_eq!(listing.records.len() + listing.rejected.len(), 10);
    assert!(!listing.records.is_empty());
    let rejected = listing
        .rejected
        .first()
        .expect("at least one malformed record");
    assert_eq!(rejected.field, "startDate");
    assert!(rejected.record_id.is_some());
    assert!(rejected.to_string().contains("startDate"));
}

#[tokio::test]
async fn a_window_refused_as_too_large_is_split_and_every_slot_returned_once() {
    // Arrange: the API refuses windows over 7 days; the client asks for 31.
    let config = SimConfig {
        max_window_days: Some(7),
        ..SimConfig::default()
    };
    let sim = start_sim_with(config, Faults::default()).await;
    sim.seed_slots(50);
    let client = client(settings_for(&sim));
    let now = Utc::now();

    // Act
    let listing = client
        .list_time_slots(now - chrono::Duration::days(31), now)
        .await
        .expect("list");

    // Assert
    let mut ids: Vec<_> = listing.records.iter().map(|s| s.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 50);
}

#[tokio::test]
async fn modified_since_is_unsupported_without_a_configured_parameter() {
    // Arrange
    let config = SimConfig {
        modified_since_param: Some("lastModifiedDateFrom".to_owned()),
        ..SimConfig::default()
    };
    let sim = start_sim_with(config, Faults::default()).await;
    sim.seed_slots(4);
    let without = client(settings_for(&sim));
    let with = client(BatisimplySettings {
        timeslot_modified_since_param: Some("lastModifiedDateFrom".to_owned()),
        ..settings_for(&sim)
    });
    let since = Utc::now() - chrono::Duration::minutes(5);

    // Act
    let unsupported = without.list_time_slots_modified_since(since).await;
    let supported = with.list_time_slots_modified_since(since).await;

    // Assert
    assert!(matches!(
        unsupported,
        Err(BatisimplyError::Unsupported { .. })
    ));
    assert_eq!(supported.expect("supported").records.len(), 4);
}

#[tokio::test]
async fn requests_are_spaced_by_the_rate_limit() {
    // Arrange: 20 requests/s, burst 5, 30 requests (+ 1 token request).
    let sim = start_sim(Faults::default()).await;
    let id = sim.seed_projects(1)[0].id;
    let client = client(BatisimplySettings {
        rate_limit_per_sec: 20,
        rate_limit_burst: 5,
        ..settings_for(&sim)
    });

    // Act
    let started = Instant::now();
    let results = futures::future::join_all((0..30).map(|_| client.get_project(id))).await;
    let elapsed = started.elapsed();

    // Assert: at least (30 - 5) / 20 s.
    assert!(results.iter().all(Result::is_ok));
    assert!(elapsed >= Duration::from_millis(1_250), "took {elapsed:?}");
}

#[tokio::test]
async fn the_request_timeout_turns_a_slow_answer_into_a_transient_timeout() {
    // Arrange
    let sim = start_sim(Faults::default()).await;
    let client = client(BatisimplySettings {
        request_timeout_ms: 300,
        max_retries: 0,
        ..settings_for(&sim)
    });
    client.authenticate().await.expect("login");
    sim.update_faults(|f| f.latency_ms = 1_500);

    // Act
    let err = client.get_project(1).await.expect_err("too slow");

    // Assert
    assert!(
        matches!(
            err,
            BatisimplyError::Transient {
                kind: TransientKind::Timeout,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn wrong_credentials_give_an_actionable_bilingual_auth_error() {
    // Arrange
    let sim = start_sim(Faults::default()).await;
    let client = client(BatisimplySettings {
        password: "wrong".into(),
        ..settings_for(&sim)
    });

    // Act
    let err = client.get_project(1).await.expect_err("rejected");

    // Assert
    assert!(matches!(err, BatisimplyError::Auth { .. }));
    let text = err.to_string();
    assert!(
        text.contains("Identifiants BatiSimply refusés") && text.contains("credentials rejected"),
        "{text}"
    );
}

#[tokio::test]
async fn check_passes_against_the_simulator_and_explains_an_unreachable_server() {
    // Arrange
    let sim = start_sim(Faults::default()).await;
    sim.seed_projects(2);
    let good = client(settings_for(&sim));
    let unreachable = client(BatisimplySettings {
        sso_base_url: "http://127.0.0.1:9".to_owned(),
        max_retries: 0,
        ..settings_for(&sim)
    });

    // Act
    let ok = good.check().await;
    let failed = unreachable.check().await;

    // Assert
    assert!(ok.is_ok(), "{ok}");
    assert_eq!(ok.steps.len(), 3);
    assert!(!failed.is_ok());
    let message = failed.steps[0].failure.clone().unwrap_or_default();
    assert!(
        message.contains("injoignable") && message.contains("unreachable"),
        "{message}"
    );
}

#[tokio::test]
async fn the_client_credentials_grant_obtains_a_token_without_a_user() {
    // Arrange
    let sim = start_sim(Faults::default()).await;
    let settings = BatisimplySettings {
        grant: batisync::batisimply::Grant::ClientCredentials,
        username: String::new(),
        password: String::new().into(),
        ..settings_for(&sim)
    };

    // Act
    let listed = client(settings).list_projects().await;

    // Assert
    assert!(listed.is_ok(), "{listed:?}");
    assert_eq!(sim.stats().tokens_issued, 1);
}

#[tokio::test]
async fn a_malformed_json_body_is_a_decode_error() {
    // Arrange
    let sim = start_sim(Faults::default()).await;
    sim.seed_projects(2);
    let client = client(settings_for(&sim));
    client.authenticate().await.expect("login");
    sim.update_faults(|f| f.share_malformed_json = 1.0);

    // Act
    let err = client.list_projects().await.expect_err("garbage body");

    // Assert
    assert!(matches!(err, BatisimplyError::Decode { .. }), "{err:?}");
}

#[tokio::test]
async fn the_admin_http_surface_sets_faults_and_edits_projects() {
    // Arrange
    let sim = start_sim(Faults::default()).await;
    let id = sim.seed_projects(1)[0].id;
    let http = reqwest::Client::new();
    let admin = |path: &str| format!("{}/__admin{path}", sim.base_url);

    // Act
    let faults = Faults {
        latency_ms: 5,
        ..Faults::default()
    };
    let put = http
        .put(admin("/faults"))
        .json(&faults)
        .send()
        .await
        .expect("put faults");
    let patch = http
        .patch(admin(&format!("/projects/{id}")))
        .json(&serde_json::json!({ "projectName": "Renamed on site" }))
        .send()
        .await
        .expect("patch project");
    let stats: serde_json::Value = http
        .get(admin("/stats"))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");

    // Assert
    assert!(put.status().is_success() && patch.status().is_success());
    assert_eq!(sim.faults().latency_ms, 5);
    assert_eq!(
        sim.projects()[0].data.name.as_deref(),
        Some("Renamed on site")
    );
    assert!(stats.get("served429").is_some());
}

#[tokio::test]
async fn the_simulator_state_survives_a_restart_through_its_state_file() {
    // Arrange
    let dir = tempfile::tempdir().expect("temp dir");
    let config = SimConfig {
        state_file: Some(dir.path().join("sim.json")),
        ..SimConfig::default()
    };
    let first = start_sim_with(config.clone(), Faults::default()).await;
    first.seed_projects(3);
    first.seed_slots(2);
    first.shutdown().await;

    // Act
    let second = start_sim_with(config, Faults::default()).await;

    // Assert
    assert_eq!(second.projects().len(), 3);
    assert_eq!(second.slots().len(), 2);
}

#[tokio::test]
async fn check_explains_a_tls_problem() {
    // Arrange: HTTPS spoken to the plain-HTTP simulator.
    let sim = start_sim(Faults::default()).await;
    let tls = client(BatisimplySettings {
        sso_base_url: sim.sso_url.replace("http://", "https://"),
        max_retries: 0,
        ..settings_for(&sim)
    });

    // Act
    let report = tls.check().await;

    // Assert
    let message = report.steps[0].failure.clone().unwrap_or_default();
    assert!(message.contains("TLS"), "{message}");
}

#[tokio::test]
async fn a_create_is_retried_after_a_503_but_not_after_an_ambiguous_500() {
    // Arrange
    let sim = start_sim(Faults::default()).await;
    let client = client(settings_for(&sim));
    client.authenticate().await.expect("login");

    // Act
    sim.update_faults(|f| f.fail_next = vec![503]);
    let after_503 = client.create_project(&project("CH503")).await;
    let retries_after_503 = client.stats().retries;
    sim.update_faults(|f| f.fail_next = vec![500]);
    let after_500 = client.create_project(&project("CH500")).await;

    // Assert
    assert!(after_503.is_ok());
    assert_eq!(retries_after_503, 1);
    assert_eq!(after_500.expect_err("not retried").status(), Some(500));
    assert_eq!(client.stats().retries, 1);
}

#[tokio::test]
async fn slot_edits_in_the_simulator_are_seen_by_the_client() {
    // Arrange: three slots in the last day.
    let sim = start_sim(Faults::default()).await;
    let project = sim.seed_projects(1).remove(0);
    let now = Utc::now();
    let ids: Vec<String> = (1..=3)
        .map(|h| sim.add_slot(&project, now - chrono::Duration::hours(h * 5)))
        .collect();
    let client = client(settings_for(&sim));
    let last_day = || client.list_time_slots(now - chrono::Duration::days(1), now);

    // Act
    sim.validate_slot(&ids[0]).expect("validate");
    sim.move_slot(
        &ids[1],
        now - chrono::Duration::days(3),
        now - chrono::Duration::days(3),
    )
    .expect("move");
    sim.delete_slot(&ids[2]).expect("delete");
    let listing = last_day().await.expect("list");

    // Assert
    assert_eq!(listing.records.len(), 1);
    let slot = &listing.records[0];
    assert_eq!(slot.id, ids[0]);
    assert_eq!(
        slot.status,
        Some(batisync::batisimply::ManagementStatus::Validated)
    );
    assert_eq!(slot.project_id, project.id);
    assert_eq!(slot.total_minutes, 240);
    assert!(slot.last_modified.is_some());
}

#[tokio::test]
async fn a_field_edit_bumps_the_last_modified_date_seen_by_the_client() {
    // Arrange
    let sim = start_sim(Faults::default()).await;
    let seeded = sim.seed_projects(1).remove(0);
    let client = client(settings_for(&sim));

    // Act
    tokio::time::sleep(Duration::from_millis(10)).await;
    sim.edit_project(
        seeded.id,
        &serde_json::json!({ "comment": "Changed on site" }),
    )
    .expect("edit");
    let fetched = client.get_project(seeded.id).await.expect("get");

    // Assert
    assert_eq!(fetched.data.comment.as_deref(), Some("Changed on site"));
    assert!(fetched.last_modified > seeded.last_modified);
}

/// Captures formatted log lines.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn secrets_never_appear_in_logs_debug_output_or_error_messages() {
    // Arrange: distinctive secrets, TRACE logs of the crate captured.
    const SECRET: &str = "Zebra-S3cr3t-4417";
    const PASSWORD: &str = "Zebra-P4ssw0rd-4417";
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("batisync=trace"))
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let sim = Simulator::builder()
        .client("batisync", SECRET)
        .user("sim-user", PASSWORD)
        .spawn("127.0.0.1:0")
        .await
        .expect("sim");
    let settings = BatisimplySettings {
        client_secret: SECRET.into(),
        password: PASSWORD.into(),
        ..settings_for(&sim)
    };
    let wrong = BatisimplySettings {
        password: format!("{PASSWORD}-wrong").into(),
        ..settings.clone()
    };

    // Act
    let good = client(settings.clone());
    let mut errors = vec![good.get_project(424_242).await.expect_err("404")];
    errors.push(good.create_project(&project("")).await.expect_err("422"));
    errors.push(client(wrong.clone()).get_project(1).await.expect_err("401"));

    // Assert
    let captured = String::from_utf8(logs.0.lock().expect("logs").clone()).expect("utf8");
    assert!(!captured.is_empty(), "nothing was logged");
    let texts = [captured, format!("{settings:?}"), format!("{wrong:?}")]
        .into_iter()
        .chain(errors.iter().map(|e| format!("{e} {e:?}")));
    for text in texts {
        assert!(!text.contains("Zebra"), "secret leaked: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn bench_client_against_the_simulator() {
    let report = batisync::batisimply::bench::bench_client(&Default::default())
        .await
        .expect("bench runs");
    println!("{report}");
}
