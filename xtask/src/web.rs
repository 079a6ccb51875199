//! The browser side: its tools (wasm-bindgen-cli at the version in
//! Cargo.lock, Trunk, wasm-pack, binaryen's wasm-opt, Chromium and
//! chromedriver), each installed when missing, and the page build into
//! `dist/`.

use std::{fs, path::Path};

use anyhow::{Context, Result, bail};

use crate::{
    cmd::{Cmd, cargo, step, workspace_root},
    toolchain::{self, Wasm},
};

/// Trunk 0.22 needs a newer rustc than 1.95; 0.21.14 builds with `--locked`.
const TRUNK_VERSION: &str = "0.21.14";
/// wasm-pack for `wasm-pack test`.
const WASM_PACK_VERSION: &str = "0.15.1";
/// The features rustc's wasm output uses, for binaryen's older wasm-opt.
const WASM_OPT_FEATURES: &[&str] = &[
    "--enable-bulk-memory",
    "--enable-nontrapping-float-to-int",
    "--enable-sign-ext",
    "--enable-reference-types",
    "--enable-multivalue",
    "--enable-mutable-globals",
];

/// The wasm-bindgen version in Cargo.lock; the CLI must be exactly this.
pub fn wasm_bindgen_version() -> Result<String> {
    let lock = fs::read_to_string(workspace_root().join("Cargo.lock"))
        .context("cannot read Cargo.lock")?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"wasm-bindgen\""
            && let Some(version) = lines
                .next()
                .and_then(|l| l.strip_prefix("version = \""))
                .and_then(|l| l.strip_suffix('"'))
        {
            return Ok(version.to_owned());
        }
    }
    bail!("Cargo.lock has no wasm-bindgen package")
}

/// The version a tool reports (`tool 1.2.3` → `1.2.3`), if it runs.
fn version_of(program: &str) -> Option<String> {
    let out = Cmd::new(program).args(["--version"]).output()?;
    out.split_whitespace().nth(1).map(str::to_owned)
}

/// `cargo install` of `krate` at `version` unless `program` already reports
/// that version.
fn ensure_tool(program: &str, krate: &str, version: &str, locked: bool) -> Result<()> {
    if version_of(program).as_deref() == Some(version) {
        return Ok(());
    }
    step(&format!(
        "installing {krate} {version} (cargo install, a few minutes, once)"
    ));
    let mut args = vec!["install", krate, "--version", version];
    if locked {
        args.push("--locked");
    }
    cargo(&args).run()?;
    if version_of(program).as_deref() != Some(version) {
        bail!(
            "{program} --version does not report {version} after installing it; is ~/.cargo/bin first in PATH?"
        );
    }
    Ok(())
}

/// Installs what building the page needs: wasm-bindgen-cli (without
/// `--locked`: one of its locked dependencies left the registry), Trunk,
/// and wasm-opt when the system offers it.
pub fn build_tools() -> Result<()> {
    ensure_tool(
        "wasm-bindgen",
        "wasm-bindgen-cli",
        &wasm_bindgen_version()?,
        false,
    )?;
    ensure_tool("trunk", "trunk", TRUNK_VERSION, true)?;
    if version_of("wasm-opt").is_none() && Path::new("/usr/bin/apt-get").exists() {
        step("installing binaryen (wasm-opt)");
        toolchain::apt_install(&["binaryen"])?;
    }
    Ok(())
}

/// Installs what the browser tests need on top: wasm-pack, Chromium and
/// chromedriver (unless `$CHROME` and `$CHROMEDRIVER` name others).
pub fn test_tools() -> Result<()> {
    build_tools()?;
    ensure_tool("wasm-pack", "wasm-pack", WASM_PACK_VERSION, false)?;
    let chrome = std::env::var_os("CHROME").is_some() || Path::new("/usr/bin/chromium").exists();
    let driver =
        std::env::var_os("CHROMEDRIVER").is_some() || Path::new("/usr/bin/chromedriver").exists();
    if !(chrome && driver) {
        step("installing Chromium and chromedriver");
        toolchain::apt_install(&["chromium", "chromium-driver"])?;
    }
    Ok(())
}

/// Environment for building the page: the wasm toolchain's, a release
/// profile tuned for size, and a target dir of its own.
fn page_env(wasm: &Wasm) -> Vec<(String, String)> {
    let mut env = wasm.env();
    for (k, v) in [
        ("CARGO_TARGET_DIR", "target/wasm"),
        ("CARGO_PROFILE_RELEASE_OPT_LEVEL", "z"),
        ("CARGO_PROFILE_RELEASE_LTO", "true"),
        ("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1"),
        ("CARGO_PROFILE_RELEASE_DEBUG", "false"),
        ("CARGO_PROFILE_RELEASE_PANIC", "abort"),
    ] {
        env.push((k.to_owned(), v.to_owned()));
    }
    env
}

/// Builds the page into `dist/` with Trunk (release), then shrinks the wasm
/// with wasm-opt when it is installed.
pub fn build(wasm: &Wasm) -> Result<()> {
    build_tools()?;
    step("building the chat page (trunk build --release, into dist/)");
    Cmd::new("trunk")
        .args(["build", "--release"])
        .envs(&page_env(wasm))
        .run()?;
    let dist = workspace_root().join("dist");
    if version_of("wasm-opt").is_some() {
        for entry in fs::read_dir(&dist).context("cannot read dist/")? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "wasm") {
                step(&format!("shrinking {} (wasm-opt -Oz)", path.display()));
                let file = path.display().to_string();
                let mut args = vec!["-Oz", "-o", file.as_str(), file.as_str()];
                args.extend_from_slice(WASM_OPT_FEATURES);
                Cmd::new("wasm-opt").args(args).run()?;
            }
        }
    } else {
        eprintln!("xtask: wasm-opt not found; the page works but is larger");
    }
    Ok(())
}

/// `wasm-pack test --headless --chrome crates/browser`, with the wasm
/// toolchain's environment plus `extra`.
pub fn wasm_pack_test(wasm: &Wasm, extra: &[(String, String)]) -> Result<()> {
    let mut env = wasm.env();
    env.push(("CARGO_TARGET_DIR".into(), "target/wasm".into()));
    if std::env::var_os("CHROMEDRIVER").is_none() && Path::new("/usr/bin/chromedriver").exists() {
        env.push(("CHROMEDRIVER".into(), "/usr/bin/chromedriver".into()));
    }
    env.extend_from_slice(extra);
    Cmd::new("wasm-pack")
        .args(["test", "--headless", "--chrome", "crates/browser"])
        .envs(&env)
        .run()
}
