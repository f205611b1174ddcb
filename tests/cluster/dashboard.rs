//! The dashboard in a real browser: Debian's Chromium, headless, driven through chromedriver
//! (WebDriver) with fantoccini. Install them with `apt-get install chromium chromium-driver`;
//! `CHROMEDRIVER` may name another chromedriver binary.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use reqwest::StatusCode;
use semisync_kv::local::LocalSettings;
use semisync_kv::settings::Settings;
use serde_json::json;

use crate::common::{runs, skip_without_tool};
use crate::helpers::{NodeExt, TestCluster, eventually, send, settings};

/// How long the page may take to show something.
const WAIT: Duration = Duration::from_secs(20);

/// A chromedriver process and a browser session on it; both end on drop.
struct Browser {
    driver: Child,
    client: Client,
    /// Chromium's profile, removed on drop.
    profile: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver runs in a process group of its own, with the Chromium it started: kill
        // them all, or a browser would outlive a failed test.
        let group = Pid::from_raw(self.driver.id() as i32);
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Browser {
    /// The chromedriver to run: `CHROMEDRIVER`, else the one on the `PATH`.
    fn driver_program() -> String {
        std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into())
    }

    /// Whether Chromium and chromedriver are here; if not, the test is skipped, or fails under
    /// `SEMISYNC_REQUIRE_ALL=1`.
    fn present() -> bool {
        let check = runs(&Self::driver_program(), &["--version"])
            .and_then(|()| runs("chromium", &["--version"]));
        if let Err(why) = &check {
            skip_without_tool(
                "the dashboard's browser test",
                why,
                "apt-get install chromium chromium-driver (or set CHROMEDRIVER to a chromedriver)",
            );
        }
        check.is_ok()
    }

    async fn start() -> Self {
        let program = Self::driver_program();
        let mut driver = Command::new(&program)
            .arg("--port=0")
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot run {program} ({err}): the dashboard test needs Chromium and \
                     chromedriver (Debian: apt-get install chromium chromium-driver)"
                )
            });
        // "ChromeDriver was started successfully on port 40123." A thread reads the port, then
        // keeps draining the pipe, so that chromedriver never writes to a closed one.
        let stdout = driver.stdout.take().expect("piped stdout");
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let port = line
                    .split("started successfully on port ")
                    .nth(1)
                    .and_then(|rest| rest.trim_end_matches('.').trim().parse::<u16>().ok());
                if let Some(port) = port {
                    let _ = port_tx.send(port);
                }
            }
        });
        let port = port_rx
            .recv_timeout(WAIT)
            .expect("chromedriver says which port it listens on");
        let profile = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("chromium-profile-{}", std::process::id()));
        let capabilities = json!({
            "goog:chromeOptions": {
                // No sandbox: CI runs as root, where Chromium's sandbox cannot start.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1600,1200",
                         format!("--user-data-dir={}", profile.display())]
            }
        });
        let capabilities = match capabilities {
            serde_json::Value::Object(map) => map,
            _ => unreachable!("a JSON object"),
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("chromedriver starts a headless Chromium");
        Self {
            driver,
            client,
            profile,
        }
    }

    /// Waits until an element matches `css`, and returns it.
    async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        let found = self
            .client
            .wait()
            .at_most(WAIT)
            .every(Duration::from_millis(100))
            .for_element(Locator::Css(css))
            .await;
        match found {
            Ok(element) => element,
            Err(err) => {
                self.fail(&format!("the page never showed {css}: {err}"))
                    .await
            }
        }
    }

    /// Waits until the element `css` contains `text`.
    async fn wait_for_text(&self, css: &str, text: &str) {
        let shown = eventually(WAIT, || async {
            let shown = self.text(css).await;
            shown.contains(text).then_some(()).ok_or(shown)
        })
        .await;
        if let Err(last) = shown {
            self.fail(&format!("{css} never said {text:?}: {last}"))
                .await;
        }
    }

    /// Fails the test with `why` and the page as it is.
    async fn fail(&self, why: &str) -> ! {
        let page = self.client.source().await.unwrap_or_default();
        panic!("{why}\n----- the page -----\n{page}")
    }

    /// Errors the page's scripts hit, which it records on its body.
    async fn script_errors(&self) -> String {
        let body = self.wait_for("body").await;
        body.attr("data-errors")
            .await
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    async fn click(&self, css: &str) {
        self.wait_for(css).await.click().await.expect("click");
    }

    /// Replaces the text of the input `css`.
    async fn fill(&self, css: &str, text: &str) {
        let input = self.wait_for(css).await;
        input.clear().await.expect("clear");
        input.send_keys(text).await.expect("type");
    }

    async fn text(&self, css: &str) -> String {
        self.wait_for(css).await.text().await.expect("text")
    }
}

/// Drives the dashboard as a presenter would, and checks that it shows the writes, their acks
/// (late ones too) and their outcome, and that its controls change the cluster.
#[tokio::test]
async fn the_dashboard_shows_writes_acks_and_outcomes_and_its_controls_work() {
    if !Browser::present() {
        return;
    }
    let cluster = TestCluster::start_up(LocalSettings {
        settings: Settings {
            min_delay_ms: 100,
            max_delay_ms: 400,
            write_quorum: 2,
            replicate_timeout_ms: 3000,
            ..Settings::DEFAULT
        },
        ..settings()
    })
    .await;
    let browser = Browser::start().await;
    let leader = cluster.leader.url();
    browser
        .client
        .goto(&format!("{leader}/ui"))
        .await
        .expect("open the page");
    browser.wait_for("#conn[data-state='open']").await;
    for i in 1..=5 {
        browser
            .wait_for(&format!(
                "#followers tr[data-follower='follower{i}'][data-state='up']"
            ))
            .await;
    }

    // A write from the page: 2 acks counted, 3 more after the answer.
    browser.click("#send-write").await;
    browser
        .wait_for("#log tr[data-status='200'][data-acks='2'][data-late='3']")
        .await;
    assert!(browser.text("#outcome").await.contains("200"));
    assert!(browser.text("#late").await.contains("Late acks"));

    // A write from elsewhere shows up too.
    let (status, body) = cluster.put("from-curl", "x", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let version = body["version"].as_str().expect("version");
    browser
        .wait_for(&format!(
            "#log tr[data-version='{version}'][data-status='200']"
        ))
        .await;

    // Live settings from the page: every follower must ack, within 2 s, and the leader shows
    // a write only then.
    browser.fill("#set-write_quorum", "5").await;
    browser.fill("#set-replicate_timeout_ms", "2000").await;
    browser
        .wait_for("#set-wait_point")
        .await
        .select_by_value("after_sync")
        .await
        .expect("choose the wait point");
    browser.click("#apply-settings").await;
    browser.wait_for_text("#settings-msg", "applied").await;
    let (status, settings) = send(cluster.http.get(format!("{leader}/admin/settings"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(settings["write_quorum"], 5);
    assert_eq!(settings["replicate_timeout_ms"], 2000);
    assert_eq!(settings["wait_point"], "after_sync");
    browser.wait_for_text("#s-wait", "after_sync").await;

    // Cut one follower off from the page: the next write gets 4 of 5 acks and a 503. Slow
    // motion, to catch it in flight for the screenshot.
    browser
        .click("button[data-action='cut'][data-follower='follower1']")
        .await;
    browser
        .wait_for("#followers tr[data-follower='follower1'][data-state='cut_off']")
        .await;
    browser
        .wait_for("#speed")
        .await
        .select_by_value("0.25")
        .await
        .expect("slow motion");
    browser.click("#send-write").await;
    browser
        .wait_for("#log tr[data-status='pending']:not([data-acks='0'])")
        .await;
    browser
        .client
        .execute("window.scrollTo(0, 0)", Vec::new())
        .await
        .expect("scroll to the top");
    let screenshot = browser.client.screenshot().await.expect("screenshot");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&path, screenshot).expect("save the screenshot");
    browser
        .wait_for("#log tr[data-status='503'][data-acks='4'][data-visible='no']")
        .await;
    assert!(browser.text("#outcome").await.contains("503"));
    assert!(
        browser.text("#visible").await.contains("hidden"),
        "{}",
        browser.text("#visible").await
    );

    // Back to live, and restore it from the page: the leader sees it up again and it catches
    // up.
    browser.click("#live").await;
    browser
        .click("button[data-action='restore'][data-follower='follower1']")
        .await;
    browser
        .wait_for("#followers tr[data-follower='follower1'][data-state='up']")
        .await;
    cluster
        .converged(WAIT)
        .await
        .expect("the restored follower catches up");
    // Its late ack made the timed-out write visible on the leader.
    browser
        .wait_for("#log tr[data-status='503'][data-acks='4'][data-visible='yes']")
        .await;

    // The leader dies and follower2 is promoted: the page says where the leader went, with a
    // link to its dashboard.
    cluster.leader.signal(Signal::SIGKILL);
    let new_leader = cluster.followers[1].url();
    let (status, promotion) = send(cluster.http.post(format!("{new_leader}/admin/promote"))).await;
    assert_eq!(status, StatusCode::OK, "{promotion}");
    browser
        .wait_for(&format!("#banner a[href='{new_leader}/']"))
        .await;
    assert!(
        browser
            .text("#banner")
            .await
            .contains("The leader changed: term 2"),
        "{}",
        browser.text("#banner").await
    );
    assert_eq!(
        browser.script_errors().await,
        "",
        "the page's scripts failed"
    );
}
