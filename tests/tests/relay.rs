//! The relay: stable identity across restarts, HTTP API, config handling.

use anyhow::Result;
use meshtalk_protocol::{libp2p::multiaddr::Protocol, transport::Transport};
use meshtalk_tests::{Proc, Relay, WAIT, bin, temp_dir};
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
