//! The relay's HTTP side: `/api/addrs` (how to reach this relay), `/metrics`
//! (Prometheus text), `/healthz`, and the browser page at `/`.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
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
pub fn router(state: Arc<AppState>, web: WebRoot) -> Router {
    let page = Router::new()
        .fallback(get(crate::web::serve))
        .with_state(Arc::new(web));
    Router::new()
        .route("/api/addrs", get(addrs))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state)
        .merge(page)
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
