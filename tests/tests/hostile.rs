//! A peer publishing junk on a room topic is rejected: nobody shows its
//! messages, the relay counts them, and honest peers keep chatting.

use anyhow::Result;
use meshtalk_protocol::{
    libp2p::Multiaddr,
    transport::Transport,
    wire::{self, ChatMessage, Payload},
};
use meshtalk_tests::{ChatPeer, Relay, hostile, temp_dir};

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

fn rejected(relay: &Relay) -> Result<usize> {
    Ok(relay.metric("meshtalk_rejected_messages_total")? as usize)
}
