//! Browser tests of the web UI: a real `ccm demo` (10 simulated workers), driven through
//! chromedriver by headless Debian Chromium (WebDriver, with `fantoccini`).
//!
//! One test walks what an operator does: sign in with the token, see the workers, watch a
//! status change arrive without a reload, open a worker and stop it from its page (through
//! the confirmation dialog, with the keyboard) until it is `stopped`, visit every view, and
//! check that markup in a worker's name is shown as text. A screenshot of each view is saved
//! under `target/ui-screenshots/` (the path is printed).
//!
//! Needs `chromium` and `chromedriver` (Debian's `chromium` and `chromium-driver`, which
//! `./scripts/test` installs); without them the test fails and says so. Every wait polls
//! with a deadline; nothing sleeps to synchronise.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

mod common;
use common::{Api, Proc, free_port, wait_for};

const TOKEN: &str = "ui-test-admin-token-0123456789abcdef";
const WORKERS: usize = 10;
/// Chromium flags that work in this kind of container.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1440,1000",
];
/// Markup in a worker name: must be shown as text, never run.
const HOSTILE_NAME: &str = "<img src=x onerror=\"window.__ccmXss=1\">";

// === processes ===

/// A program on `PATH`.
fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn require(programs: &[&str]) -> PathBuf {
    programs.iter().find_map(|p| which(p)).unwrap_or_else(|| {
        panic!(
            "{} is not installed: the browser tests need Debian's `chromium` and \
             `chromium-driver` packages — `./scripts/test` installs them \
             (or: apt-get install -y chromium chromium-driver)",
            programs.join(" / ")
        )
    })
}

// === the page ===

/// Runs a script in the page and returns its value (`null` on a script error).
async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, Vec::new()).await.unwrap_or(Value::Null)
}

/// Waits until the page script `condition` (an expression) is truthy.
async fn wait_js(c: &Client, what: &str, timeout: Duration, condition: &str) -> Value {
    let script = format!("return ({condition}) || null;");
    wait_for(what, timeout, || async {
        let v = js(c, &script).await;
        (!v.is_null() && v != Value::Bool(false)).then_some(v)
    })
    .await
}

// === screenshots ===

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir.canonicalize().unwrap_or(dir)
}

/// Saves a PNG of the page: all of it (the window is made as tall as the page first), or
/// only the 1440×1000 viewport (for dialogs).
async fn screenshot(c: &Client, dir: &Path, name: &str, full: bool) {
    if full {
        let sizes = js(
            c,
            "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]",
        )
        .await;
        let page = sizes[0].as_u64().unwrap_or(1000);
        let chrome = sizes[1].as_u64().unwrap_or(0);
        let height = (page + chrome).clamp(700, 8000) as u32;
        c.set_window_size(1440, height).await.unwrap();
    }
    // Let layout settle at the new size: wait for two animation frames.
    let _ = c
        .execute_async(
            "const done = arguments[0]; requestAnimationFrame(() => requestAnimationFrame(() => done(true)));",
            Vec::new(),
        )
        .await;
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    println!("screenshot: {}", path.display());
    if full {
        c.set_window_size(1440, 1000).await.unwrap();
    }
}

// === the API, directly ===

impl Api {
    async fn workers(&self) -> Vec<Value> {
        let (s, v) = self
            .call(reqwest::Method::GET, "/api/v1/workers?limit=1000", None)
            .await;
        assert_eq!(s, 200, "{v}");
        v["items"].as_array().cloned().unwrap_or_default()
    }

    /// A running worker whose CML is ready, other than `except`.
    async fn ready_worker(&self, except: &[&str]) -> Value {
        wait_for(
            "a running, ready worker",
            Duration::from_secs(90),
            || async {
                self.workers().await.into_iter().find(|w| {
                    w["ec2_state"] == "running"
                        && w["service"]["status"] == "ready"
                        && !except.contains(&w["id"].as_str().unwrap_or(""))
                })
            },
        )
        .await
    }
}

// === the test ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_should_sign_in_watch_live_changes_and_stop_a_worker_in_the_browser() {
    let chromium = require(&["chromium", "chromium-browser"]);
    let chromedriver = require(&["chromedriver"]);
    let tmp = tempfile::tempdir().unwrap();
    let shots = screenshot_dir();

    // ccm demo with a known admin token, a fresh database and its own loopback addresses.
    let port = free_port();
    let mut demo = Proc::spawn(
        "ccm-demo",
        Command::new(env!("CARGO_BIN_EXE_ccm"))
            .args([
                "demo",
                "--workers",
                &WORKERS.to_string(),
                "--port",
                &port.to_string(),
            ])
            .args(["--admin-token", TOKEN, "--listen-base", "127.120.0.1"])
            .arg("--db")
            .arg(tmp.path().join("ui.db"))
            .current_dir(tmp.path()),
        tmp.path(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let api = Api::new(port, TOKEN);
    wait_for("ccm demo to be ready", Duration::from_secs(120), || {
        demo.assert_alive();
        async {
            let ok = api.http.get(format!("{base}/readyz")).send().await.ok()?;
            (ok.status() == 200).then_some(())
        }
    })
    .await;
    wait_for("the demo's workers", Duration::from_secs(60), || async {
        (api.workers().await.len() == WORKERS).then_some(())
    })
    .await;

    // chromedriver and a headless Chromium with a fresh profile.
    let driver_port = free_port();
    let mut driver = Proc::spawn(
        "chromedriver",
        Command::new(&chromedriver).arg(format!("--port={driver_port}")),
        tmp.path(),
    );
    let driver_url = format!("http://127.0.0.1:{driver_port}");
    wait_for("chromedriver to answer", Duration::from_secs(30), || {
        driver.assert_alive();
        async {
            let r = api
                .http
                .get(format!("{driver_url}/status"))
                .send()
                .await
                .ok()?;
            let v: Value = r.json().await.ok()?;
            (v["value"]["ready"] == true).then_some(())
        }
    })
    .await;
    let profile = tmp.path().join("chromium-profile");
    let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| (*s).to_owned()).collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    let mut caps = Capabilities::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert(
        "goog:chromeOptions".into(),
        json!({ "binary": chromium, "args": args }),
    );
    let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver_url)
        .await
        .unwrap_or_else(|e| panic!("chromedriver could not start Chromium: {e}"));

    walk(&c, &api, &base, &shots).await;
    let _ = c.close().await;
    drop(driver);
    drop(demo);
}

// === interacting ===

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
}

async fn type_into(c: &Client, css: &str, text: &str, clear: bool) {
    let field = c
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"));
    if clear {
        field.clear().await.unwrap();
    }
    field
        .send_keys(text)
        .await
        .unwrap_or_else(|e| panic!("cannot type into {css}: {e}"));
}

/// Presses a key (a WebDriver key code) on the focused element.
async fn press(c: &Client, key: &str) {
    c.active_element()
        .await
        .unwrap()
        .send_keys(key)
        .await
        .unwrap();
}

const ENTER: &str = "\u{E007}";
const ESCAPE: &str = "\u{E00C}";

fn q(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

fn state_of_row(id: &str) -> String {
    format!(
        "document.querySelector('tr[data-worker-id=\"{id}\"] [data-col=state] [data-state]')?.dataset.state"
    )
}

/// The walk through the UI, as an operator would.
async fn walk(c: &Client, api: &Api, base: &str, shots: &Path) {
    let long = Duration::from_secs(60);
    let short = Duration::from_secs(20);
    let rows = "document.querySelectorAll('#fleet-table tbody tr').length";

    // 1. The sign-in page needs no credentials, and the shell carries a strict CSP.
    c.goto(&format!("{base}/")).await.unwrap();
    wait_js(
        c,
        "the sign-in form",
        short,
        "document.querySelector('#token')",
    )
    .await;
    // Collect script errors, failed promises and CSP violations for the rest of the walk (the
    // walk never reloads the page, so the collector stays).
    js(
        c,
        "window.__ccmErrors = []; \
         addEventListener('error', e => __ccmErrors.push(String(e.message || e))); \
         addEventListener('unhandledrejection', e => __ccmErrors.push('unhandled: ' + String(e.reason))); \
         addEventListener('securitypolicyviolation', e => __ccmErrors.push('CSP: ' + e.violatedDirective)); \
         return true",
    )
    .await;
    let shell = api.http.get(format!("{base}/")).send().await.unwrap();
    assert!(shell.headers().contains_key("content-security-policy"));
    screenshot(c, shots, "01-sign-in", true).await;

    // A wrong token is refused, next to the field.
    type_into(c, "#token", "not-the-token", false).await;
    click(c, "#sign-in").await;
    wait_js(
        c,
        "the sign-in error",
        short,
        "document.querySelector('#sign-in-error')?.textContent.includes('not valid')",
    )
    .await;

    // 2. Sign in with the token (typed, then Enter) and see the workers, live.
    type_into(c, "#token", &format!("{TOKEN}{ENTER}"), true).await;
    wait_js(
        c,
        "the workers in the fleet table",
        long,
        &format!("{rows} === {WORKERS}"),
    )
    .await;
    wait_js(
        c,
        "the live indicator",
        short,
        "document.querySelector('#connection')?.dataset.state === 'live'",
    )
    .await;
    let listed = js(c, "return [...document.querySelectorAll('#fleet-table tbody tr')].map(r => r.dataset.workerId).sort()").await;
    let mut known: Vec<String> = api
        .workers()
        .await
        .iter()
        .filter_map(|w| w["id"].as_str().map(str::to_owned))
        .collect();
    known.sort();
    assert_eq!(
        listed,
        json!(known),
        "the table lists other workers than the API"
    );

    // 3. A status change made elsewhere (the API, directly) arrives without a reload.
    let a = api.ready_worker(&[]).await;
    let a_id = a["id"].as_str().unwrap().to_owned();
    js(c, "window.__ccmSamePage = 42; return true").await;
    wait_js(
        c,
        "worker A shown running",
        long,
        &format!("{} === 'running'", state_of_row(&a_id)),
    )
    .await;
    let (s, v) = api
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/workers/{a_id}/stop"),
            None,
        )
        .await;
    assert_eq!(s, 202, "stop through the API: {v}");
    wait_js(
        c,
        "worker A's new state in the table",
        long,
        &format!("['stopping', 'stopped'].includes({})", state_of_row(&a_id)),
    )
    .await;
    assert_eq!(
        js(c, "return window.__ccmSamePage").await,
        json!(42),
        "the page was reloaded"
    );

    // Markup in a name is shown as text: a worker named like an <img> with an onerror.
    let (s, v) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/workers",
            Some(json!({ "name": HOSTILE_NAME })),
        )
        .await;
    assert_eq!(s, 202, "create through the API: {v}");
    wait_js(c, "the new worker's name, as text", long, &format!(
        "[...document.querySelectorAll('#fleet-table .worker-link')].some(a => a.textContent === {})",
        q(HOSTILE_NAME)
    ))
    .await;
    let injected = js(
        c,
        "return [window.__ccmXss ?? null, document.querySelectorAll('main img[src=\"x\"]').length]",
    )
    .await;
    assert_eq!(
        injected,
        json!([null, 0]),
        "markup from a worker name was rendered"
    );

    // Search and filters narrow the list; the counts are by status.
    type_into(c, "#fleet-search", "onerror", false).await;
    wait_js(
        c,
        "the search to leave one worker",
        short,
        &format!("{rows} === 1"),
    )
    .await;
    click(c, "#filter-clear").await;
    wait_js(
        c,
        "every worker again",
        short,
        &format!("{rows} === {}", WORKERS + 1),
    )
    .await;
    c.find(Locator::Id("filter-state"))
        .await
        .unwrap()
        .select_by_value("running")
        .await
        .unwrap();
    wait_js(c, "only running workers", short, &format!(
        "{rows} > 0 && [...document.querySelectorAll('#fleet-table tbody tr')].every(r => r.dataset.state === 'running')"
    ))
    .await;
    click(c, "#filter-clear").await;
    wait_js(
        c,
        "the counts by status",
        short,
        "document.querySelectorAll('#fleet-counts [data-filter-kind]').length >= 2",
    )
    .await;
    wait_js(
        c,
        "every worker, unfiltered",
        short,
        &format!("{rows} === {}", WORKERS + 1),
    )
    .await;
    screenshot(c, shots, "02-fleet-table", true).await;
    click(c, "[data-view=cards]").await;
    wait_js(
        c,
        "the cards",
        short,
        &format!(
            "document.querySelectorAll('#fleet-cards .worker-card').length === {}",
            WORKERS + 1
        ),
    )
    .await;
    screenshot(c, shots, "03-fleet-cards", true).await;
    click(c, "[data-view=table]").await;
    wait_js(
        c,
        "the table again",
        short,
        "document.querySelector('#fleet-table')",
    )
    .await;

    // 4. Open another ready worker and stop it from its page, through the dialog.
    let b = api.ready_worker(&[&a_id]).await;
    let b_id = b["id"].as_str().unwrap().to_owned();
    let b_name = b["name"].as_str().unwrap().to_owned();
    click(c, &format!("tr[data-worker-id=\"{b_id}\"] a.worker-link")).await;
    wait_js(
        c,
        "the worker page",
        short,
        &format!(
            "document.querySelector('#worker-name')?.textContent === {}",
            q(&b_name)
        ),
    )
    .await;
    wait_js(
        c,
        "worker B's page to show it running",
        long,
        "document.querySelector('#worker-state')?.dataset.state === 'running'",
    )
    .await;
    wait_js(c, "the labs and the charts", long, "document.querySelector('#chart-cpu') && (document.querySelector('#labs-table') || document.querySelector('#labs p.muted'))").await;
    wait_js(
        c,
        "each source's freshness",
        short,
        "document.querySelectorAll('#sources-table [data-freshness]').length === 7",
    )
    .await;
    // The image's owner and EC2's status checks (read by the EC2 sync) on the EC2 panel.
    wait_js(
        c,
        "the image owner and the EC2 status checks",
        long,
        "document.querySelector('#worker-ami-owner')?.textContent === '123456789012' && document.querySelectorAll('#worker-status-checks [data-check]').length === 2",
    )
    .await;
    screenshot(c, shots, "04-worker", true).await;

    click(c, "button[data-action=stop]").await;
    wait_js(
        c,
        "the confirmation dialog",
        short,
        "document.querySelector('#confirm')?.open",
    )
    .await;
    screenshot(c, shots, "05-confirm-stop", false).await;
    // Escape cancels…
    press(c, ESCAPE).await;
    wait_js(
        c,
        "the dialog to close on Escape",
        short,
        "!document.querySelector('#confirm').open",
    )
    .await;
    assert_eq!(
        js(
            c,
            "return document.querySelector('#worker-state').dataset.state"
        )
        .await,
        json!("running"),
        "Escape in the dialog did not cancel the stop"
    );
    // …and Enter confirms.
    click(c, "button[data-action=stop]").await;
    wait_js(
        c,
        "the confirmation dialog again",
        short,
        "document.querySelector('#confirm')?.open",
    )
    .await;
    press(c, ENTER).await;
    wait_js(
        c,
        "worker B to reach stopped on its page",
        Duration::from_secs(90),
        "document.querySelector('#worker-state')?.dataset.state === 'stopped'",
    )
    .await;
    let (_, after) = api
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/workers/{b_id}"),
            None,
        )
        .await;
    assert_eq!(
        after["ec2_state"], "stopped",
        "the API disagrees with the page"
    );
    screenshot(c, shots, "06-worker-stopped", true).await;

    // 5. The system page, and the settings with a value the server refuses.
    c.goto(&format!("{base}/#/system")).await.unwrap();
    wait_js(c, "the jobs, breakers and savings", long, "document.querySelectorAll('#jobs-table tbody tr').length > 0 && document.querySelector('#breakers') && document.querySelector('#savings .big-n')").await;
    screenshot(c, shots, "07-system", true).await;

    c.goto(&format!("{base}/#/settings")).await.unwrap();
    wait_js(
        c,
        "the settings form",
        long,
        "document.querySelector('#setting-idle-timeout')",
    )
    .await;
    screenshot(c, shots, "08-settings", true).await;
    type_into(c, "#setting-idle-timeout", "5s", true).await;
    click(c, "#settings-save").await;
    wait_js(c, "the server's error next to the field", short, "document.querySelector('[data-error-for=\"idle.timeout\"]')?.textContent.includes('out of range') && document.querySelector('#setting-idle-timeout').getAttribute('aria-invalid') === 'true'").await;
    screenshot(c, shots, "09-settings-error", true).await;

    assert_eq!(
        js(c, "return window.__ccmErrors").await,
        json!([]),
        "errors in the page"
    );

    // 6. Sign out: back to the sign-in, and the cookie no longer opens the API.
    click(c, "#sign-out").await;
    wait_js(
        c,
        "the sign-in after signing out",
        short,
        "document.querySelector('#token') && document.body.classList.contains('signed-out')",
    )
    .await;
    let status = c
        .execute_async(
            "const done = arguments[0]; fetch('/api/v1/session').then(r => done(r.status));",
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        status,
        json!(401),
        "the session still works after signing out"
    );
}
