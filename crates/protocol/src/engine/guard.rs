//! A relay's guard against floods: a publish rate limit per author, and
//! closing connections to peers whose gossipsub score fell below the
//! graylist threshold.
//!
//! The limit is a token bucket per author (the message's signed source):
//! `burst` messages at once, then `per_second`. A message over the limit is
//! not forwarded. When its author sent it to us itself, it is rejected, so
//! gossipsub lowers the author's score (invalid message deliveries) and soon
//! graylists it; when a neighbour forwarded it, it is only ignored, so an
//! honest relay that passes a flooder's messages on is not punished for it.
//!
//! Gossipsub drops a graylisted peer's RPCs, but only after its connection
//! has read and decoded them. The relay therefore closes connections to such
//! peers, when they sent it messages it refused within [`OFFENCE_MEMORY`]
//! (a score can also fall for being slow, which an honest peer on a bad
//! link may be; gossipsub's own graylisting handles those), and refuses new
//! ones from them for [`BLOCK_FOR`] (gossipsub keeps
//! their score for an hour, so one that comes back later is still
//! graylisted and is closed again).

use crate::clock;
use std::{collections::HashMap, time::Duration};

use libp2p::{PeerId, gossipsub::PeerScoreThresholds};
use web_time::Instant;

use super::{Engine, Event};
use crate::behaviour::Role;

/// A publish rate limit per author.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PublishLimit {
    /// Messages per second, sustained.
    pub per_second: u32,
    /// Messages at once after a quiet spell.
    pub burst: u32,
}

impl Default for PublishLimit {
    /// 100 messages a second after a burst of 1,000: far above what a person
    /// types or a bot answers, far below what a flooder sends.
    fn default() -> Self {
        Self {
            per_second: 100,
            burst: 1000,
        }
    }
}

/// Authors tracked at most. A bucket is forgotten once it is full again, so
/// this bounds only authors who published within the last `burst /
/// per_second` seconds; beyond it new authors are ignored until room frees.
const MAX_AUTHORS: usize = 65_536;

/// How long a refused message counts against the neighbour that sent it.
pub const OFFENCE_MEMORY: Duration = Duration::from_secs(60);

/// How long a graylisted peer's connections are refused.
pub const BLOCK_FOR: Duration = Duration::from_secs(600);

/// How often full buckets are forgotten.
const SWEEP: Duration = Duration::from_secs(10);

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// What the limit says of one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within the limit.
    Pass,
    /// Over the limit.
    Over,
}

/// Token buckets per author.
pub(crate) struct RateLimiter {
    limit: PublishLimit,
    buckets: HashMap<PeerId, Bucket>,
    last_sweep: Instant,
}

impl RateLimiter {
    pub(crate) fn new(limit: PublishLimit) -> Self {
        Self {
            limit,
            buckets: HashMap::new(),
            last_sweep: clock::now(),
        }
    }

    /// The configured limit.
    pub(crate) fn limit(&self) -> PublishLimit {
        self.limit
    }

    fn refill(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        (bucket.tokens + elapsed * f64::from(self.limit.per_second))
            .min(f64::from(self.limit.burst))
    }

    /// Takes one token of `author`'s bucket, if there is one.
    pub(crate) fn check(&mut self, author: PeerId, now: Instant) -> Verdict {
        if now.saturating_duration_since(self.last_sweep) >= SWEEP {
            self.sweep(now);
        }
        let tokens = match self.buckets.get(&author) {
            Some(bucket) => self.refill(bucket, now),
            None if self.buckets.len() >= MAX_AUTHORS => return Verdict::Over,
            None => f64::from(self.limit.burst),
        };
        let (tokens, verdict) = if tokens >= 1.0 {
            (tokens - 1.0, Verdict::Pass)
        } else {
            (tokens, Verdict::Over)
        };
        self.buckets.insert(author, Bucket { tokens, at: now });
        verdict
    }

    /// Forgets the buckets that are full again.
    fn sweep(&mut self, now: Instant) {
        self.last_sweep = now;
        let burst = f64::from(self.limit.burst);
        let per_second = f64::from(self.limit.per_second);
        self.buckets.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
            b.tokens + elapsed * per_second < burst
        });
    }

    /// Authors tracked now.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

impl Engine {
    /// Closes the connections of peers gossipsub has graylisted and refuses
    /// theirs for [`BLOCK_FOR`] (relays).
    pub(super) fn close_graylisted(&mut self) {
        if self.role != Role::Relay {
            return;
        }
        let now = clock::now();
        while let Some(&(until, peer)) = self.blocked.front()
            && until <= now
        {
            self.blocked.pop_front();
            self.swarm.behaviour_mut().blocked.unblock_peer(peer);
        }
        self.offenders
            .retain(|_, at| now.saturating_duration_since(*at) < OFFENCE_MEMORY);
        if self.offenders.is_empty() {
            return;
        }
        let threshold = PeerScoreThresholds::default().graylist_threshold;
        let gossipsub = &self.swarm.behaviour().gossipsub;
        let graylisted: Vec<(PeerId, f64)> = self
            .offenders
            .keys()
            .filter(|peer| self.swarm.is_connected(peer))
            .filter_map(|peer| Some((*peer, gossipsub.peer_score(peer)?)))
            .filter(|(_, score)| *score < threshold)
            .collect();
        for (peer, score) in graylisted {
            tracing::info!(
                %peer,
                score,
                "gossipsub score below the graylist threshold; closing and refusing its connections for 10 minutes"
            );
            self.offenders.remove(&peer);
            if self.swarm.behaviour_mut().blocked.block_peer(peer) {
                self.blocked.push_back((now + BLOCK_FOR, peer));
            }
            self.emit(Event::Graylisted { peer, score });
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests may read the wall clock
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_sustained_rate_then_forgotten() {
        let mut limiter = RateLimiter::new(PublishLimit {
            per_second: 10,
            burst: 5,
        });
        let (author, other) = (PeerId::random(), PeerId::random());
        let start = Instant::now();
        for _ in 0..5 {
            assert_eq!(limiter.check(author, start), Verdict::Pass);
        }
        assert_eq!(limiter.check(author, start), Verdict::Over);
        // Another author has a bucket of its own.
        assert_eq!(limiter.check(other, start), Verdict::Pass);
        // 10 a second: one more every 100 ms.
        let later = start + Duration::from_millis(100);
        assert_eq!(limiter.check(author, later), Verdict::Pass);
        assert_eq!(limiter.check(author, later), Verdict::Over);
        // Full again after half a second; a sweep forgets both.
        let much_later = start + SWEEP + Duration::from_secs(1);
        assert_eq!(limiter.check(author, much_later), Verdict::Pass);
        assert_eq!(limiter.tracked(), 1);
    }
}
