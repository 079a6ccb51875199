//! What the two halves of one data-channel stream are doing, as plain
//! state (no browser in it, so it is tested natively): the flags of the
//! spec's stream state machine, FIN answered with FIN_ACK, and received
//! data held until it is read.

use std::collections::VecDeque;

use crate::proto::{Flag, Frame};

/// Most received data held for a stream that is not read. The remote has
/// no flow control but this: past it the stream is reset.
pub const MAX_UNREAD: usize = 4 * 1024 * 1024;

/// The receiving half.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// Data may come.
    Open,
    /// The remote sent FIN: what is held is all there is.
    Finished,
    /// We told the remote we read no more (STOP_SENDING).
    Stopped,
    /// The stream was reset (by either side, or its channel closed early).
    Reset,
}

/// The sending half.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// We may send.
    Open,
    /// We sent FIN and wait for the remote's FIN_ACK.
    FinSent,
    /// The remote acknowledged our FIN (or the wait for it ended).
    Closed,
    /// The remote sent STOP_SENDING: it will read nothing more.
    Stopped,
    /// The stream was reset.
    Reset,
}

/// One stream's state.
#[derive(Debug)]
pub struct StreamState {
    /// The receiving half.
    pub read: Read,
    /// The sending half.
    pub write: Write,
    unread: VecDeque<u8>,
    /// Flags owed to the remote (FIN_ACK), sent when the channel allows.
    pub owed: Vec<Flag>,
}

impl Default for StreamState {
    fn default() -> Self {
        Self {
            read: Read::Open,
            write: Write::Open,
            unread: VecDeque::new(),
            owed: Vec::new(),
        }
    }
}

/// The remote broke the protocol; the stream is reset.
#[derive(Debug, PartialEq, Eq)]
pub struct Overrun;

impl StreamState {
    /// Takes in one received frame.
    pub fn on_frame(&mut self, frame: Frame) -> Result<(), Overrun> {
        let flag = frame.known_flag();
        if let Some(data) = frame.message {
            // Data after FIN or after we stopped reading is dropped, as the
            // spec allows; data beyond what we hold for a reader resets.
            if self.read == Read::Open && !data.is_empty() {
                if self.unread.len() + data.len() > MAX_UNREAD {
                    self.reset();
                    return Err(Overrun);
                }
                self.unread.extend(data);
            }
        }
        match flag {
            Some(Flag::Fin) => {
                if matches!(self.read, Read::Open | Read::Stopped) {
                    self.read = Read::Finished;
                }
                if !self.owed.contains(&Flag::FinAck) {
                    self.owed.push(Flag::FinAck);
                }
            }
            Some(Flag::StopSending) if self.write == Write::Open => self.write = Write::Stopped,
            Some(Flag::ResetStream) => self.reset(),
            Some(Flag::FinAck) if self.write == Write::FinSent => self.write = Write::Closed,
            // Late or repeated flags change nothing; unknown flags are
            // ignored, as the spec says.
            Some(Flag::StopSending | Flag::FinAck) | None => {}
        }
        Ok(())
    }

    /// Moves received data into `buf`; how much.
    pub fn take(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.unread.len());
        for (slot, byte) in buf.iter_mut().zip(self.unread.drain(..n)) {
            *slot = byte;
        }
        n
    }

    /// Whether received data waits to be read.
    pub fn has_unread(&self) -> bool {
        !self.unread.is_empty()
    }

    /// We send FIN: returns whether it is to be sent now.
    pub fn close_write(&mut self) -> bool {
        if self.write == Write::Open {
            self.write = Write::FinSent;
            true
        } else {
            false
        }
    }

    /// The wait for FIN_ACK ended without it.
    pub fn fin_ack_timed_out(&mut self) {
        if self.write == Write::FinSent {
            self.write = Write::Closed;
        }
    }

    /// Both sides are reset; held data is dropped.
    pub fn reset(&mut self) {
        self.read = Read::Reset;
        self.write = Write::Reset;
        self.unread.clear();
    }

    /// Whether nothing more will pass either way: the channel can close.
    pub fn done(&self) -> bool {
        self.read != Read::Open && !matches!(self.write, Write::Open | Write::FinSent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(bytes: &[u8]) -> Frame {
        Frame::data(bytes)
    }

    #[test]
    fn fin_is_acknowledged_once_and_ends_reading_after_held_data() {
        let mut s = StreamState::default();
        s.on_frame(data(b"hello")).expect("ok");
        s.on_frame(Frame::with_flag(Flag::Fin)).expect("ok");
        s.on_frame(Frame::with_flag(Flag::Fin)).expect("ok");
        assert_eq!(s.owed, [Flag::FinAck]);
        assert_eq!(s.read, Read::Finished);
        let mut buf = [0u8; 16];
        assert_eq!(s.take(&mut buf), 5);
        assert_eq!(&buf[..5], b"hello");
        // Data after FIN is dropped.
        s.on_frame(data(b"late")).expect("ok");
        assert!(!s.has_unread());
    }

    #[test]
    fn our_fin_waits_for_fin_ack() {
        let mut s = StreamState::default();
        assert!(s.close_write());
        assert!(!s.close_write(), "FIN is sent once");
        assert_eq!(s.write, Write::FinSent);
        s.on_frame(Frame::with_flag(Flag::Fin)).expect("ok");
        assert!(!s.done(), "still waiting for FIN_ACK");
        s.on_frame(Frame::with_flag(Flag::FinAck)).expect("ok");
        assert_eq!(s.write, Write::Closed);
        assert!(s.done());
    }

    #[test]
    fn a_missing_fin_ack_gives_up_after_the_wait() {
        let mut s = StreamState::default();
        s.close_write();
        s.fin_ack_timed_out();
        assert_eq!(s.write, Write::Closed);
    }

    #[test]
    fn stop_sending_and_reset_end_writing() {
        let mut s = StreamState::default();
        s.on_frame(Frame::with_flag(Flag::StopSending)).expect("ok");
        assert_eq!(s.write, Write::Stopped);
        assert_eq!(s.read, Read::Open);
        s.on_frame(data(b"x")).expect("ok");
        s.on_frame(Frame::with_flag(Flag::ResetStream)).expect("ok");
        assert_eq!((s.read, s.write), (Read::Reset, Write::Reset));
        assert!(!s.has_unread(), "a reset drops held data");
        assert!(s.done());
    }

    #[test]
    fn a_flood_nobody_reads_resets_the_stream() {
        let mut s = StreamState::default();
        let chunk = vec![0u8; 16 * 1024];
        let mut result = Ok(());
        for _ in 0..=(MAX_UNREAD / chunk.len()) {
            result = s.on_frame(data(&chunk));
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(Overrun));
        assert_eq!(s.read, Read::Reset);
    }

    #[test]
    fn unknown_flags_are_ignored() {
        let mut s = StreamState::default();
        s.on_frame(Frame {
            flag: Some(42),
            message: Some(b"ok".to_vec()),
        })
        .expect("ok");
        assert_eq!((s.read, s.write), (Read::Open, Write::Open));
        assert!(s.has_unread());
    }
}
