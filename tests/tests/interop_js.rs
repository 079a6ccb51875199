//! Interop with js-libp2p: a js-libp2p browser peer (`tests/js`,
//! `@libp2p/webrtc` private-to-private, pinned versions) and a meshtalk
//! page, both in headless Chromium on one relay, link directly over
//! `/webrtc` in both dial directions and chat in the room.
//!
//! `cargo xtask test` installs and bundles the js peer (npm ci, esbuild)
//! before the tests run.

use std::{
    io::{BufRead, BufReader, Write},
    net::TcpListener,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail, ensure};
use meshtalk_protocol::transport::Transport;
use meshtalk_tests::{
    Relay, WAIT,
    page::ChatPage,
    temp_dir, web_dir,
    webdriver::{Driver, Session},
};
use serde_json::Value;

/// The js peer's page and bundle.
fn js_dir() -> Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("js");
    if !dir.join("dist/peer.js").is_file() {
        bail!(
            "{} has no bundled js peer: `cargo xtask test` builds it (npm ci && npm run build there)",
            dir.display()
        );
    }
    Ok(dir)
}

/// Serves the js peer's two files on a loopback port, until the test ends.
fn serve(dir: PathBuf) -> Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let base = format!("http://{}", listener.local_addr()?);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(&stream);
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/");
            let path = path.split('?').next().unwrap_or("/");
            let (file, kind) = match path {
                "/" => (dir.join("index.html"), "text/html"),
                "/peer.js" => (dir.join("dist/peer.js"), "text/javascript"),
                _ => (PathBuf::new(), ""),
            };
            let mut out = &stream;
            let _ = match std::fs::read(&file) {
                Ok(body) => write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .and_then(|()| out.write_all(&body)),
                Err(_) => out.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                ),
            };
        }
    });
    Ok(base)
}

/// One js-libp2p peer in its own window.
struct JsPeer<'a> {
    session: Session<'a>,
    id: String,
}

impl<'a> JsPeer<'a> {
    fn open(
        driver: &'a Driver,
        base: &str,
        relay: &str,
        room: &str,
        announce: bool,
    ) -> Result<Self> {
        Self::open_on(driver, base, relay, room, announce, None)
    }

    /// [`JsPeer::open`] with its records on `topic` instead of the room's
    /// peers topic.
    fn open_on(
        driver: &'a Driver,
        base: &str,
        relay: &str,
        room: &str,
        announce: bool,
        topic: Option<&str>,
    ) -> Result<Self> {
        let session = driver.session()?;
        let topic = topic.map(|t| format!("&topic={t}")).unwrap_or_default();
        session.open(&format!(
            "{base}/?relay={relay}&room={room}&announce={}{topic}",
            u8::from(announce)
        ))?;
        let id = session.wait_for(
            "the js peer on the relay",
            WAIT,
            "return window.__ready ? window.__id : null",
        )?;
        let id = id.as_str().context("js peer id")?.to_owned();
        Ok(Self { session, id })
    }

    /// Runs one of the peer's async helpers and waits for its answer.
    fn call(&self, what: &str, call: &str) -> Result<String> {
        self.session.eval(&format!(
            "window.__result = null; {call}.then(r => window.__result = r); return true"
        ))?;
        let result = self
            .session
            .wait_for(what, WAIT, "return window.__result")?;
        let text = result.as_str().unwrap_or_default().to_owned();
        ensure!(text.starts_with("ok"), "{what}: {text}");
        Ok(text)
    }

    fn wait_message(&self, from: &str, text: &str) -> Result<()> {
        let script = format!(
            "return window.__messages.some(m => m.from === {} && m.text.includes({})) || null",
            Value::from(from),
            Value::from(text)
        );
        self.session
            .wait_for(&format!("{text:?} at the js peer"), WAIT, &script)
            .map(drop)
    }
}

/// The scene: the js peer's files served, a relay serving the page, its
/// WebSocket address, and Chromium.
struct Scene {
    js: String,
    relay: Relay,
    ws: String,
    driver: Driver,
}

impl Scene {
    fn start(name: &str) -> Result<Self> {
        let js = serve(js_dir()?)?;
        let relay = Relay::start_with(
            &temp_dir(name),
            &["--web-dir", &web_dir()?.display().to_string()],
        )?;
        let ws = relay.addr(Transport::WebSocket)?.to_string();
        let driver = Driver::start()?;
        Ok(Self {
            js,
            relay,
            ws,
            driver,
        })
    }

    /// A meshtalk page on the relay, over WebSocket, with `query`.
    fn page(&self, query: &str) -> Result<ChatPage<'_>> {
        let url = format!("{}/?transport=ws&{query}", self.relay.http);
        ChatPage::open(&self.driver, &url, Some("ws"))
    }
}

#[test]
fn js_libp2p_peers_and_a_page_link_over_webrtc_both_ways_and_chat() -> Result<()> {
    let scene = Scene::start("interop-js")?;
    let Scene { js, ws, driver, .. } = &scene;
    let page = scene.page("room=interop")?;

    // meshtalk dials js: the page reads the js peer's pubsub-peer-discovery
    // record on the room's peers topic and links to it.
    let announced = JsPeer::open(driver, js, ws, "interop", true)?;
    page.wait_direct(&announced.id, WAIT)?;

    // js dials meshtalk: a quiet js peer dials the page's /webrtc address
    // and pings it over the new connection.
    let dialer = JsPeer::open(driver, js, ws, "interop", false)?;
    let page_addr = format!("{ws}/p2p-circuit/webrtc/p2p/{}", page.peer_id);
    let dialed = dialer.call(
        "the js dial",
        &format!("window.__dial({})", Value::from(page_addr)),
    )?;
    ensure!(dialed.contains("/webrtc/"), "js dialed {dialed}");
    page.session.wait_for(
        "the js dialer's row",
        WAIT,
        &format!(
            "return [...document.querySelectorAll('[data-testid=peer]')].some(p => \
               p.dataset.peer === '{}' && p.dataset.transport === 'webrtc') || null",
            dialer.id
        ),
    )?;

    // Room messages both ways, in the course's format.
    announced.call("the js publish", "window.__publish('hello from js-libp2p')")?;
    let got = page.wait_message("hello from js-libp2p")?;
    ensure!(got.from == announced.id, "from {}", got.from);
    page.send("hello from meshtalk")?;
    announced.wait_message(&page.peer_id, "hello from meshtalk")?;
    dialer.wait_message(&page.peer_id, "hello from meshtalk")?;
    Ok(())
}

/// A `?compat=uc` page reads a js-libp2p browser peer's record on
/// universal-connectivity's browser peer discovery topic (where its
/// browser peers announce themselves) and links to it over `/webrtc`.
#[test]
fn a_uc_page_links_to_a_js_peer_announced_on_universal_connectivitys_discovery_topic() -> Result<()>
{
    let scene = Scene::start("interop-js-uc")?;
    let page = scene.page("compat=uc")?;
    let announced = JsPeer::open_on(
        &scene.driver,
        &scene.js,
        &scene.ws,
        "unused",
        true,
        Some(meshtalk_protocol::uc::BROWSER_DISCOVERY_TOPIC),
    )?;
    page.wait_direct(&announced.id, WAIT)
}
