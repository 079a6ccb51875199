//! `meshtalk bot`: a peer that provides a service, the libp2p course's
//! "chatting with a robot". It answers commands in its room and by direct
//! message:
//!
//! - `!help`: the commands;
//! - `!ping`: `pong`, with the round-trip time of the bot's connection to
//!   the asker when it has one;
//! - `!peers`: the peers the bot is connected to, their transports and
//!   round-trip times;
//! - `!time`: the bot's clock, UTC;
//! - `!echo TEXT`: TEXT.
//!
//! It is written on `meshtalk-protocol`'s public API alone (build a swarm,
//! wrap it in the engine, send commands, read events), as the example to
//! copy for a service of your own: change [`answer`].

use std::{
    collections::HashMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use futures::StreamExt;
use meshtalk_protocol::{
    arch::{self, TransportConfig},
    behaviour::{BehaviourConfig, Role},
    discovery::Discovery,
    engine::{Engine, EngineConfig, EngineHandle, Event},
    libp2p::PeerId,
    rooms::Room,
    transport::Transport,
};

use crate::args::BotArgs;

/// How long `!ping` waits for a first round trip to a peer that just
/// connected (a direct message opens a connection, and pinging starts).
const PING_WAIT: Duration = Duration::from_secs(2);

/// Where a question came from, so the answer goes back there.
#[derive(Clone)]
enum Asked {
    Room(Room),
    Dm(PeerId),
}

/// What the bot knows of its connections.
#[derive(Default)]
struct Links {
    /// Connected peers: transport, last round trip.
    peers: HashMap<PeerId, (Transport, Option<Duration>)>,
}

/// Runs the bot until interrupted.
pub async fn run(args: BotArgs) -> Result<()> {
    // 1. A swarm with every transport, and the engine that drives it.
    let keypair = meshtalk_protocol::keyfile::identity(args.identity.as_deref())?;
    // The relays given are the bootstrap list: the engine keeps them
    // connected, dialing again after a loss.
    let discovery = Discovery {
        bootstrap: args.connect.clone(),
        ..Discovery::default()
    };
    let behaviour = BehaviourConfig {
        role: Role::Peer,
        sources: discovery.sources.clone(),
        ..BehaviourConfig::default()
    };
    let swarm = arch::build_swarm(keypair, TransportConfig::default(), &behaviour)
        .await
        .context("cannot start the libp2p node")?;
    let config = EngineConfig {
        rooms: vec![args.room.clone()],
        nick: Some(args.nick.clone()),
        discovery,
        ..EngineConfig::default()
    };
    let (engine, handle, mut events) = Engine::new(swarm, Role::Peer, config);
    let me = engine.local_peer_id();
    tokio::spawn(engine.run());

    // 2. Say who we are (a JSON line, for whoever started us).
    println!(
        "{}",
        serde_json::json!({"type": "ready", "peer": me.to_string(), "room": args.room.name()})
    );

    // 3. Answer what is asked; `!ping` may wait for a first round trip.
    let mut links = Links::default();
    let mut pongs: Vec<(PeerId, Asked, tokio::time::Instant)> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else { break };
                match event {
                    Event::Message { room, from, message, history: false, .. } => {
                        ask(&handle, &links, &mut pongs, from, Asked::Room(room), &message.text).await;
                    }
                    Event::DirectMessage { from, message, .. } => {
                        ask(&handle, &links, &mut pongs, from, Asked::Dm(from), &message.text).await;
                    }
                    Event::Connected { peer, transport, .. } => {
                        links.peers.entry(peer).or_insert((transport, None));
                    }
                    Event::Disconnected { peer, remaining: 0, .. } => {
                        links.peers.remove(&peer);
                    }
                    Event::Ping { peer, rtt, transport, .. } => {
                        links.peers.insert(peer, (transport, Some(rtt)));
                    }
                    Event::DialFailed { error, .. } => eprintln!("meshtalk bot: {error}"),
                    _ => {}
                }
            }
            _ = tick.tick() => {}
        }
        // Pongs whose round trip is now known, or that waited long enough.
        let now = tokio::time::Instant::now();
        let (due, waiting): (Vec<_>, Vec<_>) = pongs.drain(..).partition(|(peer, _, until)| {
            *until <= now || links.peers.get(peer).is_some_and(|(_, rtt)| rtt.is_some())
        });
        pongs = waiting;
        for (peer, asked, _) in due {
            reply(&handle, asked, pong(&links, peer)).await;
        }
    }
    Ok(())
}

/// Handles a line someone said to the bot.
async fn ask(
    handle: &EngineHandle,
    links: &Links,
    pongs: &mut Vec<(PeerId, Asked, tokio::time::Instant)>,
    from: PeerId,
    asked: Asked,
    text: &str,
) {
    let Some(command) = text.trim().strip_prefix('!') else {
        return;
    };
    if command.trim() == "ping" {
        let known = links.peers.get(&from).is_some_and(|(_, rtt)| rtt.is_some());
        if known {
            reply(handle, asked, pong(links, from)).await;
        } else {
            pongs.push((from, asked, tokio::time::Instant::now() + PING_WAIT));
        }
        return;
    }
    if let Some(text) = answer(command, links) {
        reply(handle, asked, text).await;
    }
}

/// The answer to `!command`, or `None` for what the bot does not know.
/// Answers never start with `!`: two bots must not keep each other busy.
fn answer(command: &str, links: &Links) -> Option<String> {
    let (name, rest) = command.split_once(' ').unwrap_or((command, ""));
    Some(match name {
        "help" => "commands: !help, !ping (round-trip time), !peers, !time, !echo TEXT".into(),
        "peers" => {
            let mut shown: Vec<String> = links
                .peers
                .iter()
                .map(|(peer, (transport, rtt))| {
                    let id = peer.to_string();
                    let tail = &id[id.len().saturating_sub(6)..];
                    match rtt {
                        Some(rtt) => format!("…{tail} ({transport}, {:.1} ms)", ms(*rtt)),
                        None => format!("…{tail} ({transport})"),
                    }
                })
                .collect();
            shown.sort();
            format!("{} connected: {}", shown.len(), shown.join(", "))
        }
        "time" => format!("it is {} UTC here", utc_now()),
        "echo" => format!("echo: {rest}"),
        _ => format!("I do not know !{name}; try !help"),
    })
}

fn pong(links: &Links, peer: PeerId) -> String {
    match links.peers.get(&peer) {
        Some((transport, Some(rtt))) => {
            format!(
                "pong: {:.1} ms round trip to you over {transport}",
                ms(*rtt)
            )
        }
        _ => "pong (we are not connected directly, so no round-trip time: ask me by /msg)".into(),
    }
}

async fn reply(handle: &EngineHandle, asked: Asked, text: String) {
    let sent = match asked {
        Asked::Room(room) => handle.send(room, text).await,
        Asked::Dm(peer) => handle.send_dm(peer, text).await,
    };
    if let Err(e) = sent {
        eprintln!("meshtalk bot: {e}");
    }
}

fn ms(rtt: Duration) -> f64 {
    rtt.as_secs_f64() * 1000.0
}

/// Now as `YYYY-MM-DD hh:mm:ss`, UTC (days to a civil date: Howard
/// Hinnant's algorithm).
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_never_start_with_a_command() {
        let links = Links::default();
        for command in ["help", "peers", "time", "echo !help", "nonsense"] {
            let text = answer(command, &links).unwrap_or_default();
            assert!(!text.starts_with('!'), "{command}: {text}");
        }
        assert_eq!(
            answer("echo hi there", &links).as_deref(),
            Some("echo: hi there")
        );
    }

    #[test]
    fn the_clock_reads_as_a_date() {
        let now = utc_now();
        assert_eq!(now.len(), 19, "{now}");
        assert!(now.starts_with("20"), "{now}");
    }
}
