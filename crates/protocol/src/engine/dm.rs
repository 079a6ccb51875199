//! Direct messages: the engine's side (see [`crate::dm`]).
//!
//! A line to a peer we are not connected to first gets a connection: the
//! addresses the swarm knows for it, and a circuit through every relay we
//! are connected to (`…/p2p/RELAY/p2p-circuit/p2p/PEER`). A line that does
//! not get through is tried again, waiting longer each time, until the
//! deadline ([`DM_DEADLINE`] unless configured) after it was typed; then it is reported as failed. It is
//! never dropped silently, and shutdown waits for it.

use std::collections::HashMap;

use libp2p::{
    Multiaddr, PeerId,
    multiaddr::Protocol,
    swarm::dial_opts::{DialOpts, PeerCondition},
};
use web_time::{Duration, Instant};

use super::{CommandError, Engine, Event, neighbourhood::circuit_prefix};
use crate::{
    clock,
    dm::{DirectMessage, DmEvent, DmWire},
    transport::Transport,
    uc, validate,
    wire::{ChatMessage, MessageId, Payload},
};

/// How long a direct message is tried, by default, before it is reported
/// as failed.
pub const DM_DEADLINE: Duration = Duration::from_secs(60);
/// First wait before trying again; it doubles, up to [`RETRY_MAX`].
const RETRY_BASE: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(16);
/// A dial for a direct message that has not connected by then failed.
const DIAL_WAIT: Duration = Duration::from_secs(20);

/// Where a direct message stands.
enum Stage {
    /// Waiting to be tried (again) at this time.
    Waiting(Instant),
    /// Waiting for a connection we dialed at this time.
    Dialing(Instant),
    /// On a stream, waiting for the acknowledgement.
    Sending,
}

/// A direct message not yet acknowledged.
pub(super) struct PendingDm {
    to: PeerId,
    wire: DmWire,
    since: Instant,
    attempts: u32,
    stage: Stage,
    last_error: String,
}

/// Direct messages not yet acknowledged, by id.
pub(super) type PendingDms = HashMap<MessageId, PendingDm>;

impl Engine {
    /// Queues a direct message to `to` and tries it at once.
    pub(super) fn send_dm(&mut self, to: PeerId, text: String) -> Result<(), CommandError> {
        if to == self.local_peer_id() {
            return Err(CommandError::Dm("that is our own peer id".into()));
        }
        let mut message = ChatMessage::new(text);
        message.created_ms = message.created_ms.max(self.last_created + 1);
        self.last_created = message.created_ms;
        validate::check(&Payload::Message(message.clone()), message.created_ms)?;
        let id = message.id;
        let wire = if self.uc {
            DmWire::Uc(uc::DirectMessageRequest::new(&message.text))
        } else {
            DmWire::Meshtalk(DirectMessage::new(&message, self.nick.as_deref()))
        };
        self.pending_dms.insert(
            id,
            PendingDm {
                to,
                wire,
                since: clock::now(),
                attempts: 0,
                stage: Stage::Waiting(clock::now()),
                last_error: String::new(),
            },
        );
        self.try_dm(id);
        Ok(())
    }

    fn try_dm(&mut self, id: MessageId) {
        let connected = self
            .pending_dms
            .get(&id)
            .is_some_and(|p| self.swarm.is_connected(&p.to));
        let Some(pending) = self.pending_dms.get_mut(&id) else {
            return;
        };
        pending.attempts += 1;
        if connected {
            pending.stage = Stage::Sending;
            self.dms.send(pending.to, pending.wire.clone(), id);
            return;
        }
        pending.stage = Stage::Dialing(clock::now());
        let to = pending.to;
        self.dial_through_relays(to, "direct message");
    }

    /// Dials `peer` unless connected or dialing: the addresses the swarm
    /// knows, and a circuit through each relay we are connected to. `what`
    /// names the reason in the log.
    pub(super) fn dial_through_relays(&mut self, peer: PeerId, what: &str) {
        let opts = DialOpts::peer_id(peer)
            .addresses(self.circuits_to(peer))
            .extend_addresses_through_behaviour()
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        if let Err(e) = self.swarm.dial(opts) {
            tracing::debug!(%peer, error = %e, "{what}: no new dial");
        }
    }

    /// A circuit to `peer` through each relay we are connected to directly.
    fn circuits_to(&self, peer: PeerId) -> Vec<Multiaddr> {
        let mut addrs: Vec<Multiaddr> = self
            .connections
            .values()
            .filter(|(relay, addr)| {
                *relay != peer
                    && self.neighbours.relay(relay)
                    && Transport::of(addr) != Transport::Circuit
            })
            .filter_map(|(relay, addr)| circuit_prefix(*relay, addr))
            .map(|circuit| circuit.with(Protocol::P2p(peer)))
            .collect();
        addrs.sort();
        addrs.dedup();
        addrs
    }

    /// A connection to `peer` opened: its waiting direct messages go.
    pub(super) fn dm_connected(&mut self, peer: PeerId) {
        let ready: Vec<MessageId> = self
            .pending_dms
            .iter()
            .filter(|(_, p)| p.to == peer && matches!(p.stage, Stage::Dialing(_)))
            .map(|(id, _)| *id)
            .collect();
        for id in ready {
            self.try_dm(id);
        }
    }

    /// A dial to `peer` failed: its waiting direct messages wait longer.
    pub(super) fn dm_dial_failed(&mut self, peer: PeerId, error: &str) {
        if self.swarm.is_connected(&peer) {
            return;
        }
        let failed: Vec<MessageId> = self
            .pending_dms
            .iter()
            .filter(|(_, p)| p.to == peer && matches!(p.stage, Stage::Dialing(_)))
            .map(|(id, _)| *id)
            .collect();
        for id in failed {
            self.dm_attempt_failed(id, format!("cannot reach the peer: {error}"));
        }
    }

    fn dm_attempt_failed(&mut self, id: MessageId, error: String) {
        let Some(pending) = self.pending_dms.get_mut(&id) else {
            return;
        };
        pending.last_error = error;
        if clock::since(pending.since) >= self.dm_deadline {
            let (to, error) = (pending.to, pending.last_error.clone());
            self.pending_dms.remove(&id);
            tracing::info!(%to, %error, "direct message not delivered");
            self.emit(Event::DmFailed { to, id, error });
            return;
        }
        let wait = RETRY_BASE
            .saturating_mul(1 << pending.attempts.min(5))
            .min(RETRY_MAX);
        pending.stage = Stage::Waiting(clock::now() + wait);
    }

    /// What the direct-message streams reported.
    pub(super) fn on_dm(&mut self, event: DmEvent) {
        match event {
            DmEvent::Received {
                from,
                message,
                nick,
            } => {
                let nick = nick.or_else(|| self.nicks.get(&from).cloned());
                self.emit(Event::DirectMessage {
                    from,
                    nick,
                    message,
                });
            }
            DmEvent::Refused { from, reason } => {
                tracing::debug!(%from, %reason, "direct message refused");
            }
            DmEvent::Acked { to, id } => {
                if self.pending_dms.remove(&id).is_some() {
                    self.emit(Event::DmSent { to, id });
                }
            }
            DmEvent::Failed { to, id, error } => {
                tracing::debug!(%to, %error, "direct message attempt failed");
                self.dm_attempt_failed(id, error);
            }
        }
    }

    /// Tries again what is due, and gives up on dials that never report.
    pub(super) fn retry_dms(&mut self) {
        let now = clock::now();
        let mut due = Vec::new();
        let mut stuck = Vec::new();
        for (id, pending) in &self.pending_dms {
            match pending.stage {
                Stage::Waiting(at) if at <= now => due.push(*id),
                Stage::Dialing(at) if now.duration_since(at) >= DIAL_WAIT => stuck.push(*id),
                _ => {}
            }
        }
        for id in stuck {
            self.dm_attempt_failed(id, "no connection to the peer".into());
        }
        for id in due {
            self.try_dm(id);
        }
    }
}
