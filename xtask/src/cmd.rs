//! Running commands, loudly: each says what it runs before it runs.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::Instant,
};

use anyhow::{Context, Result, bail};

/// When the first step was announced: each step says how long the task
/// has run, so a slow CI run shows where its time went.
static STARTED: OnceLock<Instant> = OnceLock::new();

/// Announces a step of a task, with the minutes and seconds since the first.
pub fn step(what: &str) {
    let secs = STARTED.get_or_init(Instant::now).elapsed().as_secs();
    eprintln!("\nxtask: == [{:02}:{:02}] {what}", secs / 60, secs % 60);
}

/// The workspace root (xtask lives one level down).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// A command to run from the workspace root.
pub struct Cmd {
    inner: Command,
}

impl Cmd {
    /// A command running `program`.
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        let mut inner = Command::new(program);
        inner.current_dir(workspace_root());
        Self { inner }
    }

    /// Adds arguments.
    pub fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.inner.args(args);
        self
    }

    /// Sets environment variables.
    pub fn envs<'a>(mut self, vars: impl IntoIterator<Item = &'a (String, String)>) -> Self {
        for (k, v) in vars {
            self.inner.env(k, v);
        }
        self
    }

    fn describe(&self) -> String {
        let mut text = self.inner.get_program().to_string_lossy().into_owned();
        for arg in self.inner.get_args() {
            text.push(' ');
            text.push_str(&arg.to_string_lossy());
        }
        text
    }

    /// Runs to completion; fails unless it exits with 0.
    pub fn run(mut self) -> Result<()> {
        let text = self.describe();
        eprintln!("xtask: $ {text}");
        let status = self
            .inner
            .status()
            .with_context(|| format!("cannot run {text}"))?;
        if !status.success() {
            bail!("`{text}` failed ({status})");
        }
        Ok(())
    }

    /// Runs quietly and returns stdout, or `None` when it fails.
    pub fn output(mut self) -> Option<String> {
        let out = self.inner.output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// `cargo <args>` with the cargo that runs xtask.
pub fn cargo(args: &[&str]) -> Cmd {
    Cmd::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())).args(args)
}
