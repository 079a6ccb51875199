//! `meshtalk chat` and `meshtalk listen`.

use std::{
    collections::HashMap,
    io::{IsTerminal, Write},
};

use anyhow::Result;
use futures::StreamExt;
use meshtalk_protocol::{
    arch::files::Downloads,
    behaviour::Pubsub,
    engine::{EngineConfig, Event, FileConfig, HistoryConfig},
    keyfile,
    libp2p::Multiaddr,
    rooms::Room,
    uc,
    validate::{self},
    wire::Payload,
};
use tokio::io::{AsyncBufReadExt, BufReader};

use meshtalk::node::Node;

use crate::{
    args::{ChatArgs, ListenArgs},
    commands::{self, Peers, Typed},
    output, tui,
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
    if !args.download_dir.is_dir() {
        anyhow::bail!(
            "--download-dir {}: not a directory",
            args.download_dir.display()
        );
    }
    if let Some(nick) = &args.nick {
        validate::check(&Payload::Nick(nick.clone()), 0)
            .map_err(|e| anyhow::anyhow!("invalid --nick: {e}"))?;
    }
    let connect = args.net.connect.clone();
    let uc = args.compat.as_deref() == Some("uc");
    let room = if uc { uc::room() } else { args.room.clone() };
    let mut node = args
        .net
        .start(EngineConfig {
            rooms: if uc { Vec::new() } else { vec![room.clone()] },
            uc,
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
    // A person at a terminal gets the terminal UI; programs and pipes get
    // lines.
    if !args.json && std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
        return tui::run(node, room, args.nick.clone(), early).await;
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({"type": "ready", "peer": node.peer_id.to_string(), "room": room.name()})
        );
    } else {
        eprintln!("* you are {} in room {room}", node.peer_id);
    }
    let mut room = room;
    let mut peers = Peers::default();
    for event in early {
        peers.on_event(&event);
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
                        if !handle_line(&node, &mut room, &peers, &line).await {
                            stdin_open = false;
                            let _ = node.handle.shutdown().await;
                        }
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
                Some(event) => {
                    peers.on_event(&event);
                    printer.print(&event);
                }
                None => break,
            }
        }
    }
    let _ = node.task.await;
    Ok(())
}

/// Carries out one line typed on stdin: `/help` and `/peers` answer on
/// stderr, `/quit` ends like the end of input; the rest goes to the
/// network, and a mistake is one line on stderr.
async fn handle_line(node: &Node, room: &mut Room, peers: &Peers, raw: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(raw) else {
        eprintln!("meshtalk: line not sent: it is not UTF-8 text");
        return true;
    };
    let typed = match commands::parse(text) {
        Ok(Some(typed)) => typed,
        Ok(None) => return true,
        Err(e) => {
            eprintln!("meshtalk: {e}");
            return true;
        }
    };
    match typed {
        Typed::Quit => return false,
        Typed::Help => {
            for (command, what) in commands::HELP {
                eprintln!("  {command:<18} {what}");
            }
        }
        Typed::Peers => {
            eprintln!("* {} connected peers", peers.len());
            for (peer, transport, rtt) in peers.list() {
                let rtt = rtt.map_or("-".into(), |ms| format!("{ms:.1} ms"));
                eprintln!("  {peer} {transport} {rtt}");
            }
        }
        typed => {
            if let Err(e) = commands::execute(node, room, typed).await {
                eprintln!("meshtalk: {e}");
            }
        }
    }
    true
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
    let keypair = keyfile::identity(args.identity.as_deref())?;
    let mut node = Node::start_as(
        keypair,
        engine,
        Pubsub::default(),
        &listen,
        meshtalk_protocol::arch::CONNECT_TIMEOUT,
    )
    .await?;
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
