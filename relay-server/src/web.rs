//! Serves the browser page (Trunk's output, `dist/`) at `/`. Only files
//! inside the web directory are served; `..` and other escapes get 404.

use std::{
    path::{Component, Path, PathBuf},
    sync::Arc,
};

use axum::{
    extract::State,
    http::{StatusCode, Uri, header},
    response::{Html, IntoResponse, Response},
};

/// Where the page comes from.
#[derive(Clone, Debug)]
pub enum WebRoot {
    /// A directory with `index.html` and its assets.
    Dir(PathBuf),
    /// No page was built; `/` explains how to build one.
    Missing,
}

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

/// The handler for every path the API does not claim.
pub async fn serve(State(root): State<Arc<WebRoot>>, uri: Uri) -> Response {
    let WebRoot::Dir(dir) = root.as_ref() else {
        return missing(uri.path());
    };
    let Some(relative) = safe_relative(uri.path()) else {
        return not_found();
    };
    let mut path = dir.join(relative);
    if path.is_dir() {
        path = path.join("index.html");
    }
    match tokio::fs::read(&path).await {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, content_type(&path)),
                (header::CACHE_CONTROL, "no-cache"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            body,
        )
            .into_response(),
        Err(_) => not_found(),
    }
}

/// The request path as a path below the web root, or `None` when it tries
/// to leave it.
fn safe_relative(path: &str) -> Option<PathBuf> {
    let trimmed = path.trim_start_matches('/');
    if trimmed.contains('\\') || trimmed.contains('\0') {
        return None;
    }
    let relative = PathBuf::from(trimmed);
    relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then_some(relative)
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "wasm" => "application/wasm",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

fn missing(path: &str) -> Response {
    if path != "/" {
        return not_found();
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
    fn paths_stay_inside_the_root() {
        assert_eq!(safe_relative("/"), Some(PathBuf::new()));
        assert_eq!(safe_relative("/a/b.js"), Some(PathBuf::from("a/b.js")));
        assert_eq!(safe_relative("/../etc/passwd"), None);
        assert_eq!(safe_relative("/a/../../x"), None);
        assert_eq!(
            safe_relative("//etc/passwd"),
            Some(PathBuf::from("etc/passwd"))
        );
        assert_eq!(safe_relative("/a\\..\\b"), None);
        assert_eq!(safe_relative("/./a"), None);
    }
}
