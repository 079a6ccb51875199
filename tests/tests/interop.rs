//! Interop with other libp2p implementations, in both directions of chat
//! and of dialing: a js-libp2p peer in Node.js and a py-libp2p peer
//! (`meshtalk_tests::foreign`), each encoding the course's messages with
//! its own protobuf library, chat with `meshtalk chat` through a meshtalk
//! relay over each transport they have, and directly when meshtalk dials
//! them. Nicknames (UPDATE_PEER) must be attributed to the right peer on
//! both sides. (The js-libp2p browser peer linking to the page over
//! `/webrtc` is `interop_js.rs`.)

use anyhow::{Result, ensure};
use meshtalk_protocol::transport::Transport;
use meshtalk_tests::{
    ChatPeer, Relay,
    foreign::{ForeignPeer, Implementation},
    temp_dir,
};

/// `meshtalk chat` (nick "ada") and `foreign` learn each other's nickname
/// and each hears the other's line attributed to it.
fn chat_both_ways(ada: &mut ChatPeer, foreign: &mut ForeignPeer, what: &str) -> Result<()> {
    let (id, nick) = (foreign.peer_id.clone(), "tess");
    ada.proc.wait_json(&format!("{what}: the nickname"), |v| {
        (v["type"] == "nick" && v["from"] == id.as_str() && v["nick"] == nick).then_some(())
    })?;
    foreign.wait_nick(&ada.peer_id, "ada")?;

    let text = format!("hello from {what}");
    foreign.say(&text)?;
    let m = ada.wait_message(&text)?;
    ensure!(m["from"] == id.as_str(), "{what}: from {}", m["from"]);
    ensure!(m["nick"] == nick, "{what}: attributed to {}", m["nick"]);

    let text = format!("hello to {what}");
    ada.proc.send_line(&text)?;
    let got = foreign.wait_message(&ada.peer_id, &text)?;
    ensure!(got.as_deref() == Some("ada"), "{what}: attributed to {got:?}");
    Ok(())
}

/// The foreign peer dials a relay over `transport`; `meshtalk chat` is on
/// the same relay over TCP.
fn through_a_relay(implementation: Implementation, transport: Transport) -> Result<()> {
    let relay = Relay::start(&temp_dir("interop"))?;
    let dial = [relay.addr(transport)?.to_string()];
    let mut foreign = ForeignPeer::start(implementation, "interop", "tess", &dial, &[], &[])?;
    let mut ada = ChatPeer::start(
        "ada",
        &relay.addr(Transport::Tcp)?,
        "interop",
        &["--nick", "ada"],
    )?;
    chat_both_ways(
        &mut ada,
        &mut foreign,
        &format!("{implementation} over {transport} through a relay"),
    )
}

/// The foreign peer listens on `listen`; `meshtalk chat` dials it there,
/// with no relay anywhere.
fn meshtalk_dials(implementation: Implementation, listen: &str) -> Result<()> {
    let mut foreign = ForeignPeer::start(implementation, "interop", "tess", &[], &[listen], &[])?;
    let addr = foreign
        .addrs
        .first()
        .ok_or_else(|| anyhow::anyhow!("{implementation} listens nowhere"))?
        .parse()?;
    let mut ada = ChatPeer::start("ada", &addr, "interop", &["--nick", "ada"])?;
    chat_both_ways(
        &mut ada,
        &mut foreign,
        &format!("{implementation} dialed by meshtalk at {addr}"),
    )
}

#[test]
fn js_libp2p_over_tcp_through_a_relay() -> Result<()> {
    through_a_relay(Implementation::Js, Transport::Tcp)
}

#[test]
fn js_libp2p_over_websocket_through_a_relay() -> Result<()> {
    through_a_relay(Implementation::Js, Transport::WebSocket)
}

#[test]
fn js_libp2p_over_webrtc_direct_through_a_relay() -> Result<()> {
    through_a_relay(Implementation::Js, Transport::WebRtcDirect)
}

#[test]
fn meshtalk_dials_js_libp2p_over_tcp() -> Result<()> {
    meshtalk_dials(Implementation::Js, "/ip4/127.0.0.1/tcp/0")
}

#[test]
fn meshtalk_dials_js_libp2p_over_websocket() -> Result<()> {
    meshtalk_dials(Implementation::Js, "/ip4/127.0.0.1/tcp/0/ws")
}
