//! # xtask
//!
//! The project's automation, in Rust (`cargo xtask <command>`):
//!
//! - `run`: build and start a local relay on 127.0.0.1;
//! - `test`: every check CI runs (format, lints on native and wasm32, unit
//!   and end-to-end tests), installing what is missing first;
//! - `bench`: the benchmarks, with a table on stdout and JSON in
//!   `target/bench/`;
//! - `setup`: install the toolchains only.

mod cmd;
mod toolchain;

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
    /// Build and start a local relay (127.0.0.1 only); extra arguments go to
    /// meshtalk-relay, e.g. `cargo xtask run -- --http 127.0.0.1:9000`.
    Run {
        /// Arguments passed to meshtalk-relay.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        relay_args: Vec<String>,
    },
    /// Run every check and test CI runs.
    Test,
    /// Run the benchmarks (release build, loopback only).
    Bench {
        /// Arguments passed to the benchmark program (see its --help).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        bench_args: Vec<String>,
    },
    /// Install the toolchains the tests need (wasm32 target).
    Setup,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { relay_args } => run(&relay_args),
        Command::Test => test(),
        Command::Bench { bench_args } => bench(&bench_args),
        Command::Setup => toolchain::wasm().map(|_| ()),
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
    step("building the relay (release)");
    cargo(&["build", "--release", "-p", "meshtalk-relay"]).run()?;
    step("starting meshtalk-relay on 127.0.0.1 (Ctrl-C stops it)");
    eprintln!(
        "xtask: chat with it from another terminal:\n  cargo run -p meshtalk -- chat --connect <a 'listening on' address below>"
    );
    cmd::Cmd::new(cmd::workspace_root().join("target/release/meshtalk-relay"))
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
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])
    .run()?;
    let wasm = toolchain::wasm()?;
    step("lints, wasm32 (meshtalk-protocol)");
    wasm.clippy(&["-p", "meshtalk-protocol"])?;
    step("building the binaries");
    cargo(&["build", "--workspace", "--bins"]).run()?;
    step("unit, property and end-to-end tests");
    cargo(&["test", "--workspace"]).run()?;
    Ok(())
}

fn bench(args: &[String]) -> Result<()> {
    step("building relay and benchmark (release)");
    cargo(&[
        "build",
        "--release",
        "-p",
        "meshtalk-relay",
        "-p",
        "meshtalk-tests",
        "--bins",
    ])
    .run()?;
    step("running the benchmark");
    cmd::Cmd::new(cmd::workspace_root().join("target/release/bench"))
        .args(args)
        .run()
}
