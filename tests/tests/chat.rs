//! Two `meshtalk chat` peers connected only to a relay chat over each
//! transport, in both directions, and see each other's nickname changes.

use anyhow::Result;
use meshtalk_protocol::transport::Transport;
use meshtalk_tests::{ChatPeer, Relay, temp_dir};

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
