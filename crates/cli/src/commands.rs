//! What a typed line means, for `meshtalk chat` in both its faces (lines
//! on stdin, and the terminal UI): a chat message, or one of the commands
//! below. Parsing is separate from doing, so both faces share both.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use meshtalk_protocol::{
    arch::files::FileSource,
    engine::{CommandError, Event},
    files::{self, FileHash},
    libp2p::PeerId,
    rooms::Room,
    transport::Transport,
};

use meshtalk::node::Node;

/// The commands, for `/help`.
pub const HELP: &[(&str, &str)] = &[
    ("/nick NAME", "change your nickname"),
    ("/room NAME", "leave this room for another"),
    (
        "/msg PEER_ID TEXT",
        "a direct message only that peer can read",
    ),
    ("/send PATH", "offer a file to the room"),
    ("/get SHA256", "fetch a file offered in the room"),
    ("/peers", "connected peers: transport, round-trip time"),
    ("/help", "this list"),
    ("/quit", "leave (Ctrl-C too)"),
];

/// A typed line.
#[derive(Debug, PartialEq, Eq)]
pub enum Typed {
    /// Text for the room.
    Say(String),
    /// `/nick NAME`.
    Nick(String),
    /// `/room NAME`.
    Room(Room),
    /// `/msg PEER_ID TEXT`.
    Msg(PeerId, String),
    /// `/send PATH`.
    Send(PathBuf),
    /// `/get SHA256`.
    Get(FileHash),
    /// `/peers`.
    Peers,
    /// `/help`.
    Help,
    /// `/quit`.
    Quit,
}

/// Reads a typed line; `Ok(None)` for a blank one, `Err` with a one-line
/// explanation for a command used wrongly. A line starting with `/` that
/// is no command is said as it is.
pub fn parse(text: &str) -> Result<Option<Typed>, String> {
    let text = text.trim_end_matches(['\n', '\r']);
    if text.trim().is_empty() {
        return Ok(None);
    }
    let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
    let rest = rest.trim();
    let typed = match word {
        "/nick" if rest.is_empty() => return Err("usage: /nick NAME".into()),
        "/nick" => Typed::Nick(rest.to_owned()),
        "/room" => Typed::Room(
            Room::new(rest).map_err(|e| format!("/room {rest:?}: {e} (usage: /room NAME)"))?,
        ),
        "/msg" => {
            let (peer, line) = rest.split_once(' ').unwrap_or((rest, ""));
            let to = peer
                .parse::<PeerId>()
                .map_err(|_| format!("/msg {peer:?}: not a peer id (usage: /msg PEER_ID TEXT)"))?;
            if line.trim().is_empty() {
                return Err("/msg: nothing to send (usage: /msg PEER_ID TEXT)".into());
            }
            Typed::Msg(to, line.trim().to_owned())
        }
        "/send" if rest.is_empty() => return Err("usage: /send PATH".into()),
        "/send" => Typed::Send(PathBuf::from(rest)),
        "/get" => Typed::Get(rest.parse::<FileHash>().map_err(|e| format!("/get: {e}"))?),
        "/peers" => Typed::Peers,
        "/help" => Typed::Help,
        "/quit" | "/exit" => Typed::Quit,
        _ => Typed::Say(text.to_owned()),
    };
    Ok(Some(typed))
}

/// Carries out what goes to the network; `/peers`, `/help` and `/quit`
/// are the caller's (they are about what it shows). `room` follows
/// `/room`.
pub async fn execute(node: &Node, room: &mut Room, typed: Typed) -> Result<(), String> {
    let result: Result<(), CommandError> = match typed {
        Typed::Say(text) => node.handle.send(room.clone(), text).await,
        Typed::Nick(nick) => node.handle.set_nick(nick).await,
        Typed::Room(next) => {
            if next == *room {
                return Ok(());
            }
            let old = std::mem::replace(room, next.clone());
            let _ = node.handle.leave(old).await;
            node.handle.join(next).await
        }
        Typed::Msg(to, text) => node.handle.send_dm(to, text).await,
        Typed::Send(path) => return send_file(node, room, &path).await,
        Typed::Get(hash) => node.handle.fetch_file(hash).await,
        Typed::Peers | Typed::Help | Typed::Quit => Ok(()),
    };
    result.map_err(|e| e.to_string())
}

/// Hashes a file and offers it to `room`.
async fn send_file(node: &Node, room: &Room, path: &Path) -> Result<(), String> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let source = FileSource::path(path);
    let offer = files::describe(&source, name, files::media_type_of(name))
        .await
        .map_err(|e| format!("/send {}: {e}", path.display()))?;
    node.handle
        .share_file(room.clone(), offer, source)
        .await
        .map_err(|e| e.to_string())
}

/// The peers we are connected to, for `/peers`: the transport of the
/// first connection, the last round trip.
#[derive(Default)]
pub struct Peers(BTreeMap<PeerId, (Transport, Option<Duration>)>);

impl Peers {
    /// Follows connections and pings.
    pub fn on_event(&mut self, event: &Event) {
        match event {
            Event::Connected {
                peer, transport, ..
            } => {
                self.0.entry(*peer).or_insert((*transport, None));
            }
            Event::Disconnected {
                peer, remaining: 0, ..
            } => {
                self.0.remove(peer);
            }
            Event::Ping {
                peer,
                rtt,
                transport,
                ..
            } => {
                // The transport of the connection first seen stays.
                self.0.entry(*peer).or_insert((*transport, None)).1 = Some(*rtt);
            }
            _ => {}
        }
    }

    /// One entry a peer: id, transport, round trip in ms.
    pub fn list(&self) -> impl Iterator<Item = (&PeerId, Transport, Option<f64>)> {
        self.0
            .iter()
            .map(|(peer, (t, rtt))| (peer, *t, rtt.map(|d| d.as_secs_f64() * 1000.0)))
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_as_commands_or_text() {
        assert_eq!(parse("  \n"), Ok(None));
        assert_eq!(parse("hello\n"), Ok(Some(Typed::Say("hello".into()))));
        assert_eq!(parse("/nick ada"), Ok(Some(Typed::Nick("ada".into()))));
        assert!(parse("/nick").is_err());
        assert_eq!(
            parse("/room ops"),
            Ok(Some(Typed::Room(Room::new("ops").expect("room"))))
        );
        assert!(parse("/room no spaces allowed").is_err());
        let peer = PeerId::random();
        assert_eq!(
            parse(&format!("/msg {peer} hi there")),
            Ok(Some(Typed::Msg(peer, "hi there".into())))
        );
        assert!(parse(&format!("/msg {peer}")).is_err());
        assert!(parse("/msg nobody hi").is_err());
        assert_eq!(
            parse("/send /tmp/a b.txt"),
            Ok(Some(Typed::Send("/tmp/a b.txt".into())))
        );
        assert!(parse("/get 1234").is_err());
        assert_eq!(parse("/quit"), Ok(Some(Typed::Quit)));
        assert_eq!(parse("/shrug"), Ok(Some(Typed::Say("/shrug".into()))));
    }
}
