//! How received things are printed: text for people, JSON lines for
//! programs. Text from the network is made safe for terminals.

use meshtalk_protocol::{engine::Event, files::size_text as size, libp2p::PeerId};
use serde_json::json;

/// The last characters of a peer id: enough to tell peers apart.
pub fn short_id(peer: &PeerId) -> String {
    let s = peer.to_string();
    let tail = s.len().saturating_sub(6);
    format!("…{}", &s[tail..])
}

/// Replaces control characters (terminal escapes, newlines) so a remote
/// peer cannot forge lines or move the cursor.
pub fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect()
}

/// The line `meshtalk chat` prints for an event, if any.
pub fn chat_line(event: &Event) -> Option<String> {
    match event {
        Event::Message {
            room,
            from,
            nick,
            message,
            history,
        } => Some(format!(
            "[{room}] {}{}: {}",
            if *history { "(earlier) " } else { "" },
            nick.as_deref()
                .map(sanitize)
                .unwrap_or_else(|| short_id(from)),
            sanitize(&message.text)
        )),
        Event::DirectMessage {
            from,
            nick,
            message,
        } => Some(format!(
            "[dm] {}: {}",
            nick.as_deref()
                .map(sanitize)
                .unwrap_or_else(|| short_id(from)),
            sanitize(&message.text)
        )),
        Event::FileOffered {
            room,
            from,
            nick,
            offer,
        } => Some(format!(
            "[{room}] {} offers {} ({}, {}): /get {}",
            nick.as_deref()
                .map(sanitize)
                .unwrap_or_else(|| short_id(from)),
            sanitize(&offer.name),
            size(offer.size),
            offer.media_type,
            offer.sha256
        )),
        _ => None,
    }
}

/// A status line for stderr, if the event is worth one.
pub fn status_line(event: &Event) -> Option<String> {
    match event {
        Event::Nick { room, from, nick } if !nick.is_empty() => Some(format!(
            "* [{room}] {} is now known as {}",
            short_id(from),
            sanitize(nick)
        )),
        Event::PeerJoined { room, peer } => Some(format!("* [{room}] {} joined", short_id(peer))),
        Event::PeerLeft { room, peer } => Some(format!("* [{room}] {} left", short_id(peer))),
        Event::Connected {
            peer, transport, ..
        } => Some(format!(
            "* connected to {} over {transport}",
            short_id(peer)
        )),
        Event::Listening(addr) => Some(format!("* listening on {addr}")),
        Event::Disconnected {
            peer, remaining: 0, ..
        } => Some(format!("* disconnected from {}", short_id(peer))),
        Event::Discovered { peer, source, .. } => {
            Some(format!("* found {} via {source}", short_id(peer)))
        }
        Event::Pruned { peer } => Some(format!(
            "* closing the link to {}: above --max-peers",
            short_id(peer)
        )),
        Event::DmSent { to, .. } => Some(format!("* direct message to {} delivered", short_id(to))),
        Event::DmFailed { to, error, .. } => Some(format!(
            "* direct message to {} not delivered: {}",
            short_id(to),
            sanitize(error)
        )),
        Event::FileProgress {
            sha256,
            received,
            size: total,
        } => Some(format!(
            "* {}…: {} of {}",
            &sha256.to_string()[..12],
            size(*received),
            size(*total)
        )),
        Event::FileSaved { saved, .. } => Some(format!("* saved {}", saved.display())),
        Event::FileFailed { sha256, error } => Some(format!(
            "* file {}… not fetched: {}",
            &sha256.to_string()[..12],
            sanitize(error)
        )),
        Event::UcFileFailed { from, id, error } => Some(format!(
            "* file {} from {} not fetched: {}",
            sanitize(id),
            short_id(from),
            sanitize(error)
        )),
        Event::HistoryFetched { room, peer, lines } if *lines > 0 => Some(format!(
            "* [{room}] {lines} earlier lines from {}",
            short_id(peer)
        )),
        Event::PubsubUnsupported { peer } => Some(format!(
            "* {} speaks no pubsub protocol of ours: it cannot chat with us",
            short_id(peer)
        )),
        Event::HistoryRejected {
            room,
            peer,
            records,
        } => Some(format!(
            "* [{room}] {} served {records} forged history records: dropped, and it is asked no more",
            short_id(peer)
        )),
        _ => None,
    }
}

/// The JSON object `meshtalk chat --json` prints for an event, if any.
pub fn chat_json(event: &Event) -> Option<serde_json::Value> {
    Some(match event {
        Event::Message {
            room,
            from,
            nick,
            message,
            history,
        } => json!({
            "type": "message",
            "room": room.name(),
            "from": from.to_string(),
            "nick": nick,
            "text": message.text,
            "id": message.id.to_string(),
            "created": message.created_ms,
            "history": history,
        }),
        Event::DirectMessage {
            from,
            nick,
            message,
        } => json!({
            "type": "dm",
            "from": from.to_string(),
            "nick": nick,
            "text": message.text,
            "id": message.id.to_string(),
            "created": message.created_ms,
        }),
        Event::DmSent { to, id } => json!({
            "type": "dm_sent",
            "to": to.to_string(),
            "id": id.to_string(),
        }),
        Event::DmFailed { to, id, error } => json!({
            "type": "dm_failed",
            "to": to.to_string(),
            "id": id.to_string(),
            "error": error,
        }),
        Event::FileOffered {
            room,
            from,
            nick,
            offer,
        } => json!({
            "type": "file",
            "room": room.name(),
            "from": from.to_string(),
            "nick": nick,
            "name": offer.name,
            "size": offer.size,
            "sha256": offer.sha256.to_string(),
            "media_type": offer.media_type,
        }),
        Event::FileProgress {
            sha256,
            received,
            size,
        } => json!({
            "type": "file_progress",
            "sha256": sha256.to_string(),
            "received": received,
            "size": size,
        }),
        Event::FileSaved {
            sha256,
            name,
            saved,
        } => json!({
            "type": "file_saved",
            "sha256": sha256.to_string(),
            "name": name,
            "path": saved.display().to_string(),
        }),
        Event::FileFailed { sha256, error } => json!({
            "type": "file_failed",
            "sha256": sha256.to_string(),
            "error": error,
        }),
        Event::UcFileFailed { from, id, error } => json!({
            "type": "file_failed",
            "from": from.to_string(),
            "id": id,
            "error": error,
        }),
        Event::HistoryFetched { room, peer, lines } => json!({
            "type": "history",
            "room": room.name(),
            "peer": peer.to_string(),
            "lines": lines,
        }),
        Event::PubsubUnsupported { peer } => json!({
            "type": "pubsub_unsupported",
            "peer": peer.to_string(),
        }),
        Event::HistoryRejected {
            room,
            peer,
            records,
        } => json!({
            "type": "history_rejected",
            "room": room.name(),
            "peer": peer.to_string(),
            "records": records,
        }),
        Event::Nick { room, from, nick } => json!({
            "type": "nick",
            "room": room.name(),
            "from": from.to_string(),
            "nick": nick,
        }),
        Event::PeerJoined { room, peer } => json!({
            "type": "peer_joined",
            "room": room.name(),
            "peer": peer.to_string(),
        }),
        Event::PeerLeft { room, peer } => json!({
            "type": "peer_left",
            "room": room.name(),
            "peer": peer.to_string(),
        }),
        Event::Connected {
            peer,
            addr,
            transport,
            ..
        } => json!({
            "type": "connected",
            "peer": peer.to_string(),
            "addr": addr.to_string(),
            "transport": transport.name(),
        }),
        Event::Disconnected {
            peer, remaining: 0, ..
        } => json!({
            "type": "disconnected",
            "peer": peer.to_string(),
        }),
        Event::Listening(addr) => json!({
            "type": "listening",
            "addr": addr.to_string(),
        }),
        Event::Discovered {
            peer,
            source,
            addrs,
        } => json!({
            "type": "discovered",
            "peer": peer.to_string(),
            "source": source.name(),
            "addrs": addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }),
        Event::Pruned { peer } => json!({
            "type": "pruned",
            "peer": peer.to_string(),
        }),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_cannot_reach_the_terminal() {
        assert_eq!(sanitize("a\x1b[2Jb\nc\td"), "a\u{fffd}[2Jb\u{fffd}c\td");
    }
}
