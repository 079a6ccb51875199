//! # meshtalk-relay
//!
//! The relay and bootstrap node that native peers and browsers connect to:
//! it listens on TCP, QUIC, WebSocket and WebRTC-direct, relays circuits,
//! serves the Kademlia DHT, answers AutoNAT probes, and joins every room its
//! peers use so that peers connected only to it chat with each other.
//!
//! ```text
//! meshtalk-relay --data-dir ./relay-data --http 127.0.0.1:8080
//! ```
//!
//! It prints `listening on <multiaddr>` per address and `http on <url>`,
//! and serves the browser chat page at that URL (`--web-dir`).

mod config;
mod history;
mod http;
mod keys;
mod metrics;
mod tls;
mod web;

use std::{
    io::{IsTerminal, Write},
    process::ExitCode,
    sync::{Arc, RwLock},
    time::Duration,
};

use anyhow::{Context, Result};
use clap::Parser;
use futures::StreamExt;
use meshtalk_protocol::{
    arch::{self, TransportConfig},
    behaviour::{BehaviourConfig, Role, is_relay_agent, relay_addrs},
    discovery::{Discovery, Source, Sources},
    engine::{Engine, EngineConfig, Event, HistoryConfig},
};
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

use crate::{
    config::{Args, Settings},
    http::AppState,
    metrics::RelayMetrics,
    web::WebRoot,
};

/// How long shutdown waits for the engine to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Log filter when `RUST_LOG` is unset. Kademlia's "no known peers" and
/// webrtc-rs's handshake chatter are routine, not something to act on;
/// gossipsub's "Send Queue full" (a whole message, debug-printed, for each
/// one a slow neighbour cannot take yet) is told once by the engine.
const DEFAULT_LOG: &str = "info,libp2p_gossipsub::behaviour=error,libp2p_kad=error,libp2p_webrtc=error,webrtc=error,webrtc_ice=error,webrtc_sctp=error,webrtc_dtls=error";

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meshtalk-relay: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshtalk-relay: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let settings = Settings::resolve(args)?;
    let keypair = keys::load_or_create_identity(&settings.data_dir)?;
    let certificate = keys::load_or_create_certificate(&settings.data_dir)?;
    let peer_id = keypair.public().to_peer_id();
    tracing::info!(%peer_id, data_dir = %settings.data_dir.display(), "starting relay");

    let discovery = Discovery {
        bootstrap: settings.bootstrap.clone(),
        sources: Sources::only([Source::Bootstrap, Source::RandomWalk, Source::PeerExchange]),
        ..Discovery::default()
    };
    let behaviour = BehaviourConfig {
        role: Role::Relay,
        sources: discovery.sources.clone(),
        limits: settings.limits.clone(),
        // Relays run gossipsub, which serves floodsub peers as well.
        ..BehaviourConfig::default()
    };
    let transport = TransportConfig {
        webrtc_certificate: Some(certificate),
        websocket_tls: settings.tls.as_ref().map(|tls| tls.websocket.clone()),
        connect_timeout: None,
    };
    let swarm = arch::build_swarm(keypair, transport, &behaviour).await?;
    let (mut engine, handle, mut events) = Engine::new(
        swarm,
        Role::Relay,
        EngineConfig {
            external_addrs: settings.external_addrs.clone(),
            ping_interval: Some(Duration::from_secs(15)),
            discovery,
            history: HistoryConfig {
                limits: settings.history,
                fetch: false,
            },
            publish_limit: settings.publish_limit,
            ..EngineConfig::default()
        },
    );

    let mut registry = Registry::default();
    let metrics = Arc::new(RelayMetrics::new(&mut registry, handle.clone()));
    let observer_metrics = Arc::clone(&metrics);
    engine.observe(Box::new(move |event| observer_metrics.record_swarm(event)));

    let history_writer = if settings.history.per_room > 0 {
        let (saved, journal, writer) =
            history::open(&settings.data_dir, metrics.history_saved.clone())?;
        let loaded = engine.load_history(saved, Box::new(journal));
        tracing::info!(
            records = loaded.kept,
            refused = loaded.refused,
            "room history loaded"
        );
        Some(writer)
    } else {
        None
    };

    let external = settings
        .external_addrs
        .iter()
        .map(|a| a.clone().with_p2p(peer_id).unwrap_or_else(|a| a))
        .collect();
    let state = Arc::new(AppState {
        peer_id,
        addrs: RwLock::new(external),
        relays: RwLock::default(),
        registry,
    });

    let engine_task = tokio::spawn(engine.run());
    // Watched from here on: a signal that comes as soon as the addresses
    // are printed must still shut the relay down gracefully.
    let shutdown = shutdown_signal();
    for addr in &settings.listen {
        handle.listen(addr.clone()).await?;
    }

    let listener = tokio::net::TcpListener::bind(settings.http)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", settings.http))?;
    let http_addr = listener
        .local_addr()
        .context("cannot read the HTTP listener's address")?;
    let scheme = if settings.tls.is_some() {
        "https"
    } else {
        "http"
    };
    say(&format!("http on {scheme}://{http_addr}"));
    match &settings.web {
        WebRoot::Dir(dir) => tracing::info!(dir = %dir.display(), "serving the chat page at /"),
        WebRoot::Missing => {
            tracing::info!("no chat page built; run `cargo xtask web` to serve one at /")
        }
    }

    let event_state = Arc::clone(&state);
    let event_task = tokio::spawn(async move {
        while let Some(event) = events.next().await {
            metrics.record_event(&event);
            // Connections and rejections are already logged by the engine.
            match event {
                Event::Listening(addr) => {
                    // Listed before it is announced: whoever reads the line
                    // can find the address in /api/addrs.
                    let line = format!("listening on {addr}");
                    if let Ok(mut addrs) = event_state.addrs.write() {
                        addrs.push(addr);
                    }
                    say(&line);
                }
                Event::Identified {
                    peer,
                    agent,
                    listen_addrs,
                } if is_relay_agent(&agent) => {
                    tracing::info!(%peer, "linked to relay");
                    let addrs = relay_addrs(peer, &listen_addrs);
                    if let Ok(mut relays) = event_state.relays.write() {
                        relays.insert(peer, addrs);
                    }
                }
                Event::Disconnected {
                    peer, remaining: 0, ..
                } => {
                    if let Ok(mut relays) = event_state.relays.write()
                        && relays.remove(&peer).is_some()
                    {
                        tracing::info!(%peer, "lost the link to relay");
                    }
                }
                _ => {}
            }
        }
    });

    http::serve(
        listener,
        http::router(Arc::clone(&state), &settings.web),
        settings.max_http_connections,
        settings.tls.map(|tls| tls.http),
        shutdown,
    )
    .await;

    tracing::info!("shutting down");
    let _ = handle.shutdown().await;
    if tokio::time::timeout(SHUTDOWN_GRACE, engine_task)
        .await
        .is_err()
    {
        tracing::warn!("engine did not stop in time");
    }
    event_task.abort();
    if let Some(writer) = history_writer {
        // The engine is gone, and with it the journal: the writer commits
        // what is left and ends.
        let _ = tokio::time::timeout(
            SHUTDOWN_GRACE,
            tokio::task::spawn_blocking(move || writer.finish()),
        )
        .await;
    }
    Ok(())
}

/// Prints a line on stdout for people and scripts, flushing at once.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Resolves on SIGINT or SIGTERM.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    // On Unix the handlers are installed now, not when the future is first
    // polled: a signal right after start-up is not missed.
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let watch = |kind: SignalKind, name: &'static str| {
            let stream = signal(kind);
            async move {
                match stream {
                    Ok(mut stream) => {
                        stream.recv().await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot watch {name}");
                        std::future::pending::<()>().await;
                    }
                }
            }
        };
        let interrupt = watch(SignalKind::interrupt(), "SIGINT");
        let terminate = watch(SignalKind::terminate(), "SIGTERM");
        async move {
            tokio::select! {
                _ = interrupt => {},
                _ = terminate => {},
            }
        }
    }
    #[cfg(not(unix))]
    {
        let interrupt = tokio::signal::ctrl_c();
        async move {
            let _ = interrupt.await;
        }
    }
}
