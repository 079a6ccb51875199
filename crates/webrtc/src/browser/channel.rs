//! One libp2p stream over one `RTCDataChannel`: the spec's framing, FIN
//! answered with FIN_ACK, back-pressure through `bufferedAmount`.
//!
//! The channel's event handlers are set when the [`Stream`] is made, which
//! for an inbound channel is inside the `datachannel` event itself: no
//! message can arrive before someone listens.

use std::{
    cell::RefCell,
    io,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll, Waker},
    time::Duration,
};

use futures::{AsyncRead, AsyncWrite, FutureExt};
use futures_timer::Delay;
use send_wrapper::SendWrapper;
use wasm_bindgen::{JsCast, closure::Closure};
use web_sys::{Event, MessageEvent, RtcDataChannel, RtcDataChannelState, RtcDataChannelType};

use crate::{
    proto::{Deframer, Flag, Frame, MAX_FRAME, MAX_FRAME_DATA, encode},
    state::{Read, StreamState, Write},
};

/// How long a closed writing half waits for the remote's FIN_ACK.
const FIN_ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes a stream may have waiting in the browser's send buffer before a
/// write waits (a few frames: enough to keep the channel busy).
const MAX_BUFFERED: u32 = 4 * MAX_FRAME as u32;

/// What the event handlers share with the stream.
struct Shared {
    state: StreamState,
    deframer: Deframer,
    readers: Option<Waker>,
    writers: Option<Waker>,
    /// A close waiting for FIN_ACK.
    closer: Option<Waker>,
}

impl Shared {
    fn wake_all(&mut self) {
        if let Some(w) = self.readers.take() {
            w.wake();
        }
        if let Some(w) = self.writers.take() {
            w.wake();
        }
        if let Some(w) = self.closer.take() {
            w.wake();
        }
    }
}

/// The handlers, kept alive as long as the channel is ours.
struct Handlers {
    _open: Closure<dyn FnMut(Event)>,
    _message: Closure<dyn FnMut(MessageEvent)>,
    _low: Closure<dyn FnMut(Event)>,
    _close: Closure<dyn FnMut(Event)>,
}

struct Inner {
    channel: RtcDataChannel,
    shared: Rc<RefCell<Shared>>,
    fin_ack_wait: Option<Delay>,
    _handlers: Handlers,
}

/// A stream of a `/webrtc` connection.
pub struct Stream {
    inner: SendWrapper<Inner>,
}

fn send_frame(channel: &RtcDataChannel, frame: &Frame) -> io::Result<()> {
    channel
        .send_with_u8_array(&encode(frame))
        .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "data channel send failed"))
}

impl Stream {
    /// Takes over `channel`, setting its event handlers.
    pub(crate) fn new(channel: RtcDataChannel) -> Self {
        channel.set_binary_type(RtcDataChannelType::Arraybuffer);
        channel.set_buffered_amount_low_threshold(MAX_BUFFERED / 2);
        let shared = Rc::new(RefCell::new(Shared {
            state: StreamState::default(),
            deframer: Deframer::default(),
            readers: None,
            writers: None,
            closer: None,
        }));

        let open = {
            let shared = shared.clone();
            Closure::<dyn FnMut(Event)>::new(move |_: Event| shared.borrow_mut().wake_all())
        };
        let low = {
            let shared = shared.clone();
            Closure::<dyn FnMut(Event)>::new(move |_: Event| {
                if let Some(w) = shared.borrow_mut().writers.take() {
                    w.wake();
                }
            })
        };
        let close = {
            let shared = shared.clone();
            Closure::<dyn FnMut(Event)>::new(move |_: Event| {
                let mut s = shared.borrow_mut();
                // Closed before both halves were done: nothing more will
                // pass, and a reader must not mistake it for a clean end.
                if !s.state.done() {
                    if s.state.read == Read::Open {
                        s.state.read = Read::Reset;
                    }
                    if matches!(s.state.write, Write::Open | Write::FinSent) {
                        s.state.write = Write::Reset;
                    }
                }
                s.wake_all();
            })
        };
        let message = {
            let shared = shared.clone();
            let channel = channel.clone();
            Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
                let bytes = js_sys::Uint8Array::new(&ev.data()).to_vec();
                let mut s = shared.borrow_mut();
                s.deframer.push(&bytes);
                loop {
                    let frame = match s.deframer.next_frame() {
                        Ok(Some(frame)) => frame,
                        Ok(None) => break,
                        Err(e) => {
                            tracing::debug!(error = %e, "bad frame; resetting the stream");
                            s.state.reset();
                            let _ = send_frame(&channel, &Frame::with_flag(Flag::ResetStream));
                            channel.close();
                            break;
                        }
                    };
                    if s.state.on_frame(frame).is_err() {
                        tracing::debug!("stream overrun by its remote; resetting it");
                        let _ = send_frame(&channel, &Frame::with_flag(Flag::ResetStream));
                        channel.close();
                        break;
                    }
                }
                for flag in std::mem::take(&mut s.state.owed) {
                    let _ = send_frame(&channel, &Frame::with_flag(flag));
                }
                s.wake_all();
            })
        };
        channel.set_onopen(Some(open.as_ref().unchecked_ref()));
        channel.set_onbufferedamountlow(Some(low.as_ref().unchecked_ref()));
        channel.set_onclose(Some(close.as_ref().unchecked_ref()));
        channel.set_onmessage(Some(message.as_ref().unchecked_ref()));
        Self {
            inner: SendWrapper::new(Inner {
                channel,
                shared,
                fin_ack_wait: None,
                _handlers: Handlers {
                    _open: open,
                    _message: message,
                    _low: low,
                    _close: close,
                },
            }),
        }
    }
}

impl Inner {
    /// Ready to send: the channel is open and its buffer has room.
    fn poll_send_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.channel.ready_state() {
            RtcDataChannelState::Connecting => {
                self.shared.borrow_mut().writers = Some(cx.waker().clone());
                return Poll::Pending;
            }
            RtcDataChannelState::Open => {}
            _ => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
        if self.channel.buffered_amount() > MAX_BUFFERED {
            self.shared.borrow_mut().writers = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    fn close_if_done(&self) {
        if self.shared.borrow().state.done()
            && matches!(
                self.channel.ready_state(),
                RtcDataChannelState::Open | RtcDataChannelState::Connecting
            )
        {
            self.channel.close();
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let inner = &mut *self.get_mut().inner;
        let mut s = inner.shared.borrow_mut();
        if s.state.has_unread() {
            return Poll::Ready(Ok(s.state.take(buf)));
        }
        match s.state.read {
            Read::Open => {
                s.readers = Some(cx.waker().clone());
                Poll::Pending
            }
            Read::Finished | Read::Stopped => {
                drop(s);
                inner.close_if_done();
                Poll::Ready(Ok(0))
            }
            Read::Reset => Poll::Ready(Err(io::ErrorKind::ConnectionReset.into())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let inner = &mut *self.get_mut().inner;
        match inner.shared.borrow().state.write {
            Write::Open => {}
            Write::Reset => return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into())),
            _ => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
        futures::ready!(inner.poll_send_ready(cx))?;
        let n = buf.len().min(MAX_FRAME_DATA);
        send_frame(&inner.channel, &Frame::data(&buf[..n]))?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // What was written is in the browser's hands: it sends it in order,
        // reliably, whatever we do next.
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let inner = &mut *self.get_mut().inner;
        if inner.shared.borrow().state.write == Write::Open {
            // FIN waits for the channel to open, not for buffer room.
            if inner.channel.ready_state() == RtcDataChannelState::Connecting {
                inner.shared.borrow_mut().writers = Some(cx.waker().clone());
                return Poll::Pending;
            }
            inner.shared.borrow_mut().state.close_write();
            send_frame(&inner.channel, &Frame::with_flag(Flag::Fin))?;
            inner.fin_ack_wait = Some(Delay::new(FIN_ACK_TIMEOUT));
        }
        if inner.shared.borrow().state.write == Write::FinSent {
            if let Some(wait) = inner.fin_ack_wait.as_mut()
                && wait.poll_unpin(cx).is_ready()
            {
                tracing::debug!("no FIN_ACK in time; the stream counts as closed");
                inner.shared.borrow_mut().state.fin_ack_timed_out();
            } else {
                inner.shared.borrow_mut().closer = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
        inner.close_if_done();
        Poll::Ready(Ok(()))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if !self.inner.valid() {
            return;
        }
        let inner = &*self.inner;
        let done = inner.shared.borrow().state.done();
        let open = inner.channel.ready_state() == RtcDataChannelState::Open;
        if !done && open {
            // Dropped midway: the remote must not wait for more.
            let _ = send_frame(&inner.channel, &Frame::with_flag(Flag::ResetStream));
        }
        inner.channel.set_onmessage(None);
        inner.channel.set_onopen(None);
        inner.channel.set_onclose(None);
        inner.channel.set_onbufferedamountlow(None);
        inner.channel.close();
    }
}
