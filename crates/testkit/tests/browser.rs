//! The WebDriver client against a small page served on loopback: every operation the browser
//! tests rely on does what it says, in real headless Chromium.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is a test failure

use std::time::Duration;

use axum::response::{Html, IntoResponse};
use axum::routing::get;
use canary_testkit::Served;
use canary_testkit::browser::Browser;
use serde_json::json;

const PAGE: &str = r#"<!doctype html>
<html><head><link rel="icon" href="data:,"><title>kit</title></head>
<body data-clicks="0">
<p id="said"></p>
<input id="reason" value="old">
<button id="go" onclick="
  document.body.dataset.clicks = Number(document.body.dataset.clicks) + 1;
  document.getElementById('said').textContent = 'said: ' + document.getElementById('reason').value;
  document.cookie = 'seen=yes; Path=/';
">go</button>
<script>
  console.info('page ready');
  setTimeout(() => { document.getElementById('said').textContent = 'later'; }, 300);
</script>
</body></html>"#;

#[test]
fn the_browser_navigates_scripts_clicks_types_screenshots_and_reads_the_console() {
    let app = axum::Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route(
            "/broken",
            get(|| async {
                Html("<link rel=icon href='data:,'><script>console.error('bad thing'); nope();</script>")
                    .into_response()
            }),
        );
    let served = Served::start("page", app);
    let browser = Browser::start();

    browser.goto(&format!("{}/", served.url));
    assert_eq!(browser.url(), format!("{}/", served.url));
    assert_eq!(
        browser.script("return [document.title, arguments[0] + 1]", &[json!(41)]),
        json!(["kit", 42])
    );
    // A bounded wait on a condition the page fulfils later.
    browser.wait_until("the timer's text", Duration::from_secs(10), || {
        (browser.text("#said")? == "later").then_some(())
    });

    browser.type_into("#reason", "typed here");
    browser.click("#go");
    assert_eq!(browser.text("#said").as_deref(), Some("said: typed here"));
    assert_eq!(
        browser.attribute("body", "data-clicks").as_deref(),
        Some("1")
    );
    assert_eq!(browser.find_all("button").len(), 1);
    assert!(browser.find("#missing").is_none());
    assert_eq!(browser.attribute("#go", "data-nothing"), None);

    // Cookies: read, deleted, put back.
    let cookie = browser.cookie("seen").expect("the page's cookie");
    assert_eq!(cookie["value"], "yes");
    browser.delete_cookies();
    assert!(browser.cookie("seen").is_none());
    browser.add_cookie(&cookie);
    assert_eq!(browser.cookie("seen").unwrap()["value"], "yes");

    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("page.png");
    browser.screenshot(&shot);
    assert!(std::fs::read(&shot).unwrap().starts_with(b"\x89PNG"));

    // The console: an info line and no error here; a console.error and an uncaught exception
    // on the next page, both kept across reads.
    let console = browser.console();
    assert!(
        console.iter().any(|e| e.message.contains("page ready")),
        "{console:?}"
    );
    assert!(browser.console_errors().is_empty(), "{console:?}");
    browser.goto(&format!("{}/broken", served.url));
    let errors = browser.console_errors();
    assert!(
        errors.iter().any(|e| e.message.contains("bad thing")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.message.contains("nope is not defined")),
        "{errors:?}"
    );
    assert!(
        browser
            .console()
            .iter()
            .any(|e| e.message.contains("page ready"))
    );
}
