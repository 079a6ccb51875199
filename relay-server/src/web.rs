//! Serves the browser page (what `cargo xtask web` built, `dist/`) at `/`, with
//! tower-http's `ServeDir`: only files inside the web directory (`..` and
//! other escapes get 404), each in the Brotli or gzip twin that
//! `cargo xtask web` wrote next to it when the browser accepts it
//! (`Content-Encoding`, `Vary: Accept-Encoding`).
//!
//! Caching: files whose names carry their content's hash
//! (`meshtalk-browser-<hash>_bg.wasm`) never change, so browsers keep them
//! for a year without asking again; everything else (`index.html`, which
//! names the current hashed files) is revalidated every time.
//!
//! Every page response carries a Content-Security-Policy that allows only
//! what the page does: its own scripts (the inline module loader by its
//! SHA-256), compiling WebAssembly, its own style sheet and images, `blob:`
//! images (shared files, which it may also read back), and connections to
//! its relay's HTTP API and to relays over WebSocket (WebRTC is not
//! governed by CSP).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use tower_http::services::ServeDir;

/// Where the page comes from.
#[derive(Clone, Debug)]
pub enum WebRoot {
    /// A directory with `index.html` and its assets.
    Dir(PathBuf),
    /// No page was built; `/` explains how to build one.
    Missing,
}

/// `Cache-Control` of files named by their content.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// `Cache-Control` of everything else.
const REVALIDATE: &str = "no-cache";

/// The page's directory when the relay runs from a source checkout and
/// `cargo xtask web` has built it.
pub fn workspace_dist() -> Option<PathBuf> {
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist");
    dist.join("index.html")
        .is_file()
        .then(|| dist.canonicalize().unwrap_or(dist))
}

/// Checks a `--web-dir`: it must hold an `index.html`.
pub fn check_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    if !dir.join("index.html").is_file() {
        anyhow::bail!(
            "--web-dir {}: no index.html there (build the page with `cargo xtask web`)",
            dir.display()
        );
    }
    Ok(dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf()))
}

/// The routes of the page: every path the API does not claim.
pub fn router(root: &WebRoot) -> Router {
    let WebRoot::Dir(dir) = root else {
        return Router::new().fallback(get(missing));
    };
    let index = std::fs::read_to_string(dir.join("index.html")).unwrap_or_default();
    let csp = HeaderValue::from_str(&content_security_policy(&index))
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'"));
    let files = ServeDir::new(dir).precompressed_br().precompressed_gzip();
    Router::new()
        .fallback_service(files)
        .layer(middleware::from_fn_with_state(Arc::new(csp), headers))
}

/// Caching, type-sniffing and CSP headers for what `ServeDir` answered.
async fn headers(State(csp): State<Arc<HeaderValue>>, request: Request, next: Next) -> Response {
    let hashed = is_content_named(request.uri().path());
    let mut response = next.run(request).await;
    // A 304 stands for the file: it keeps the file's caching (a browser
    // merges its headers into the copy it holds).
    let ok = response.status().is_success() || response.status() == StatusCode::NOT_MODIFIED;
    let html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|t| t.to_str().ok())
        .is_some_and(|t| t.starts_with("text/html"));
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if hashed && ok { IMMUTABLE } else { REVALIDATE }),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if ok && !headers.contains_key(header::VARY) {
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    if html {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp.as_ref().clone());
    }
    response
}

/// Whether the last component of `path` carries a content hash as
/// `cargo xtask web` writes it: `name-<hex>.ext` or `name-<hex>_bg.wasm`,
/// 12 to 32 hex digits.
fn is_content_named(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or_default();
    let stem = name.split('.').next().unwrap_or_default();
    let stem = stem.strip_suffix("_bg").unwrap_or(stem);
    stem.rsplit_once('-').is_some_and(|(_, hash)| {
        (12..=32).contains(&hash.len()) && hash.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// The policy for a page whose `index.html` is `index`: its inline
/// scripts (the module loader) are allowed by their SHA-256, nothing
/// else inline.
fn content_security_policy(index: &str) -> String {
    let mut scripts = String::from("'self' 'wasm-unsafe-eval'");
    for script in inline_scripts(index) {
        let digest = Sha256::digest(script.as_bytes());
        scripts.push_str(&format!(
            " 'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(digest)
        ));
    }
    format!(
        "default-src 'none'; script-src {scripts}; style-src 'self'; \
         img-src 'self' blob:; connect-src 'self' blob: ws: wss:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

/// The text of each `<script>` without a `src` in `html`.
fn inline_scripts(html: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find("<script") {
        let after = &rest[start..];
        let Some(open_end) = after.find('>') else {
            break;
        };
        let tag = &after[..open_end];
        let body = &after[open_end + 1..];
        let Some(close) = body.find("</script>") else {
            break;
        };
        if !tag.contains(" src=") {
            found.push(&body[..close]);
        }
        rest = &body[close..];
    }
    found
}

async fn missing(uri: axum::http::Uri) -> Response {
    if uri.path() != "/" {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    Html(
        "<!doctype html><meta charset=utf-8><title>meshtalk relay</title>\
         <h1>meshtalk relay</h1>\
         <p>The chat page is not built. In the meshtalk checkout run \
         <code>cargo xtask web</code> (or <code>cargo xtask run</code>), or start the relay \
         with <code>--web-dir DIR</code>.</p>\
         <p>The relay itself is running: see <a href=\"/api/addrs\">/api/addrs</a> and \
         <a href=\"/metrics\">/metrics</a>.</p>",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_named_files_are_told_apart() {
        assert!(is_content_named(
            "/meshtalk-browser-8a552dc280088f5a_bg.wasm"
        ));
        assert!(is_content_named("/meshtalk-browser-8a552dc280088f5a.js"));
        assert!(is_content_named("/favicon-6e71c76b1fca17e.svg"));
        assert!(!is_content_named("/"));
        assert!(!is_content_named("/index.html"));
        assert!(!is_content_named("/my-page.html"));
        assert!(!is_content_named("/api-addrs"));
    }

    #[test]
    fn inline_scripts_are_allowed_by_their_hash() {
        let index = "<script type=\"module\">run()</script>\
                     <script src=\"/x.js\"></script><script>other()</script>";
        assert_eq!(inline_scripts(index), vec!["run()", "other()"]);
        let csp = content_security_policy(index);
        let digest = Sha256::digest(b"run()");
        let expected = base64::engine::general_purpose::STANDARD.encode(digest);
        assert!(csp.contains(&format!("'sha256-{expected}'")), "{csp}");
        assert!(csp.starts_with("default-src 'none'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
    }
}
