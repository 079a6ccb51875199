//! The other CLI commands: publish/subscribe on any topic, listen, dht.

use anyhow::Result;
use meshtalk_protocol::{libp2p::multiaddr::Protocol, transport::Transport};
use meshtalk_tests::{Proc, Relay, WAIT, bin, temp_dir};

fn meshtalk(name: &str, args: &[&str]) -> Result<Proc> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    Proc::spawn(name, &bin("meshtalk")?, &args)
}

#[test]
fn raw_publish_reaches_raw_subscriber_through_the_relay() -> Result<()> {
    let relay = Relay::start(&temp_dir("pubsub"))?;
    let addr = relay.addr(Transport::Tcp)?.to_string();
    let mut sub = meshtalk(
        "sub",
        &[
            "subscribe",
            "--topic",
            "p2p-pubsub",
            "--raw",
            "--connect",
            &addr,
        ],
    )?;
    // The subscriber is up once the relay follows its topic; the publisher
    // holds its lines until then anyway.
    let mut publisher = meshtalk(
        "pub",
        &[
            "publish",
            "--topic",
            "p2p-pubsub",
            "--raw",
            "--connect",
            &addr,
        ],
    )?;
    publisher.send_line("first raw line")?;
    publisher.send_line("second raw line")?;
    publisher.close_stdin();
    assert!(publisher.wait_exit(WAIT)?.success());
    sub.wait_for("first", |l| (l == "first raw line").then_some(()))?;
    sub.wait_for("second", |l| (l == "second raw line").then_some(()))?;
    Ok(())
}

#[test]
fn chat_text_published_to_a_room_topic_reaches_a_decoding_subscriber() -> Result<()> {
    let relay = Relay::start(&temp_dir("pubsub-room"))?;
    let addr = relay.addr(Transport::Quic)?.to_string();
    let mut sub = meshtalk(
        "sub",
        &[
            "subscribe",
            "--topic",
            "meshtalk/room/news",
            "--connect",
            &addr,
        ],
    )?;
    let mut publisher = meshtalk(
        "pub",
        &[
            "publish",
            "--topic",
            "meshtalk/room/news",
            "--connect",
            &addr,
        ],
    )?;
    publisher.send_line("hello news")?;
    publisher.close_stdin();
    assert!(publisher.wait_exit(WAIT)?.success());
    sub.wait_for("decoded text", |l| (l == "hello news").then_some(()))?;
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
