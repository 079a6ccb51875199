//! File sharing: the engine's side (see [`crate::files`]).
//!
//! Joining a room subscribes to its files topic too. An offer there is
//! checked, shown once per file ([`Event::FileOffered`]) and its author
//! noted as a holder; later offers of the same file only add holders.
//! Fetching asks the holders one after the other (connected ones first,
//! through a relay circuit when not connected), and a file fetched and
//! verified is served and offered in turn. Offers are not history: when
//! someone joins a room, each holder offers the room's files again (the
//! newest [`MAX_REOFFERED`]), so a late joiner sees what is on offer.
//!
//! With `--compat uc`, files are universal-connectivity's too: ours are
//! announced on its file topic by their SHA-256 in hex (at most
//! [`uc::MAX_FILE`]), and what its peers announce is fetched at once, as
//! they do (at most [`UC_FETCHES`] at a time and [`UC_FILES_PER_MINUTE`]
//! per peer), then shown as offered and saved.

use std::collections::{HashMap, HashSet};

use web_time::{Duration, Instant};

use libp2p::{PeerId, gossipsub::MessageAcceptance};

use super::{CommandError, Engine, Event, Outgoing, Role, due};
use crate::{
    arch::files::{Downloads, FileSource},
    clock,
    files::{self, DEFAULT_MAX_FILE_SIZE, FileEvent, FileHash, Offer},
    framing::PerMinute,
    rooms::Room,
    uc, validate,
};

/// Files remembered (offers seen) before the oldest are forgotten.
const MAX_OFFERS: usize = 4096;
/// Holders remembered per file.
const MAX_HOLDERS: usize = 32;
/// Files we offer again, per room, when someone joins (the newest).
const MAX_REOFFERED: usize = 50;
/// Wait after a newcomer before offering again: a burst of newcomers
/// costs one round of offers.
const REOFFER_GAP: Duration = Duration::from_secs(1);
/// Universal-connectivity files fetched at the same time; announcements
/// beyond are not fetched.
pub(super) const UC_FETCHES: usize = 4;
/// Universal-connectivity files fetched per peer and minute.
pub(super) const UC_FILES_PER_MINUTE: u32 = 10;

/// What the engine does with files.
#[derive(Clone, Debug)]
pub struct FileConfig {
    /// Largest file fetched.
    pub max_size: u64,
    /// Where fetched files go.
    pub downloads: Downloads,
}

impl Default for FileConfig {
    // In a browser `Downloads` has no fields; natively it has.
    #[allow(clippy::default_constructed_unit_structs)]
    fn default() -> Self {
        Self {
            max_size: DEFAULT_MAX_FILE_SIZE,
            downloads: Downloads::default(),
        }
    }
}

/// A file offered in one of our rooms.
pub(super) struct Known {
    offer: Offer,
    room: Room,
    /// Who said they hold it, first offerer first.
    holders: Vec<PeerId>,
    /// When it was first seen, for forgetting the oldest.
    seen: u64,
}

/// Files offered in our rooms, by hash.
pub(super) struct Offers {
    known: HashMap<FileHash, Known>,
    counter: u64,
    /// Rooms whose files we offer again, and when.
    reoffer: HashMap<Room, Instant>,
    /// Universal-connectivity files on their way.
    uc_fetching: usize,
    /// Universal-connectivity announcements taken, per peer.
    uc_taken: PerMinute,
}

impl Default for Offers {
    fn default() -> Self {
        Self {
            known: HashMap::new(),
            counter: 0,
            reoffer: HashMap::new(),
            uc_fetching: 0,
            uc_taken: PerMinute::new(UC_FILES_PER_MINUTE),
        }
    }
}

impl Engine {
    /// Joins or leaves `room`'s files topic.
    pub(super) fn files_topic(&mut self, room: &Room, join: bool) {
        let topic = files::topic(room);
        let gossipsub = &mut self.swarm.behaviour_mut().gossipsub;
        if join {
            if let Err(e) = gossipsub.subscribe(&topic) {
                tracing::warn!(%room, error = ?e, "cannot join the room's files topic");
            }
        } else {
            gossipsub.unsubscribe(&topic);
        }
    }

    /// Offers a file in `room` and serves it.
    pub(super) fn share_file(&mut self, room: Room, offer: Offer, source: FileSource) {
        self.files.share(offer.sha256, source);
        let local = self.local_peer_id();
        self.note_offer(&room, local, &offer);
        self.queue(Outgoing {
            topic: files::topic(&room).hash(),
            data: offer.encode(),
            id: None,
            announce: false,
            ack: None,
        });
    }

    /// Announces a file on universal-connectivity's topic (by its SHA-256
    /// in hex, the id its peers ask for) and serves it.
    pub(super) fn share_uc_file(
        &mut self,
        offer: Offer,
        source: FileSource,
    ) -> Result<(), CommandError> {
        if offer.size > uc::MAX_FILE {
            return Err(CommandError::File(format!(
                "{} is {}: universal-connectivity peers take at most {}",
                offer.name,
                files::size_text(offer.size),
                files::size_text(uc::MAX_FILE)
            )));
        }
        self.files.share(offer.sha256, source);
        let local = self.local_peer_id();
        self.note_offer(&uc::room(), local, &offer);
        self.queue(Outgoing {
            topic: uc::file_topic().hash(),
            data: offer.sha256.to_string().into_bytes(),
            id: None,
            announce: false,
            ack: None,
        });
        Ok(())
    }

    /// An announcement on universal-connectivity's file topic: checked
    /// (by relays too, which forward it); with `--compat uc`, the file is
    /// fetched from its announcer.
    pub(super) fn on_uc_file(
        &mut self,
        via: PeerId,
        source: Option<PeerId>,
        data: &[u8],
    ) -> MessageAcceptance {
        let checked = uc::check_file_id(data).map(str::to_owned);
        let Some((id, from)) = self.signed(via, source, checked) else {
            return MessageAcceptance::Reject;
        };
        if !self.uc || self.role == Role::Relay {
            return MessageAcceptance::Accept;
        }
        let limit = self.file_config.max_size.min(uc::MAX_FILE);
        let refused = if self.offers.uc_fetching >= UC_FETCHES {
            Some("too many files on their way")
        } else if !self.offers.uc_taken.allow(from) {
            Some("too many files from this peer")
        } else {
            None
        };
        let name = files::sanitise(&id).unwrap_or_else(|| "file".into());
        let started = match refused {
            Some(why) => Err(why.to_owned()),
            None => self
                .file_config
                .downloads
                .start(&name)
                .map_err(|e| format!("cannot save {name}: {e}")),
        };
        match started {
            Ok(download) => {
                self.offers.uc_fetching += 1;
                if !self.swarm.is_connected(&from) {
                    self.dial_through_relays(from, "file");
                }
                self.files.fetch_uc(from, id, limit, download);
            }
            Err(error) => self.uc_file_failed(from, id, error),
        }
        MessageAcceptance::Accept
    }

    /// Says that the file `id` from `from` was not fetched.
    fn uc_file_failed(&mut self, from: PeerId, id: String, error: String) {
        tracing::info!(%from, %id, %error, "universal-connectivity file not fetched");
        self.emit(Event::UcFileFailed { from, id, error });
    }

    /// Someone new was heard in `room`: our files there are offered again
    /// shortly.
    pub(super) fn files_newcomer(&mut self, room: Room) {
        if self.rooms.contains_key(&room.topic().hash()) {
            self.offers
                .reoffer
                .entry(room)
                .or_insert_with(|| clock::now() + REOFFER_GAP);
        }
    }

    /// Offers again what is due.
    pub(super) fn reoffer_due(&mut self) {
        let due = due(&self.offers.reoffer);
        let local = self.local_peer_id();
        for room in due {
            self.offers.reoffer.remove(&room);
            let mut ours: Vec<(u64, Offer)> = self
                .offers
                .known
                .iter()
                .filter(|(hash, k)| {
                    k.room == room && k.holders.contains(&local) && self.files.holds(hash)
                })
                .map(|(_, k)| (k.seen, k.offer.clone()))
                .collect();
            ours.sort_by_key(|(seen, _)| std::cmp::Reverse(*seen));
            for (_, offer) in ours.into_iter().take(MAX_REOFFERED).rev() {
                self.queue(Outgoing {
                    topic: files::topic(&room).hash(),
                    data: offer.encode(),
                    id: None,
                    announce: false,
                    ack: None,
                });
            }
        }
    }

    /// The holders of files on their way that we are not connected to are
    /// dialed through our relays: when a fetch starts, and again once a
    /// second (a holder that has just joined may not hold its relay
    /// reservation yet, and the fetch waits for a stream for a while).
    pub(super) fn redial_holders(&mut self) {
        let local = self.local_peer_id();
        let away: HashSet<PeerId> = self
            .fetching
            .iter()
            .filter_map(|sha256| self.offers.known.get(sha256))
            .flat_map(|known| known.holders.iter().copied())
            .filter(|p| *p != local && !self.swarm.is_connected(p))
            .collect();
        for holder in away {
            self.dial_through_relays(holder, "file");
        }
    }

    /// Starts fetching a file offered in one of our rooms.
    pub(super) fn fetch_file(&mut self, sha256: FileHash) -> Result<(), CommandError> {
        let local = self.local_peer_id();
        let Some(known) = self.offers.known.get(&sha256) else {
            return Err(CommandError::File(format!(
                "no file {sha256} was offered here"
            )));
        };
        if known.offer.size > self.file_config.max_size {
            return Err(CommandError::File(format!(
                "{} is {} bytes, more than the {} allowed (--max-file-size)",
                known.offer.name, known.offer.size, self.file_config.max_size
            )));
        }
        if self.fetching.contains(&sha256) {
            return Err(CommandError::File(format!(
                "{} is on its way already",
                known.offer.name
            )));
        }
        let offer = known.offer.clone();
        let mut holders: Vec<PeerId> = known
            .holders
            .iter()
            .copied()
            .filter(|p| *p != local)
            .collect();
        if holders.is_empty() {
            return Err(CommandError::File(format!(
                "nobody else holds {}",
                offer.name
            )));
        }
        // Connected holders first; the others get a connection now.
        holders.sort_by_key(|p| !self.swarm.is_connected(p));
        let download = self
            .file_config
            .downloads
            .start(&offer.name)
            .map_err(|e| CommandError::File(format!("cannot save {}: {e}", offer.name)))?;
        self.fetching.insert(sha256);
        self.redial_holders();
        self.files.fetch(&offer, holders, download);
        Ok(())
    }

    /// A message on a files topic: an offer.
    pub(super) fn on_offer(
        &mut self,
        room: &Room,
        source: Option<PeerId>,
        data: &[u8],
    ) -> MessageAcceptance {
        if !self.rooms.contains_key(&room.topic().hash()) {
            // A relay passes offers on without reading them.
            return MessageAcceptance::Accept;
        }
        let Some(from) = source else {
            return MessageAcceptance::Reject;
        };
        match Offer::decode(data, validate::now_ms()) {
            Ok(offer) => {
                if self.note_offer(room, from, &offer) {
                    let nick = self.nicks.get(&from).cloned();
                    self.emit(Event::FileOffered {
                        room: room.clone(),
                        from,
                        nick,
                        offer,
                    });
                }
                MessageAcceptance::Accept
            }
            Err(e) => {
                tracing::debug!(%from, error = %e, "file offer refused");
                MessageAcceptance::Reject
            }
        }
    }

    /// Notes that `holder` holds `offer`; true when the file is new here.
    fn note_offer(&mut self, room: &Room, holder: PeerId, offer: &Offer) -> bool {
        let offers = &mut self.offers;
        offers.counter += 1;
        let seen = offers.counter;
        if let Some(known) = offers.known.get_mut(&offer.sha256) {
            if !known.holders.contains(&holder) && known.holders.len() < MAX_HOLDERS {
                known.holders.push(holder);
            }
            return false;
        }
        if offers.known.len() >= MAX_OFFERS
            && let Some(oldest) = offers
                .known
                .iter()
                .min_by_key(|(_, k)| k.seen)
                .map(|(hash, _)| *hash)
        {
            offers.known.remove(&oldest);
        }
        offers.known.insert(
            offer.sha256,
            Known {
                offer: offer.clone(),
                room: room.clone(),
                holders: vec![holder],
                seen,
            },
        );
        true
    }

    /// What the file streams reported.
    pub(super) fn on_file(&mut self, event: FileEvent) {
        match event {
            FileEvent::Progress {
                sha256,
                received,
                size,
            } => self.emit(Event::FileProgress {
                sha256,
                received,
                size,
            }),
            FileEvent::Fetched { sha256, saved } => {
                self.fetching.remove(&sha256);
                let Some(known) = self.offers.known.get(&sha256) else {
                    return;
                };
                let (offer, room) = (known.offer.clone(), known.room.clone());
                self.emit(Event::FileSaved {
                    sha256,
                    name: offer.name.clone(),
                    saved: saved.clone(),
                });
                // One more holder: serve it, and say so.
                if !self.files.holds(&sha256) && self.rooms.contains_key(&room.topic().hash()) {
                    self.share_file(room, offer, FileSource::saved(&saved));
                }
            }
            FileEvent::FetchFailed { sha256, error } => {
                self.fetching.remove(&sha256);
                tracing::info!(%sha256, %error, "file not fetched");
                self.emit(Event::FileFailed { sha256, error });
            }
            FileEvent::Served { to, sha256, bytes } => {
                tracing::debug!(%to, %sha256, bytes, "file served");
            }
            FileEvent::NotServed { to, reason } => {
                tracing::debug!(%to, %reason, "file not served");
            }
            FileEvent::UcFetched { from, offer, saved } => {
                self.offers.uc_fetching = self.offers.uc_fetching.saturating_sub(1);
                let room = uc::room();
                self.note_offer(&room, from, &offer);
                let local = self.local_peer_id();
                self.note_offer(&room, local, &offer);
                self.files.share(offer.sha256, FileSource::saved(&saved));
                self.emit(Event::FileOffered {
                    room,
                    from,
                    nick: None,
                    offer: offer.clone(),
                });
                self.emit(Event::FileSaved {
                    sha256: offer.sha256,
                    name: offer.name,
                    saved,
                });
            }
            FileEvent::UcFetchFailed { from, id, error } => {
                self.offers.uc_fetching = self.offers.uc_fetching.saturating_sub(1);
                self.uc_file_failed(from, id, error);
            }
        }
    }
}
