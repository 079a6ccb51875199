//! The wasm32 toolchain. A normal rustup installation just adds the target.
//! Where rustup cannot download it (an offline or mirrored machine), Debian's
//! `rustc-web` compiler builds the standard library from its sources
//! (`-Z build-std`, allowed by `RUSTC_BOOTSTRAP=1`); its lints come from
//! Debian's matching clippy.

use std::path::Path;

use anyhow::{Result, bail};

use crate::cmd::{Cmd, cargo, step};

/// The wasm target.
pub const WASM_TARGET: &str = "wasm32-unknown-unknown";
const DEBIAN_PACKAGES: &[&str] = &["rustc-web", "rust-web-src", "rust-web-clippy", "lld-22"];

/// A toolchain that can build for wasm32.
pub enum Wasm {
    /// rustup's toolchain with the target installed.
    Rustup,
    /// Debian's rustc-web with std built from source.
    Debian,
}

/// Finds a wasm32 toolchain, installing one if there is none.
pub fn wasm() -> Result<Wasm> {
    if rustup_has_target() {
        return Ok(Wasm::Rustup);
    }
    if debian_ready() {
        return Ok(Wasm::Debian);
    }
    step("installing the wasm32 target");
    if Cmd::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .run()
        .is_ok()
        && rustup_has_target()
    {
        return Ok(Wasm::Rustup);
    }
    eprintln!(
        "xtask: rustup cannot download {WASM_TARGET}; using Debian's rustc-web, which builds std from source"
    );
    if Path::new("/usr/bin/apt-get").exists() {
        apt_install(DEBIAN_PACKAGES)?;
    }
    if debian_ready() {
        Ok(Wasm::Debian)
    } else {
        bail!(
            "no wasm32 toolchain: run `rustup target add {WASM_TARGET}`, or install Debian's {}",
            DEBIAN_PACKAGES.join(" ")
        )
    }
}

/// Installs Debian packages with apt-get (through sudo unless root).
pub fn apt_install(packages: &[&str]) -> Result<()> {
    if !Path::new("/usr/bin/apt-get").exists() {
        bail!(
            "no apt-get on this machine: install {} with your package manager",
            packages.join(" ")
        );
    }
    let sudo = !is_root();
    let apt = |args: &[&str]| {
        let mut all: Vec<&str> = Vec::new();
        if sudo {
            all.push("apt-get");
        }
        all.extend_from_slice(args);
        let program = if sudo { "sudo" } else { "apt-get" };
        Cmd::new(program)
            .args(all)
            .envs(&[("DEBIAN_FRONTEND".to_owned(), "noninteractive".to_owned())])
            .run()
    };
    apt(&["update", "-qq"])?;
    let mut install = vec!["install", "-y", "-qq"];
    install.extend_from_slice(packages);
    apt(&install)
}

fn is_root() -> bool {
    Cmd::new("id")
        .args(["-u"])
        .output()
        .is_some_and(|uid| uid.trim() == "0")
}

fn rustup_has_target() -> bool {
    Cmd::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .is_some_and(|out| out.lines().any(|l| l.trim() == WASM_TARGET))
}

fn debian_ready() -> bool {
    let sources = std::fs::read_dir("/usr/src").is_ok_and(|dirs| {
        dirs.flatten().any(|d| {
            d.file_name().to_string_lossy().starts_with("rustc-")
                && d.path().join("library/std/Cargo.toml").exists()
        })
    });
    sources && Path::new("/usr/bin/rustc").exists() && Path::new("/usr/bin/cargo-clippy").exists()
}

impl Wasm {
    /// Environment for cargo commands building wasm32.
    pub fn env(&self) -> Vec<(String, String)> {
        match self {
            Wasm::Rustup => Vec::new(),
            Wasm::Debian => [
                ("RUSTC", "/usr/bin/rustc"),
                ("RUSTDOC", "/usr/bin/rustdoc"),
                ("RUSTC_BOOTSTRAP", "1"),
                ("CARGO_UNSTABLE_BUILD_STD", "std,panic_abort"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        }
    }

    /// `cargo clippy` for wasm32 with `-D warnings`, in its own target dir
    /// (another compiler must not invalidate the native build).
    pub fn clippy(&self, packages: &[&str]) -> Result<()> {
        let mut args = vec![
            "clippy",
            "--target",
            WASM_TARGET,
            "--target-dir",
            "target/wasm",
        ];
        args.extend_from_slice(packages);
        args.extend_from_slice(&["--", "-D", "warnings"]);
        let command = match self {
            Wasm::Rustup => cargo(&args),
            // Debian's cargo-clippy drives its own clippy-driver, which
            // matches /usr/bin/rustc.
            Wasm::Debian => Cmd::new("/usr/bin/cargo-clippy").args(&args),
        };
        command.envs(&self.env()).run()
    }
}
