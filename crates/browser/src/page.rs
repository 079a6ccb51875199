//! The browser APIs the peer uses, wrapped once: the page's URL, local
//! storage, `fetch`, clock formatting and console logging. Everything here
//! degrades to a harmless default when an API is missing (storage disabled,
//! no `window` in a worker), so callers never handle `JsValue` errors.

use std::io;

use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::Storage;

/// The page URL's query string, including the leading `?` (or empty).
pub fn query() -> String {
    web_sys::window()
        .and_then(|w| w.location().search().ok())
        .unwrap_or_default()
}

/// Whether the page was served over https, so that it may only open secure
/// WebSocket connections.
pub fn served_over_https() -> bool {
    web_sys::window()
        .and_then(|w| w.location().protocol().ok())
        .is_some_and(|p| p == "https:")
}

/// This browser's `localStorage` (kept across visits), if it allows one.
fn local_storage() -> Option<Storage> {
    web_sys::window()?.local_storage().ok()?
}

/// This tab's `sessionStorage` (kept across its reloads, copied into a
/// duplicate of the tab), if the browser allows one.
pub fn tab_storage() -> Option<Storage> {
    web_sys::window()?.session_storage().ok()?
}

fn read(storage: Option<Storage>, key: &str) -> Option<String> {
    storage?.get_item(key).ok()?
}

/// A browser that refuses (private mode, quota) just forgets the value.
fn write(storage: Option<Storage>, key: &str, value: &str) {
    if let Some(storage) = storage {
        let _ = storage.set_item(key, value);
    }
}

/// Reads a value kept in `localStorage`.
pub fn stored(key: &str) -> Option<String> {
    read(local_storage(), key)
}

/// Keeps a value in `localStorage`; a browser that refuses just forgets it.
pub fn store(key: &str, value: &str) {
    write(local_storage(), key, value)
}

/// A value kept in this tab's `sessionStorage`, if any.
pub fn stored_for_tab(key: &str) -> Option<String> {
    read(tab_storage(), key)
}

/// Keeps a value in this tab's `sessionStorage` (for its reloads); a
/// browser that refuses just forgets it.
pub fn store_for_tab(key: &str, value: &str) {
    write(tab_storage(), key, value)
}

/// Sets one query parameter of the address bar without reloading, so a
/// reload or a shared link opens the same room.
pub fn set_query_param(name: &str, value: &str) {
    let Some(window) = web_sys::window() else {
        return;
    };
    let Ok(params) = web_sys::UrlSearchParams::new_with_str(&query()) else {
        return;
    };
    params.set(name, value);
    let path = window.location().pathname().unwrap_or_default();
    let url = format!("{path}?{}", String::from(params.to_string()));
    if let Ok(history) = window.history() {
        let _ = history.replace_state_with_url(&JsValue::NULL, "", Some(&url));
    }
}

/// `GET url` from the page's origin; the body as text, or one line saying
/// what went wrong.
pub async fn fetch_text(url: &str) -> Result<String, String> {
    let window = web_sys::window().ok_or("no window")?;
    let response = JsFuture::from(window.fetch_with_str(url))
        .await
        .map_err(|e| format!("cannot reach {url}: {}", js_error(&e)))?;
    let response: web_sys::Response = response
        .dyn_into()
        .map_err(|_| format!("{url}: not an HTTP response"))?;
    if !response.ok() {
        return Err(format!("{url}: HTTP {}", response.status()));
    }
    let text = response
        .text()
        .map_err(|e| format!("{url}: {}", js_error(&e)))?;
    let text = JsFuture::from(text)
        .await
        .map_err(|e| format!("{url}: {}", js_error(&e)))?;
    text.as_string()
        .ok_or_else(|| format!("{url}: body is not text"))
}

/// The message of a JavaScript exception, for a person.
pub fn js_error(value: &JsValue) -> String {
    if let Some(error) = value.dyn_ref::<js_sys::Error>() {
        return String::from(error.message());
    }
    value.as_string().unwrap_or_else(|| format!("{value:?}"))
}

/// Milliseconds since the Unix epoch, by the browser's clock.
pub fn now_ms() -> f64 {
    js_sys::Date::now()
}

/// A timestamp as local `HH:MM`, for the message list.
pub fn clock(ms: i64) -> String {
    #[allow(clippy::cast_precision_loss)] // ms timestamps fit f64 exactly
    let date = js_sys::Date::new(&JsValue::from_f64(ms as f64));
    format!("{:02}:{:02}", date.get_hours(), date.get_minutes())
}

/// Sends `tracing` output to the browser console. `?log=debug` (or any
/// level) on the page URL raises the level; the default is `info`.
pub fn init_logging(level: tracing::Level) {
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .without_time()
        .with_ansi(false)
        .with_writer(|| Console(Vec::new()))
        .try_init();
}

/// One formatted log line on its way to `console.log`.
struct Console(Vec<u8>);

impl io::Write for Console {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let line = String::from_utf8_lossy(&self.0);
        let line = line.trim_end();
        if !line.is_empty() {
            web_sys::console::log_1(&JsValue::from_str(line));
        }
    }
}
