//! The other CLI commands: publish/subscribe on any topic, listen, dht.

use anyhow::Result;
use meshtalk_protocol::{libp2p::multiaddr::Protocol, transport::Transport};
use meshtalk_tests::{Proc, Relay, WAIT, bin, temp_dir};

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
