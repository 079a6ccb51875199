//! `meshtalk chat` and `meshtalk listen`.

use std::{collections::HashMap, io::Write, path::Path};

use anyhow::Result;
use futures::StreamExt;
use meshtalk_protocol::{
    arch::files::{Downloads, FileSource},
    engine::{EngineConfig, Event, FileConfig, HistoryConfig},
    files::{self, FileHash},
    keyfile,
    libp2p::{Multiaddr, PeerId},
    validate::{self},
    wire::Payload,
};
use tokio::io::{AsyncBufReadExt, BufReader};

use meshtalk::node::Node;

use crate::{
    args::{ChatArgs, ListenArgs},
    output,
};

/// Prints events for a person (text) or a program (`--json`).
struct Printer {
    json: bool,
    held: HashMap<String, usize>,
}

impl Printer {
    fn print(&mut self, event: &Event) {
        if let Event::Held { topic, pending } = event {
            if self.held.insert(topic.clone(), *pending) != Some(*pending) {
                eprintln!("* {pending} message(s) held until a peer joins {topic}");
            }
            return;
        }
        if let Event::Sent { topic, .. } = event {
            self.held.remove(topic);
            return;
        }
        let mut out = std::io::stdout().lock();
        if self.json {
            if let Some(value) = output::chat_json(event) {
                let _ = writeln!(out, "{value}");
            }
        } else if let Some(line) = output::chat_line(event) {
            let _ = writeln!(out, "{line}");
        } else if let Some(line) = output::status_line(event) {
            eprintln!("{line}");
        }
        let _ = out.flush();
    }
}

/// Runs `meshtalk chat` until stdin closes and every line has been sent.
pub async fn run(args: ChatArgs) -> Result<()> {
    if let Some(nick) = &args.nick {
        validate::check(&Payload::Nick(nick.clone()), 0)
            .map_err(|e| anyhow::anyhow!("invalid --nick: {e}"))?;
    }
    let connect = args.net.connect.clone();
    let mut node = args
        .net
        .start(EngineConfig {
            rooms: vec![args.room.clone()],
            nick: args.nick.clone(),
            history: HistoryConfig {
                fetch: !args.no_history,
                ..HistoryConfig::default()
            },
            dm_deadline: Some(args.dm_timeout),
            files: FileConfig {
                max_size: args.max_file_size,
                downloads: Downloads::dir(&args.download_dir),
            },
            ..EngineConfig::default()
        })
        .await?;
    let mut printer = Printer {
        json: args.json,
        held: HashMap::new(),
    };
    let early = if connect.is_empty() {
        eprintln!("* no --connect given: looking for peers on the local network (mDNS)");
        Vec::new()
    } else {
        node.connect(&connect, args.net.timeout).await?
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({"type": "ready", "peer": node.peer_id.to_string(), "room": args.room.name()})
        );
    } else {
        eprintln!("* you are {} in room {}", node.peer_id, args.room);
    }
    for event in early {
        printer.print(&event);
    }

    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut stdin_open = true;
    let mut line = Vec::new();
    loop {
        tokio::select! {
            read = stdin.read_until(b'\n', &mut line), if stdin_open => {
                match read {
                    Ok(0) => {
                        stdin_open = false;
                        let _ = node.handle.shutdown().await;
                    }
                    Ok(_) => {
                        handle_line(&node, &args.room, &line).await;
                        line.clear();
                    }
                    Err(e) => {
                        eprintln!("meshtalk: cannot read stdin: {e}");
                        stdin_open = false;
                        let _ = node.handle.shutdown().await;
                    }
                }
            }
            event = node.events.next() => match event {
                Some(event) => printer.print(&event),
                None => break,
            }
        }
    }
    let _ = node.task.await;
    Ok(())
}

/// Sends one typed line: a chat message, `/nick NAME`,
/// `/msg PEER_ID TEXT` (a direct message), `/send PATH` (offers a file)
/// or `/get SHA256` (fetches one).
async fn handle_line(node: &Node, room: &meshtalk_protocol::rooms::Room, raw: &[u8]) {
    let Ok(text) = std::str::from_utf8(raw) else {
        eprintln!("meshtalk: line not sent: it is not UTF-8 text");
        return;
    };
    let text = text.trim_end_matches(['\n', '\r']);
    if text.trim().is_empty() {
        return;
    }
    let result = if let Some(nick) = text.strip_prefix("/nick ") {
        node.handle.set_nick(nick.trim()).await
    } else if let Some(rest) = text.strip_prefix("/msg ") {
        let (peer, line) = rest
            .trim_start()
            .split_once(' ')
            .unwrap_or((rest.trim(), ""));
        match peer.parse::<PeerId>() {
            Err(_) => {
                eprintln!("meshtalk: /msg {peer:?}: not a peer id (usage: /msg PEER_ID TEXT)");
                return;
            }
            Ok(_) if line.trim().is_empty() => {
                eprintln!("meshtalk: /msg: nothing to send (usage: /msg PEER_ID TEXT)");
                return;
            }
            Ok(to) => node.handle.send_dm(to, line).await,
        }
    } else if let Some(path) = text.strip_prefix("/send ") {
        let path = Path::new(path.trim());
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let source = FileSource::path(path);
        match files::describe(&source, name, files::media_type_of(name)).await {
            Ok(offer) => node.handle.share_file(room.clone(), offer, source).await,
            Err(e) => {
                eprintln!("meshtalk: /send {}: {e}", path.display());
                return;
            }
        }
    } else if let Some(hash) = text.strip_prefix("/get ") {
        match hash.parse::<FileHash>() {
            Ok(hash) => node.handle.fetch_file(hash).await,
            Err(e) => {
                eprintln!("meshtalk: /get: {e}");
                return;
            }
        }
    } else {
        node.handle.send(room.clone(), text).await
    };
    if let Err(e) = result {
        eprintln!("meshtalk: {e}");
    }
}

/// The default listen addresses of `meshtalk listen`.
fn default_listen() -> Vec<Multiaddr> {
    [
        "/ip4/0.0.0.0/tcp/0",
        "/ip4/0.0.0.0/udp/0/quic-v1",
        "/ip4/0.0.0.0/tcp/0/ws",
        "/ip4/0.0.0.0/udp/0/webrtc-direct",
    ]
    .iter()
    .filter_map(|a| a.parse().ok())
    .collect()
}

/// Runs `meshtalk listen` until interrupted.
pub async fn listen(args: ListenArgs) -> Result<()> {
    let listen = if args.listen.is_empty() {
        default_listen()
    } else {
        args.listen
    };
    let engine = EngineConfig {
        rooms: vec![args.room],
        ..EngineConfig::default()
    };
    let mut node = match &args.identity {
        Some(path) => {
            let keypair = keyfile::load_or_create_identity(path)?;
            Node::start_as(keypair, engine, &listen).await?
        }
        None => Node::start(engine, &listen).await?,
    };
    let mut printer = Printer {
        json: false,
        held: HashMap::new(),
    };
    while let Some(event) = node.events.next().await {
        match &event {
            Event::Listening(addr) => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "listening on {addr}");
                let _ = out.flush();
            }
            Event::Ping {
                peer,
                rtt,
                transport,
                ..
            } => eprintln!(
                "* ping {} over {transport}: {:.2} ms",
                output::short_id(peer),
                rtt.as_secs_f64() * 1000.0
            ),
            _ => printer.print(&event),
        }
    }
    Ok(())
}
