//! End to end in a real headless Chromium, driving the demo (simulated Batigest and
//! BatiSimply, real PostgreSQL): sign in, check the dashboard against `batisync
//! status`, find a dead letter, re-drive it, watch it delivered. Screenshots of the main
//! pages go to `target/e2e-screenshots/`.
//!
//! Needs `chromium` and `chromedriver` (Debian: `apt-get install chromium
//! chromium-driver`; `scripts/test.sh` installs them). Without them the test says so and
//! passes locally, but fails under CI (`CI` set), where they must be present.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use batisync::demo::Demo;
use common::TestDb;
use fantoccini::{Client, ClientBuilder, Locator};
use tokio_util::sync::CancellationToken;

const PASSWORD: &str = "e2e password 2026";

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// A chromedriver process on a free port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver(program: &PathBuf) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(program)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Driver { child, url }
}

async fn browser(driver: &Driver, chromium: &PathBuf) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1100", "--lang=fr-FR"],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

fn screenshots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("e2e-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.unwrap();
    std::fs::write(screenshots_dir().join(format!("{name}.png")), png).unwrap();
}

async fn text_of(browser: &Client, css: &str) -> String {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

async fn click(browser: &Client, css: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

/// `batisync status` against the test database: (backlog, dead) of flow chantiers.
fn status_cli(db: &TestDb) -> (i64, i64) {
    let s = &db.settings;
    let output = Command::new(env!("CARGO_BIN_EXE_batisync"))
        .arg("status")
        .env("BATISYNC__POSTGRES__HOST", &s.host)
        .env("BATISYNC__POSTGRES__PORT", s.port.to_string())
        .env("BATISYNC__POSTGRES__USER", &s.user)
        .env("BATISYNC__POSTGRES__DATABASE", &s.database)
        .env(
            "BATISYNC__POSTGRES__PASSWORD",
            std::env::var("BATISYNC_TEST_PG_PASSWORD").unwrap_or_else(|_| "batisync".into()),
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    let (mut backlog, mut dead) = (0, 0);
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() >= 3 && cols[0] == "chantiers" {
            let n: i64 = cols[2].parse().unwrap();
            if cols[1] == "dead" {
                dead += n
            } else {
                backlog += n
            }
        }
    }
    (backlog, dead)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn office_staff_sign_in_read_the_dashboard_and_redrive_a_dead_letter_in_chromium() {
    let (Some(chromium), Some(chromedriver)) = (
        find_program(&["chromium", "chromium-browser", "google-chrome"]),
        find_program(&["chromedriver"]),
    ) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium and chromedriver must be installed in CI (scripts/test.sh installs them)"
        );
        eprintln!(
            "SKIPPED: chromium or chromedriver not found (apt-get install chromium chromium-driver)"
        );
        return;
    };
    let db = TestDb::new().await;
    let mut settings = db.app_settings();
    settings.admin.password_hash = Some(
        batisync::console::auth::hash_password(PASSWORD)
            .unwrap()
            .into(),
    );
    settings.admin.health_check_interval_secs = 2;
    let demo = Demo::build(settings, None).await.unwrap();
    let base = format!("http://{}", demo.admin_addr().unwrap());
    let sim = demo.simulator();
    let stop = CancellationToken::new();
    let running = tokio::spawn(demo.run_until_stopped(stop.clone()));

    let driver = start_driver(&chromedriver).await;
    let b = browser(&driver, &chromium).await;

    // Sign in.
    b.goto(&format!("{base}/")).await.unwrap();
    b.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#password"))
        .await
        .unwrap();
    shot(&b, "01-login").await;
    b.find(Locator::Css("#password"))
        .await
        .unwrap()
        .send_keys(PASSWORD)
        .await
        .unwrap();
    click(&b, "main.login button[type=submit]").await;
    b.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#dashboard section.card[data-flow=chantiers]"))
        .await
        .unwrap();

    // BatiSimply refuses a request now and then until one event is a dead letter.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while db
        .scalar::<i64>("SELECT count(*) FROM batisync.dead_events")
        .await
        == 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no dead letter appeared"
        );
        if sim.faults().fail_next.is_empty() {
            sim.update_faults(|f| f.fail_next.push(422));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Pause the flow so the numbers hold still, then compare with `batisync status`.
    b.goto(&format!("{base}/actions")).await.unwrap();
    click(
        &b,
        "tr[data-flow=chantiers] form[action='/actions/pause'] button",
    )
    .await;
    b.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("form[action='/actions/resume']"))
        .await
        .unwrap();
    // Deliveries already under way finish (at BatiSimply's rate limit): wait for them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while db
        .scalar::<i64>("SELECT count(*) FROM batisync.queue WHERE locked_by IS NOT NULL")
        .await
        > 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "deliveries never finished"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.goto(&format!("{base}/")).await.unwrap();
    let card = "#dashboard section.card[data-flow=chantiers]";
    let backlog: i64 = text_of(&b, &format!("{card} [data-figure=backlog]"))
        .await
        .parse()
        .unwrap();
    let dead: i64 = text_of(&b, &format!("{card} [data-figure=dead]"))
        .await
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        (backlog, dead),
        status_cli(&db),
        "dashboard vs batisync status"
    );
    assert!(dead >= 1);
    let delivered: i64 = text_of(&b, &format!("{card} [data-figure=delivered_today]"))
        .await
        .parse()
        .unwrap();
    assert!(delivered >= 1, "the initial load was delivered today");
    shot(&b, "02-dashboard").await;

    // Find the dead letter with its fix, re-drive it.
    b.goto(&format!("{base}/todo")).await.unwrap();
    let row = b
        .find(Locator::Css("section.group tr[data-event]"))
        .await
        .unwrap();
    let id = row.attr("data-event").await.unwrap().unwrap();
    assert!(
        text_of(&b, "section.group p.fix")
            .await
            .contains("Que faire")
    );
    shot(&b, "03-todo").await;
    click(&b, &format!("tr[data-event='{id}'] button")).await;
    let flash = b
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("p.alert.info"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(flash.contains("relancé"), "{flash}");

    // Resume; the event is delivered.
    b.goto(&format!("{base}/actions")).await.unwrap();
    click(
        &b,
        "tr[data-flow=chantiers] form[action='/actions/resume'] button",
    )
    .await;
    b.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("form[action='/actions/pause']"))
        .await
        .unwrap();
    shot(&b, "04-actions").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        b.goto(&format!("{base}/activity/{id}")).await.unwrap();
        let status = text_of(&b, "#status").await;
        if status.contains("livré") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "event {id} still {status}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    shot(&b, "05-event-delivered").await;

    // The other pages, for the eyes.
    b.goto(&format!("{base}/activity")).await.unwrap();
    shot(&b, "06-activity").await;
    b.goto(&format!("{base}/employees")).await.unwrap();
    click(&b, "form[action='/employees/refresh'] button").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.goto(&format!("{base}/employees")).await.unwrap();
    b.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#employees"))
        .await
        .unwrap();
    shot(&b, "07-employees").await;
    b.goto(&format!("{base}/settings")).await.unwrap();
    shot(&b, "08-settings").await;
    b.goto(&format!("{base}/journal")).await.unwrap();
    shot(&b, "09-journal").await;
    b.goto(&format!("{base}/lang?to=en&back=/")).await.unwrap();
    b.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#dashboard"))
        .await
        .unwrap();
    assert!(b.source().await.unwrap().contains("Delivered today"));
    shot(&b, "10-dashboard-en").await;

    b.close().await.unwrap();
    stop.cancel();
    running.await.unwrap().unwrap();
    db.drop().await;
}
