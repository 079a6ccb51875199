//! A peer publishing junk on a room topic is rejected: nobody shows its
//! messages, the relay counts them, and honest peers keep chatting. A peer
//! publishing too fast is cut off.

use anyhow::Result;
use std::time::Duration;

use meshtalk_protocol::{
    engine::EngineConfig,
    libp2p::Multiaddr,
    transport::Transport,
    wire::{self, ChatMessage, Payload},
};
use meshtalk_tests::{ChatPeer, Relay, WAIT, eventually, hostile, peer::Node, temp_dir};

#[test]
fn junk_from_a_hostile_peer_is_rejected_and_honest_peers_keep_chatting() -> Result<()> {
    let relay = Relay::start(&temp_dir("hostile"))?;
    let addr = relay.addr(Transport::Tcp)?;
    let mut a = ChatPeer::start("a", &addr, "lobby", &[])?;
    let mut b = ChatPeer::start("b", &addr, "lobby", &["--listen", "/ip4/127.0.0.1/tcp/0"])?;
    let b_addr: Multiaddr = b.proc.wait_json("b listening", |v| {
        (v["type"] == "listening")
            .then(|| v["addr"].as_str()?.parse().ok())
            .flatten()
    })?;
    a.wait_joined(&b.peer_id)?;
    b.wait_joined(&a.peer_id)?;

    let oversized = wire::encode(&Payload::Message(ChatMessage::new("x".repeat(5000))));
    let mut not_utf8 = wire::encode(&Payload::Message(ChatMessage::new("JUNK-UTF8")));
    let at = not_utf8
        .windows(4)
        .position(|w| w == b"JUNK")
        .ok_or_else(|| anyhow::anyhow!("marker not found"))?;
    not_utf8[at] = 0xff;
    let far_future = {
        let mut m = ChatMessage::new("JUNK-FUTURE");
        m.created_ms += 10 * 60 * 1000;
        wire::encode(&Payload::Message(m))
    };
    let long_nick = wire::encode(&Payload::Nick("JUNK".repeat(20)));
    let junk = vec![
        b"JUNK not protobuf".to_vec(),
        oversized,
        not_utf8,
        far_future,
        long_nick,
    ];
    let count = junk.len();
    // One hostile peer per kind of junk, straight to the relay and straight
    // to b, so both validate every kind.
    for payload in junk {
        hostile::publish_junk(
            &[addr.clone(), b_addr.clone()],
            "meshtalk/room/lobby",
            vec![payload],
        )?;
    }

    a.proc.send_line("still here")?;
    b.wait_message("still here")?;
    b.proc.send_line("me too")?;
    a.wait_message("me too")?;

    for peer in [&a, &b] {
        let junk_seen: Vec<&String> = peer
            .proc
            .seen
            .iter()
            .filter(|l| l.contains("JUNK") || l.contains("xxxxxxxx"))
            .collect();
        assert!(
            junk_seen.is_empty(),
            "{} showed junk: {junk_seen:?}",
            peer.proc.name
        );
    }
    let metrics = relay.get("/metrics")?;
    assert_eq!(rejected(&relay)?, count, "{metrics}");
    for reason in [
        "malformed",
        "text_too_long",
        "not_utf8",
        "from_the_future",
        "nick_too_long",
    ] {
        assert!(
            metrics.contains(&format!("reason=\"{reason}\"")),
            "no {reason} in {metrics}"
        );
    }

    // A peer that keeps sending junk loses its score and is graylisted: the
    // relay stops even looking at its messages.
    let flood: Vec<Vec<u8>> = (0..12).map(|i| format!("JUNK {i}").into_bytes()).collect();
    hostile::publish_junk(&[addr], "meshtalk/room/lobby", flood)?;
    a.proc.send_line("after the flood")?;
    b.wait_message("after the flood")?;
    let looked_at = rejected(&relay)? - count;
    assert!(
        (1..12).contains(&looked_at),
        "relay validated {looked_at} of 12 junk messages"
    );
    Ok(())
}

/// A peer publishing valid messages faster than the relay's per-author
/// limit gets its burst through; then its messages are dropped, its score
/// falls, and the relay disconnects it (and would refuse it for a while),
/// while honest peers chat on.
#[test]
fn a_flooder_over_the_publish_rate_limit_is_cut_off() -> Result<()> {
    let relay = Relay::start_with(
        &temp_dir("flooder"),
        &["--publish-rate", "2", "--publish-burst", "5"],
    )?;
    let addr = relay.addr(Transport::Tcp)?;
    let mut a = ChatPeer::start("a", &addr, "lobby", &[])?;
    let mut b = ChatPeer::start("b", &addr, "lobby", &[])?;
    a.wait_joined(&b.peer_id)?;
    b.wait_joined(&a.peer_id)?;
    const FLOOD: usize = 60;
    let flood = (0..FLOOD)
        .map(|i| wire::encode(&Payload::Message(ChatMessage::new(format!("FLOOD {i}")))))
        .collect();
    hostile::publish_junk(std::slice::from_ref(&addr), "meshtalk/room/lobby", flood)?;
    eventually("the flooder graylisted", || {
        Ok(relay.metric("meshtalk_graylisted_peers_total")? >= 1.0)
    })?;
    a.proc.send_line("after the flood")?;
    b.wait_message("after the flood")?;
    let shown = b.proc.seen.iter().filter(|l| l.contains("FLOOD")).count();
    assert!(
        (5..FLOOD / 2).contains(&shown),
        "b showed {shown} of {FLOOD} flood messages (burst 5, then 2 a second)"
    );
    let limited = relay.metric("meshtalk_rejected_messages_total{reason=\"rate_limited\"}")?;
    assert!(limited >= 1.0, "{}", relay.get("/metrics")?);
    Ok(())
}

fn rejected(relay: &Relay) -> Result<usize> {
    Ok(relay.metric("meshtalk_rejected_messages_total")? as usize)
}

/// One address holds at most `--max-connections-per-ip` connections; a
/// closed one frees its slot.
#[test]
fn one_address_gets_at_most_its_share_of_connections() -> Result<()> {
    async fn dial(node: &mut Node, addr: &Multiaddr) -> Result<()> {
        node.connect(std::slice::from_ref(addr), Duration::from_secs(10))
            .await
            .map(drop)
    }
    let relay = Relay::start_with(&temp_dir("per-ip"), &["--max-connections-per-ip", "2"])?;
    let addr = relay.addr(Transport::Tcp)?;
    tokio::runtime::Runtime::new()?.block_on(async {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(Node::start(EngineConfig::default(), &[], WAIT).await?);
        }
        dial(&mut nodes[0], &addr).await?;
        dial(&mut nodes[1], &addr).await?;
        assert!(
            dial(&mut nodes[2], &addr).await.is_err(),
            "a third connection from 127.0.0.1 was let in"
        );
        let first = nodes.remove(0);
        first.handle.shutdown().await?;
        tokio::time::timeout(Duration::from_secs(10), first.task).await??;
        // The relay frees the slot once it sees the connection close.
        let mut tries = 0;
        loop {
            match dial(&mut nodes[1], &addr).await {
                Ok(()) => return Ok(()),
                Err(_) if tries < 5 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e.context("the freed slot was not given to a newcomer")),
            }
        }
    })
}
