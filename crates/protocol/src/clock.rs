//! The time every meshtalk node in this process keeps: real time, unless a
//! simulation slows it down.
//!
//! A simulation that runs more nodes than its cores can run in real time
//! ([`dilate`]) makes each node's clock run slower than the wall clock by
//! one factor, and every link delay longer by the same factor: the network
//! behaves as it would in real time on machines that many times faster
//! (time dilation, as network emulators use it). Everything the engine
//! times goes through here: [`now`] is the node's time (and [`since`] how
//! long ago one of its instants was), [`sleep`] waits a node's duration,
//! and [`real`] turns a duration the node means into the
//! wall-clock one libp2p's behaviours are configured with
//! ([`crate::behaviour::Behaviour::new`] does).
//!
//! Without [`dilate`] (every binary), [`now`] is [`Instant::now`] and
//! [`real`] returns its argument.

// The one place that reads the wall clock (crates/protocol/clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::{
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use futures_timer::Delay;
use web_time::Instant;

/// How many times slower than the wall clock nodes' time runs (1: real
/// time).
static FACTOR: AtomicU32 = AtomicU32::new(1);
/// The wall-clock instant from which nodes' time runs slower.
static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Why the clock could not be slowed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DilateError {
    /// A factor of 0.
    #[error("the time dilation factor must be at least 1")]
    Zero,
    /// The clock was already slowed (by another factor) in this process.
    #[error("time is already dilated by {0} in this process")]
    AlreadySet(u32),
}

/// Slows every node's clock in this process by `factor` from now on. Call
/// it once, before any node is built: durations already handed to libp2p
/// and instants already taken are not converted. Meant for simulations.
pub fn dilate(factor: u32) -> Result<(), DilateError> {
    let set = self::factor();
    match factor {
        0 => Err(DilateError::Zero),
        _ if set == factor => Ok(()),
        1 => Err(DilateError::AlreadySet(set)),
        _ => {
            let mut first = false;
            EPOCH.get_or_init(|| {
                first = true;
                Instant::now()
            });
            if !first {
                return Err(DilateError::AlreadySet(self::factor()));
            }
            FACTOR.store(factor, Ordering::Release);
            Ok(())
        }
    }
}

/// How many times slower than the wall clock nodes' time runs.
pub fn factor() -> u32 {
    FACTOR.load(Ordering::Acquire)
}

/// The node's time now.
pub fn now() -> Instant {
    let wall = Instant::now();
    match (factor(), EPOCH.get()) {
        (1, _) | (_, None) => wall,
        (factor, Some(epoch)) => *epoch + wall.saturating_duration_since(*epoch) / factor,
    }
}

/// The node's time since `earlier` (an instant of [`now`]'s; `Instant`'s
/// own `elapsed` would measure from the wall clock).
pub fn since(earlier: Instant) -> Duration {
    now().saturating_duration_since(earlier)
}

/// The wall-clock duration of `node` time.
pub fn real(node: Duration) -> Duration {
    node.saturating_mul(factor())
}

/// The node's duration of `wall` time (a wall-clock measurement turned
/// into the node's).
pub fn node(wall: Duration) -> Duration {
    wall / factor()
}

/// A timer that fires after `node` time.
pub fn sleep(node: Duration) -> Delay {
    Delay::new(real(node))
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests may read the wall clock
mod tests {
    use super::*;

    // The process-wide factor is left at 1 here: other tests in this
    // binary keep real time. (The simulation's own runs check dilation.)

    #[test]
    fn real_time_unless_dilated() {
        assert_eq!(factor(), 1);
        assert_eq!(real(Duration::from_secs(3)), Duration::from_secs(3));
        assert_eq!(node(Duration::from_secs(3)), Duration::from_secs(3));
        let before = Instant::now();
        let now = now();
        assert!(now >= before && now <= Instant::now());
        assert_eq!(dilate(0), Err(DilateError::Zero));
        assert_eq!(dilate(1), Ok(()));
        assert_eq!(factor(), 1);
    }
}
