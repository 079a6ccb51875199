//! Room history: a `meshtalk chat` peer that joins late sees what was said
//! before it came (from the relay, over TCP and QUIC), in order, once, and
//! marked as history; a peer that serves forged history is not believed.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use futures::StreamExt;
use meshtalk_protocol::{
    engine::{EngineConfig, Event, HistoryConfig},
    framing::{read_message, write_message},
    history::{
        SignedMessage, sign,
        store::Limits,
        sync::{HISTORY_PROTOCOL, HistoryAnswer},
    },
    libp2p::{Multiaddr, gossipsub::TopicHash, identity::Keypair},
    rooms::Room,
    transport::Transport,
    wire::{ChatMessage, Payload, encode},
};
use meshtalk_tests::{ChatPeer, Relay, WAIT, load::relay_only, peer, temp_dir};
use prost::Message as _;
use serde_json::Value;

/// A peer says `lines` in `room` through `relay` and leaves.
fn say_and_leave(relay: &Relay, room: &str, nick: &str, lines: &[&str]) -> Result<()> {
    let addr = relay.addr(Transport::Tcp)?;
    let mut author = ChatPeer::start(nick, &addr, room, &["--nick", nick])?;
    for line in lines {
        author.proc.send_line(line)?;
    }
    author.proc.close_stdin();
    let status = author.proc.wait_exit(WAIT)?;
    ensure!(status.success(), "{nick} exited with {status}");
    Ok(())
}

/// The messages a peer printed, as (text, history).
fn messages(peer: &ChatPeer) -> Vec<(String, bool)> {
    peer.proc
        .seen
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "message")
        .map(|v| {
            (
                v["text"].as_str().unwrap_or_default().to_owned(),
                v["history"] == true,
            )
        })
        .collect()
}

/// Waits until `peer` has shown the history lines `expected`, and checks
/// they came in order, once, marked, under their author's nickname.
fn sees_history(peer: &mut ChatPeer, expected: &[&str], nick: &str) -> Result<()> {
    for text in expected {
        let m = peer.wait_message(text)?;
        ensure!(m["history"] == true, "not marked as history: {m}");
        ensure!(m["nick"] == nick, "nickname: {m}");
    }
    let shown: Vec<String> = messages(peer)
        .into_iter()
        .filter(|(_, history)| *history)
        .map(|(text, _)| text)
        .collect();
    ensure!(shown == expected, "history shown: {shown:?}");
    Ok(())
}

#[test]
fn a_late_joiner_gets_the_history_over_tcp_and_over_quic() -> Result<()> {
    let relay = Relay::start(&temp_dir("history-late"))?;
    let said = ["first", "second", "third"];
    say_and_leave(&relay, "late", "ada", &said)?;

    let mut tcp = ChatPeer::start("tcp", &relay.addr(Transport::Tcp)?, "late", &[])?;
    sees_history(&mut tcp, &said, "ada")?;
    let mut quic = ChatPeer::start("quic", &relay.addr(Transport::Quic)?, "late", &[])?;
    sees_history(&mut quic, &said, "ada")?;

    // Live lines are not history, and nothing shows twice.
    quic.wait_joined(&tcp.peer_id)?;
    tcp.proc.send_line("live now")?;
    let m = quic.wait_message("live now")?;
    ensure!(m["history"] == false, "{m}");
    std::thread::sleep(Duration::from_secs(1));
    let texts = quic.texts();
    ensure!(
        texts == ["first", "second", "third", "live now"],
        "shown: {texts:?}"
    );

    // --no-history asks nobody.
    let mut fresh = ChatPeer::start(
        "no-history",
        &relay.addr(Transport::Tcp)?,
        "late",
        &["--no-history"],
    )?;
    fresh.wait_joined(&tcp.peer_id)?;
    tcp.proc.send_line("for everyone")?;
    fresh.wait_message("for everyone")?;
    ensure!(fresh.texts() == ["for everyone"], "{:?}", fresh.texts());
    Ok(())
}

/// Newcomers that join a room at once, each asking the relay for history.
const AT_ONCE: usize = 40;

#[test]
fn forty_newcomers_joining_at_once_all_get_the_history() -> Result<()> {
    // libp2p-stream hands the relay one stream at a time and resets those
    // that come while the one before waits to be taken: the relay must take
    // them as they come and a newcomer ask again, or some of these requests
    // fail (7 of 40 did before).
    let relay = Relay::start(&temp_dir("history-at-once"))?;
    let said = ["one", "two"];
    say_and_leave(&relay, "burst", "ada", &said)?;
    let addr = relay.addr(Transport::Tcp)?;
    let config = EngineConfig {
        rooms: vec![Room::new("burst")?],
        discovery: relay_only(),
        ..EngineConfig::default()
    };
    tokio::runtime::Runtime::new()?.block_on(async {
        let joins =
            (0..AT_ONCE).map(|_| peer::connect(config.clone(), std::slice::from_ref(&addr)));
        let nodes = futures::future::join_all(joins).await;
        let waits = nodes.into_iter().map(|node| async move {
            let mut node = node?;
            peer::wait_for(&mut node, "the room's history", |event| {
                matches!(event, Event::HistoryFetched { lines, .. } if *lines == said.len())
            })
            .await
        });
        let failed = futures::future::join_all(waits)
            .await
            .into_iter()
            .filter(Result::is_err)
            .count();
        ensure!(
            failed == 0,
            "{failed} of {AT_ONCE} newcomers got no history"
        );
        Ok(())
    })
}

/// Records a hostile server makes up: a line claimed for someone else, a
/// signed line altered, one signed for another room, one unsigned.
fn forgeries(room: &TopicHash, victim: &Keypair) -> Vec<SignedMessage> {
    let mallory = Keypair::generate_ed25519();
    let line = |text: &str| encode(&Payload::Message(ChatMessage::new(text)));
    let mut stolen = sign(&mallory, room, &line("forged: stolen name"), 1);
    stolen.from = Some(victim.public().to_peer_id().to_bytes());
    let mut altered = sign(&mallory, room, &line("forged: before"), 2);
    altered.data = Some(line("forged: altered"));
    let elsewhere = TopicHash::from_raw("meshtalk/room/elsewhere");
    let other_room = sign(&mallory, &elsewhere, &line("forged: other room"), 3);
    let mut unsigned = sign(&mallory, room, &line("forged: unsigned"), 4);
    unsigned.signature = None;
    vec![stolen, altered, other_room, unsigned]
}

#[test]
fn forged_history_is_dropped_and_honest_history_still_arrives() -> Result<()> {
    let relay = Relay::start(&temp_dir("history-hostile"))?;
    let honest = ["honest one", "honest two"];
    say_and_leave(&relay, "hostile", "ada", &honest)?;

    // A room member that keeps no history of its own and answers every
    // request with forgeries.
    let runtime = tokio::runtime::Runtime::new()?;
    let room = Room::new("hostile")?;
    let config = EngineConfig {
        rooms: vec![room.clone()],
        history: HistoryConfig {
            limits: Limits {
                per_room: 0,
                ..Limits::default()
            },
            fetch: false,
        },
        ..EngineConfig::default()
    };
    let listen: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse()?;
    let mut hostile = runtime.block_on(peer::connect(config, &[relay.addr(Transport::Tcp)?]))?;
    runtime.block_on(hostile.handle.listen(listen))?;
    let mut at = None;
    runtime.block_on(peer::wait_for(&mut hostile, "a listen address", |e| {
        if let Event::Listening(addr) = e
            && Transport::of(addr) == Transport::Tcp
            && !addr.to_string().contains("p2p-circuit")
        {
            at = Some(addr.clone());
        }
        at.is_some()
    }))?;
    let at = at.context("no listen address")?;
    let answer = HistoryAnswer {
        lines: forgeries(&room.topic().hash(), &Keypair::generate_ed25519()),
        nicks: Vec::new(),
        more: Some(false),
        members: None,
    }
    .encode_to_vec();
    let mut requests = hostile.handle.streams().accept(HISTORY_PROTOCOL)?;
    runtime.spawn(async move {
        while let Some((_, mut stream)) = requests.next().await {
            if read_message(&mut stream, 1024).await.is_ok() {
                let _ = write_message(&mut stream, &answer).await;
            }
        }
    });

    let hostile_id = hostile.peer_id.to_string();
    let mut late = ChatPeer::start(
        "late",
        &relay.addr(Transport::Tcp)?,
        "hostile",
        &["--connect", &at.to_string()],
    )?;
    late.proc.wait_json("the forgeries refused", |v| {
        (v["type"] == "history_rejected" && v["peer"] == hostile_id.as_str())
            .then(|| v["records"].as_u64())
            .flatten()
            .filter(|n| *n == 4)
    })?;
    sees_history(&mut late, &honest, "ada")?;
    let forged: Vec<String> = late
        .texts()
        .into_iter()
        .filter(|t| t.starts_with("forged"))
        .collect();
    ensure!(forged.is_empty(), "forged lines shown: {forged:?}");
    runtime.block_on(hostile.handle.shutdown())?;
    Ok(())
}

/// Records the relay has committed to its database.
fn saved_on_disk(relay: &Relay) -> Result<u64> {
    Ok(relay.metric("meshtalk_history_records_saved_total")? as u64)
}

#[test]
fn the_relay_keeps_history_on_disk_through_a_kill_and_moves_a_damaged_file_aside() -> Result<()> {
    let dir = temp_dir("history-disk");
    let mut relay = Relay::start(&dir)?;
    let said = ["kept one", "kept two", "kept three"];
    say_and_leave(&relay, "disk", "ada", &said)?;
    // Three lines and ada's name, committed: then nothing is lost.
    let deadline = std::time::Instant::now() + WAIT;
    while saved_on_disk(&relay)? < 4 {
        ensure!(
            std::time::Instant::now() < deadline,
            "the relay did not save the history"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    relay.proc.kill();
    relay.restart(&[])?;
    let mut late = ChatPeer::start("after-kill", &relay.addr(Transport::Tcp)?, "disk", &[])?;
    sees_history(&mut late, &said, "ada")?;
    drop(late);

    // A damaged database: moved aside, a fresh one started, the relay up.
    relay.proc.kill();
    std::fs::write(dir.join("history.redb"), b"not a database at all")?;
    relay.restart(&[])?;
    let aside = std::fs::read_dir(&dir)?.filter_map(|e| e.ok()).any(|e| {
        e.file_name()
            .to_string_lossy()
            .starts_with("history.redb.corrupt-")
    });
    ensure!(aside, "the damaged file was not moved aside");
    let warned = relay
        .proc
        .stderr_lines()
        .iter()
        .any(|l| l.contains("history database is damaged"));
    ensure!(warned, "no warning about the damaged database");
    let mut fresh = ChatPeer::start("fresh", &relay.addr(Transport::Tcp)?, "disk", &[])?;
    let mut other = ChatPeer::start("other", &relay.addr(Transport::Tcp)?, "disk", &[])?;
    fresh.wait_joined(&other.peer_id)?;
    other.proc.send_line("after the damage")?;
    fresh.wait_message("after the damage")?;
    ensure!(fresh.texts() == ["after the damage"], "{:?}", fresh.texts());
    Ok(())
}
