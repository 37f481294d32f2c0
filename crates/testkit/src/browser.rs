//! Real headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`),
//! for tests that open a page as a person would: navigate, run a script, read elements, click,
//! type, take a screenshot, read the browser console.
//!
//! [`Browser::start`] runs `chromedriver` on a free loopback port and opens one session with
//! headless Chromium in a temporary profile; dropping the [`Browser`] ends the session and
//! stops the driver. Every wait is bounded and polls a condition. The WebDriver client is a
//! few lines of HTTP/1.1 over `TcpStream` with JSON bodies: chromedriver is the only peer.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{Process, free_port, wait_for};

/// The key under which WebDriver returns an element reference (W3C WebDriver §12.1).
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long one WebDriver command may take (a navigation waits for the page's `load`).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a test run leaves files for people to look at afterwards (screenshots):
/// `$CANARY_TEST_ARTIFACTS` if set, else `<workspace>/target/test-artifacts/`. Created.
pub fn artifacts_dir() -> PathBuf {
    let dir = match std::env::var_os("CANARY_TEST_ARTIFACTS") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        // crates/testkit → the workspace's target directory.
        _ => Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .nth(2)
            .expect("the workspace above crates/testkit")
            .join("target/test-artifacts"),
    };
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| {
        panic!(
            "cannot create the artifacts directory {}: {e}",
            dir.display()
        )
    });
    dir
}

/// A WebDriver command that failed: the W3C error code (`no such element`, `stale element
/// reference`, ...) and chromedriver's message.
#[derive(Debug, Clone)]
pub struct WebDriverError {
    pub error: String,
    pub message: String,
}

impl std::fmt::Display for WebDriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let first = self.message.lines().next().unwrap_or_default();
        write!(f, "{}: {first}", self.error)
    }
}

/// One line of the browser's console (or a script or network error Chromium reported there).
#[derive(Debug, Clone)]
pub struct ConsoleEntry {
    /// `SEVERE`, `WARNING`, `INFO`, `DEBUG`.
    pub level: String,
    /// `console-api`, `javascript`, `network`, ...
    pub source: String,
    pub message: String,
}

impl ConsoleEntry {
    /// An error: a `console.error`, an uncaught exception, a failed resource load.
    pub fn is_error(&self) -> bool {
        self.level == "SEVERE"
    }
}

/// A headless Chromium session, ended (and its driver stopped) on drop.
pub struct Browser {
    driver: SocketAddr,
    session: String,
    /// Every console entry read so far (the driver hands each one out once).
    console: RefCell<Vec<ConsoleEntry>>,
    _driver_process: Process,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts `chromedriver` and one headless Chromium session (1400×1800 window, a fresh
    /// profile, the console recorded at every level).
    pub fn start() -> Browser {
        let profile = tempfile::tempdir().expect("a profile directory");
        let port = free_port();
        let mut cmd = Command::new("chromedriver");
        cmd.arg(format!("--port={port}"));
        let driver_process = Process::spawn("chromedriver", profile.path(), cmd);
        let driver: SocketAddr = ([127, 0, 0, 1], port).into();
        wait_for("chromedriver to answer", Duration::from_secs(30), || {
            let (status, body) = request(driver, "GET", "/status", None).ok()?;
            (status == 200 && body["value"]["ready"] == true).then_some(())
        });
        let capabilities = json!({
            "capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": [
                        "--headless=new",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--disable-dev-shm-usage",
                        "--window-size=1400,1800",
                        format!("--user-data-dir={}", profile.path().join("chromium").display()),
                    ],
                },
                "goog:loggingPrefs": {"browser": "ALL"},
                "timeouts": {"implicit": 0, "pageLoad": 30_000, "script": 10_000},
            }}
        });
        let (status, body) = request(driver, "POST", "/session", Some(&capabilities))
            .unwrap_or_else(|e| panic!("chromedriver: no session: {e}"));
        let session = match body["value"]["sessionId"].as_str() {
            Some(id) if status == 200 => id.to_owned(),
            _ => panic!(
                "chromedriver refused a session ({status}): {body}\n{}",
                driver_process.output()
            ),
        };
        Browser {
            driver,
            session,
            console: RefCell::new(Vec::new()),
            _driver_process: driver_process,
            _profile: profile,
        }
    }

    /// One WebDriver command on this session: its `value`, or the driver's error.
    pub fn command(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, WebDriverError> {
        let full = format!("/session/{}{path}", self.session);
        let (status, mut reply) =
            request(self.driver, method, &full, body).map_err(|e| WebDriverError {
                error: "no answer from chromedriver".into(),
                message: e.to_string(),
            })?;
        let value = reply["value"].take();
        if status == 200 {
            return Ok(value);
        }
        Err(WebDriverError {
            error: value["error"]
                .as_str()
                .unwrap_or("unknown error")
                .to_owned(),
            message: value["message"].as_str().unwrap_or_default().to_owned(),
        })
    }

    fn must(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        self.command(method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    /// Opens `url` and waits for its `load` event.
    pub fn goto(&self, url: &str) {
        self.must("POST", "/url", Some(&json!({ "url": url })));
    }

    /// The address bar's URL.
    pub fn url(&self) -> String {
        self.must("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs `body` as a synchronous function in the page (`arguments` are `args`) and returns
    /// what it returns, as JSON.
    pub fn try_script(&self, body: &str, args: &[Value]) -> Result<Value, WebDriverError> {
        self.command(
            "POST",
            "/execute/sync",
            Some(&json!({ "script": body, "args": args })),
        )
    }

    /// [`Browser::try_script`] that must succeed.
    pub fn script(&self, body: &str, args: &[Value]) -> Value {
        self.try_script(body, args)
            .unwrap_or_else(|e| panic!("script failed: {e}\n{body}"))
    }

    /// The elements matching a CSS selector, in document order.
    pub fn find_all(&self, css: &str) -> Vec<Element> {
        let found = self.must(
            "POST",
            "/elements",
            Some(&json!({ "using": "css selector", "value": css })),
        );
        found
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e[ELEMENT_KEY].as_str())
            .map(|id| Element {
                id: id.to_owned(),
                css: css.to_owned(),
            })
            .collect()
    }

    /// The first element matching a CSS selector, if any.
    pub fn find(&self, css: &str) -> Option<Element> {
        self.find_all(css).into_iter().next()
    }

    /// Runs `op` on the first element matching `css`, finding it again if the page replaced
    /// it in between (a live page re-renders under the test). Panics if there is none.
    fn on_element<T>(&self, css: &str, op: impl Fn(&Element) -> Result<T, WebDriverError>) -> T {
        let mut last = None;
        for _ in 0..5 {
            let Some(element) = self.find(css) else {
                panic!("no element matches {css:?} in {}", self.url());
            };
            match op(&element) {
                Ok(v) => return v,
                Err(e) if e.error == "stale element reference" => last = Some(e),
                Err(e) => panic!("{css:?}: {e}"),
            }
        }
        panic!("{css:?} kept going stale: {last:?}")
    }

    /// The rendered text of the first element matching `css` (`None` if there is none).
    pub fn text(&self, css: &str) -> Option<String> {
        self.find(css)?;
        Some(self.on_element(css, |e| e.text(self)))
    }

    /// An attribute of the first element matching `css` (`None` if there is no such element
    /// or it has no such attribute).
    pub fn attribute(&self, css: &str, name: &str) -> Option<String> {
        self.find(css)?;
        self.on_element(css, |e| e.attribute(self, name))
    }

    /// Clicks the first element matching `css`, as a pointer would.
    pub fn click(&self, css: &str) {
        self.on_element(css, |e| e.click(self));
    }

    /// Clears the first element matching `css` and types `text` into it, key by key.
    pub fn type_into(&self, css: &str, text: &str) {
        self.on_element(css, |e| {
            self.command(
                "POST",
                &format!("/element/{}/clear", e.id),
                Some(&json!({})),
            )?;
            e.send_keys(self, text)
        });
    }

    /// A cookie of the current page's site, by name (WebDriver reads `HttpOnly` ones too).
    pub fn cookie(&self, name: &str) -> Option<Value> {
        self.command("GET", &format!("/cookie/{name}"), None).ok()
    }

    /// Adds a cookie (as returned by [`Browser::cookie`]) to the current page's site.
    pub fn add_cookie(&self, cookie: &Value) {
        self.must("POST", "/cookie", Some(&json!({ "cookie": cookie })));
    }

    /// Deletes every cookie of the current page's site.
    pub fn delete_cookies(&self) {
        self.must("DELETE", "/cookie", None);
    }

    /// Writes a PNG of the viewport to `path`.
    pub fn screenshot(&self, path: &Path) {
        let encoded = self.must("GET", "/screenshot", None);
        let png = base64_decode(encoded.as_str().unwrap_or_default())
            .unwrap_or_else(|| panic!("the screenshot is not base64"));
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        std::fs::write(path, png)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    /// Takes a screenshot into [`artifacts_dir`] as `name` and returns its path.
    pub fn screenshot_artifact(&self, name: &str) -> PathBuf {
        let path = artifacts_dir().join(name);
        self.screenshot(&path);
        path
    }

    /// Every console entry since the session started (chromedriver's `se/log`, read and kept).
    pub fn console(&self) -> Vec<ConsoleEntry> {
        let fresh = self.must("POST", "/se/log", Some(&json!({ "type": "browser" })));
        let mut console = self.console.borrow_mut();
        console.extend(
            fresh
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| ConsoleEntry {
                    level: e["level"].as_str().unwrap_or_default().to_owned(),
                    source: e["source"].as_str().unwrap_or_default().to_owned(),
                    message: e["message"].as_str().unwrap_or_default().to_owned(),
                }),
        );
        console.clone()
    }

    /// The console's errors so far (see [`ConsoleEntry::is_error`]).
    pub fn console_errors(&self) -> Vec<ConsoleEntry> {
        self.console()
            .into_iter()
            .filter(ConsoleEntry::is_error)
            .collect()
    }

    /// Polls `condition` until it returns `Some`; after `timeout`, takes a screenshot
    /// (`timeout-<what>.png` in [`artifacts_dir`]) and panics naming `what`, the page's URL
    /// and its text.
    pub fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut condition: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(20);
        loop {
            if let Some(v) = condition() {
                return v;
            }
            if Instant::now() >= deadline {
                let name: String = what
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                    .collect();
                let shot = artifacts_dir().join(format!("timeout-{name}.png"));
                let _ = self
                    .command("GET", "/screenshot", None)
                    .ok()
                    .and_then(|v| base64_decode(v.as_str()?))
                    .map(|png| std::fs::write(&shot, png));
                let text = self
                    .try_script("return document.body ? document.body.innerText : ''", &[])
                    .unwrap_or_default();
                panic!(
                    "timed out after {timeout:?} waiting for {what} on {} (screenshot {}):\n{}",
                    self.url(),
                    shot.display(),
                    text.as_str().unwrap_or_default()
                );
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends Chromium; the driver itself is killed when its `Process` drops.
        let _ = request(
            self.driver,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
    }
}

/// An element found by [`Browser::find`]; it goes stale when the page replaces it.
#[derive(Debug, Clone)]
pub struct Element {
    id: String,
    css: String,
}

impl Element {
    /// The selector it was found with.
    pub fn selector(&self) -> &str {
        &self.css
    }

    pub fn text(&self, browser: &Browser) -> Result<String, WebDriverError> {
        let v = browser.command("GET", &format!("/element/{}/text", self.id), None)?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// The attribute's value (`None` when the element has no such attribute).
    pub fn attribute(
        &self,
        browser: &Browser,
        name: &str,
    ) -> Result<Option<String>, WebDriverError> {
        let v = browser.command(
            "GET",
            &format!("/element/{}/attribute/{name}", self.id),
            None,
        )?;
        Ok(v.as_str().map(str::to_owned))
    }

    pub fn click(&self, browser: &Browser) -> Result<(), WebDriverError> {
        browser
            .command(
                "POST",
                &format!("/element/{}/click", self.id),
                Some(&json!({})),
            )
            .map(drop)
    }

    pub fn send_keys(&self, browser: &Browser, text: &str) -> Result<(), WebDriverError> {
        browser
            .command(
                "POST",
                &format!("/element/{}/value", self.id),
                Some(&json!({ "text": text })),
            )
            .map(drop)
    }
}

/// One HTTP/1.1 exchange with chromedriver (`Connection: close`): status and JSON body.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> std::io::Result<(u16, Value)> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(COMMAND_TIMEOUT))?;
    stream.set_write_timeout(Some(COMMAND_TIMEOUT))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    // chromedriver keeps the connection open whatever the request says: read the head, then
    // exactly the body its `Content-Length` announces.
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let split = loop {
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::other(
                "chromedriver closed without an HTTP head",
            ));
        }
        raw.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let mut payload = raw[split + 4..].to_vec();
    let length = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        (name.trim() == "content-length").then(|| value.trim().parse::<usize>().ok())?
    });
    match length {
        Some(length) => {
            while payload.len() < length {
                let n = stream.read(&mut chunk)?;
                if n == 0 {
                    return Err(std::io::Error::other("chromedriver closed mid-body"));
                }
                payload.extend_from_slice(&chunk[..n]);
            }
            payload.truncate(length);
        }
        // Without a length the body runs until the driver closes (chromedriver always sends one).
        None => {
            stream.read_to_end(&mut payload)?;
        }
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {head:?}")))?;
    let json = if payload.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&payload).map_err(std::io::Error::other)?
    };
    Ok((status, json))
}

/// Standard base64 (RFC 4648 §4, padded), as WebDriver sends screenshots.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8h").unwrap(), b"hello!");
        assert_eq!(base64_decode("aGk=").unwrap(), b"hi");
        assert!(base64_decode("a?b").is_none());
    }
}
