//! The chat page in real headless Chromium, driven over WebDriver: two
//! pages and a `meshtalk chat` peer in one room, over WebRTC-direct and over
//! WebSocket, through a relay that also serves the page.
//!
//! Needs the built page (`cargo xtask web`), chromium and chromedriver
//! (`cargo xtask setup` installs them); `cargo xtask test` prepares all.

use std::{
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use meshtalk_protocol::{
    engine::{EngineConfig, Event},
    meshtalk_webrtc::addr,
    peer_record,
    rooms::Room,
    transport::Transport,
};
use meshtalk_tests::{
    ChatPeer, Relay, WAIT, page::ChatPage, peer, relay_network, temp_dir, web_dir,
    webdriver::Driver,
};

/// One browser test at a time: each runs a relay and several Chromium
/// windows, and two cores are enough for one such scene.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static SCENE: Mutex<()> = Mutex::new(());
    SCENE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Two pages and a CLI peer chat in every direction over `transport`; a
/// nickname change and hostile-looking text show as they should.
fn pages_and_cli_chat(transport: &str) -> Result<()> {
    let _scene = one_at_a_time();
    let web = web_dir()?;
    let relay = Relay::start_with(
        &temp_dir(&format!("browser-{transport}")),
        &["--web-dir", &web.display().to_string()],
    )?;
    let driver = Driver::start()?;
    let url = format!("{}/?transport={transport}&room=e2e", relay.http);
    let a = ChatPage::open(&driver, &url, Some(transport))?;
    let b = ChatPage::open(&driver, &url, Some(transport))?;
    let mut cli = ChatPeer::start(
        "cli",
        &relay.addr(Transport::Tcp)?,
        "e2e",
        &["--nick", "terminal"],
    )?;

    // The peers table shows the relay, over the transport, with an RTT.
    a.session.wait_for(
        "a pinged relay row",
        WAIT,
        &format!(
            "return [...document.querySelectorAll('[data-testid=peer]')] \
               .some(p => p.dataset.transport === '{transport}' && p.dataset.rttMs !== '')"
        ),
    )?;

    // Page A -> page B and the terminal, once everyone is in the room.
    cli.wait_joined(&a.peer_id)?;
    cli.wait_joined(&b.peer_id)?;
    page_to_others(&a, &b, &mut cli, "hello from page A")?;

    // Page B -> page A and the terminal.
    page_to_others(&b, &a, &mut cli, "hello from page B")?;

    // Terminal -> both pages; its nickname shows (a page that joined after
    // the terminal's announcement learns it from the next one).
    cli.proc.send_line("hello from the terminal")?;
    for page in [&a, &b] {
        let got = page.wait_message("hello from the terminal")?;
        ensure!(
            got.from == cli.peer_id,
            "terminal message from {}",
            got.from
        );
        page.wait_message_nick("hello from the terminal", "terminal")?;
    }

    // A nickname change on page A reaches page B and the terminal.
    a.set_nick("alice")?;
    cli.proc.wait_json("alice's nick", |v| {
        (v["type"] == "nick" && v["nick"] == "alice").then_some(())
    })?;
    a.send("now I am alice")?;
    let got = b.wait_message("now I am alice")?;
    ensure!(got.nick == "alice", "B shows the nick as {:?}", got.nick);

    // Markup is shown as text, never run or rendered.
    let hostile = "<img src=x onerror=alert(1)>";
    a.send(hostile)?;
    let got = b.wait_message(hostile)?;
    ensure!(got.text == hostile);
    let images = b
        .session
        .eval("return document.querySelectorAll('.lines img').length")?;
    ensure!(images == 0, "the message became {images} image element(s)");
    Ok(())
}

/// `from` sends `text`; `to` shows it as from `from`, and the terminal gets it.
fn page_to_others(from: &ChatPage, to: &ChatPage, cli: &mut ChatPeer, text: &str) -> Result<()> {
    from.send(text)?;
    let got = to.wait_message(text)?;
    ensure!(
        got.from == from.peer_id,
        "{text:?} shows as from {} instead of {}",
        got.from,
        from.peer_id
    );
    cli.wait_message(text).map(drop)
}

#[test]
fn pages_and_cli_chat_over_webrtc_direct() -> Result<()> {
    pages_and_cli_chat("webrtc-direct")
}

#[test]
fn pages_and_cli_chat_over_websocket() -> Result<()> {
    pages_and_cli_chat("ws")
}

/// The relay restarts: the pages say so, reconnect by themselves and chat
/// again; a line typed while offline is sent once connected, not dropped.
/// (Without direct links, which would carry the line at once.)
#[test]
fn pages_reconnect_after_a_relay_restart() -> Result<()> {
    let _scene = one_at_a_time();
    let web = web_dir()?.display().to_string();
    let extra = ["--web-dir", web.as_str()];
    let mut relay = Relay::start_with(&temp_dir("browser-restart"), &extra)?;
    let driver = Driver::start()?;
    let url = format!("{}/?room=restart&direct=off", relay.http);
    let a = ChatPage::open(&driver, &url, None)?;
    let b = ChatPage::open(&driver, &url, None)?;
    a.wait_member(&b.peer_id)?;
    b.wait_member(&a.peer_id)?;
    a.send("before the restart")?;
    b.wait_message("before the restart")?;

    relay.proc.kill();
    a.wait_offline(WAIT)?;
    b.wait_offline(WAIT)?;
    a.send("typed while offline")?;
    // Let A's reconnection backoff grow past a few seconds, so that B (a
    // fresh page load) is back before A and can receive the held line.
    std::thread::sleep(Duration::from_secs(8));
    relay.restart(&extra)?;
    b.session.open(&url)?;
    b.wait_connected(None, WAIT)?;
    a.wait_connected(None, Duration::from_secs(40))?;
    b.wait_message("typed while offline")?;

    a.send("after the restart")?;
    b.wait_message("after the restart")?;
    b.send("B is back too")?;
    a.wait_message("B is back too")?;
    Ok(())
}

/// Two pages, one reaching the relay over WebSocket and one over
/// WebRTC-direct, find each other in their room and link directly over
/// `/webrtc`; the relay is then killed, and they keep chatting both ways.
#[test]
fn pages_link_directly_and_outlive_their_relay() -> Result<()> {
    let _scene = one_at_a_time();
    let web = web_dir()?;
    let mut relay = Relay::start_with(
        &temp_dir("browser-direct"),
        &["--web-dir", &web.display().to_string()],
    )?;
    let driver = Driver::start()?;
    let url = |transport: &str| format!("{}/?transport={transport}&room=direct", relay.http);
    let a = ChatPage::open(&driver, &url("ws"), Some("ws"))?;
    let b = ChatPage::open(&driver, &url("webrtc-direct"), Some("webrtc-direct"))?;
    a.wait_direct(&b.peer_id, WAIT)?;
    b.wait_direct(&a.peer_id, WAIT)?;
    a.send("over the relay or directly")?;
    b.wait_message("over the relay or directly")?;

    relay.proc.kill();
    a.wait_offline(WAIT)?;
    b.wait_offline(WAIT)?;
    a.send("A, with the relay gone")?;
    let got = b.wait_message("A, with the relay gone")?;
    ensure!(got.from == a.peer_id, "from {}", got.from);
    b.send("B, with the relay gone")?;
    let got = a.wait_message("B, with the relay gone")?;
    ensure!(got.from == b.peer_id, "from {}", got.from);
    // The direct link is still the one the table shows.
    a.wait_direct(&b.peer_id, WAIT)?;
    Ok(())
}

/// A room member offers a direct address it cannot serve (a native peer:
/// it has no `/webrtc`, so the signaling stream is refused). The page's
/// direct dial fails and the page says so; the chat with that member goes
/// on through the relay; the page tries the link again later.
#[test]
fn a_failed_direct_link_leaves_the_chat_on_the_relay() -> Result<()> {
    let _scene = one_at_a_time();
    let web = web_dir()?;
    let relay = Relay::start_with(
        &temp_dir("browser-no-direct"),
        &["--web-dir", &web.display().to_string()],
    )?;
    let driver = Driver::start()?;
    let url = format!("{}/?transport=ws&room=nodirect", relay.http);
    let page = ChatPage::open(&driver, &url, Some("ws"))?;

    let runtime = tokio::runtime::Runtime::new()?;
    let room = Room::new("nodirect")?;
    let config = EngineConfig {
        rooms: vec![room.clone()],
        ..EngineConfig::default()
    };
    let mut member = runtime.block_on(peer::connect(config, &[relay.addr(Transport::Tcp)?]))?;
    let me = member.peer_id;
    let mut circuit = None;
    runtime.block_on(peer::wait_for(&mut member, "a relayed address", |e| {
        if let Event::Listening(addr) = e
            && Transport::of(addr) == Transport::Circuit
        {
            circuit = Some(addr.clone());
        }
        circuit.is_some()
    }))?;
    let circuit = circuit.context("no relayed address")?;
    let direct = addr::webrtc_addr_of_circuit(&circuit, me).context("no /webrtc address")?;
    let key = peer_record::public_key_of(me).context("key not in the peer id")?;
    let record = peer_record::encode(&key, &[direct]);
    let topic = peer_record::topic(&room).to_string();

    // The record reaches the page once the relay relays the peers topic.
    let failures = |page: &ChatPage| -> Result<u64> {
        let v = page.session.eval(
            "return Number(document.querySelector('[data-testid=status]').dataset.directFailures)",
        )?;
        Ok(v.as_u64().unwrap_or(0))
    };
    let deadline = Instant::now() + WAIT;
    while failures(&page)? == 0 {
        ensure!(
            Instant::now() < deadline,
            "the page never tried a direct link"
        );
        runtime.block_on(member.handle.publish_raw(topic.clone(), record.clone()))?;
        std::thread::sleep(Duration::from_secs(1));
    }
    let status = page.status()?;
    ensure!(
        status.contains("no direct link to") && status.contains("trying again later"),
        "status: {status}"
    );

    // The chat with the member goes on, through the relay.
    runtime.block_on(member.handle.send(room.clone(), "member to page"))?;
    let got = page.wait_message("member to page")?;
    ensure!(got.from == me.to_string(), "from {}", got.from);
    page.send("page to member")?;
    runtime.block_on(peer::wait_for(
        &mut member,
        "the page's message",
        |e| matches!(e, Event::Message { message, .. } if message.text == "page to member"),
    ))?;

    // And the page tries again by itself.
    page.session.wait_for(
        "a second direct attempt",
        WAIT,
        "return Number(document.querySelector('[data-testid=status]').dataset.directFailures) >= 2",
    )?;
    ensure!(page.peers()?.iter().all(|(_, t, _)| t != "webrtc"));
    runtime.block_on(member.handle.shutdown())?;
    Ok(())
}

/// Two relays in one network; the page comes from the first. When that
/// relay dies, the page moves to the other one (which the first listed in
/// `/api/addrs`) by itself and chats with a terminal there.
#[test]
fn page_moves_to_another_relay_when_its_relay_dies() -> Result<()> {
    let _scene = one_at_a_time();
    let web = web_dir()?.display().to_string();
    let mut relays = relay_network(2, &["--web-dir", web.as_str()])?;
    let driver = Driver::start()?;
    let url = format!("{}/?room=failover", relays[0].http);
    let page = ChatPage::open(&driver, &url, None)?;
    let mut cli = ChatPeer::start(
        "cli",
        &relays[1].addr(Transport::Tcp)?,
        "failover",
        &["--nick", "on-b"],
    )?;
    cli.wait_joined(&page.peer_id)?;
    page.send("through the first relay")?;
    cli.wait_message("through the first relay")?;

    relays[0].proc.kill();
    page.wait_offline(WAIT)?;
    page.wait_connected(None, WAIT)?;
    page.send("through the second relay")?;
    cli.wait_message("through the second relay")?;
    cli.proc.send_line("welcome to relay two")?;
    let got = page.wait_message("welcome to relay two")?;
    ensure!(got.from == cli.peer_id, "from {}", got.from);
    Ok(())
}
