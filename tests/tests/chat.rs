//! Two `meshtalk chat` peers connected only to a relay chat over each
//! transport, in both directions, and see each other's nickname changes;
//! a large room names those who speak without answering every newcomer,
//! and a newcomer to it names itself when it speaks, not on arrival.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::Result;
use futures::StreamExt;
use meshtalk_protocol::{
    engine::{ANSWER_NEWCOMERS_UP_TO, EngineConfig, Event},
    rooms::Room,
    transport::Transport,
};
use meshtalk_tests::{ChatPeer, Relay, WAIT, load::relay_only, peer, temp_dir};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn chat_over(transport: Transport) -> Result<()> {
    let relay = Relay::start(&temp_dir("chat"))?;
    let addr = relay.addr(transport)?;
    let mut a = ChatPeer::start("a", &addr, "lobby", &["--nick", "ada"])?;
    let mut b = ChatPeer::start("b", &addr, "lobby", &["--nick", "bob"])?;
    a.wait_joined(&b.peer_id)?;
    b.wait_joined(&a.peer_id)?;

    a.proc
        .send_line(&format!("hello over {transport} from a"))?;
    let m = b.wait_message(&format!("hello over {transport} from a"))?;
    assert_eq!(m["from"], a.peer_id.as_str());
    assert_eq!(m["nick"], "ada");
    assert_eq!(m["room"], "lobby");
    assert_eq!(m["id"].as_str().map(str::len), Some(32));

    b.proc
        .send_line(&format!("hello over {transport} from b"))?;
    let m = a.wait_message(&format!("hello over {transport} from b"))?;
    assert_eq!(m["from"], b.peer_id.as_str());
    assert_eq!(m["nick"], "bob");

    b.proc.send_line("/nick bobby")?;
    let b_id = b.peer_id.clone();
    a.proc.wait_json("nick change", |v| {
        (v["type"] == "nick" && v["from"] == b_id.as_str() && v["nick"] == "bobby").then_some(())
    })?;
    b.proc.send_line("after the rename")?;
    let m = a.wait_message("after the rename")?;
    assert_eq!(m["nick"], "bobby");
    Ok(())
}

#[test]
fn peers_chat_through_the_relay_over_tcp() -> Result<()> {
    chat_over(Transport::Tcp)
}

#[test]
fn peers_chat_through_the_relay_over_quic() -> Result<()> {
    chat_over(Transport::Quic)
}

#[test]
fn peers_chat_through_the_relay_over_websocket() -> Result<()> {
    chat_over(Transport::WebSocket)
}

#[test]
fn peers_chat_through_the_relay_over_webrtc_direct() -> Result<()> {
    chat_over(Transport::WebRtcDirect)
}

#[test]
fn rooms_are_separate() -> Result<()> {
    let relay = Relay::start(&temp_dir("rooms"))?;
    let addr = relay.addr(Transport::Tcp)?;
    let mut a = ChatPeer::start("a", &addr, "dev", &[])?;
    let mut b = ChatPeer::start("b", &addr, "dev", &[])?;
    let mut other = ChatPeer::start("other", &addr, "ops", &[])?;
    a.wait_joined(&b.peer_id)?;
    b.wait_joined(&a.peer_id)?;
    a.proc.send_line("only for dev")?;
    b.wait_message("only for dev")?;
    other.proc.drain_for(std::time::Duration::from_secs(2));
    assert!(other.texts().is_empty(), "ops saw {:?}", other.texts());
    Ok(())
}

#[test]
fn piped_lines_are_held_until_the_room_has_a_peer_then_chat_exits() -> Result<()> {
    let relay = Relay::start(&temp_dir("pipe"))?;
    let addr = relay.addr(Transport::Tcp)?;
    let mut listener = ChatPeer::start("listener", &addr, "lobby", &[])?;
    // `echo hi | meshtalk chat --connect ADDR`: stdin closes at once.
    let mut sender = ChatPeer::start("sender", &addr, "lobby", &[])?;
    sender.proc.send_line("hi")?;
    sender.proc.send_line("there")?;
    sender.proc.close_stdin();
    let status = sender.proc.wait_exit(meshtalk_tests::WAIT)?;
    assert!(status.success(), "chat exited with {status}");
    listener.wait_message("hi")?;
    listener.wait_message("there")?;
    Ok(())
}

/// In a room of more than [`ANSWER_NEWCOMERS_UP_TO`] members, those there
/// do not each answer a newcomer with their name (every answer would reach
/// every member); one who speaks announces its name first, so the
/// newcomer shows its line under it. The newcomer itself, told by the
/// relay how large the room is, does not announce its arrival to everyone:
/// its name comes with its first line.
#[test]
fn a_large_room_names_its_speakers_instead_of_answering_each_newcomer() -> Result<()> {
    let relay = Relay::start(&temp_dir("presence"))?;
    let addr = relay.addr(Transport::Tcp)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let room = Room::new("large")?;
        let config = |nick: String| EngineConfig {
            rooms: vec![room.clone()],
            nick: Some(nick),
            discovery: relay_only(),
            ..EngineConfig::default()
        };
        // One more member than answer newcomers: each knows more than
        // that many once the next one comes.
        let members = ANSWER_NEWCOMERS_UP_TO + 1;
        let heard = Arc::new(AtomicUsize::new(0));
        // Whom the old members heard join, and the names they saw on the
        // newcomer's line.
        let joined = Arc::new(Mutex::new(HashSet::new()));
        let named = Arc::new(Mutex::new(Vec::new()));
        let mut handles = Vec::new();
        for batch in (0..members).collect::<Vec<_>>().chunks(10) {
            let joins = batch
                .iter()
                .map(|i| peer::connect(config(format!("old{i}")), std::slice::from_ref(&addr)));
            for node in futures::future::join_all(joins).await {
                let mut node = node?;
                handles.push(node.handle.clone());
                let (heard, joined, named) =
                    (Arc::clone(&heard), Arc::clone(&joined), Arc::clone(&named));
                tokio::spawn(async move {
                    let mut known = 0;
                    while let Some(event) = node.events.next().await {
                        match event {
                            Event::PeerJoined { peer, .. } => {
                                lock(&joined).insert(peer);
                                known += 1;
                                if known == members - 1 {
                                    heard.fetch_add(1, Ordering::SeqCst);
                                }
                            }
                            Event::Message { message, nick, .. }
                                if message.text == "newcomer speaks" =>
                            {
                                lock(&named).push(nick);
                            }
                            _ => {}
                        }
                    }
                });
            }
        }
        tokio::time::timeout(WAIT, async {
            while heard.load(Ordering::SeqCst) < members {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .map_err(|_| anyhow::anyhow!("the members did not all hear one another"))?;
        // Answers still due from while the room was small go out first.
        tokio::time::sleep(Duration::from_secs(3)).await;

        let mut newcomer =
            peer::connect(config("newcomer".into()), std::slice::from_ref(&addr)).await?;
        // Small rooms answer within 2 s; nobody here does.
        let quiet = tokio::time::timeout(Duration::from_secs(4), async {
            while let Some(event) = newcomer.events.next().await {
                if let Event::PeerJoined { peer, .. } = event {
                    return Some(peer);
                }
            }
            None
        })
        .await;
        if let Ok(Some(peer)) = quiet {
            anyhow::bail!("{peer} answered the newcomer in a room of {members}");
        }
        // The relay told the newcomer how large the room is: it does not
        // announce itself to everyone until it speaks.
        if lock(&joined).contains(&newcomer.peer_id) {
            anyhow::bail!("the newcomer announced itself to a room of {members}");
        }

        handles[7].send(room.clone(), "seven speaks").await?;
        let nick = tokio::time::timeout(WAIT, async {
            while let Some(event) = newcomer.events.next().await {
                if let Event::Message { message, nick, .. } = event
                    && message.text == "seven speaks"
                {
                    return Some(nick);
                }
            }
            None
        })
        .await
        .map_err(|_| anyhow::anyhow!("the newcomer never got the line"))?;
        assert_eq!(nick, Some(Some("old7".to_string())));

        // Its first line comes with its name.
        newcomer
            .handle
            .send(room.clone(), "newcomer speaks")
            .await?;
        tokio::time::timeout(WAIT, async {
            while lock(&named).len() < members {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .map_err(|_| anyhow::anyhow!("not every member got the newcomer's line"))?;
        let names = lock(&named).clone();
        assert!(
            names.iter().all(|n| n.as_deref() == Some("newcomer")),
            "the newcomer's line came without its name: {names:?}"
        );
        anyhow::Ok(())
    })
}
