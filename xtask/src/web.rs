//! The browser side: its tools (wasm-bindgen-cli at the version in
//! Cargo.lock, with its test runner; Chromium and chromedriver), each
//! installed when missing, the page build into `dist/`, and the browser
//! crate's tests in Chromium.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

use crate::{
    cmd::{Cmd, cargo, step, workspace_root},
    toolchain::{self, Wasm},
};

/// Custom sections the page does not need: function names (most of an
/// unstripped module) and toolchain notes.
const DROPPED_SECTIONS: &[&str] = &["name", "producers", "target_features"];

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
pub fn ensure_tool(program: &str, krate: &str, version: &str, locked: bool) -> Result<()> {
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
/// `--locked`: one of its locked dependencies left the registry), which
/// also brings the browser tests' runner.
pub fn build_tools() -> Result<()> {
    ensure_tool(
        "wasm-bindgen",
        "wasm-bindgen-cli",
        &wasm_bindgen_version()?,
        false,
    )
}

/// Installs what the browser tests need on top: Chromium and chromedriver
/// (unless `$CHROME` and `$CHROMEDRIVER` name others); tmux, for the
/// terminal UI's test; and the js-libp2p and py-libp2p peers of the
/// interop tests.
pub fn test_tools() -> Result<()> {
    build_tools()?;
    let chrome = std::env::var_os("CHROME").is_some() || Path::new("/usr/bin/chromium").exists();
    let driver =
        std::env::var_os("CHROMEDRIVER").is_some() || Path::new("/usr/bin/chromedriver").exists();
    if !(chrome && driver) {
        step("installing Chromium and chromedriver");
        toolchain::apt_install(&["chromium", "chromium-driver"])?;
    }
    // The terminal UI's end-to-end test drives `meshtalk chat` in tmux.
    if !Path::new("/usr/bin/tmux").exists() {
        step("installing tmux");
        toolchain::apt_install(&["tmux"])?;
    }
    js_peer()?;
    py_peer()
}

/// The js-libp2p peer of the interop test (`tests/js`): Node.js and npm
/// when missing, its packages at the versions `package-lock.json` pins
/// (again when the lock file changes), and its browser bundle.
fn js_peer() -> Result<()> {
    if Cmd::new("npm").args(["--version"]).output().is_none() {
        step("installing Node.js and npm (for the js-libp2p interop peer)");
        toolchain::apt_install(&["nodejs", "npm"])?;
    }
    let dir = workspace_root().join("tests/js");
    let installed = dir.join("node_modules/.package-lock.json");
    let modified = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(&installed) < modified(&dir.join("package-lock.json")) {
        step("installing the js-libp2p interop peer's packages (npm ci)");
        Cmd::new("npm")
            .args(["ci", "--prefix", "tests/js", "--no-audit", "--no-fund"])
            .run()?;
    }
    Cmd::new("npm")
        .args(["run", "build", "--prefix", "tests/js", "--silent"])
        .run()
}

/// The py-libp2p peer of the interop tests (`tests/py`): a venv in
/// `target/interop-py` with the packages `requirements.txt` pins (again
/// when it changes); Python, venv and GMP's headers (one of py-libp2p's
/// dependencies builds against them) from Debian when missing.
fn py_peer() -> Result<()> {
    let root = workspace_root();
    let venv = root.join("target/interop-py");
    let requirements = root.join("tests/py/requirements.txt");
    let installed = venv.join(".installed");
    let modified = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(&installed).is_some() && modified(&installed) >= modified(&requirements) {
        return Ok(());
    }
    let has_venv = Cmd::new("python3")
        .args(["-c", "import venv, ensurepip"])
        .output()
        .is_some();
    if !has_venv {
        step("installing Python 3 and venv (for the py-libp2p interop peer)");
        toolchain::apt_install(&["python3", "python3-venv"])?;
    }
    let gmp = ["/usr/include/gmp.h", "/usr/include/x86_64-linux-gnu/gmp.h"];
    if !gmp.iter().any(|p| Path::new(p).exists()) {
        step("installing libgmp-dev (py-libp2p's fastecdsa builds against it)");
        toolchain::apt_install(&["libgmp-dev"])?;
    }
    step("installing the py-libp2p interop peer's packages (venv in target/interop-py)");
    let _ = fs::remove_dir_all(&venv);
    Cmd::new("python3")
        .args(["-m", "venv"])
        .args([&venv])
        .run()?;
    Cmd::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
        .args([&requirements])
        .run()?;
    fs::write(&installed, "")?;
    Ok(())
}

/// Environment for building the page: the wasm toolchain's, a release
/// profile tuned for size, and a target dir of its own.
fn page_env(wasm: &Wasm) -> Vec<(String, String)> {
    let mut env = wasm.env();
    env.push(("CARGO_TARGET_DIR".into(), wasm_target_dir()));
    for (k, v) in [
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

/// How the page's wasm is built.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Size-tuned release build; logs at most `info`.
    Release,
    /// Quick debug build with every log level, for working on the page.
    Dev,
}

/// The page's name in the files it is built into.
const PAGE: &str = "meshtalk-browser";

/// Builds the page into `dist/`: the browser crate for wasm32, the
/// wasm-bindgen glue for ES modules, the module without its name and
/// toolchain sections, and `web/index.html` with its style sheet and icon.
/// Every file but `index.html` is named by its content
/// (`name-<16 hex digits>.ext`, which the relay caches for a year), and
/// `index.html` gets preload links to the glue and the module and the
/// script that starts the page ([`LOADER`]). Then, for a release build, a
/// Brotli (`.br`) and a gzip (`.gz`) twin of each file, which the relay
/// serves to browsers that accept them, and the sizes.
///
/// Binaryen's wasm-opt is not used: Debian's version 108 renumbers the
/// tables of a module with an externref table, and the page then fails at
/// start with "WebAssembly.Table.grow(): failed to grow table". The
/// size-tuned profile and the stripping alone keep the page well inside
/// its budget.
pub fn build(wasm: &Wasm, profile: Profile) -> Result<()> {
    build_tools()?;
    let glue = compile(wasm, profile)?;
    let dist = workspace_root().join("dist");
    if dist.exists() {
        fs::remove_dir_all(&dist).context("cannot empty dist/")?;
    }
    fs::create_dir_all(&dist).context("cannot create dist/")?;
    let module_path = glue.join(format!("{PAGE}_bg.wasm"));
    let module =
        fs::read(&module_path).with_context(|| format!("cannot read {}", module_path.display()))?;
    let stripped = strip_sections(&module, DROPPED_SECTIONS)
        .with_context(|| format!("{} is not a wasm module", module_path.display()))?;
    eprintln!(
        "xtask: {}: {} KB, {} KB without names",
        module_path.display(),
        module.len() / 1024,
        stripped.len() / 1024
    );
    // Kept with its names for size analysis:
    // `twiggy top target/wasm/page-with-names.wasm`.
    fs::write(
        Path::new(&wasm_target_dir()).join("page-with-names.wasm"),
        &module,
    )?;
    let script = fs::read(glue.join(format!("{PAGE}.js")))?;
    // The glue and the module belong together: one name for both.
    let hash = content_hash(&[&script, &stripped]);
    let script_name = format!("{PAGE}-{hash}.js");
    let module_name = format!("{PAGE}-{hash}_bg.wasm");
    fs::write(dist.join(&script_name), &script)?;
    fs::write(dist.join(&module_name), &stripped)?;
    // Inline JavaScript of the crates the page uses, imported by the glue
    // relative to itself.
    if glue.join("snippets").is_dir() {
        copy_dir(&glue.join("snippets"), &dist.join("snippets"))?;
    }
    write_index(&dist, &script_name, &module_name)?;
    // A debug module is tens of MB, which Brotli's best takes long over;
    // the relay serves it as it is.
    match profile {
        Profile::Release => precompress(&dist),
        Profile::Dev => Ok(()),
    }
}

/// Builds the browser crate for wasm32 and runs wasm-bindgen on it;
/// returns the directory with the glue (`meshtalk-browser.js`) and the
/// module (`meshtalk-browser_bg.wasm`).
fn compile(wasm: &Wasm, profile: Profile) -> Result<PathBuf> {
    let (label, dir) = match profile {
        Profile::Release => ("release", "release"),
        Profile::Dev => ("dev", "debug"),
    };
    step(&format!("building the chat page ({label}, into dist/)"));
    let mut args = vec![
        "build",
        "-p",
        PAGE,
        "--lib",
        "--target",
        toolchain::WASM_TARGET,
    ];
    if profile == Profile::Release {
        args.push("--release");
    }
    cargo(&args).envs(&page_env(wasm)).run()?;
    let built = Path::new(&wasm_target_dir())
        .join(toolchain::WASM_TARGET)
        .join(dir)
        .join(format!("{}.wasm", PAGE.replace('-', "_")));
    let glue = Path::new(&wasm_target_dir()).join("bindgen");
    let _ = fs::remove_dir_all(&glue);
    Cmd::new("wasm-bindgen")
        .args(["--target", "web", "--no-typescript", "--out-name", PAGE])
        .args(["--out-dir"])
        .args([&glue, &built])
        .run()?;
    Ok(glue)
}

/// Writes `dist/index.html` from `web/index.html`, with the style sheet
/// and icon copied under content names and the page's preload links and
/// loader added to its head.
fn write_index(dist: &Path, script_name: &str, module_name: &str) -> Result<()> {
    let web = workspace_root().join("web");
    let mut index =
        fs::read_to_string(web.join("index.html")).context("cannot read web/index.html")?;
    for asset in PAGE_ASSETS {
        let body = fs::read(web.join(asset)).with_context(|| format!("cannot read web/{asset}"))?;
        let (stem, ext) = asset.rsplit_once('.').unwrap_or((asset, ""));
        let named = format!("{stem}-{}.{ext}", content_hash(&[&body]));
        fs::write(dist.join(&named), &body)?;
        index = replace_once(
            &index,
            &format!("href=\"{asset}\""),
            &format!("href=\"{named}\""),
        )
        .with_context(|| format!("web/index.html must link {asset} once"))?;
    }
    let start = format!(
        "    <link rel=\"modulepreload\" href=\"{script_name}\" data-page />\n    \
         <link rel=\"preload\" href=\"{module_name}\" as=\"fetch\" type=\"application/wasm\" crossorigin=\"anonymous\" data-page />\n    \
         <script type=\"module\">{LOADER}</script>\n  </head>"
    );
    index = replace_once(&index, "  </head>", &start)
        .context("web/index.html must have one `  </head>`")?;
    fs::write(dist.join("index.html"), index)?;
    Ok(())
}

/// The script that starts the page: it imports the glue and instantiates
/// the module that the preload links name. It is the same for every build,
/// so the relay's Content-Security-Policy, which allows it by its hash,
/// stays right when the page is rebuilt under a running relay.
const LOADER: &str = "const page = rel => document.querySelector(`link[rel=${rel}][data-page]`).href; \
     const { default: init } = await import(page('modulepreload')); \
     await init({ module_or_path: page('preload') }); \
     dispatchEvent(new Event('meshtalk-started'));";

/// The files of `web/` that `index.html` links by name.
const PAGE_ASSETS: &[&str] = &["style.css", "favicon.svg"];

/// The first 16 hex digits of the SHA-256 of `parts` one after another.
fn content_hash(parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `text` with its one occurrence of `from` replaced by `to`; `None` when
/// `from` occurs not once.
fn replace_once(text: &str, from: &str, to: &str) -> Option<String> {
    (text.matches(from).count() == 1).then(|| text.replacen(from, to, 1))
}

/// Copies the directory tree `from` to `to`.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Writes `FILE.br` and `FILE.gz` next to each file of `dist` (old twins
/// replaced) and prints raw, gzip and Brotli sizes, with what a first
/// visit transfers.
fn precompress(dist: &Path) -> Result<()> {
    let mut files: Vec<_> = fs::read_dir(dist)
        .context("cannot read dist/")?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| p.is_file() && !p.extension().is_some_and(|e| e == "br" || e == "gz"));
    files.sort();
    let (mut raw, mut gz, mut br) = (0, 0, 0);
    eprintln!("xtask: the page on the wire (bytes: raw, gzip, brotli)");
    for path in files {
        let body = fs::read(&path)?;
        let gzip = gzip(&body)?;
        let brotli = brotli(&body)?;
        let twin = |ext: &str| {
            let mut name = path.clone().into_os_string();
            name.push(ext);
            name
        };
        fs::write(twin(".gz"), &gzip)?;
        fs::write(twin(".br"), &brotli)?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        eprintln!(
            "xtask:   {name:<48} {:>9} {:>9} {:>9}",
            body.len(),
            gzip.len(),
            brotli.len()
        );
        (raw, gz, br) = (raw + body.len(), gz + gzip.len(), br + brotli.len());
    }
    eprintln!(
        "xtask:   {:<48} {raw:>9} {gz:>9} {br:>9}",
        "a first visit (all of it)"
    );
    Ok(())
}

/// `body` gzipped at the best compression.
fn gzip(body: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(body)?;
    Ok(encoder.finish()?)
}

/// `body` in Brotli at the best quality, with a 16 MiB window.
fn brotli(body: &[u8]) -> Result<Vec<u8>> {
    let params = brotli::enc::BrotliEncoderParams {
        quality: 11,
        lgwin: 24,
        size_hint: body.len(),
        ..Default::default()
    };
    let mut out = Vec::new();
    brotli::BrotliCompress(&mut &body[..], &mut out, &params)?;
    Ok(out)
}

/// A wasm module without the custom sections named in `names`. Fails on
/// anything that is not a well-formed sequence of sections.
fn strip_sections(module: &[u8], names: &[&str]) -> Result<Vec<u8>> {
    const HEADER: usize = 8;
    if module.len() < HEADER || &module[..4] != b"\0asm" {
        bail!("no wasm header");
    }
    let mut out = module[..HEADER].to_vec();
    let mut at = HEADER;
    while at < module.len() {
        let start = at;
        let id = module[at];
        let (size, body) = leb128(module, at + 1)?;
        let end = body
            .checked_add(size)
            .filter(|&e| e <= module.len())
            .context("section runs past the end")?;
        let dropped = id == 0 && {
            let (len, name_at) = leb128(module, body)?;
            let name = module
                .get(name_at..name_at + len)
                .context("bad section name")?;
            names.iter().any(|n| n.as_bytes() == name)
        };
        if !dropped {
            out.extend_from_slice(&module[start..end]);
        }
        at = end;
    }
    Ok(out)
}

/// Reads an unsigned LEB128 number; returns it and the offset after it.
fn leb128(bytes: &[u8], mut at: usize) -> Result<(usize, usize)> {
    let mut value = 0usize;
    for shift in (0..35).step_by(7) {
        let byte = *bytes.get(at).context("truncated number")?;
        at += 1;
        value |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok((value, at));
        }
    }
    bail!("number too long")
}

/// The browser crate's tests in headless Chromium: `cargo test` for
/// wasm32 with wasm-bindgen's test runner (a debug build: with
/// `--release`, `-Z build-std` builds `core` twice and fails), with the
/// wasm toolchain's environment plus `extra`. The runner drives Chromium
/// through chromedriver with the options in `crates/browser/webdriver.json`.
pub fn browser_tests(wasm: &Wasm, extra: &[(String, String)]) -> Result<()> {
    let mut env = wasm.env();
    env.push(("CARGO_TARGET_DIR".into(), wasm_target_dir()));
    env.push((
        "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER".into(),
        "wasm-bindgen-test-runner".into(),
    ));
    if std::env::var_os("CHROMEDRIVER").is_none() && Path::new("/usr/bin/chromedriver").exists() {
        env.push(("CHROMEDRIVER".into(), "/usr/bin/chromedriver".into()));
    }
    env.extend_from_slice(extra);
    cargo(&["test", "-p", PAGE, "--target", toolchain::WASM_TARGET])
        .envs(&env)
        .run()
}

/// The wasm build's own target dir, absolute (wasm-bindgen runs from the
/// workspace root, cargo's test runner from the crate's directory).
fn wasm_target_dir() -> String {
    workspace_root().join("target/wasm").display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_twins_decompress_to_the_file() -> Result<()> {
        use std::io::Read;
        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(&gzip(&body)?[..]).read_to_end(&mut unzipped)?;
        assert_eq!(unzipped, body);
        let mut unbrotlied = Vec::new();
        brotli::Decompressor::new(&brotli(&body)?[..], 4096).read_to_end(&mut unbrotlied)?;
        assert_eq!(unbrotlied, body);
        Ok(())
    }

    #[test]
    fn strips_only_the_named_custom_sections() -> Result<()> {
        let mut module = b"\0asm\x01\0\0\0".to_vec();
        let kept_type = [1u8, 4, 1, 0x60, 0, 0];
        module.extend_from_slice(&kept_type);
        module.extend_from_slice(&[0, 7, 4, b'n', b'a', b'm', b'e', 0xaa, 0xbb]);
        let kept_custom = [0u8, 4, 2, b'h', b'i', 0xcc];
        module.extend_from_slice(&kept_custom);
        let stripped = strip_sections(&module, &["name"])?;
        let mut expected = b"\0asm\x01\0\0\0".to_vec();
        expected.extend_from_slice(&kept_type);
        expected.extend_from_slice(&kept_custom);
        assert_eq!(stripped, expected);
        assert!(strip_sections(b"not wasm", &["name"]).is_err());
        assert!(strip_sections(b"\0asm\x01\0\0\0\x01\x09", &["name"]).is_err());
        Ok(())
    }
}
