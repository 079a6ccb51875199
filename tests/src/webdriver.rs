//! A small W3C WebDriver client for the browser tests: starts chromedriver
//! on a free loopback port and drives headless Chromium sessions with plain
//! HTTP/1.1 and JSON. Only the handful of commands the tests use.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

use crate::{Proc, WAIT, temp_dir};

/// The key WebDriver uses for element references.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Chromium's flags for a headless run on a machine with only loopback:
/// WebRTC must be allowed on 127.0.0.1, and background networking off.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--allow-loopback-in-peer-connection",
    // Host candidates as addresses, not mDNS `.local` names that cannot be
    // resolved here: pages link to each other over loopback. And no WebUI
    // omnibox popup: a headless Chromium 156 builds it in the background at
    // start (and again and again for about 2.5 s), about 2 s of a core's
    // time spent while the first page loads. Chromium reads only the last
    // `--disable-features`, so both are here.
    "--disable-features=WebRtcHideLocalIpsWithMdns,WebUIOmniboxPopup,WebUIOmniboxAimPopup,WebUIOmniboxFullPopup,NtpComposebox",
    "--window-size=1200,900",
];

/// A program given by an environment variable, else the first existing
/// candidate path, else the bare name (looked up in `PATH`).
fn program(var: &str, candidates: &[&str], name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(var) {
        return path.into();
    }
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| name.into())
}

/// A running chromedriver.
pub struct Driver {
    /// The process.
    pub proc: Proc,
    base: String,
    extra_args: Vec<String>,
}

impl Driver {
    /// Starts chromedriver (`$CHROMEDRIVER`, else `/usr/bin/chromedriver`)
    /// and waits until it accepts sessions.
    pub fn start() -> Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let path = program("CHROMEDRIVER", &["/usr/bin/chromedriver"], "chromedriver");
        let proc = Proc::spawn(
            "chromedriver",
            &path,
            &[format!("--port={port}"), "--allowed-ips=127.0.0.1".into()],
        )
        .context("cannot start chromedriver (cargo xtask setup installs it)")?;
        let driver = Self {
            proc,
            base: format!("127.0.0.1:{port}"),
            extra_args: Vec::new(),
        };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(status) = driver.call("GET", "/status", None)
                && status["ready"] == true
            {
                return Ok(driver);
            }
            if Instant::now() > deadline {
                bail!("chromedriver did not become ready on {}", driver.base);
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Windows opened from now on trust TLS certificates with this public
    /// key (base64 SHA-256 of its SubjectPublicKeyInfo).
    pub fn trust_certificate(&mut self, spki_sha256: &str) {
        self.extra_args.push(format!(
            "--ignore-certificate-errors-spki-list={spki_sha256}"
        ));
    }

    /// Opens a new headless Chromium window with its own fresh profile.
    pub fn session(&self) -> Result<Session<'_>> {
        let profile = temp_dir("chromium-profile");
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.extend(self.extra_args.iter().cloned());
        let binary = program("CHROME", &["/usr/bin/chromium"], "chromium");
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": binary.display().to_string(),
                        "args": args,
                    },
                    "goog:loggingPrefs": { "browser": "ALL" },
                }
            }
        });
        let value = self.call("POST", "/session", Some(caps))?;
        let id = value["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("no session id in {value}"))?
            .to_owned();
        Ok(Session { driver: self, id })
    }

    /// One WebDriver command; returns the response's `value`.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut stream = TcpStream::connect(&self.base)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.base,
            body.len()
        )?;
        let (head, payload) = read_response(&mut stream)
            .with_context(|| format!("reading the answer to {method} {path}"))?;
        let json: Value =
            serde_json::from_slice(&payload).with_context(|| format!("{method} {path}: {head}"))?;
        let value = json["value"].clone();
        if let Some(error) = value.get("error").and_then(Value::as_str) {
            bail!(
                "{method} {path}: {error}: {}",
                value["message"].as_str().unwrap_or("")
            );
        }
        Ok(value)
    }
}

/// Reads one HTTP/1.1 response (chromedriver keeps connections open, so
/// the body is read by its length, or by chunks).
fn read_response(stream: &mut TcpStream) -> Result<(String, Vec<u8>)> {
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    let mut length = None;
    let mut chunked = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            bail!("connection closed inside the headers");
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse::<usize>()?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            }
        }
        if head.is_empty() {
            head = line.to_owned();
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim(), 16)?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = length {
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
    } else {
        reader.read_to_end(&mut body)?;
    }
    Ok((head, body))
}

/// One browser window.
pub struct Session<'a> {
    driver: &'a Driver,
    id: String,
}

impl Session<'_> {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        self.driver
            .call(method, &format!("/session/{}{path}", self.id), body)
    }

    /// Navigates to `url`.
    pub fn open(&self, url: &str) -> Result<()> {
        self.call("POST", "/url", Some(json!({ "url": url })))
            .map(drop)
    }

    /// Switches to a window of this session other than the current one
    /// (one the page opened) and returns the handle of the window it left.
    pub fn switch_to_other_window(&self) -> Result<String> {
        let current = self.call("GET", "/window", None)?;
        let current = current.as_str().context("no window handle")?.to_owned();
        let handles = self.call("GET", "/window/handles", None)?;
        let other = handles
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .find(|h| *h != current)
            .context("no other window")?
            .to_owned();
        self.call("POST", "/window", Some(json!({ "handle": other })))?;
        Ok(current)
    }

    /// Closes the current window and switches to `handle`.
    pub fn close_window_for(&self, handle: &str) -> Result<()> {
        self.call("DELETE", "/window", None)?;
        self.call("POST", "/window", Some(json!({ "handle": handle })))
            .map(drop)
    }

    /// Runs a script in the page and returns its result.
    pub fn eval(&self, script: &str) -> Result<Value> {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// Runs `source` in every document this window opens from now on,
    /// before the page's own scripts (Chrome DevTools protocol).
    pub fn on_new_document(&self, source: &str) -> Result<()> {
        self.call(
            "POST",
            "/goog/cdp/execute",
            Some(json!({
                "cmd": "Page.addScriptToEvaluateOnNewDocument",
                "params": { "source": source },
            })),
        )
        .map(drop)
    }

    /// The element matching a CSS selector.
    pub fn find(&self, css: &str) -> Result<String> {
        let value = self.call(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        )?;
        value[ELEMENT_KEY]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no element for {css}"))
    }

    /// Types into the element matching `css` (real key events; `\u{E007}`
    /// is Enter).
    pub fn type_into(&self, css: &str, text: &str) -> Result<()> {
        self.element_command(css, "value", json!({ "text": text }))
    }

    /// Clears an input.
    pub fn clear(&self, css: &str) -> Result<()> {
        self.element_command(css, "clear", json!({}))
    }

    /// Finds the element matching `css` and sends it one command.
    fn element_command(&self, css: &str, command: &str, body: Value) -> Result<()> {
        let element = self.find(css)?;
        self.call("POST", &format!("/element/{element}/{command}"), Some(body))
            .map(drop)
    }

    /// The browser console so far, one line per entry.
    pub fn console(&self) -> Vec<String> {
        self.call("POST", "/se/log", Some(json!({ "type": "browser" })))
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Polls `script` until it returns something other than `null` or
    /// `false`, and returns that.
    pub fn wait_for(&self, what: &str, timeout: Duration, script: &str) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut last = Value::Null;
        loop {
            match self.eval(script) {
                Ok(Value::Null | Value::Bool(false)) => {}
                Ok(value) => return Ok(value),
                Err(e) => last = Value::String(e.to_string()),
            }
            if Instant::now() > deadline {
                let status = self
                    .eval("return document.querySelector('[data-testid=status]')?.textContent")
                    .unwrap_or_default();
                bail!(
                    "timed out after {timeout:?} waiting for {what} (status: {status}, last error: {last})\nconsole:\n{}",
                    self.console().join("\n")
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ = self.call("DELETE", "", None);
    }
}
