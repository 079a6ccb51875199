//! `cargo xtask fuzz`: libFuzzer (through cargo-fuzz) on what meshtalk reads
//! from the network, the targets in `fuzz/fuzz_targets/`.
//!
//! cargo-fuzz needs nightly compiler flags: `RUSTC_BOOTSTRAP=1` lets the
//! stable toolchain take them. Targets are built without a sanitizer (the
//! code under test is safe Rust: what is looked for is a panic, an
//! overflow, an endless loop or a runaway allocation) but with debug
//! assertions. Each target keeps its corpus in `target/fuzz/corpus/`; an
//! input that fails is saved in `target/fuzz/artifacts/` and the run fails,
//! naming it.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::{
    cmd::{Cmd, step, workspace_root},
    web::ensure_tool,
};

/// cargo-fuzz, installed when missing.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// The targets, as `fuzz/Cargo.toml` names them.
pub const TARGETS: &[&str] = &[
    "room_message",
    "peer_record",
    "history_answer",
    "direct_message",
    "file_messages",
    "webrtc_frames",
];

/// How long a run may go: `seconds` per target, or until `runs` inputs.
#[derive(Clone, Copy)]
pub enum Budget {
    /// Seconds per target.
    Seconds(u64),
    /// Inputs per target.
    Runs(u64),
}

/// What one target did.
struct Outcome {
    target: &'static str,
    runs: u64,
    seconds: u64,
}

/// Installs cargo-fuzz when missing.
pub fn install() -> Result<()> {
    ensure_tool("cargo-fuzz", "cargo-fuzz", CARGO_FUZZ_VERSION, true)
}

/// Builds every target and runs each within `budget`, two at a time.
pub fn run(budget: Budget) -> Result<()> {
    install()?;
    step("building the fuzz targets (cargo fuzz build, no sanitizer, debug assertions)");
    // The targets build meshtalk-protocol without its `transports` feature,
    // which no other build does: warnings there fail here, as clippy's do
    // elsewhere (cargo-fuzz adds its own flags before ours).
    let rustflags = match std::env::var("RUSTFLAGS") {
        Ok(flags) if !flags.trim().is_empty() => format!("{flags} -D warnings"),
        _ => "-D warnings".to_owned(),
    };
    Cmd::new("cargo")
        .args(["fuzz", "build", "--sanitizer", "none", "--debug-assertions"])
        .envs(&[
            ("RUSTC_BOOTSTRAP".to_owned(), "1".to_owned()),
            ("RUSTFLAGS".to_owned(), rustflags),
        ])
        .run()?;
    let what = match budget {
        Budget::Seconds(s) => format!("{s} s each"),
        Budget::Runs(n) => format!("{n} inputs each"),
    };
    step(&format!("fuzzing {} targets, {what}", TARGETS.len()));
    let mut outcomes = Vec::new();
    for pair in TARGETS.chunks(2) {
        let runs: Vec<_> = pair
            .iter()
            .map(|&target| thread::spawn(move || fuzz(target, budget)))
            .collect();
        for run in runs {
            outcomes.push(
                run.join()
                    .map_err(|_| anyhow::anyhow!("fuzz thread panicked"))??,
            );
        }
    }
    eprintln!(
        "xtask: {:<16} {:>12} {:>8} {:>10}",
        "target", "inputs", "seconds", "inputs/s"
    );
    for o in &outcomes {
        eprintln!(
            "xtask: {:<16} {:>12} {:>8} {:>10}",
            o.target,
            o.runs,
            o.seconds,
            o.runs / o.seconds.max(1)
        );
    }
    Ok(())
}

/// Runs one target's binary within `budget`.
fn fuzz(target: &'static str, budget: Budget) -> Result<Outcome> {
    let root = workspace_root();
    let binary = root
        .join("target/x86_64-unknown-linux-gnu/release")
        .join(target);
    let corpus = dir(&root.join("target/fuzz/corpus").join(target))?;
    let artifacts = dir(&root.join("target/fuzz/artifacts").join(target))?;
    let limit = match budget {
        Budget::Seconds(s) => format!("-max_total_time={s}"),
        Budget::Runs(n) => format!("-runs={n}"),
    };
    let started = Instant::now();
    let out = Command::new(&binary)
        .arg(limit)
        .arg("-print_final_stats=1")
        // 64 KiB inputs cover every message's limits; 2 GiB of memory
        // and 10 s per input catch runaway allocations and loops.
        .arg("-max_len=65536")
        .arg("-rss_limit_mb=2048")
        .arg("-timeout=10")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(&corpus)
        .output()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    let log = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let found: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("Test unit written to") || l.contains("panicked"))
            .collect();
        bail!(
            "fuzz target {target} failed: {}\n(reproduce: {} FILE)",
            found.join("; "),
            binary.display()
        );
    }
    let runs = log
        .lines()
        .find_map(|l| {
            l.strip_prefix("stat::number_of_executed_units:")?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .context("libFuzzer printed no statistics")?;
    Ok(Outcome {
        target,
        runs,
        seconds: started.elapsed().as_secs(),
    })
}

/// `path`, made if missing.
fn dir(path: &Path) -> Result<PathBuf> {
    fs::create_dir_all(path).with_context(|| format!("cannot make {}", path.display()))?;
    Ok(path.to_path_buf())
}
