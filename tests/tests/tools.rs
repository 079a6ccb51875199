//! The other CLI commands: publish/subscribe on any topic, listen, dht.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use meshtalk_protocol::{libp2p::multiaddr::Protocol, transport::Transport};
use meshtalk_tests::{Proc, Relay, WAIT, bin, eventually, temp_dir};

fn meshtalk(name: &str, args: &[&str]) -> Result<Proc> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    Proc::spawn(name, &bin("meshtalk")?, &args)
}

/// `meshtalk subscribe` and `meshtalk publish` on `topic` through a relay:
/// every line published arrives, in order, as the subscriber prints it.
fn publish_reaches_subscriber(
    transport: Transport,
    topic: &str,
    raw: bool,
    lines: &[&str],
) -> Result<()> {
    let relay = Relay::start(&temp_dir("pubsub"))?;
    let addr = relay.addr(transport)?.to_string();
    let mut args = vec!["--topic", topic, "--connect", &addr];
    if raw {
        args.push("--raw");
    }
    let mut sub = meshtalk("sub", &[&["subscribe"], args.as_slice()].concat())?;
    // The publisher holds its lines until the relay follows the topic,
    // which it does once the subscriber is in.
    let mut publisher = meshtalk("pub", &[&["publish"], args.as_slice()].concat())?;
    for line in lines {
        publisher.send_line(line)?;
    }
    publisher.close_stdin();
    assert!(publisher.wait_exit(WAIT)?.success());
    for line in lines {
        sub.wait_for(line, |l| (l == *line).then_some(()))?;
    }
    Ok(())
}

#[test]
fn raw_publish_reaches_raw_subscriber_through_the_relay() -> Result<()> {
    publish_reaches_subscriber(
        Transport::Tcp,
        "p2p-pubsub",
        true,
        &["first raw line", "second raw line"],
    )
}

#[test]
fn chat_text_published_to_a_room_topic_reaches_a_decoding_subscriber() -> Result<()> {
    publish_reaches_subscriber(
        Transport::Quic,
        "meshtalk/room/news",
        false,
        &["hello news"],
    )
}

/// Fed 40 MB faster than the network takes it, `meshtalk publish` reads
/// its input at the network's pace: every line arrives, in order, at a
/// subscriber it dials directly, and the slowdown is said in one line
/// (not a warning per message, as gossipsub logs them).
#[test]
fn a_fast_publisher_waits_for_the_network_and_loses_nothing() -> Result<()> {
    const LINES: usize = 40_000;
    let mut sub = meshtalk(
        "sub",
        &[
            "subscribe",
            "--raw",
            "--topic",
            "bulk",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ],
    )?;
    let mut addr = None;
    eventually("the subscriber's address", || {
        addr = sub
            .stderr_lines()
            .iter()
            .find_map(|l| l.strip_prefix("meshtalk: listening on ").map(str::to_owned));
        Ok(addr.is_some())
    })?;
    let addr = addr.context("no address")?;
    let mut publisher = meshtalk(
        "pub",
        &["publish", "--raw", "--topic", "bulk", "--connect", &addr],
    )?;
    let padding = "x".repeat(1000);
    let input: String = (0..LINES).map(|i| format!("{i:08}{padding}\n")).collect();
    publisher.send_bytes(input.as_bytes())?;
    publisher.close_stdin();
    ensure!(publisher.wait_exit(Duration::from_secs(180))?.success());
    let last = format!("{:08}", LINES - 1);
    sub.wait_for("the last line", |l| l.starts_with(&last).then_some(()))?;
    let got: Vec<usize> = sub
        .seen
        .iter()
        .filter_map(|l| l.get(..8)?.parse().ok())
        .collect();
    ensure!(
        got.len() == LINES && got.windows(2).all(|w| w[1] == w[0] + 1),
        "{} of {LINES} lines, or out of order",
        got.len()
    );
    let stderr = publisher.stderr_lines();
    ensure!(
        stderr.len() <= 1 && !stderr.iter().any(|l| l.contains("Send Queue")),
        "{stderr:?}"
    );
    Ok(())
}

#[test]
fn listening_peer_can_be_pinged_directly() -> Result<()> {
    let mut listener = meshtalk("listen", &["listen", "--listen", "/ip4/127.0.0.1/tcp/0"])?;
    let addr = listener.wait_for("listen address", |l| {
        l.strip_prefix("listening on ")
            .filter(|a| a.contains("/p2p/"))
            .map(str::to_owned)
    })?;
    let mut ping = meshtalk("ping", &["ping", &addr, "--count", "2"])?;
    assert!(ping.wait_exit(WAIT)?.success(), "{:?}", ping.stderr_lines());
    assert!(
        ping.seen.iter().any(|l| l.starts_with("2 replies")),
        "{:?}",
        ping.seen
    );
    Ok(())
}

#[test]
fn dht_bootstraps_against_the_relay_and_finds_it() -> Result<()> {
    let relay = Relay::start(&temp_dir("dht"))?;
    let addr = relay.addr(Transport::Tcp)?;
    let relay_id = addr
        .iter()
        .find_map(|p| match p {
            Protocol::P2p(id) => Some(id.to_string()),
            _ => None,
        })
        .unwrap_or_default();
    let mut boot = meshtalk("dht", &["dht", "--connect", &addr.to_string(), "bootstrap"])?;
    assert!(boot.wait_exit(WAIT)?.success(), "{:?}", boot.stderr_lines());
    assert!(
        boot.seen
            .iter()
            .any(|l| l.starts_with("routing table + ") && l.contains(&relay_id)),
        "{:?}",
        boot.seen
    );
    assert!(
        boot.seen.iter().any(|l| l.starts_with("bootstrap done")),
        "{:?}",
        boot.seen
    );

    let mut find = meshtalk(
        "find",
        &[
            "dht",
            "--connect",
            &addr.to_string(),
            "find-peer",
            &relay_id,
        ],
    )?;
    assert!(find.wait_exit(WAIT)?.success(), "{:?}", find.stderr_lines());
    assert!(
        find.seen
            .iter()
            .any(|l| l.starts_with(&format!("{relay_id} at /ip4/127.0.0.1/"))),
        "{:?}",
        find.seen
    );

    let stranger = meshtalk_protocol::libp2p::identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id()
        .to_string();
    let mut missing = meshtalk(
        "find",
        &[
            "dht",
            "--connect",
            &addr.to_string(),
            "find-peer",
            &stranger,
        ],
    )?;
    assert!(!missing.wait_exit(WAIT)?.success());
    let stderr = missing.stderr_lines();
    assert!(stderr.iter().any(|l| l.contains("not found")), "{stderr:?}");
    Ok(())
}
