//! What the page was asked to do: the query parameters `?relay=`, `?nick=`,
//! `?transport=`, `?room=`, `?direct=`, `?pubsub=`, `?compat=` and `?log=`, and which relay
//! addresses to try in which order.

use std::{fmt, str::FromStr};

use meshtalk_protocol::{
    behaviour::Pubsub, libp2p::Multiaddr, rooms::Room, transport::Transport, uc, validate,
    wire::Payload,
};

/// Which browser transport to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TransportChoice {
    /// WebRTC-direct first, WebSocket when that fails.
    #[default]
    Auto,
    /// WebRTC-direct only.
    WebRtcDirect,
    /// WebSocket only.
    Ws,
}

impl FromStr for TransportChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "" | "auto" => Ok(Self::Auto),
            "webrtc-direct" => Ok(Self::WebRtcDirect),
            "ws" => Ok(Self::Ws),
            other => Err(format!(
                "unknown transport {other:?} (use webrtc-direct, ws or auto)"
            )),
        }
    }
}

impl fmt::Display for TransportChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::WebRtcDirect => "webrtc-direct",
            Self::Ws => "ws",
        })
    }
}

impl TransportChoice {
    /// The transports to try, in order. A page served over https tries
    /// secure WebSocket first: an operator who set up TLS has a port that
    /// passes firewalls and proxies, and WebRTC-direct's UDP may not.
    pub fn order(self, secure: bool) -> &'static [Transport] {
        match self {
            Self::Auto if secure => &[Transport::WebSocket, Transport::WebRtcDirect],
            Self::Auto => &[Transport::WebRtcDirect, Transport::WebSocket],
            Self::WebRtcDirect => &[Transport::WebRtcDirect],
            Self::Ws => &[Transport::WebSocket],
        }
    }
}

/// The page's parameters, read from its URL.
#[derive(Clone, Debug, Default)]
pub struct Params {
    /// Relay addresses given with `?relay=` (repeatable, or several
    /// comma-separated), tried in order instead of the page origin's
    /// `/api/addrs`.
    pub relays: Vec<Multiaddr>,
    /// `?transport=`.
    pub transport: TransportChoice,
    /// `?room=`, `lobby` by default.
    pub room: Room,
    /// `?nick=`: the nickname to use (and keep) from now on.
    pub nick: Option<String>,
    /// `?log=`: the console log level (a release build keeps nothing below
    /// `info`: `tracing`'s `release_max_level_info`, which keeps the page
    /// about 30 KB smaller on the wire).
    pub log: Option<tracing::Level>,
    /// `?direct=off`: no direct (`/webrtc`) links to other pages, which
    /// would learn this browser's IP addresses; everything goes through
    /// the relay. `?direct=on` is the default.
    pub no_direct: bool,
    /// `?pubsub=floodsub`: floodsub instead of gossipsub.
    pub pubsub: Pubsub,
    /// `?compat=uc`: chat with universal-connectivity's peers (its chat
    /// topic, shown as the room `universal-connectivity`, and its direct
    /// messages) instead of in a meshtalk room.
    pub uc: bool,
    /// Parameters that could not be read, one line each; the page shows
    /// them and uses the default instead.
    pub problems: Vec<String>,
}

impl Params {
    /// Reads the parameters from a query string (`?a=b&c=d`, the `?`
    /// optional). A parameter that does not parse is reported in
    /// [`Params::problems`] and left at its default.
    pub fn parse(query: &str) -> Self {
        let mut params = Params::default();
        for (key, value) in pairs(query) {
            match key.as_str() {
                "relay" => {
                    for one in value.split(',').map(str::trim).filter(|v| !v.is_empty()) {
                        match one.parse::<Multiaddr>() {
                            Ok(addr) => params.relays.push(addr),
                            Err(e) => params
                                .problems
                                .push(format!("?relay={one} is not a multiaddr: {e}")),
                        }
                    }
                }
                "transport" => match value.parse() {
                    Ok(choice) => params.transport = choice,
                    Err(e) => params.problems.push(format!("?transport: {e}")),
                },
                "room" => match Room::new(&value) {
                    Ok(room) => params.room = room,
                    Err(e) => params.problems.push(format!("?room: {e}")),
                },
                "nick" => {
                    let nick = value.trim().to_owned();
                    match validate::check(&Payload::Nick(nick.clone()), 0) {
                        Ok(()) => params.nick = Some(nick),
                        Err(e) => params.problems.push(format!("?nick: {e}")),
                    }
                }
                "direct" => match value.as_str() {
                    "on" | "" => params.no_direct = false,
                    "off" => params.no_direct = true,
                    other => params
                        .problems
                        .push(format!("?direct={other}: use on or off")),
                },
                "compat" => match value.as_str() {
                    "uc" => params.uc = true,
                    "" | "none" => params.uc = false,
                    other => params
                        .problems
                        .push(format!("?compat={other}: use uc (universal-connectivity)")),
                },
                "pubsub" => match value.parse() {
                    Ok(pubsub) => params.pubsub = pubsub,
                    Err(e) => params.problems.push(format!("?pubsub: {e}")),
                },
                "log" => match value.parse() {
                    Ok(level) => params.log = Some(level),
                    Err(_) => params.problems.push(format!(
                        "?log={value}: use error, warn, info, debug or trace"
                    )),
                },
                _ => {}
            }
        }
        if params.uc {
            params.room = uc::room();
        }
        params
    }
}

/// Decodes `a=b&c=d` (percent escapes and `+` included).
fn pairs(query: &str) -> Vec<(String, String)> {
    query
        .trim_start_matches('?')
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', hi, lo]) => hex(*hi).zip(hex(*lo)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// The relay addresses worth dialing with `choice`, in the order to try
/// them: by transport preference, IPv4 loopback and IPv4 before IPv6 within
/// a transport (as listed otherwise). Addresses a browser cannot dial (TCP,
/// QUIC) are left out. A page served over https (`secure`) may not open
/// plain WebSocket (mixed content), so it gets only secure ones; others try
/// plain before secure.
pub fn candidates(
    addrs: &[Multiaddr],
    choice: TransportChoice,
    secure: bool,
) -> Vec<(Transport, Multiaddr)> {
    let mut out = Vec::new();
    for &wanted in choice.order(secure) {
        let mut found: Vec<&Multiaddr> = addrs
            .iter()
            .filter(|a| Transport::of(a) == wanted)
            .filter(|a| {
                !secure || wanted != Transport::WebSocket || Transport::is_secure_websocket(a)
            })
            .collect();
        found.sort_by_key(|a| {
            (
                Transport::is_secure_websocket(a),
                !a.to_string().starts_with("/ip4/"),
            )
        });
        out.extend(found.into_iter().map(|a| (wanted, a.clone())));
    }
    out
}

/// Puts the addresses of the transport named `last` (the one this tab
/// last reached its relay over) first, keeping the order otherwise: a
/// page on a network that drops UDP, which had to wait a second for its
/// WebRTC-direct dial before WebSocket got through, goes straight to
/// WebSocket when it is reloaded.
pub fn prefer_last(queue: &mut Vec<(Transport, Multiaddr)>, last: &str) {
    // Not a sort: the page would carry a stable sort's code for this alone.
    let (mut first, rest): (Vec<_>, Vec<_>) = queue
        .drain(..)
        .partition(|(transport, _)| transport.name() == last);
    first.extend(rest);
    *queue = first;
}
