//! The relay's HTTP side: `/api/addrs` (how to reach this relay), `/metrics`
//! (Prometheus text), `/healthz`, and the browser page at `/`.
//!
//! Served by [`serve`], hardened for the internet: at most
//! `--max-http-connections` connections at once (more are closed at once),
//! a request's head must arrive within [`HEADER_TIMEOUT`], an answer takes
//! at most [`REQUEST_TIMEOUT`], and request bodies (nothing here takes
//! one) are cut at [`MAX_BODY`].

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use meshtalk_protocol::libp2p::{Multiaddr, PeerId};
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::web::WebRoot;

/// Most HTTP connections at once, unless configured.
pub const MAX_CONNECTIONS: usize = 256;
/// How long a client may take to send a request's head (slow-loris).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an answer may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest request body read.
pub const MAX_BODY: usize = 16 * 1024;

/// What the HTTP handlers read.
pub struct AppState {
    /// The relay's peer id.
    pub peer_id: PeerId,
    /// Full addresses (with `/p2p/`) the relay can be reached at.
    pub addrs: RwLock<Vec<Multiaddr>>,
    /// Other relays connected to this one, with their full addresses, so a
    /// page can move to another relay when this one goes.
    pub relays: RwLock<BTreeMap<PeerId, Vec<Multiaddr>>>,
    /// The metrics registry.
    pub registry: Registry,
}

#[derive(Serialize)]
struct Addrs {
    peer_id: String,
    addrs: Vec<String>,
    relays: Vec<Relay>,
}

#[derive(Serialize)]
struct Relay {
    peer_id: String,
    addrs: Vec<String>,
}

fn strings(addrs: &[Multiaddr]) -> Vec<String> {
    addrs.iter().map(ToString::to_string).collect()
}

/// The API's routes, with every other path served from the web page.
pub fn router(state: Arc<AppState>, web: &WebRoot) -> Router {
    let page = crate::web::router(web);
    Router::new()
        .route("/api/addrs", get(addrs))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state)
        .merge(page)
        .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
}

/// Serves `router` on `listener` until `shutdown`, with at most
/// `max_connections` connections at once, over TLS when `tls` is given (the
/// handshake must end within [`HEADER_TIMEOUT`] too).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    max_connections: usize,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let permits = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut full_logged = None::<tokio::time::Instant>;
    loop {
        let (stream, from) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            if full_logged.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
                tracing::warn!(
                    %from,
                    max_connections,
                    "HTTP connections at their limit (--max-http-connections): closing new ones"
                );
                full_logged = Some(tokio::time::Instant::now());
            }
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let tls = tls.clone();
        connections.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let served = match tls {
                None => {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    builder.serve_connection(io, service).await
                }
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                tracing::debug!(%from, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%from, "TLS handshake timed out");
                                return;
                            }
                        };
                    let io = hyper_util::rt::TokioIo::new(stream);
                    builder.serve_connection(io, service).await
                }
            };
            if let Err(e) = served {
                tracing::debug!(%from, error = %e, "HTTP connection ended");
            }
            drop(permit);
        });
    }
}

async fn addrs(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let addrs = state.addrs.read().map(|a| strings(&a)).unwrap_or_default();
    let relays = state
        .relays
        .read()
        .map(|r| {
            r.iter()
                .map(|(peer, addrs)| Relay {
                    peer_id: peer.to_string(),
                    addrs: strings(addrs),
                })
                .collect()
        })
        .unwrap_or_default();
    (
        [(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")],
        Json(Addrs {
            peer_id: state.peer_id.to_string(),
            addrs,
            relays,
        }),
    )
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("cannot encode metrics: {e}\n"),
        ),
    }
}
