//! What the page shows, as plain data in reactive signals. The network side
//! ([`crate::net`]) writes it; the components ([`crate::ui`]) read it. No
//! libp2p type appears here, so the components never see one.

use std::collections::BTreeMap;

use leptos::prelude::*;

/// How many lines the message list keeps; older ones scroll away for good.
pub const MAX_LINES: usize = 1000;

/// The link to the relay.
#[derive(Clone, Debug, PartialEq)]
pub enum Status {
    /// Building the node.
    Starting,
    /// Dialing the relay.
    Connecting {
        /// The transport being tried.
        transport: String,
    },
    /// Connected to the relay.
    Connected {
        /// The transport in use.
        transport: String,
    },
    /// The relay is unreachable or went away; trying again soon.
    Offline {
        /// Why, for a person.
        reason: String,
        /// Seconds until the next attempt.
        retry_secs: f64,
    },
    /// Nothing to connect to until the person gives an address.
    Stopped {
        /// Why.
        reason: String,
    },
}

impl Status {
    /// The status line. Only the connected state contains the word
    /// "connected", so scripts can look for it.
    pub fn text(&self) -> String {
        match self {
            Status::Starting => "starting…".into(),
            Status::Connecting { transport } => format!("connecting over {transport}…"),
            Status::Connected { transport } => format!("connected over {transport}"),
            Status::Offline { reason, retry_secs } => {
                format!("offline: {reason}; retrying in {retry_secs:.1} s")
            }
            Status::Stopped { reason } => format!("offline: {reason}"),
        }
    }

    /// A one-word state for styling and automation (`data-state`).
    pub fn state(&self) -> &'static str {
        match self {
            Status::Starting | Status::Connecting { .. } => "connecting",
            Status::Connected { .. } => "connected",
            Status::Offline { .. } | Status::Stopped { .. } => "offline",
        }
    }
}

/// The transport name of a direct page-to-page link.
pub const DIRECT: &str = "webrtc";

/// What the status line adds about direct links: how many there are, or
/// why there is none when an attempt failed.
pub fn direct_text(links: usize, problem: Option<&str>) -> String {
    match (links, problem) {
        (0, None) => String::new(),
        (0, Some(problem)) => format!(" · {problem}"),
        (1, _) => " · 1 direct link".into(),
        (n, _) => format!(" · {n} direct links"),
    }
}

/// One line of the message list.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    /// Unique within the page, for keyed rendering.
    pub key: u64,
    /// The room it belongs to.
    pub room: String,
    /// What it is.
    pub kind: LineKind,
    /// Local time, `HH:MM`.
    pub time: String,
    /// The text, shown as text.
    pub text: String,
}

/// Kinds of [`Line`].
#[derive(Clone, Debug, PartialEq)]
pub enum LineKind {
    /// A chat message.
    Message {
        /// The author's peer id.
        from: String,
        /// The author's nickname when known.
        nick: Option<String>,
        /// Ours.
        mine: bool,
        /// Ours and not yet handed to the network.
        pending: bool,
        /// Said before the page joined: history a peer served.
        history: bool,
        /// The author's message id (hex; empty for ours, until sent).
        id: String,
    },
    /// A file offered in the room (the line's text is its name).
    File(FileLine),
    /// Something the page says (a nickname change, a rejected command).
    Notice,
}

/// A file offered in a room, as its card shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct FileLine {
    /// Its SHA-256, hex: the key of its [`FileState`].
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// Media type.
    pub media_type: String,
    /// Whether it is an image the page previews once fetched.
    pub image: bool,
    /// Who offered it.
    pub from: String,
    /// Their nickname when known.
    pub nick: Option<String>,
    /// Ours.
    pub mine: bool,
}

/// Where a file offered in a room stands for this page.
#[derive(Clone, Debug, PartialEq)]
pub enum FileState {
    /// Offered; not fetched.
    Offered,
    /// On its way: bytes received of the size.
    Fetching {
        /// Bytes received.
        received: u64,
        /// The file's size.
        size: u64,
    },
    /// Here and verified (or ours): an object URL of its bytes.
    Ready {
        /// `blob:` URL.
        url: String,
    },
    /// Not fetched: why.
    Failed(String),
}

impl FileState {
    /// The name in `data-state`.
    pub fn name(&self) -> &'static str {
        match self {
            FileState::Offered => "offered",
            FileState::Fetching { .. } => "fetching",
            FileState::Ready { .. } => "ready",
            FileState::Failed(_) => "failed",
        }
    }
}

/// One connected peer, a row of the peers table.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerRow {
    /// Peer id.
    pub peer: String,
    /// Transport name (`webrtc-direct`, `ws`, `circuit`…).
    pub transport: String,
    /// The peer's address on the connection.
    pub addr: String,
    /// Last ping round trip in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Open connections to the peer (the row shows the best).
    pub connections: usize,
}

/// Where one of our direct messages stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DmState {
    /// Handed to the network; no acknowledgement yet.
    Sending,
    /// The peer acknowledged it.
    Delivered,
    /// It could not be delivered in time.
    Failed,
}

impl DmState {
    /// The name in `data-state`.
    pub fn name(self) -> &'static str {
        match self {
            DmState::Sending => "sending",
            DmState::Delivered => "delivered",
            DmState::Failed => "failed",
        }
    }
}

/// A line of a direct conversation.
#[derive(Clone, Debug, PartialEq)]
pub struct DmLine {
    /// Stable key for the list.
    pub key: u64,
    /// The author's peer id.
    pub from: String,
    /// The text.
    pub text: String,
    /// Local time, `HH:MM`.
    pub time: String,
    /// Ours: where it stands; theirs: `None`.
    pub state: Option<DmState>,
}

/// A direct conversation with one peer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Conversation {
    /// Its lines, oldest first.
    pub lines: Vec<DmLine>,
    /// Lines received while it was not open.
    pub unread: usize,
}

/// Everything the page shows. Cheap to copy: signals are handles.
#[derive(Clone, Copy)]
pub struct Model {
    /// The link to the relay.
    pub status: RwSignal<Status>,
    /// Our peer id.
    pub me: RwSignal<String>,
    /// The current room.
    pub room: RwSignal<String>,
    /// Our nickname (empty: none).
    pub nick: RwSignal<String>,
    /// Message list, oldest first, every room.
    pub lines: RwSignal<Vec<Line>>,
    /// Connected peers by peer id.
    pub peers: RwSignal<BTreeMap<String, PeerRow>>,
    /// Members seen in each room, by room then peer id.
    pub members: RwSignal<BTreeMap<String, BTreeMap<String, ()>>>,
    /// Known nicknames by peer id.
    pub nicks: RwSignal<BTreeMap<String, String>>,
    /// Why the last direct link attempt failed, until one succeeds or the
    /// member it was to is gone.
    pub direct_problem: RwSignal<Option<String>>,
    /// Direct link attempts that failed since the page opened.
    pub direct_failures: RwSignal<u32>,
    /// Direct conversations by peer id.
    pub dms: RwSignal<BTreeMap<String, Conversation>>,
    /// The conversation shown, if any.
    pub open_dm: RwSignal<Option<String>>,
    /// Files offered in our rooms, by SHA-256 (hex).
    pub files: RwSignal<BTreeMap<String, FileState>>,
    next_key: StoredValue<u64>,
}

impl Model {
    /// An empty model for `room`.
    pub fn new(room: &str, nick: &str) -> Self {
        Self {
            status: RwSignal::new(Status::Starting),
            me: RwSignal::new(String::new()),
            room: RwSignal::new(room.to_owned()),
            nick: RwSignal::new(nick.to_owned()),
            lines: RwSignal::new(Vec::new()),
            peers: RwSignal::new(BTreeMap::new()),
            members: RwSignal::new(BTreeMap::new()),
            nicks: RwSignal::new(BTreeMap::new()),
            direct_problem: RwSignal::new(None),
            direct_failures: RwSignal::new(0),
            dms: RwSignal::new(BTreeMap::new()),
            open_dm: RwSignal::new(None),
            files: RwSignal::new(BTreeMap::new()),
            next_key: StoredValue::new(0),
        }
    }

    /// How many peers the page is linked to directly (`/webrtc`).
    pub fn direct_links(&self) -> usize {
        self.peers
            .with(|peers| peers.values().filter(|r| r.transport == DIRECT).count())
    }

    /// Appends a line, dropping the oldest beyond [`MAX_LINES`].
    pub fn push(&self, room: &str, kind: LineKind, time: String, text: String) {
        let key = self.next_key.get_value();
        self.next_key.set_value(key + 1);
        self.lines.update(|lines| {
            lines.push(Line {
                key,
                room: room.to_owned(),
                kind,
                time,
                text,
            });
            if lines.len() > MAX_LINES {
                let extra = lines.len() - MAX_LINES;
                lines.drain(..extra);
            }
        });
    }

    /// Whether `room` shows the message with this id already.
    pub fn shows(&self, room: &str, id: &str) -> bool {
        self.lines.with_untracked(|lines| {
            lines.iter().any(|l| {
                l.room == room
                    && matches!(&l.kind, LineKind::Message { id: shown, .. } if shown == id)
            })
        })
    }

    fn dm_line(&self, peer: &str, from: &str, text: String, time: String, state: Option<DmState>) {
        let key = self.next_key.get_value();
        self.next_key.set_value(key + 1);
        let open = self.open_dm.get_untracked().as_deref() == Some(peer);
        self.dms.update(|dms| {
            let conversation = dms.entry(peer.to_owned()).or_default();
            conversation.lines.push(DmLine {
                key,
                from: from.to_owned(),
                text,
                time,
                state,
            });
            if state.is_none() && !open {
                conversation.unread += 1;
            }
            if conversation.lines.len() > MAX_LINES {
                conversation.lines.remove(0);
            }
        });
    }

    /// A peer sent us a direct message.
    pub fn dm_received(&self, from: &str, text: String, time: String) {
        self.dm_line(from, from, text, time, None);
    }

    /// We sent `to` a direct message; it is on its way.
    pub fn dm_sending(&self, to: &str, text: String, time: String) {
        let me = self.me.get_untracked();
        self.dm_line(to, &me, text, time, Some(DmState::Sending));
    }

    /// Our oldest direct message to `to` still on its way arrived, or not.
    pub fn dm_outcome(&self, to: &str, delivered: bool) {
        self.dms.update(|dms| {
            if let Some(line) = dms.get_mut(to).and_then(|c| {
                c.lines
                    .iter_mut()
                    .find(|l| l.state == Some(DmState::Sending))
            }) {
                line.state = Some(if delivered {
                    DmState::Delivered
                } else {
                    DmState::Failed
                });
            }
        });
    }

    /// Shows the conversation with `peer` (none: closes it); its lines
    /// count as read.
    pub fn open_conversation(&self, peer: Option<String>) {
        if let Some(peer) = &peer {
            self.dms
                .update(|dms| dms.entry(peer.clone()).or_default().unread = 0);
        }
        self.open_dm.set(peer);
    }

    /// Where the file `sha256` stands now.
    pub fn set_file(&self, sha256: &str, state: FileState) {
        self.files
            .update(|files| _ = files.insert(sha256.to_owned(), state));
    }

    /// Removes the messages of `room` (its history was cleared).
    pub fn clear_messages(&self, room: &str) {
        self.lines.update(|lines| {
            lines.retain(|l| l.room != room || !matches!(l.kind, LineKind::Message { .. }));
        });
    }

    /// Marks our oldest pending message in `room` as sent, with the id the
    /// engine gave it.
    pub fn mark_sent(&self, room: &str, message_id: String) {
        self.lines.update(|lines| {
            if let Some(LineKind::Message { pending, id, .. }) = lines
                .iter_mut()
                .filter(|l| l.room == room)
                .map(|l| &mut l.kind)
                .find(|k| matches!(k, LineKind::Message { pending: true, .. }))
            {
                *pending = false;
                *id = message_id;
            }
        });
    }

    /// The name to show for a peer: its nickname, else its short id.
    pub fn name_of(&self, peer: &str) -> String {
        self.nicks
            .with(|n| n.get(peer).cloned())
            .unwrap_or_else(|| short_id(peer))
    }
}

/// The last six characters of a peer id, enough to tell peers apart on
/// screen.
pub fn short_id(peer: &str) -> String {
    let start = peer.len().saturating_sub(6);
    format!("…{}", peer.get(start..).unwrap_or(peer))
}
