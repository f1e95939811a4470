//! The web console over real HTTP: sign-in, sessions, CSRF, every page and action, the
//! JSON API, and no secret in any response.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use batisync::app::Application;
use batisync::demo::ConsoleEmployees;
use batisync::dispatch::DispatchSettings;
use batisync::flows::heures::SimulatedEmployees;
use batisync::settings::Settings;
use common::handler::{Behavior, Recorder};
use common::{TestDb, event};
use reqwest::StatusCode;
use reqwest::redirect::Policy;
use tokio_util::sync::CancellationToken;

const PASSWORD: &str = "correct horse battery";
const API_TOKEN: &str = "test-api-token-0123456789";
/// Secrets planted in the settings; none may ever appear in a response.
const SECRETS: [&str; 3] = ["CS-SECRET-7f3a9", "PW-SECRET-51c2d", "SQL-SECRET-9e8b1"];

const PAGES: [&str; 8] = [
    "/",
    "/fragments/dashboard",
    "/activity",
    "/todo",
    "/employees",
    "/actions",
    "/settings",
    "/journal",
];
const ACTIONS: [(&str, &str); 10] = [
    ("/todo/redrive", "all=1"),
    ("/employees/refresh", ""),
    ("/actions/sync", "flow=chantiers"),
    ("/actions/pause", "flow=chantiers"),
    ("/actions/resume", "flow=chantiers"),
    ("/actions/resync", "flow=chantiers"),
    ("/actions/test", ""),
    ("/settings", "postgres.host=x"),
    ("/settings/test", "postgres.host=x"),
    ("/logout", ""),
];

struct Console {
    base: String,
    http: reqwest::Client,
    stop: CancellationToken,
    running: tokio::task::JoinHandle<anyhow::Result<()>>,
    handler: Arc<Recorder>,
    fixed: Arc<AtomicBool>,
    password_hash: String,
    db: TestDb,
}

fn settings(db: &TestDb) -> (Settings, String) {
    let mut settings = db.app_settings();
    let hash = batisync::console::auth::hash_password(PASSWORD).unwrap();
    settings.admin.password_hash = Some(hash.clone().into());
    settings.admin.api_token_sha256 = Some(batisync::console::auth::digest(API_TOKEN));
    settings.admin.login_attempts_per_minute = 3;
    settings.admin.health_check_interval_secs = 3600;
    settings.batisimply.client_id = "client".into();
    settings.batisimply.api_base_url = "http://127.0.0.1:9".into();
    settings.batisimply.sso_base_url = "http://127.0.0.1:9".into();
    settings.batisimply.client_secret = SECRETS[0].into();
    settings.batisimply.password = SECRETS[1].into();
    settings.batigest.password = SECRETS[2].into();
    (settings, hash)
}

impl Console {
    /// A worker with flow `chantiers` (a scripted handler: key BAD fails until fixed).
    async fn start() -> Self {
        Self::start_with(false, None).await
    }

    /// [`Console::start`] with `admin.allow_codebs_write` and, optionally, the demo's
    /// simulated employees as the Salariés page's source.
    async fn start_with(
        allow_codebs_write: bool,
        employees: Option<Arc<SimulatedEmployees>>,
    ) -> Self {
        let db = TestDb::new().await;
        let (mut settings, password_hash) = settings(&db);
        settings.admin.allow_codebs_write = allow_codebs_write;
        let fixed = Arc::new(AtomicBool::new(false));
        let flag = fixed.clone();
        let handler = Arc::new(Recorder::new(move |e| {
            if e.entity_key == "BAD" && !flag.load(Ordering::SeqCst) {
                Behavior::Permanent
            } else {
                Behavior::Apply
            }
        }));
        let dispatch = DispatchSettings {
            fallback_poll_ms: 50,
            ..DispatchSettings::default()
        };
        let mut app = Application::build(settings, None).await.unwrap().with_flow(
            "chantiers",
            handler.clone(),
            dispatch,
        );
        if let Some(employees) = employees {
            app = app.with_employee_source(Arc::new(ConsoleEmployees(employees)));
        }
        let base = format!("http://{}", app.local_addr().unwrap());
        let stop = CancellationToken::new();
        let running = tokio::spawn(app.run_until_stopped(stop.clone()));
        let http = reqwest::Client::builder()
            .redirect(Policy::none())
            .build()
            .unwrap();
        Self {
            base,
            http,
            stop,
            running,
            handler,
            fixed,
            password_hash,
            db,
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.running.await.unwrap().unwrap();
        self.db.drop().await;
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Signs in; returns the session cookie and the CSRF token of the pages.
    async fn sign_in(&self) -> (String, String) {
        let form_page = self.http.get(self.url("/login")).send().await.unwrap();
        let login_cookie = cookie(&form_page, "batisync_login").unwrap();
        let html = form_page.text().await.unwrap();
        let token = hidden(&html, "login_token");
        let response = self
            .http
            .post(self.url("/login"))
            .header("cookie", format!("batisync_login={login_cookie}"))
            .form(&[
                ("password", PASSWORD),
                ("login_token", &token),
                ("next", "/"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let set_cookie = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .find(|v| v.starts_with("batisync_session="))
            .unwrap();
        assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
        assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
        assert!(!set_cookie.contains("Secure"), "no TLS here: {set_cookie}");
        let session = cookie(&response, "batisync_session").unwrap();
        let (_, html) = self.get(&session, "/").await;
        (session, hidden(&html, "csrf"))
    }

    async fn get(&self, session: &str, path: &str) -> (StatusCode, String) {
        let response = self
            .http
            .get(self.url(path))
            .header("cookie", format!("batisync_session={session}"))
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    }

    async fn post(&self, session: &str, path: &str, body: String) -> (StatusCode, String, String) {
        let response = self
            .http
            .post(self.url(path))
            .header("cookie", format!("batisync_session={session}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        let location = response
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (response.status(), location, response.text().await.unwrap())
    }

    async fn api(&self, method: reqwest::Method, path: &str) -> (StatusCode, serde_json::Value) {
        let response = self
            .http
            .request(method, self.url(&format!("/api/v1{path}")))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or_default())
    }

    async fn wait_for(&self, what: &str, mut done: impl AsyncFnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !done().await {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// The value of the first hidden input named `name`.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

fn assert_no_secret(console: &Console, what: &str, body: &str) {
    for secret in
        SECRETS
            .iter()
            .copied()
            .chain([console.password_hash.as_str(), API_TOKEN, PASSWORD])
    {
        assert!(!body.contains(secret), "{what} leaks a secret");
    }
    assert!(!body.contains("$argon2"), "{what} shows a password hash");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_session_pages_redirect_to_sign_in_and_actions_and_api_are_refused() {
    let c = Console::start().await;
    for page in PAGES {
        let response = c.http.get(c.url(page)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{page}");
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        assert!(location.starts_with("/login?next="), "{page}: {location}");
    }
    for (action, body) in ACTIONS {
        let (status, _, _) = c.post("not-a-session", action, body.to_owned()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{action}");
    }
    let response = c.http.get(c.url("/api/v1/dashboard")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = c
        .http
        .get(c.url("/api/v1/dashboard"))
        .bearer_auth("wrong-token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let (status, _) = c.api(reqwest::Method::GET, "/dashboard").await;
    assert_eq!(status, StatusCode::OK);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_refused_and_repeated_attempts_are_rate_limited() {
    let c = Console::start().await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let form_page = c.http.get(c.url("/login")).send().await.unwrap();
        let login_cookie = cookie(&form_page, "batisync_login").unwrap();
        let token = hidden(&form_page.text().await.unwrap(), "login_token");
        let response = c
            .http
            .post(c.url("/login"))
            .header("cookie", format!("batisync_login={login_cookie}"))
            .form(&[("password", "guess"), ("login_token", &token)])
            .send()
            .await
            .unwrap();
        assert!(cookie(&response, "batisync_session").is_none());
        statuses.push(response.status());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_and_api_answer_for_a_signed_in_user_without_any_secret() {
    let c = Console::start().await;
    c.db.outbox()
        .capture("chantiers", &[event("A", 1), event("BAD", 1)], None, false)
        .await
        .unwrap();
    let (session, _) = c.sign_in().await;
    c.wait_for("the dead letter", async || {
        c.db.scalar::<i64>("SELECT count(*) FROM batisync.dead_events")
            .await
            == 1
    })
    .await;
    let bad_id: i64 =
        c.db.scalar("SELECT event_id FROM batisync.dead_events")
            .await;
    let mut pages: Vec<String> = PAGES.iter().map(|p| (*p).to_owned()).collect();
    pages.push(format!("/activity/{bad_id}"));
    pages.push("/activity?status=dead&q=permanent&from=2020-01-01&to=2099-12-31".into());
    pages.push("/journal?q=chantiers".into());
    for page in &pages {
        let (status, body) = c.get(&session, page).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_no_secret(&c, page, &body);
    }
    let (_, settings_page) = c.get(&session, "/settings").await;
    assert!(settings_page.contains("batisimply.client_secret"));
    let (_, english) = c
        .http
        .get(c.url("/todo"))
        .header(
            "cookie",
            format!("batisync_session={session}; batisync_lang=en"),
        )
        .send()
        .await
        .map(|r| (r.status(), r))
        .unwrap();
    assert!(english.text().await.unwrap().contains("Dead letters"));
    for path in [
        "/dashboard".to_owned(),
        "/status".to_owned(),
        "/events?flow=chantiers".to_owned(),
        format!("/events/{bad_id}"),
        "/dead-letters".to_owned(),
        "/flows/chantiers/resync".to_owned(),
    ] {
        let (status, body) = c.api(reqwest::Method::GET, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_no_secret(&c, &path, &body.to_string());
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_without_the_right_csrf_token_are_refused() {
    let c = Console::start().await;
    let (session, csrf) = c.sign_in().await;
    for (action, body) in ACTIONS {
        for forged in [body.to_owned(), format!("{body}&csrf=forged")] {
            let (status, _, _) = c.post(&session, action, forged).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{action}");
        }
    }
    // The API refuses a session without X-CSRF-Token for changes.
    let response = c
        .http
        .post(c.url("/api/v1/flows/chantiers/pause"))
        .header("cookie", format!("batisync_session={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = c
        .http
        .post(c.url("/api/v1/flows/chantiers/resume"))
        .header("cookie", format!("batisync_session={session}"))
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_action_answers_with_a_redirect_and_a_message() {
    let c = Console::start().await;
    let (session, csrf) = c.sign_in().await;
    for (action, body) in ACTIONS {
        let body = format!("{body}&csrf={csrf}");
        let (status, location, page) = c.post(&session, action, body).await;
        match action {
            // No settings file: the page explains, nothing is saved.
            "/settings" => assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{page}"),
            "/settings/test" => {
                assert_eq!(status, StatusCode::OK);
                assert!(page.contains("test-results"), "{page}");
                assert_no_secret(&c, action, &page);
            }
            "/logout" => assert_eq!(
                (status, location.as_str()),
                (StatusCode::SEE_OTHER, "/login")
            ),
            _ => assert_eq!(status, StatusCode::SEE_OTHER, "{action}: {page}"),
        }
    }
    // Signed out: the session is gone.
    let (status, _) = c.get(&session, "/").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_flow_delivers_nothing_until_resumed() {
    let c = Console::start().await;
    let (session, csrf) = c.sign_in().await;
    let (status, _, _) = c
        .post(
            &session,
            "/actions/pause",
            format!("flow=chantiers&csrf={csrf}"),
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, actions) = c.get(&session, "/actions").await;
    assert!(actions.contains("en pause"), "{actions}");
    c.db.outbox()
        .capture("chantiers", &[event("P", 1)], None, false)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(c.handler.applied.load(Ordering::SeqCst), 0);
    let (status, body) = c.api(reqwest::Method::POST, "/flows/chantiers/sync").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    c.post(
        &session,
        "/actions/resume",
        format!("flow=chantiers&csrf={csrf}"),
    )
    .await;
    c.wait_for("delivery after resume", async || {
        c.handler.applied.load(Ordering::SeqCst) == 1
    })
    .await;
    let (status, first) = c.api(reqwest::Method::POST, "/flows/chantiers/sync").await;
    let (_, second) = c.api(reqwest::Method::POST, "/flows/chantiers/sync").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(first["sync"], "queued");
    assert_eq!(second["sync"], "already_queued", "two clicks, one sync");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_grouped_with_its_fix_then_redriven_and_delivered() {
    let c = Console::start().await;
    c.db.outbox()
        .capture("chantiers", &[event("BAD", 1)], None, false)
        .await
        .unwrap();
    let (session, csrf) = c.sign_in().await;
    c.wait_for("the dead letter", async || {
        c.db.scalar::<i64>("SELECT count(*) FROM batisync.dead_events")
            .await
            == 1
    })
    .await;
    let id: i64 =
        c.db.scalar("SELECT event_id FROM batisync.dead_events")
            .await;
    let (_, todo) = c.get(&session, "/todo").await;
    assert!(todo.contains(&format!("data-event=\"{id}\"")), "{todo}");
    assert!(todo.contains("Que faire"), "{todo}");
    let (_, dashboard) = c.get(&session, "/fragments/dashboard").await;
    assert!(
        dashboard.contains("href=\"/todo\""),
        "dead letters link: {dashboard}"
    );

    c.fixed.store(true, Ordering::SeqCst);
    let (status, location, _) = c
        .post(&session, "/todo/redrive", format!("id={id}&csrf={csrf}"))
        .await;
    assert_eq!(
        (status, location.as_str()),
        (StatusCode::SEE_OTHER, "/todo")
    );
    let (_, flashed) = c.get(&session, "/todo").await;
    assert!(flashed.contains("1 événement(s) relancé(s)"), "{flashed}");
    c.wait_for("the re-driven event delivered", async || {
        c.db.status_of(id).await == "done"
    })
    .await;
    let (_, detail) = c.get(&session, &format!("/activity/{id}")).await;
    assert!(detail.contains("livré"), "{detail}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_console_answers_https_and_its_cookies_are_secure() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let generated = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output();
    if !generated.is_ok_and(|o| o.status.success()) {
        assert!(std::env::var_os("CI").is_none(), "openssl is needed in CI");
        eprintln!("SKIPPED: openssl not found to make a test certificate");
        return;
    }
    let db = TestDb::new().await;
    let (mut settings, _) = settings(&db);
    settings.admin.tls_cert_path = Some(cert);
    settings.admin.tls_key_path = Some(key);
    let app = Application::build(settings, None).await.unwrap();
    let base = format!("https://localhost:{}", app.local_addr().unwrap().port());
    let stop = CancellationToken::new();
    let running = tokio::spawn(app.run_until_stopped(stop.clone()));
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .resolve("localhost", "127.0.0.1:0".parse().unwrap())
        .build()
        .unwrap();
    let response = http.get(format!("{base}/login")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let set_cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(set_cookie.contains("; Secure"), "{set_cookie}");
    let plain = reqwest::get(base.replace("https://", "http://") + "/login").await;
    assert!(plain.is_err(), "plain HTTP is not served on a TLS listener");
    stop.cancel();
    running.await.unwrap().unwrap();
    db.drop().await;
}

const NEW_ID: &str = "6f1c2a8e-0004-4c1d-9a11-00000000beef";

/// Two simulated employees: SAL001 linked, SAL002 without an id.
fn two_employees() -> Arc<SimulatedEmployees> {
    let employees = Arc::new(SimulatedEmployees::new());
    employees.set("SAL001", Some("6f1c2a8e-0004-4c1d-9a11-000000000001"));
    employees.set("SAL002", None);
    employees
}

impl Console {
    /// Asks for a read of the employees and waits until the page lists them.
    async fn load_employees(&self, session: &str, csrf: &str) -> String {
        let (status, _, _) = self
            .post(session, "/employees/refresh", format!("csrf={csrf}"))
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let mut page = String::new();
        self.wait_for("the employee list", async || {
            page = self.get(session, "/employees").await.1;
            page.contains("SAL002")
        })
        .await;
        page
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_codebs_writes_off_the_employee_page_has_no_form_and_writes_are_refused() {
    let employees = two_employees();
    let c = Console::start_with(false, Some(employees.clone())).await;
    let (session, csrf) = c.sign_in().await;
    let page = c.load_employees(&session, &csrf).await;
    assert!(!page.contains("/employees/codebs"), "{page}");
    assert!(page.contains("Lecture seule"), "{page}");

    let (status, _, body) = c
        .post(
            &session,
            "/employees/codebs",
            format!("code=SAL002&batisimply_id={NEW_ID}&csrf={csrf}"),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("admin.allow_codebs_write"), "{body}");
    assert_eq!(employees.rows()[1], ("SAL002".to_owned(), None));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_codebs_writes_on_an_employee_id_is_set_validated_and_cleared_from_the_page() {
    let employees = two_employees();
    let c = Console::start_with(true, Some(employees.clone())).await;
    let (session, csrf) = c.sign_in().await;
    let page = c.load_employees(&session, &csrf).await;
    assert!(page.contains("action=\"/employees/codebs\""), "{page}");
    assert!(page.contains("name=\"code\" value=\"SAL002\""), "{page}");

    // A valid id is written, and the page shows it at once.
    let (status, location, _) = c
        .post(
            &session,
            "/employees/codebs",
            format!("code=SAL002&batisimply_id={NEW_ID}&csrf={csrf}"),
        )
        .await;
    assert_eq!(
        (status, location.as_str()),
        (StatusCode::SEE_OTHER, "/employees")
    );
    assert_eq!(
        employees.rows()[1],
        ("SAL002".to_owned(), Some(NEW_ID.to_owned()))
    );
    let (_, page) = c.get(&session, "/employees").await;
    assert!(page.contains("Identifiant BatiSimply enregistré"), "{page}");
    assert!(page.contains(&format!("<code>{NEW_ID}</code>")), "{page}");

    // A bad value is refused with the reason, and nothing changes.
    for bad in ["not-an-id;DROP", &"a".repeat(65)] {
        let (status, _, body) = c
            .post(
                &session,
                "/employees/codebs",
                format!("code=SAL002&batisimply_id={bad}&csrf={csrf}"),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(body.contains("identifiant"), "{body}");
    }
    assert_eq!(employees.rows()[1].1.as_deref(), Some(NEW_ID));

    // Without the CSRF token: refused.
    let (status, _, _) = c
        .post(
            &session,
            "/employees/codebs",
            "code=SAL002&batisimply_id=".to_owned(),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(employees.rows()[1].1.as_deref(), Some(NEW_ID));

    // An unknown employee: nothing written, the message says why.
    let (status, _, _) = c
        .post(
            &session,
            "/employees/codebs",
            format!("code=NOPE&batisimply_id={NEW_ID}&csrf={csrf}"),
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, page) = c.get(&session, "/employees").await;
    assert!(page.contains("aucun salarié de code"), "{page}");
    assert_eq!(employees.rows().len(), 2);

    // An empty value clears the link.
    c.post(
        &session,
        "/employees/codebs",
        format!("code=SAL002&batisimply_id=&csrf={csrf}"),
    )
    .await;
    assert_eq!(employees.rows()[1], ("SAL002".to_owned(), None));
    let (_, page) = c.get(&session, "/employees").await;
    assert!(page.contains("Identifiant BatiSimply effacé"), "{page}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_lists_the_runs_with_their_counts_and_filters_them() {
    let c = Console::start().await;
    let db = &c.db;
    let mut tx = db.pool.begin().await.unwrap();
    let mark = batisync::outbox::loads::event_mark(&mut tx).await.unwrap();
    batisync::outbox::capture(&mut tx, "chantiers", &[event("RUNKEY", 1)], None, true)
        .await
        .unwrap();
    let run = batisync::outbox::runs::record(&mut tx, "chantiers", mark)
        .await
        .unwrap()
        .unwrap();
    tx.commit().await.unwrap();
    let (session, _) = c.sign_in().await;
    c.wait_for("the run delivered", async || {
        c.handler.applied.load(Ordering::SeqCst) == 1
    })
    .await;
    let (status, page) = c.get(&session, "/journal?q=runkey").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(&format!("data-run=\"{}\"", run.id)), "{page}");
    assert!(page.contains("Exécutions récentes"), "{page}");
    let (_, other) = c.get(&session, "/journal?q=no-such-text").await;
    assert!(!other.contains("data-run="), "{other}");
    assert!(other.contains("Aucune exécution trouvée"), "{other}");
    c.stop().await;
}
