//! The relay: stable identity across restarts, HTTP API, the page on the
//! wire, config handling.

use std::io::Read;

use anyhow::{Result, ensure};
use meshtalk_protocol::{libp2p::multiaddr::Protocol, transport::Transport};
use meshtalk_tests::{Proc, Relay, TestCertificate, WAIT, bin, http_request, temp_dir};
use serde_json::Value;

fn certhash(relay: &Relay) -> Result<String> {
    let addr = relay.addr(Transport::WebRtcDirect)?;
    addr.iter()
        .find_map(|p| match p {
            Protocol::Certhash(hash) => Some(format!("{hash:?}")),
            _ => None,
        })
        .ok_or_else(|| anyhow::anyhow!("no certhash in {addr}"))
}

fn peer_id(relay: &Relay) -> Option<String> {
    relay.addrs[0].iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id.to_string()),
        _ => None,
    })
}

#[test]
fn restarted_relay_keeps_its_peer_id_and_certhash() -> Result<()> {
    let dir = temp_dir("restart");
    let mut first = Relay::start(&dir)?;
    let (id, hash) = (peer_id(&first), certhash(&first)?);
    assert!(
        first.proc.terminate(WAIT)?.success(),
        "relay did not stop cleanly on SIGTERM"
    );
    drop(first);
    let second = Relay::start(&dir)?;
    assert_eq!(peer_id(&second), id);
    assert_eq!(certhash(&second)?, hash);
    // Another data dir is another relay.
    let third = Relay::start(&temp_dir("restart-other"))?;
    assert_ne!(peer_id(&third), id);
    Ok(())
}

#[test]
fn http_api_lists_addresses_metrics_and_health() -> Result<()> {
    let relay = Relay::start(&temp_dir("http"))?;
    let addrs: Value = serde_json::from_str(&relay.get("/api/addrs")?)?;
    assert_eq!(
        Some(addrs["peer_id"].as_str()),
        Some(peer_id(&relay).as_deref())
    );
    let listed: Vec<&str> = addrs["addrs"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for addr in &relay.addrs {
        assert!(
            listed.contains(&addr.to_string().as_str()),
            "{addr} missing from {listed:?}"
        );
    }
    assert_eq!(relay.get("/healthz")?.trim(), "ok");
    let metrics = relay.get("/metrics")?;
    assert!(metrics.contains("meshtalk_rejected_messages"), "{metrics}");
    assert!(metrics.contains("libp2p_swarm"), "{metrics}");
    Ok(())
}

/// The page's files go out in the compressed twin the browser accepts,
/// content-named ones cached for good and `index.html` revalidated, under
/// a Content-Security-Policy that allows its inline loader by hash; HTTP
/// connections beyond the cap are closed at once.
#[test]
fn the_page_goes_out_compressed_cached_and_under_a_policy() -> Result<()> {
    let web = temp_dir("web-page");
    std::fs::create_dir_all(&web)?;
    let loader = "import init from '/app-0123456789abcdef.js'; await init();";
    std::fs::write(
        web.join("index.html"),
        format!("<!doctype html><script type=\"module\">{loader}</script>"),
    )?;
    let wasm = "app-0123456789abcdef_bg.wasm";
    std::fs::write(web.join(wasm), b"\0asm raw")?;
    std::fs::write(web.join(format!("{wasm}.br")), b"brotli twin")?;
    std::fs::write(web.join(format!("{wasm}.gz")), b"gzip twin")?;
    let relay = Relay::start_with(
        &temp_dir("web-relay"),
        &[
            "--web-dir",
            &web.display().to_string(),
            "--max-http-connections",
            "3",
        ],
    )?;
    let path = format!("/{wasm}");
    for (accepts, body, encoding) in [
        ("gzip, deflate, br, zstd", &b"brotli twin"[..], Some("br")),
        ("gzip", b"gzip twin", Some("gzip")),
        ("identity", b"\0asm raw", None),
    ] {
        let got = http_request(&relay.http, &path, &[("Accept-Encoding", accepts)])?;
        ensure!(
            got.status == 200 && got.body == body,
            "{accepts}: {}",
            got.status
        );
        ensure!(got.header("content-encoding") == encoding, "{accepts}");
        ensure!(got.header("content-type") == Some("application/wasm"));
        ensure!(
            got.header("cache-control") == Some("public, max-age=31536000, immutable"),
            "{:?}",
            got.header("cache-control")
        );
        ensure!(
            got.header("vary")
                .is_some_and(|v| v.to_ascii_lowercase().contains("accept-encoding")),
            "{:?}",
            got.headers
        );
    }
    // A revalidation answered 304 keeps the file's caching.
    let first = http_request(&relay.http, &path, &[])?;
    let modified = first.header("last-modified").unwrap_or_default().to_owned();
    let again = http_request(&relay.http, &path, &[("If-Modified-Since", &modified)])?;
    ensure!(
        again.status == 304
            && again.header("cache-control") == Some("public, max-age=31536000, immutable"),
        "{}: {:?}",
        again.status,
        again.headers
    );
    let index = http_request(&relay.http, "/", &[])?;
    ensure!(index.status == 200 && index.header("cache-control") == Some("no-cache"));
    let csp = index
        .header("content-security-policy")
        .unwrap_or_default()
        .to_owned();
    let hash = {
        use base64::Engine as _;
        use sha2::Digest as _;
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(loader.as_bytes()))
    };
    ensure!(
        csp.contains(&format!("'sha256-{hash}'"))
            && csp.contains("'wasm-unsafe-eval'")
            && csp.starts_with("default-src 'none'"),
        "{csp}"
    );
    for escape in [
        "/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/missing.js",
    ] {
        ensure!(
            http_request(&relay.http, escape, &[])?.status == 404,
            "{escape}"
        );
    }

    // Three idle connections fill the cap: a fourth is closed unanswered;
    // once one goes, the relay answers again.
    let host = relay.http.trim_start_matches("http://").to_owned();
    let mut idle: Vec<_> = (0..3)
        .map(|_| std::net::TcpStream::connect(&host))
        .collect::<Result<_, _>>()?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut fourth = std::net::TcpStream::connect(&host)?;
    fourth.set_read_timeout(Some(WAIT))?;
    let mut byte = [0u8; 1];
    let closed = match fourth.read(&mut byte) {
        Ok(0) => true,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
        ),
        Ok(_) => false,
    };
    ensure!(closed, "a connection over the cap was kept");
    idle.pop();
    meshtalk_tests::eventually("an answer once a connection closed", || {
        Ok(relay.get("/healthz").is_ok_and(|b| b == "ok\n"))
    })?;
    Ok(())
}

#[test]
fn corrupt_identity_file_is_a_clear_error_not_a_new_identity() -> Result<()> {
    let dir = temp_dir("corrupt");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("identity.key"), b"not a key")?;
    let mut relay = Proc::spawn(
        "relay",
        &bin("meshtalk-relay")?,
        &[
            "--data-dir".into(),
            dir.display().to_string(),
            "--http".into(),
            "127.0.0.1:0".into(),
        ],
    )?;
    let status = relay.wait_exit(WAIT)?;
    assert!(!status.success());
    let stderr = relay.stderr_lines();
    let last = stderr.last().cloned().unwrap_or_default();
    assert!(
        last.contains("identity.key") && last.contains("corrupt"),
        "{stderr:?}"
    );
    assert!(!stderr.iter().any(|l| l.contains("panicked")), "{stderr:?}");
    assert_eq!(std::fs::read(dir.join("identity.key"))?, b"not a key");
    Ok(())
}

#[test]
fn config_file_sets_listen_addresses_and_bad_keys_are_errors() -> Result<()> {
    let dir = temp_dir("config");
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "listen = [\"/ip4/127.0.0.1/tcp/0\"]\nhttp = \"127.0.0.1:0\"\ndata-dir = \"{}\"\nmax-connections = 10\n",
            dir.join("data").display()
        ),
    )?;
    let with_config = || {
        Proc::spawn(
            "relay",
            &bin("meshtalk-relay")?,
            &["--config".into(), config.display().to_string()],
        )
    };
    let mut relay = with_config()?;
    relay.wait_for("tcp listen line", |l| {
        (l.starts_with("listening on /ip4/127.0.0.1/tcp/")).then_some(())
    })?;
    relay.kill();

    std::fs::write(
        &config,
        "listen = [\"/ip4/127.0.0.1/tcp/0\"]\nno-such-key = 1\n",
    )?;
    let mut relay = with_config()?;
    assert!(!relay.wait_exit(WAIT)?.success());
    let stderr = relay.stderr_lines();
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("relay.toml") && l.contains("no-such-key")),
        "{stderr:?}"
    );
    Ok(())
}

/// TLS settings that cannot work stop the relay with one line naming the
/// problem (and the file), never a panic.
#[test]
fn tls_settings_that_cannot_work_are_one_clear_line() -> Result<()> {
    let dir = temp_dir("tls-errors");
    let good = TestCertificate::write(&dir.join("good"))?;
    let other = TestCertificate::write(&dir.join("other"))?;
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n")?;
    let path = |p: &std::path::Path| p.display().to_string();
    let cases: [(&[String], &str); 4] = [
        (&["--tls-cert".into(), path(&good.cert)], "--tls-key"),
        (
            &[
                "--tls-cert".into(),
                path(&garbage),
                "--tls-key".into(),
                path(&good.key),
            ],
            "garbage.pem: no PEM certificate",
        ),
        (
            &[
                "--tls-cert".into(),
                path(&good.cert),
                "--tls-key".into(),
                path(&other.key),
            ],
            "do not make a usable TLS identity",
        ),
        (
            &["--listen".into(), "/ip4/127.0.0.1/tcp/0/tls/ws".into()],
            "is secure WebSocket: give --tls-cert and --tls-key",
        ),
    ];
    for (extra, expected) in cases {
        let mut args = vec![
            "--data-dir".to_owned(),
            path(&dir.join("data")),
            "--http".into(),
            "127.0.0.1:0".into(),
        ];
        args.extend_from_slice(extra);
        let mut relay = Proc::spawn("relay", &bin("meshtalk-relay")?, &args)?;
        assert!(!relay.wait_exit(WAIT)?.success(), "{extra:?} started");
        let stderr = relay.stderr_lines();
        assert!(
            stderr.iter().any(|l| l.contains(expected)),
            "{extra:?}: {stderr:?}"
        );
        assert!(!stderr.iter().any(|l| l.contains("panicked")), "{stderr:?}");
    }
    Ok(())
}
