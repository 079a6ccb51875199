//! The chat page in real headless Chromium, driven over WebDriver: two
//! pages and a `meshtalk chat` peer in one room, over WebRTC-direct and over
//! WebSocket, through a relay that also serves the page.
//!
//! Needs the built page (`cargo xtask web`), chromium and chromedriver
//! (`cargo xtask setup` installs them); `cargo xtask test` prepares all.

use std::{
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use futures::StreamExt;
use meshtalk_protocol::{
    engine::{EngineConfig, Event},
    libp2p::{Stream, StreamProtocol},
    meshtalk_webrtc::{
        SIGNALING_PROTOCOL, addr,
        proto::{Signal, SignalType, read_signal, write_signal},
    },
    peer_record,
    rooms::Room,
    transport::Transport,
};
use meshtalk_tests::{
    ChatPeer, Relay, TestCertificate, WAIT, eventually,
    foreign::{ForeignPeer, Implementation},
    noise,
    page::ChatPage,
    peer, relay_network, sha256_of, temp_dir, udp_blackhole, web_dir,
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
    // Over WebSocket, page B is as on a network that drops UDP: told a
    // WebRTC-direct address that never answers first, it races the
    // WebSocket one after a second and chats over that.
    let (_blackhole, dropped) = udp_blackhole(&relay.addr(Transport::WebRtcDirect)?)?;
    let b_url = match transport {
        "ws" => format!(
            "{}/?relay={dropped}&relay={}&room=e2e",
            relay.http,
            relay.addr(Transport::WebSocket)?
        ),
        _ => url.clone(),
    };
    let b = ChatPage::open(&driver, &b_url, Some(transport))?;
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

    // Reloaded, page A is the same peer and chats again at once, though
    // over WebRTC-direct its old connection still looks open to the relay
    // (until its ICE checks fail, about 30 s later).
    a.session.open(&url)?;
    a.wait_connected(Some(transport), RELOAD_WAIT)?;
    let me = a
        .session
        .eval("return document.querySelector('[data-testid=self]').textContent")?;
    ensure!(
        me.as_str() == Some(a.peer_id.as_str()),
        "after the reload page A is {me}"
    );
    page_to_others(&a, &b, &mut cli, "back after a reload")?;
    Ok(())
}

/// How long a reloaded page may take to connect again: far less than the
/// half minute a relay takes to see the old connection's end by itself.
const RELOAD_WAIT: Duration = Duration::from_secs(10);

/// A page with `?pubsub=floodsub` chats with a gossipsub terminal and a
/// floodsub terminal through one relay, which speaks both.
#[test]
fn a_floodsub_page_chats_with_gossipsub_and_floodsub_terminals() -> Result<()> {
    let _scene = one_at_a_time();
    let relay = Relay::start_with(
        &temp_dir("browser-floodsub"),
        &["--web-dir", &web_dir()?.display().to_string()],
    )?;
    let driver = Driver::start()?;
    let url = format!("{}/?transport=ws&room=flood&pubsub=floodsub", relay.http);
    let page = ChatPage::open(&driver, &url, Some("ws"))?;
    let tcp = relay.addr(Transport::Tcp)?;
    let mut gossip = ChatPeer::start("gossip", &tcp, "flood", &["--nick", "gossip"])?;
    let mut flood = ChatPeer::start(
        "flood",
        &tcp,
        "flood",
        &["--nick", "flood", "--pubsub", "floodsub"],
    )?;
    for cli in [&mut gossip, &mut flood] {
        cli.wait_joined(&page.peer_id)?;
    }
    page.send("hello from a floodsub page")?;
    for cli in [&mut gossip, &mut flood] {
        let got = cli.wait_message("hello from a floodsub page")?;
        ensure!(got["from"] == page.peer_id.as_str(), "from {}", got["from"]);
    }
    for cli in [&mut gossip, &mut flood] {
        let text = format!("hello from {}", cli.proc.name);
        cli.proc.send_line(&text)?;
        page.wait_message_nick(&text, &cli.proc.name)?;
    }
    Ok(())
}

/// A page with `?compat=uc` and a js-libp2p peer set up as
/// universal-connectivity's chat and exchange files through a relay; two
/// such pages link directly through its browser peer discovery topic.
#[test]
fn a_uc_page_chats_with_a_universal_connectivity_peer() -> Result<()> {
    let _scene = one_at_a_time();
    let relay = Relay::start_with(
        &temp_dir("browser-uc"),
        &["--web-dir", &web_dir()?.display().to_string()],
    )?;
    let dial = [relay.addr(Transport::Tcp)?.to_string()];
    let mut uc = ForeignPeer::start(Implementation::JsUc, "", "", &dial, &["/p2p-circuit"], &[])?;
    let driver = Driver::start()?;
    let url = format!("{}/?transport=ws&compat=uc", relay.http);
    let page = ChatPage::open(&driver, &url, Some("ws"))?;
    // Lines said before the mesh forms are lost; each try is a new line.
    let mut tries = 0;
    eventually("a line from the universal-connectivity peer", || {
        tries += 1;
        uc.say(&format!("hello page {tries}"))?;
        std::thread::sleep(std::time::Duration::from_millis(400));
        Ok(page
            .messages()?
            .iter()
            .any(|m| m.from == uc.peer_id && m.text.starts_with("hello page")))
    })?;
    page.send("hello from a meshtalk page")?;
    uc.wait_message(&page.peer_id, "hello from a meshtalk page")?;

    // Files both ways, on its protocol, through the relay (the uc peer
    // holds a reservation there, as its browser peers do): the page takes
    // the uc peer's at once and shows it; the uc peer takes the page's.
    let (png, sent) = uc.announce_png("browser-uc-theirs", 200_000, 21)?;
    let sha256 = sent["sha256"].as_str().context("a hash")?;
    let got = file_on_page(&page, sha256)?;
    ensure!(
        got["hex"] == sha256 && got["size"] == png.len() && got["preview"] == true,
        "{got}"
    );
    let ours = temp_dir("browser-uc-ours").join("notes.bin");
    std::fs::create_dir_all(ours.parent().context("a directory")?)?;
    std::fs::write(&ours, noise(100_000, 22))?;
    page.session
        .type_into("[data-testid=file-input]", &ours.display().to_string())?;
    let got = uc.proc.wait_json("the page's file at the uc peer", |v| {
        (v["type"] == "file").then(|| v.clone())
    })?;
    ensure!(
        got["sha256"] == sha256_of(&ours)?.as_str() && got["from"] == page.peer_id.as_str(),
        "{got}"
    );

    // Two such pages find each other on universal-connectivity's browser
    // peer discovery topic and link directly.
    let other = ChatPage::open(&driver, &url, Some("ws"))?;
    page.wait_direct(&other.peer_id, WAIT)
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
/// A relay with a certificate (one the test makes, which Chromium is told
/// to trust) serves the page over https; the page connects over secure
/// WebSocket, the only WebSocket it may open from https, and chats with a
/// terminal on TCP.
#[test]
fn a_page_served_over_https_chats_over_secure_websocket() -> Result<()> {
    let _scene = one_at_a_time();
    let web = web_dir()?;
    let dir = temp_dir("browser-tls");
    let certificate = TestCertificate::write(&dir.join("tls"))?;
    let relay = Relay::start_with(
        &dir,
        &[
            "--web-dir",
            &web.display().to_string(),
            "--listen",
            "/ip4/127.0.0.1/tcp/0/tls/ws",
            "--tls-cert",
            &certificate.cert.display().to_string(),
            "--tls-key",
            &certificate.key.display().to_string(),
        ],
    )?;
    ensure!(
        relay.http.starts_with("https://"),
        "the relay serves {}",
        relay.http
    );
    let mut driver = Driver::start()?;
    driver.trust_certificate(&certificate.spki_sha256);
    let page = ChatPage::open(&driver, &format!("{}/?room=tls", relay.http), Some("ws"))?;
    let mut cli = ChatPeer::start("cli", &relay.addr(Transport::Tcp)?, "tls", &[])?;
    cli.wait_joined(&page.peer_id)?;
    page.send("hello over https")?;
    cli.wait_message("hello over https")?;
    cli.proc.send_line("hello back")?;
    page.wait_message("hello back")?;
    let console = page.session.console();
    ensure!(
        !console
            .iter()
            .any(|l| l.contains("Mixed Content") || l.contains("ERR_CERT")),
        "console:\n{}",
        console.join("\n")
    );
    Ok(())
}

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
    // In the end one connection joins them: the relayed one that carried
    // the signaling closes, and if both dialed, one direct link goes.
    for (page, other) in [(&a, &b.peer_id), (&b, &a.peer_id)] {
        page.session.wait_for(
            "a single connection to the other page",
            WAIT,
            &format!(
                "return document.querySelector('[data-testid=peer][data-peer=\"{other}\"]')\
                   ?.dataset.connections === '1';"
            ),
        )?;
    }
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

/// A native room member that announces a `/webrtc` address on its room's
/// peers topic as a page would (a native peer has no `/webrtc`: what
/// happens to the page's dial is up to the test).
struct Announcer {
    runtime: tokio::runtime::Runtime,
    node: peer::Node,
    room: Room,
    topic: String,
    record: Vec<u8>,
}

impl Announcer {
    /// Joins `room` through `relay` over TCP and waits for its relayed
    /// address, the base of the `/webrtc` one it announces.
    fn start(relay: &Relay, room: &str) -> Result<Self> {
        let runtime = tokio::runtime::Runtime::new()?;
        let room = Room::new(room)?;
        let config = EngineConfig {
            rooms: vec![room.clone()],
            ..EngineConfig::default()
        };
        let mut node = runtime.block_on(peer::connect(config, &[relay.addr(Transport::Tcp)?]))?;
        let me = node.peer_id;
        let mut circuit = None;
        runtime.block_on(peer::wait_for(&mut node, "a relayed address", |e| {
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
        Ok(Self {
            record: peer_record::encode(&key, &[direct]),
            topic: peer_record::topic(&room).to_string(),
            runtime,
            node,
            room,
        })
    }

    /// Announces the record every second (it reaches the page once the
    /// relay relays the peers topic) until the page has failed a direct
    /// dial (within `wait`), and returns the page's status line then.
    fn until_the_page_fails(&self, page: &ChatPage, wait: Duration) -> Result<String> {
        let deadline = Instant::now() + wait;
        while direct_failures(page)? == 0 {
            ensure!(
                Instant::now() < deadline,
                "the page never tried a direct link"
            );
            self.runtime.block_on(
                self.node
                    .handle
                    .publish_raw(self.topic.clone(), self.record.clone()),
            )?;
            std::thread::sleep(Duration::from_secs(1));
        }
        let status = page.status()?;
        ensure!(
            status.contains("no direct link to") && status.contains("trying again later"),
            "status: {status}"
        );
        Ok(status)
    }

    /// The chat with the page goes on both ways (through the relay).
    fn chats_with(&mut self, page: &ChatPage) -> Result<()> {
        self.runtime
            .block_on(self.node.handle.send(self.room.clone(), "member to page"))?;
        let got = page.wait_message("member to page")?;
        ensure!(
            got.from == self.node.peer_id.to_string(),
            "from {}",
            got.from
        );
        page.send("page to member")?;
        self.runtime.block_on(peer::wait_for(
            &mut self.node,
            "the page's message",
            |e| matches!(e, Event::Message { message, .. } if message.text == "page to member"),
        ))
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        let _ = self.runtime.block_on(self.node.handle.shutdown());
    }
}

/// The direct-link attempts a page has seen fail.
fn direct_failures(page: &ChatPage) -> Result<u64> {
    let v = page.session.eval(
        "return Number(document.querySelector('[data-testid=status]').dataset.directFailures)",
    )?;
    Ok(v.as_u64().unwrap_or(0))
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
    let mut member = Announcer::start(&relay, "nodirect")?;
    member.until_the_page_fails(&page, WAIT)?;
    member.chats_with(&page)?;
    // And the page tries again by itself.
    page.session.wait_for(
        "a second direct attempt",
        WAIT,
        "return Number(document.querySelector('[data-testid=status]').dataset.directFailures) >= 2",
    )?;
    ensure!(page.peers()?.iter().all(|(_, t, _)| t != "webrtc"));
    Ok(())
}

/// A room member answers the page's offer, but its only ICE candidate
/// leads nowhere (a closed port on loopback): ICE finds no path, the page
/// gives up on the link, says so, and chats on through the relay.
#[test]
fn a_direct_link_whose_ice_fails_leaves_the_chat_on_the_relay() -> Result<()> {
    let _scene = one_at_a_time();
    let web = web_dir()?;
    let relay = Relay::start_with(
        &temp_dir("browser-ice-fails"),
        &["--web-dir", &web.display().to_string()],
    )?;
    let driver = Driver::start()?;
    let url = format!("{}/?transport=ws&room=icefails", relay.http);
    let page = ChatPage::open(&driver, &url, Some("ws"))?;
    let mut member = Announcer::start(&relay, "icefails")?;
    let answered = Arc::new(AtomicUsize::new(0));
    let mut offers = member
        .node
        .handle
        .streams()
        .accept(StreamProtocol::new(SIGNALING_PROTOCOL))?;
    let count = answered.clone();
    member.runtime.spawn(async move {
        while let Some((_, stream)) = offers.next().await {
            let count = count.clone();
            tokio::spawn(async move {
                if let Err(e) = answer_with_no_path(stream, &count).await {
                    eprintln!("signaling: {e}");
                }
            });
        }
    });
    // ICE gives up, or the 30 s limit on a handshake ends it.
    let status = member.until_the_page_fails(&page, Duration::from_secs(60))?;
    ensure!(
        answered.load(Ordering::SeqCst) >= 1,
        "the page failed before signaling: {status}"
    );
    ensure!(
        status.contains("ICE") || status.contains("timed out"),
        "status: {status}"
    );
    member.chats_with(&page)?;
    ensure!(page.peers()?.iter().all(|(_, t, _)| t != "webrtc"));
    Ok(())
}

/// Answers an offer with a well-formed SDP whose one candidate is a
/// closed UDP port on loopback, then keeps the stream open (a peer that
/// hangs up would fail the handshake before ICE is tried).
async fn answer_with_no_path(mut stream: Stream, answered: &AtomicUsize) -> Result<()> {
    let offer = read_signal(&mut stream)
        .await?
        .and_then(|s| s.data)
        .context("no offer")?;
    let mid = offer
        .lines()
        .find_map(|l| l.strip_prefix("a=mid:"))
        .unwrap_or("0")
        .trim()
        .to_owned();
    let fingerprint = ["AB"; 32].join(":");
    let answer = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE {mid}\r\n\
         m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n\
         a=mid:{mid}\r\na=ice-ufrag:nowhere\r\na=ice-pwd:nowhereatallnowhereatall\r\n\
         a=fingerprint:sha-256 {fingerprint}\r\na=setup:active\r\n\
         a=sctp-port:5000\r\na=max-message-size:16384\r\n"
    );
    write_signal(&mut stream, Signal::new(SignalType::SdpAnswer, answer)).await?;
    let candidate = format!(
        r#"{{"candidate":"candidate:1 1 udp 2122260223 127.0.0.1 9 typ host","sdpMid":"{mid}","sdpMLineIndex":0,"usernameFragment":"nowhere"}}"#
    );
    write_signal(
        &mut stream,
        Signal::new(SignalType::IceCandidate, candidate),
    )
    .await?;
    write_signal(&mut stream, Signal::new(SignalType::IceCandidate, "null")).await?;
    answered.fetch_add(1, Ordering::SeqCst);
    while read_signal(&mut stream).await?.is_some() {}
    Ok(())
}

/// Two pages link directly; one is closed. The other notices, fails to
/// reach it again and says so, and once the closed page has missed its
/// announcements it is forgotten: no more dials, nothing on the status.
#[test]
fn a_closed_page_is_forgotten() -> Result<()> {
    let _scene = one_at_a_time();
    let web = web_dir()?;
    let relay = Relay::start_with(
        &temp_dir("browser-closed-page"),
        &["--web-dir", &web.display().to_string()],
    )?;
    let driver = Driver::start()?;
    let url = |transport: &str| format!("{}/?transport={transport}&room=closed", relay.http);
    let a = ChatPage::open(&driver, &url("ws"), Some("ws"))?;
    let b = ChatPage::open(&driver, &url("webrtc-direct"), Some("webrtc-direct"))?;
    a.wait_direct(&b.peer_id, WAIT)?;
    let gone = b.peer_id.clone();
    drop(b);
    a.session.wait_for(
        "a failed dial to the closed page",
        WAIT,
        &format!(
            "return Number(document.querySelector('[data-testid=status]').dataset.directFailures) >= 1 \
               && document.querySelector('[data-testid=status]').textContent.includes('{}')",
            &gone[gone.len() - 6..]
        ),
    )?;
    // Three missed announcements (30 s) and the next tick.
    a.session.wait_for(
        "the closed page forgotten",
        Duration::from_secs(60),
        "const s = document.querySelector('[data-testid=status]'); \
         return s.dataset.direct === '0' && !s.textContent.includes('no direct link');",
    )?;
    let failures = direct_failures(&a)?;
    ensure!(
        a.peers()?.iter().all(|(p, _, _)| *p != gone),
        "the closed page is still in the peers table"
    );
    // No dial to it any more: a remembered page would be tried again
    // within its back-off (at most 16 s after five failures).
    std::thread::sleep(Duration::from_secs(20));
    ensure!(
        direct_failures(&a)? == failures,
        "the closed page was dialed again"
    );
    Ok(())
}

/// A page says three lines and is closed; a page opened later shows them,
/// in order, as history; so does one opened after the relay restarted on
/// the same data directory; reloaded with no relay in reach, that page still
/// shows them (IndexedDB), until its history is cleared.
#[test]
fn a_late_page_shows_what_was_said_even_after_a_relay_restart() -> Result<()> {
    let _scene = one_at_a_time();
    let web = web_dir()?;
    let mut relay = Relay::start_with(
        &temp_dir("browser-history"),
        &["--web-dir", &web.display().to_string()],
    )?;
    let driver = Driver::start()?;
    let url = format!("{}/?transport=ws&room=history&direct=off", relay.http);
    let said = ["first words", "second words", "third words"];
    let author = ChatPage::open(&driver, &format!("{url}&nick=ada"), Some("ws"))?;
    // Someone to hear them, so they leave the page at once.
    let addr = relay.addr(Transport::Tcp)?;
    let mut listener = ChatPeer::start("listener", &addr, "history", &["--no-history"])?;
    for text in said {
        author.send(text)?;
        listener.wait_message(text)?;
    }
    drop(author);

    let late = ChatPage::open(&driver, &url, Some("ws"))?;
    late.wait_history(&said)?;
    // Under the name the author chose with `?nick=`, from its signed record.
    late.wait_message_nick("first words", "ada")?;
    drop(late);

    drop(listener);
    relay.restart(&["--web-dir", &web.display().to_string()])?;
    let url = format!("{}/?transport=ws&room=history&direct=off", relay.http);
    let later = ChatPage::open(&driver, &url, Some("ws"))?;
    later.wait_history(&said)?;
    // To another room and back: the room's history shows again, once.
    later.switch_room("elsewhere")?;
    later.wait_history(&[])?;
    later.switch_room("history")?;
    later.wait_history(&said)?;
    std::thread::sleep(Duration::from_secs(1));
    later.wait_history(&said)?;

    // A tab opened from this one starts with a copy of its stored
    // identity, but this tab is alive: the new one becomes another peer.
    later.session.eval(&format!(
        "window.open({}); return null;",
        serde_json::to_string(&url)?
    ))?;
    let first = later.session.switch_to_other_window()?;
    let twin = later.session.wait_for(
        "the second tab's peer id",
        WAIT,
        "return document.querySelector('[data-testid=self]')?.textContent || null",
    )?;
    ensure!(
        twin.as_str() != Some(later.peer_id.as_str()),
        "two tabs are one peer"
    );
    later.session.close_window_for(&first)?;

    // This browser saved them: reloaded with no relay it can reach, the
    // page shows its room before (here: without) reconnecting.
    let unreachable = format!(
        "{}/?relay=/ip4/127.0.0.1/tcp/1/ws/p2p/{}&room=history&direct=off",
        relay.http,
        relay.peer_id()?
    );
    later.session.open(&unreachable)?;
    later.wait_history(&said)?;
    // The same tab reloaded is the same peer.
    let me = later.session.wait_for(
        "the peer id after the reload",
        WAIT,
        "return document.querySelector('[data-testid=self]')?.textContent || null",
    )?;
    ensure!(
        me.as_str() == Some(later.peer_id.as_str()),
        "a new peer id: {me}"
    );
    let status = later.status()?;
    ensure!(!status.starts_with("connected"), "status: {status}");

    // Cleared, it is gone, reload or not.
    later
        .session
        .eval("document.querySelector('[data-testid=clear-history]').click(); return null;")?;
    later.wait_history(&[])?;
    // IndexedDB deletes take milliseconds; leaving the page at once could
    // abort them.
    std::thread::sleep(Duration::from_secs(1));
    later.session.open(&unreachable)?;
    later.session.wait_for(
        "the page after a reload",
        WAIT,
        "return !!document.querySelector('[data-testid=self]')?.textContent",
    )?;
    std::thread::sleep(Duration::from_secs(2));
    later.wait_history(&[])?;
    Ok(())
}

/// Direct messages between a page and a terminal both ways, and between
/// two pages; unread counts; delivery shown; nobody else sees them.
#[test]
fn direct_messages_between_pages_and_a_terminal() -> Result<()> {
    let _scene = one_at_a_time();
    let web = web_dir()?;
    let relay = Relay::start_with(
        &temp_dir("browser-dm"),
        &["--web-dir", &web.display().to_string()],
    )?;
    let driver = Driver::start()?;
    let url = |transport: &str| format!("{}/?transport={transport}&room=dm", relay.http);
    let a = ChatPage::open(&driver, &url("ws"), Some("ws"))?;
    let b = ChatPage::open(&driver, &url("webrtc-direct"), Some("webrtc-direct"))?;
    let tcp = relay.addr(Transport::Tcp)?;
    let mut cli = ChatPeer::start("cli", &tcp, "dm", &["--nick", "cli"])?;

    // Page to terminal.
    a.wait_member(&cli.peer_id)?;
    a.open_dm(&cli.peer_id)?;
    a.send_dm("hello, terminal")?;
    let a_id = a.peer_id.clone();
    cli.proc.wait_json("the page's direct message", |v| {
        (v["type"] == "dm" && v["from"] == a_id.as_str() && v["text"] == "hello, terminal")
            .then_some(())
    })?;
    a.wait_dm(&a.peer_id, "hello, terminal", "delivered")?;

    // Terminal to page, while the page shows no conversation: unread.
    a.session
        .eval("document.querySelector('[data-testid=dm-close]').click(); return null;")?;
    cli.proc
        .send_line(&format!("/msg {} hello, page", a.peer_id))?;
    a.wait_unread(&cli.peer_id, 1)?;
    a.open_dm(&cli.peer_id)?;
    a.wait_dm(&cli.peer_id, "hello, page", "received")?;
    a.wait_unread(&cli.peer_id, 0)?;

    // Page to page.
    b.wait_member(&a.peer_id)?;
    b.open_dm(&a.peer_id)?;
    b.send_dm("between pages")?;
    b.wait_dm(&b.peer_id, "between pages", "delivered")?;
    a.wait_unread(&b.peer_id, 1)?;

    // The terminal heard none of the pages' conversation.
    std::thread::sleep(Duration::from_secs(1));
    ensure!(
        !cli.proc.seen.iter().any(|l| l.contains("between pages")),
        "the terminal saw another conversation"
    );
    Ok(())
}

/// A 300 KB file from a terminal to a page, one from the page to the
/// terminal and to another page, byte for byte: the page shows a card with
/// a download button, progress, then a link to the verified bytes (an
/// image also inline).
#[test]
fn files_between_a_page_and_a_terminal() -> Result<()> {
    let _scene = one_at_a_time();
    let web = web_dir()?;
    let relay = Relay::start_with(
        &temp_dir("browser-files"),
        &["--web-dir", &web.display().to_string()],
    )?;
    let driver = Driver::start()?;
    let url = format!("{}/?transport=ws&room=files&direct=off", relay.http);
    let page = ChatPage::open(&driver, &url, Some("ws"))?;
    let dir = temp_dir("browser-files-cli");
    std::fs::create_dir_all(&dir)?;
    let tcp = relay.addr(Transport::Tcp)?;
    let mut cli = ChatPeer::start(
        "cli",
        &tcp,
        "files",
        &[
            "--nick",
            "cli",
            "--download-dir",
            &dir.display().to_string(),
        ],
    )?;
    page.wait_member(&cli.peer_id)?;

    // Terminal to page.
    let photo = noise(300_000, 1);
    let photo_path = dir.join("photo.png");
    std::fs::write(&photo_path, &photo)?;
    cli.proc
        .send_line(&format!("/send {}", photo_path.display()))?;
    let sha256 = sha256_of(&photo_path)?;
    let got = fetch_on_page(&page, &sha256, "photo.png", 300_000)?;
    ensure!(
        got["hex"] == sha256.as_str()
            && got["size"] == 300_000
            && got["preview"] == true
            && got["progress"] == true
            && got["name"] == "photo.png",
        "{got}"
    );

    // Page to terminal.
    let notes = noise(300_000, 2);
    let notes_path = temp_dir("browser-files-page").join("notes.bin");
    std::fs::create_dir_all(notes_path.parent().context("a directory")?)?;
    std::fs::write(&notes_path, &notes)?;
    page.session.type_into(
        "[data-testid=file-input]",
        &notes_path.display().to_string(),
    )?;
    let offer = cli.proc.wait_json("the page's file", |v| {
        (v["type"] == "file" && v["name"] == "notes.bin").then(|| v.clone())
    })?;
    ensure!(
        offer["size"] == 300_000 && offer["from"] == page.peer_id.as_str(),
        "{offer}"
    );
    let sha256 = offer["sha256"].as_str().context("a hash")?.to_owned();
    cli.proc.send_line(&format!("/get {sha256}"))?;
    let saved = cli.proc.wait_json("the page's file saved", |v| {
        (v["type"] == "file_saved" || v["type"] == "file_failed").then(|| v.clone())
    })?;
    ensure!(saved["type"] == "file_saved", "{saved}");
    let path = saved["path"].as_str().context("a path")?;
    ensure!(std::fs::read(path)? == notes, "the bytes differ");

    // Page to page: a second page gets the first page's file (its first
    // holder), through a relay circuit.
    let other = ChatPage::open(&driver, &url, Some("ws"))?;
    let got = fetch_on_page(&other, &sha256, "notes.bin", 300_000)?;
    ensure!(
        got["hex"] == sha256.as_str() && got["size"] == 300_000,
        "{got}"
    );
    // The relay's Content-Security-Policy let all of it through (files
    // shown from `blob:` URLs included).
    for page in [&page, &other] {
        let blocked: Vec<String> = page
            .session
            .console()
            .into_iter()
            .filter(|l| l.contains("Content Security Policy"))
            .collect();
        ensure!(blocked.is_empty(), "{blocked:?}");
    }
    Ok(())
}

/// Clicks the download button of the card of `sha256` (checking its name
/// and size), waits until the file is ready, and returns what the page
/// holds: the SHA-256 of the linked bytes as the browser computes it, their
/// size, whether the image preview and progress bar show, the link's name.
fn fetch_on_page(
    page: &ChatPage,
    sha256: &str,
    name: &str,
    size: u64,
) -> Result<serde_json::Value> {
    let card = format!("[data-testid=file][data-sha256=\"{sha256}\"]");
    page.session.wait_for(
        "the file card and its download button",
        WAIT,
        &format!(
            "const c = document.querySelector('{card}'); \
             if (!c || c.dataset.name !== '{name}' || c.dataset.size !== '{size}') return null; \
             const b = c.querySelector('[data-testid=file-download]'); if (!b) return null; \
             b.click(); return true;"
        ),
    )?;
    file_on_page(page, sha256)
}

/// The file `sha256` once the page has it: its bytes' hash and size, as
/// the page's link gives them, whether it is shown as an image, its name,
/// whether progress was shown.
fn file_on_page(page: &ChatPage, sha256: &str) -> Result<serde_json::Value> {
    let card = format!("[data-testid=file][data-sha256=\"{sha256}\"]");
    page.session.wait_for(
        "the fetched file's link",
        WAIT,
        &format!(
            "const c = document.querySelector('{card}'); \
             if (!c || c.dataset.state !== 'ready') return null; \
             const a = c.querySelector('[data-testid=file-link]'); \
             const img = c.querySelector('[data-testid=file-preview]'); \
             const progress = c.querySelector('[data-testid=file-progress]'); \
             return (async () => {{ \
               const bytes = await (await fetch(a.href)).arrayBuffer(); \
               const digest = await crypto.subtle.digest('SHA-256', bytes); \
               const hex = [...new Uint8Array(digest)].map(b => b.toString(16).padStart(2, '0')).join(''); \
               return {{ hex, size: bytes.byteLength, preview: img ? img.src === a.href : false, \
                        name: a.getAttribute('download'), progress: progress !== null }}; \
             }})();"
        ),
    )
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
