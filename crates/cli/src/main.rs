//! # meshtalk
//!
//! The native meshtalk peer. Chat in a room through a relay:
//!
//! ```text
//! meshtalk chat --connect /ip4/127.0.0.1/tcp/4001/p2p/12D3Koo... --room lobby --nick ada
//! ```
//!
//! and `publish`, `subscribe`, `ping`, `listen`, `dht` and `bot` for the
//! classic libp2p exercises. `meshtalk --help` documents every flag. Logs go to
//! stderr (`RUST_LOG`), so stdout carries only what was asked for.

mod args;
mod bot;
mod chat;
mod commands;
mod dht;
mod output;
mod ping;
mod pubsub;
mod tui;

use std::{io::IsTerminal, process::ExitCode};

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::args::{Cli, Command};

/// Log filter when `RUST_LOG` is unset. Kademlia's "no known peers" and
/// webrtc-rs's handshake chatter are routine, not something to act on;
/// gossipsub's "Send Queue full" (a whole message, debug-printed, for each
/// one a slow neighbour cannot take yet) is told once by the engine.
const DEFAULT_LOG: &str = "warn,libp2p_gossipsub::behaviour=error,libp2p_kad=error,libp2p_webrtc=error,webrtc=error,webrtc_ice=error,webrtc_sctp=error,webrtc_dtls=error";

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            // One line: clap's usage hint would bury the actual problem.
            let rendered = e.render().to_string();
            eprintln!(
                "meshtalk: {}",
                rendered.lines().next().unwrap_or("invalid arguments")
            );
            return ExitCode::from(2);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meshtalk: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Chat(args) => chat::run(args).await,
            Command::Publish(args) => pubsub::publish(args).await,
            Command::Subscribe(args) => pubsub::subscribe(args).await,
            Command::Ping(args) => ping::run(args).await,
            Command::Listen(args) => chat::listen(args).await,
            Command::Dht(args) => dht::run(args).await,
            Command::Bot(args) => bot::run(args).await,
        }
    });
    // Background tasks (open connections) must not delay the exit.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshtalk: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
