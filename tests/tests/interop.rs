//! Interop with other libp2p implementations, in both directions of chat
//! and of dialing: a js-libp2p peer in Node.js and a py-libp2p peer
//! (`meshtalk_tests::foreign`), each encoding the course's messages with
//! its own protobuf library, chat with `meshtalk chat` through a meshtalk
//! relay over each transport they have (js: TCP, WebSocket, WebRTC-direct;
//! py: TCP, WebSocket, QUIC, WebRTC-direct), and directly when meshtalk
//! dials them; with gossipsub and with floodsub. Nicknames (UPDATE_PEER)
//! must be attributed to the right peer on both sides. Then peers set up
//! unlike meshtalk, and universal-connectivity's js peer. (The js-libp2p
//! browser peer linking to the page over `/webrtc` is `interop_js.rs`.)

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use meshtalk_protocol::transport::Transport;
use meshtalk_tests::{
    ChatPeer, Relay, eventually,
    foreign::{ForeignPeer, Implementation},
    noise, sha256_of, temp_dir,
};
use serde_json::Value;

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
    ensure!(
        got.as_deref() == Some("ada"),
        "{what}: attributed to {got:?}"
    );
    Ok(())
}

/// A relay (its data in `name`), and a peer of `implementation` that
/// dials it over `transport`, listens on `listen` and takes `args`.
fn foreign_on_a_relay(
    name: &str,
    implementation: Implementation,
    transport: Transport,
    listen: &[&str],
    args: &[&str],
) -> Result<(Relay, ForeignPeer)> {
    let relay = Relay::start(&temp_dir(name))?;
    let dial = [relay.addr(transport)?.to_string()];
    let foreign = ForeignPeer::start(implementation, "interop", "tess", &dial, listen, args)?;
    Ok((relay, foreign))
}

/// `meshtalk chat` as "ada" on `relay` over TCP, with `args` too.
fn ada_on(relay: &Relay, args: &[&str]) -> Result<ChatPeer> {
    let mut all = vec!["--nick", "ada"];
    all.extend_from_slice(args);
    ChatPeer::start("ada", &relay.addr(Transport::Tcp)?, "interop", &all)
}

/// `foreign` says `{prefix} 1`, `{prefix} 2`… until `ada` shows one of
/// them as its; returns that line's JSON. (Lines said before the mesh
/// forms are lost, and each try must be new content: some routers refuse
/// to publish the same bytes twice.)
fn say_until_heard(foreign: &mut ForeignPeer, ada: &mut ChatPeer, prefix: &str) -> Result<Value> {
    let mut tries = 0;
    let mut heard = None;
    eventually(&format!("{prefix:?} from {}", foreign.peer_id), || {
        tries += 1;
        foreign.say(&format!("{prefix} {tries}"))?;
        ada.proc.drain_for(Duration::from_millis(400));
        heard = ada.proc.seen.iter().find_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            let text = v["text"].as_str()?;
            (v["type"] == "message"
                && v["from"] == foreign.peer_id.as_str()
                && text.starts_with(prefix))
            .then_some(v.clone())
        });
        Ok(heard.is_some())
    })?;
    heard.context("no line heard")
}

/// The foreign peer dials a relay over `transport`; `meshtalk chat` is on
/// the same relay over TCP. `foreign_args` and `meshtalk_args` go on their
/// command lines (`--pubsub floodsub`).
fn through_a_relay(
    implementation: Implementation,
    transport: Transport,
    foreign_args: &[&str],
    meshtalk_args: &[&str],
) -> Result<()> {
    let (relay, mut foreign) =
        foreign_on_a_relay("interop", implementation, transport, &[], foreign_args)?;
    let mut ada = ada_on(&relay, meshtalk_args)?;
    chat_both_ways(
        &mut ada,
        &mut foreign,
        &format!("{implementation} {foreign_args:?} over {transport} through a relay"),
    )
}

/// The foreign peer listens on `listen`; `meshtalk chat` dials it there,
/// with no relay anywhere.
fn meshtalk_dials(
    implementation: Implementation,
    listen: &str,
    foreign_args: &[&str],
    meshtalk_args: &[&str],
) -> Result<(ChatPeer, ForeignPeer)> {
    let mut foreign = ForeignPeer::start(
        implementation,
        "interop",
        "tess",
        &[],
        &[listen],
        foreign_args,
    )?;
    let addr = foreign
        .addrs
        .first()
        .with_context(|| format!("{implementation} listens nowhere"))?
        .parse()?;
    let mut args = vec!["--nick", "ada"];
    args.extend_from_slice(meshtalk_args);
    let mut ada = ChatPeer::start("ada", &addr, "interop", &args)?;
    chat_both_ways(
        &mut ada,
        &mut foreign,
        &format!(
            "{implementation} {foreign_args:?} dialed by meshtalk {meshtalk_args:?} at {addr}"
        ),
    )?;
    Ok((ada, foreign))
}

const FLOODSUB: &[&str] = &["--pubsub", "floodsub"];

#[test]
fn js_libp2p_over_tcp_through_a_relay() -> Result<()> {
    through_a_relay(Implementation::Js, Transport::Tcp, &[], &[])
}

#[test]
fn js_libp2p_over_websocket_through_a_relay() -> Result<()> {
    through_a_relay(Implementation::Js, Transport::WebSocket, &[], &[])
}

#[test]
fn js_libp2p_over_webrtc_direct_through_a_relay() -> Result<()> {
    through_a_relay(Implementation::Js, Transport::WebRtcDirect, &[], &[])
}

#[test]
fn meshtalk_dials_js_libp2p_over_tcp() -> Result<()> {
    meshtalk_dials(Implementation::Js, "/ip4/127.0.0.1/tcp/0", &[], &[]).map(drop)
}

#[test]
fn meshtalk_dials_js_libp2p_over_websocket() -> Result<()> {
    meshtalk_dials(Implementation::Js, "/ip4/127.0.0.1/tcp/0/ws", &[], &[]).map(drop)
}

/// A js-libp2p floodsub peer and a meshtalk floodsub peer share a room
/// through a relay, which runs gossipsub (and floodsub with them).
#[test]
fn js_libp2p_floodsub_and_meshtalk_floodsub_through_a_relay() -> Result<()> {
    through_a_relay(Implementation::Js, Transport::Tcp, FLOODSUB, FLOODSUB)
}

/// `meshtalk chat --pubsub floodsub` and js-libp2p's floodsub, with nothing
/// in between; the js peer's identify shows that meshtalk offered no
/// gossipsub protocol at all.
#[test]
fn meshtalk_floodsub_dials_js_libp2p_floodsub() -> Result<()> {
    let (ada, mut js) = meshtalk_dials(
        Implementation::Js,
        "/ip4/127.0.0.1/tcp/0",
        FLOODSUB,
        FLOODSUB,
    )?;
    js.proc.send_line(&format!("/protocols {}", ada.peer_id))?;
    let protocols: Vec<String> = js.proc.wait_json("meshtalk's protocols", |v| {
        (v["type"] == "protocols").then(|| serde_json::from_value(v["protocols"].clone()).ok())?
    })?;
    ensure!(
        protocols.iter().any(|p| p == "/floodsub/1.0.0")
            && !protocols.iter().any(|p| p.starts_with("/meshsub/")),
        "meshtalk --pubsub floodsub offered {protocols:?}"
    );
    Ok(())
}

/// A gossipsub meshtalk peer talks to a floodsub-only peer directly too.
#[test]
fn meshtalk_gossipsub_dials_js_libp2p_floodsub() -> Result<()> {
    meshtalk_dials(Implementation::Js, "/ip4/127.0.0.1/tcp/0", FLOODSUB, &[]).map(drop)
}

#[test]
fn py_libp2p_over_tcp_through_a_relay() -> Result<()> {
    through_a_relay(Implementation::Py, Transport::Tcp, &[], &[])
}

#[test]
fn py_libp2p_over_websocket_through_a_relay() -> Result<()> {
    through_a_relay(Implementation::Py, Transport::WebSocket, &[], &[])
}

#[test]
fn py_libp2p_over_quic_through_a_relay() -> Result<()> {
    through_a_relay(Implementation::Py, Transport::Quic, &[], &[])
}

#[test]
fn py_libp2p_over_webrtc_direct_through_a_relay() -> Result<()> {
    through_a_relay(Implementation::Py, Transport::WebRtcDirect, &[], &[])
}

#[test]
fn meshtalk_dials_py_libp2p_over_tcp() -> Result<()> {
    meshtalk_dials(Implementation::Py, "/ip4/127.0.0.1/tcp/0", &[], &[]).map(drop)
}

#[test]
fn meshtalk_dials_py_libp2p_over_websocket() -> Result<()> {
    meshtalk_dials(Implementation::Py, "/ip4/127.0.0.1/tcp/0/ws", &[], &[]).map(drop)
}

/// py-libp2p's floodsub and a floodsub meshtalk peer, through a relay.
#[test]
fn py_libp2p_floodsub_and_meshtalk_floodsub_through_a_relay() -> Result<()> {
    through_a_relay(Implementation::Py, Transport::Tcp, FLOODSUB, FLOODSUB)
}

// Peers configured unlike meshtalk: each gets a clear log line and a
// counter, or simply works; never a crash or a silent stall.

/// Unsigned messages (js-libp2p with `StrictNoSign`) are dropped by the
/// relay with a log line naming the peer and a `bad_signature` count; the
/// relay goes on serving everybody else.
#[test]
fn unsigned_messages_from_js_libp2p_are_refused_with_a_log_line_and_a_counter() -> Result<()> {
    let (mut relay, mut js) = foreign_on_a_relay(
        "interop-unsigned",
        Implementation::Js,
        Transport::Tcp,
        &[],
        &["--sign", "off"],
    )?;
    let mut ada = ada_on(&relay, &[])?;
    let mut bob = ChatPeer::start(
        "bob",
        &relay.addr(Transport::Tcp)?,
        "interop",
        &["--nick", "bob"],
    )?;
    let refused = r#"meshtalk_rejected_messages_total{reason="bad_signature"}"#;
    eventually("the relay to see js's subscription", || {
        js.say("unsigned hello")?;
        Ok(relay.metric(refused)? >= 1.0)
    })?;
    let line = format!("from {}: unsigned or badly signed", js.peer_id);
    eventually(&format!("the log line {line:?}"), || {
        Ok(relay.proc.stderr_lines().iter().any(|l| l.contains(&line)))
    })?;
    // The others chat on, and never see the unsigned line.
    ada.proc.send_line("signed hello")?;
    bob.wait_message("signed hello")?;
    ensure!(
        !ada.texts().contains(&"unsigned hello".to_owned()),
        "an unsigned message was shown"
    );
    ensure!(relay.get("/healthz")? == "ok\n");
    Ok(())
}

/// js-libp2p with message ids from the content, not from source and
/// sequence number: ids are each router's own business, and lines flow
/// both ways. (Nicknames suffer: such a peer cannot repeat its UPDATE_PEER,
/// the same content being the same id, which its router refuses to
/// publish twice, and it drops repeats of others'; see PROTOCOL.md.)
#[test]
fn js_libp2p_with_content_message_ids_chats() -> Result<()> {
    let (relay, mut js) = foreign_on_a_relay(
        "interop-content-ids",
        Implementation::Js,
        Transport::Tcp,
        &[],
        &["--msg-id", "content"],
    )?;
    let mut ada = ada_on(&relay, &[])?;
    say_until_heard(&mut js, &mut ada, "content-addressed hello")?;
    // Its router takes every copy of ada's (identical) UPDATE_PEERs for one
    // message, so whether it has her nickname depends on timing; her line
    // arrives, from her.
    ada.proc.send_line("hello to a content-addressed peer")?;
    js.wait_message(&ada.peer_id, "hello to a content-addressed peer")
        .map(drop)
}

/// js-libp2p speaking only the oldest gossipsub, /meshsub/1.0.0.
#[test]
fn js_libp2p_speaking_only_meshsub_1_0_chats() -> Result<()> {
    through_a_relay(
        Implementation::Js,
        Transport::Tcp,
        &["--meshsub", "/meshsub/1.0.0"],
        &[],
    )
}

/// A peer whose only pubsub protocol nobody else speaks is reported: by
/// `meshtalk chat` (an event and a line on stderr) and by the relay (a
/// counter and a log line).
#[test]
fn a_peer_with_no_common_pubsub_protocol_is_reported() -> Result<()> {
    let (mut relay, js) = foreign_on_a_relay(
        "interop-no-pubsub",
        Implementation::Js,
        Transport::Tcp,
        &["/ip4/127.0.0.1/tcp/0"],
        &["--meshsub", "/meshsub/9.9.9"],
    )?;
    let addr = js.addrs.first().context("js listens nowhere")?.parse()?;
    let mut ada = ChatPeer::start("ada", &addr, "interop", &["--nick", "ada"])?;
    let id = js.peer_id.clone();
    ada.proc.wait_json("the pubsub_unsupported event", |v| {
        (v["type"] == "pubsub_unsupported" && v["peer"] == id.as_str()).then_some(())
    })?;
    eventually("the relay's count", || {
        Ok(relay.metric("meshtalk_pubsub_unsupported_peers_total")? >= 1.0)
    })?;
    let speaks_none = |lines: Vec<String>| {
        lines
            .iter()
            .any(|l| l.contains(&id) && l.contains("speaks none of our pubsub protocols"))
    };
    // stderr is a pipe of its own: its line may come a little after.
    eventually("the log line at the relay", || {
        Ok(speaks_none(relay.proc.stderr_lines()))
    })?;
    eventually("the log line at meshtalk chat", || {
        Ok(speaks_none(ada.proc.stderr_lines()))
    })
}

/// `meshtalk chat --compat uc` and a js-libp2p peer set up as
/// universal-connectivity's: chat both ways through a relay (which needs
/// no flag); direct messages and files both ways on its protocols (which
/// its peers use over direct connections: meshtalk dials it as well); a
/// file larger than its peers take is refused at `/send`.
#[test]
fn meshtalk_chats_with_a_universal_connectivity_peer() -> Result<()> {
    let downloads = temp_dir("interop-uc-files");
    std::fs::create_dir_all(&downloads)?;
    let downloads_arg = downloads.display().to_string();
    let (relay, mut uc) = foreign_on_a_relay(
        "interop-uc",
        Implementation::JsUc,
        Transport::Tcp,
        &["/ip4/127.0.0.1/tcp/0"],
        &[],
    )?;
    let direct = uc.addrs.first().context("the uc peer listens nowhere")?;
    let mut ada = ada_on(
        &relay,
        &[
            "--compat",
            "uc",
            "--connect",
            direct,
            "--download-dir",
            &downloads_arg,
        ],
    )?;
    let line = say_until_heard(&mut uc, &mut ada, "hello from universal-connectivity")?;
    ensure!(
        line["room"] == "universal-connectivity",
        "shown in room {}",
        line["room"]
    );
    ada.proc.send_line("hello from meshtalk")?;
    let nick = uc.wait_message(&ada.peer_id, "hello from meshtalk")?;
    ensure!(nick.is_none(), "universal-connectivity has no nicknames");

    // Direct messages, on its protocol, both ways.
    ada.proc
        .send_line(&format!("/msg {} a direct hello", uc.peer_id))?;
    let id = ada.peer_id.clone();
    uc.proc.wait_json("the DM at the uc peer", |v| {
        (v["type"] == "dm" && v["from"] == id.as_str() && v["text"] == "a direct hello")
            .then_some(())
    })?;
    ada.proc
        .wait_json("dm_sent", |v| (v["type"] == "dm_sent").then_some(()))?;
    uc.say(&format!("/dm {} a direct answer", ada.peer_id))?;
    let from = uc.peer_id.clone();
    ada.proc.wait_json("the DM at meshtalk", |v| {
        (v["type"] == "dm" && v["from"] == from.as_str() && v["text"] == "a direct answer")
            .then_some(())
    })?;
    uc.proc
        .wait_json("its dm_sent", |v| (v["type"] == "dm_sent").then_some(()))?;

    // A file from the uc peer: announced by a UUID, fetched at once,
    // saved under it, its type found from its first bytes.
    let (png, sent) = uc.announce_png("interop-uc-theirs", 300_000, 11)?;
    let id = sent["id"].as_str().context("an id")?.to_owned();
    let saved = ada.proc.wait_json("the uc file saved", |v| {
        (v["type"] == "file_saved" || v["type"] == "file_failed").then(|| v.clone())
    })?;
    ensure!(saved["type"] == "file_saved", "{saved}");
    ensure!(saved["sha256"] == sent["sha256"], "{saved} vs {sent}");
    let path = std::path::PathBuf::from(saved["path"].as_str().context("a path")?);
    ensure!(path == downloads.join(&id), "saved as {}", path.display());
    ensure!(std::fs::read(&path)? == png, "the bytes differ");
    let offer = ada.proc.seen.iter().find_map(|l| {
        let v: Value = serde_json::from_str(l).ok()?;
        (v["type"] == "file" && v["sha256"] == sent["sha256"]).then_some(v)
    });
    let offer = offer.context("no file line")?;
    ensure!(
        offer["from"] == from.as_str() && offer["media_type"] == "image/png",
        "{offer}"
    );

    // A file from meshtalk: announced by its SHA-256, fetched by the uc peer.
    let ours = downloads.join("notes.txt");
    std::fs::write(&ours, noise(200_000, 12))?;
    ada.proc.send_line(&format!("/send {}", ours.display()))?;
    let sha256 = sha256_of(&ours)?;
    let got = uc.proc.wait_json("the file at the uc peer", |v| {
        (v["type"] == "file").then(|| v.clone())
    })?;
    ensure!(
        got["sha256"] == sha256.as_str()
            && got["id"] == sha256.as_str()
            && got["from"] == ada.peer_id.as_str()
            && got["size"] == 200_000,
        "{got}"
    );

    // Its peers read at most 4 MiB: a larger file is refused at once.
    let large = downloads.join("large.bin");
    std::fs::write(&large, noise(4 * 1024 * 1024 + 1, 13))?;
    ada.proc.send_line(&format!("/send {}", large.display()))?;
    eventually("the refusal of a file over 4 MiB", || {
        Ok(ada
            .proc
            .stderr_lines()
            .iter()
            .any(|l| l.contains("large.bin") && l.contains("take at most 4.0 MiB")))
    })
}
