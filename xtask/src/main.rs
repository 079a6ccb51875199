//! # xtask
//!
//! The project's automation, in Rust (`cargo xtask <command>`):
//!
//! - `run`: build the chat page and a relay, and start the relay on
//!   127.0.0.1 serving the page;
//! - `web`: build the chat page into `dist/` (release, or `--dev`);
//! - `test`: every check CI runs (format, lints on native and wasm32, unit,
//!   browser and end-to-end tests), installing what is missing first;
//! - `bench`: the benchmarks, with a table on stdout and JSON in
//!   `target/bench/` (`bench --sim`: the large-scale simulation alone);
//! - `fuzz`: libFuzzer on what meshtalk reads from the network;
//! - `setup`: install the toolchains and tools only.

mod cmd;
mod fuzz;
mod relay;
mod toolchain;
mod web;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::cmd::{cargo, step};

/// meshtalk project automation.
#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the chat page and start a local relay serving it (127.0.0.1
    /// only); extra arguments go to meshtalk-relay, e.g.
    /// `cargo xtask run -- --http 127.0.0.1:9000`.
    Run {
        /// Arguments passed to meshtalk-relay.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        relay_args: Vec<String>,
    },
    /// Build the chat page into dist/ (size-tuned release build).
    Web {
        /// A quick debug build instead, which keeps every log level
        /// (`?log=debug`); rebuild and reload the page to try a change.
        #[arg(long)]
        dev: bool,
    },
    /// Run every check and test CI runs.
    Test,
    /// Run the benchmarks (release build, loopback only): native, then
    /// browser.
    Bench {
        /// Run only the large-scale simulation instead: 1,000 peers and 20
        /// relays in one process over simulated WAN links (minutes, a few
        /// GB of memory; not in CI). The trailing arguments go to it.
        #[arg(long)]
        sim: bool,
        /// Arguments passed to the native benchmark program (see its --help).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        bench_args: Vec<String>,
    },
    /// Fuzz what meshtalk reads from the network (libFuzzer through
    /// cargo-fuzz, installed when missing): every target in fuzz/, two at
    /// a time.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value = "60", conflicts_with = "runs")]
        seconds: u64,
        /// Inputs per target, instead of a time (10000000 for a release).
        #[arg(long)]
        runs: Option<u64>,
    },
    /// Install the toolchains and tools the tests need (wasm32 target,
    /// wasm-bindgen-cli, Chromium and chromedriver, the interop peers,
    /// cargo-fuzz).
    Setup,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { relay_args } => run(&relay_args),
        Command::Web { dev } => toolchain::wasm().and_then(|wasm| {
            web::build(
                &wasm,
                if dev {
                    web::Profile::Dev
                } else {
                    web::Profile::Release
                },
            )
        }),
        Command::Test => test(),
        Command::Bench {
            sim: true,
            bench_args,
        } => simulate(&bench_args),
        Command::Bench {
            sim: false,
            bench_args,
        } => bench(&bench_args),
        Command::Fuzz { seconds, runs } => fuzz::run(match runs {
            Some(n) => fuzz::Budget::Runs(n),
            None => fuzz::Budget::Seconds(seconds),
        }),
        Command::Setup => toolchain::wasm()
            .and_then(|_| web::test_tools())
            .and_then(|()| fuzz::install()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(relay_args: &[String]) -> Result<()> {
    let wasm = toolchain::wasm()?;
    web::build(&wasm, web::Profile::Release)?;
    step("building the relay (release)");
    cargo(&["build", "--release", "-p", "meshtalk-relay"]).run()?;
    step("starting meshtalk-relay on 127.0.0.1 (Ctrl-C stops it)");
    eprintln!(
        "xtask: open the `http on` URL below in a browser to chat; from a terminal:\n  \
         cargo run -p meshtalk -- chat --connect <a 'listening on' address below>"
    );
    let dist = cmd::workspace_root().join("dist").display().to_string();
    cmd::Cmd::new(cmd::workspace_root().join("target/release/meshtalk-relay"))
        .args(["--web-dir", dist.as_str()])
        .args(relay_args)
        .run()
}

fn test() -> Result<()> {
    step("formatting (cargo fmt --check)");
    cargo(&["fmt", "--all", "--check"]).run()?;
    step("lints, native (cargo clippy -D warnings)");
    cargo(&[
        "clippy",
        "--workspace",
        "--exclude",
        "meshtalk-browser",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])
    .run()?;
    let wasm = toolchain::wasm()?;
    // The page's crate depends on meshtalk-protocol and meshtalk-webrtc,
    // and clippy lints the workspace crates it builds: one pass covers the
    // three (a pass of their own would check every dependency again, with
    // other features).
    step("lints, wasm32 (meshtalk-browser with meshtalk-protocol and meshtalk-webrtc)");
    wasm.clippy(&["-p", "meshtalk-browser", "--all-targets"])?;
    web::test_tools()?;
    step("building the binaries");
    cargo(&[&["build", "--bins"], NATIVE_PACKAGES].concat()).run()?;
    web::build(&wasm, web::Profile::Release)?;
    step("browser unit and connection tests (wasm32, in headless Chromium)");
    let relay = relay::TestRelay::start()?;
    web::browser_tests(&wasm, &relay.env())?;
    drop(relay);
    remove_stale_test_dirs();
    step("unit, property, end-to-end and browser tests");
    cargo(&[&["test", "--no-fail-fast"], NATIVE_PACKAGES].concat()).run()?;
    // Every fuzz target briefly: they build and find nothing quickly.
    fuzz::run(fuzz::Budget::Seconds(FUZZ_SECONDS_IN_TESTS))?;
    step("every check passed");
    Ok(())
}

/// The packages `cargo xtask test` builds and tests natively: one list for
/// the binaries and the tests, since the browser crate's dependencies
/// (leptos', tracing's features) unified into one of the two builds would
/// make the other compile 182 crates again. The benchmarks' seven programs
/// are left out too: no test runs them (clippy still reads them).
const NATIVE_PACKAGES: &[&str] = &[
    "--workspace",
    "--exclude",
    "meshtalk-browser",
    "--exclude",
    "meshtalk-fuzz",
    "--exclude",
    "meshtalk-bench",
];

/// Seconds each fuzz target runs in `cargo xtask test`.
const FUZZ_SECONDS_IN_TESTS: u64 = 10;

/// The end-to-end tests leave their data in `$TMPDIR/meshtalk-test-*`
/// (kept for looking into a failure); those more than an hour old belong
/// to no running test and go, so runs do not fill the disk.
fn remove_stale_test_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    let hour = std::time::Duration::from_secs(3600);
    let mut removed = 0;
    for entry in entries.flatten() {
        let stale = entry
            .file_name()
            .to_string_lossy()
            .starts_with("meshtalk-test-")
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > hour));
        if stale && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        step(&format!(
            "removed {removed} test directories older than an hour"
        ));
    }
}

/// `cargo xtask bench --sim`: the simulation alone (it needs no page).
fn simulate(args: &[String]) -> Result<()> {
    step("building the simulation (release)");
    cargo(&[
        "build",
        "--release",
        "-p",
        "meshtalk-bench",
        "--bin",
        "bench_sim",
    ])
    .run()?;
    step(
        "simulation: peers and relays over simulated WAN links: delivery, latency, duplicates, connections",
    );
    cmd::Cmd::new(cmd::workspace_root().join("target/release/bench_sim"))
        .args(args)
        .run()
}

fn bench(args: &[String]) -> Result<()> {
    let wasm = toolchain::wasm()?;
    web::test_tools()?;
    web::build(&wasm, web::Profile::Release)?;
    step("building relay and benchmarks (release)");
    cargo(&[
        "build",
        "--release",
        "-p",
        "meshtalk-relay",
        "-p",
        "meshtalk-bench",
        "--bins",
    ])
    .run()?;
    step("native benchmark: latency, throughput, relay memory");
    cmd::Cmd::new(cmd::workspace_root().join("target/release/bench"))
        .args(args)
        .run()?;
    step(
        "multi-relay benchmark: 3 relays, 30 peers, gossipsub and floodsub: delivery, latency, copies on the wire, connections",
    );
    cmd::Cmd::new(cmd::workspace_root().join("target/release/bench_mesh")).run()?;
    step("browser benchmark: page weight, load to connected, browser latency");
    cmd::Cmd::new(cmd::workspace_root().join("target/release/bench_browser")).run()?;
    step("history benchmark: the relay's cost of keeping history, late joiners");
    cmd::Cmd::new(cmd::workspace_root().join("target/release/bench_history")).run()?;
    step("files benchmark: 50 MiB native→native (TCP, QUIC) and page→native, DM round trip");
    cmd::Cmd::new(cmd::workspace_root().join("target/release/bench_files")).run()?;
    step("flood benchmark: honest latency while a flooder and a junk sender attack the relay");
    cmd::Cmd::new(cmd::workspace_root().join("target/release/bench_flood")).run()
}
