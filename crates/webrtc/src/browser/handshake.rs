//! The signaling exchange of the spec (`webrtc/webrtc.md`), over a stream
//! of the relayed connection: the dialer offers, the listener answers, both
//! trickle their ICE candidates until the peer connection is up.
//!
//! No Noise handshake follows: the SDPs, and the DTLS fingerprints in them,
//! came over the relayed connection, which Noise already authenticated, so
//! the peer at the other end of the data channels is the peer we signaled
//! with.

use std::{pin::pin, task::Poll};

use futures::{
    AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, FutureExt, StreamExt, future, stream,
};
use futures_timer::Delay;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{RtcIceCandidateInit, RtcPeerConnectionState, RtcSdpType, RtcSessionDescriptionInit};

use super::connection::{Connection, INIT_LABEL, Peer};
use crate::{
    Config, Error,
    proto::{Signal, SignalType, read_signal, write_signal},
};

/// Which side of the exchange we are.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// We dialed: we offer.
    Dialer,
    /// We were dialed: we answer.
    Listener,
}

/// Runs the exchange on `signaling` and returns the connection once it is
/// up, or the reason it is not within the configured time.
pub(crate) async fn handshake<S>(
    signaling: S,
    side: Side,
    config: &Config,
) -> Result<Connection, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let peer = Peer::new(&config.ice_servers)?;
    let exchange = exchange(&peer, signaling, side);
    futures::select! {
        result = exchange.fuse() => result?,
        () = Delay::new(config.handshake_timeout).fuse() => return Err(Error::Timeout),
    }
    Ok(Connection::new(peer))
}

async fn exchange<S>(peer: &Peer, signaling: S, side: Side) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (reader, mut writer) = signaling.split();
    let mut incoming = pin!(signals(reader));
    let pc = &peer.pc;
    // The dialer's first channel puts a data section into its offer; js
    // peers expect it to exist and to be closed once connected.
    let init = (side == Side::Dialer).then(|| pc.create_data_channel(INIT_LABEL));

    match side {
        Side::Dialer => {
            let offer = JsFuture::from(pc.create_offer()).await.map_err(Error::js)?;
            let sdp = sdp_of(&offer)?;
            set_description(pc, RtcSdpType::Offer, &sdp, true).await?;
            write_signal(&mut writer, Signal::new(SignalType::SdpOffer, sdp)).await?;
            let answer = expect(&mut incoming, SignalType::SdpAnswer).await?;
            set_description(pc, RtcSdpType::Answer, &answer, false).await?;
        }
        Side::Listener => {
            let offer = expect(&mut incoming, SignalType::SdpOffer).await?;
            set_description(pc, RtcSdpType::Offer, &offer, false).await?;
            let answer = JsFuture::from(pc.create_answer())
                .await
                .map_err(Error::js)?;
            let sdp = sdp_of(&answer)?;
            set_description(pc, RtcSdpType::Answer, &sdp, true).await?;
            write_signal(&mut writer, Signal::new(SignalType::SdpAnswer, sdp)).await?;
        }
    }

    // Trickle both ways until the connection is up. The remote may close
    // its side once it has sent all of its candidates; that is no error.
    let mut remote_done = false;
    loop {
        let next_local = future::poll_fn(|cx| {
            if let Some(c) = peer.events.candidates.borrow_mut().pop_front() {
                return Poll::Ready(Local::Candidate(c));
            }
            match peer.events.state.get() {
                Some(RtcPeerConnectionState::Connected) => return Poll::Ready(Local::Connected),
                Some(RtcPeerConnectionState::Failed | RtcPeerConnectionState::Closed) => {
                    return Poll::Ready(Local::Failed);
                }
                _ => {}
            }
            *peer.events.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        });
        let next_remote = async {
            if remote_done {
                future::pending().await
            } else {
                incoming.next().await
            }
        };
        futures::select! {
            local = next_local.fuse() => match local {
                Local::Candidate(json) => {
                    // The end of gathering goes out as `null`, as js-libp2p
                    // sends it.
                    let data = json.unwrap_or_else(|| "null".to_owned());
                    // A remote that has what it needs may be gone already.
                    let _ = write_signal(&mut writer, Signal::new(SignalType::IceCandidate, data)).await;
                }
                Local::Connected => break,
                Local::Failed => return Err(Error::IceFailed),
            },
            remote = next_remote.fuse() => match remote {
                Some(Ok(signal)) if signal.kind() == Some(SignalType::IceCandidate) => {
                    add_candidate(pc, signal.data.as_deref().unwrap_or_default()).await;
                }
                Some(Ok(signal)) => {
                    return Err(Error::Signaling(format!(
                        "unexpected {:?} while exchanging candidates",
                        signal.kind()
                    )));
                }
                Some(Err(e)) => return Err(e),
                None => remote_done = true,
            },
        }
    }
    if let Some(init) = init {
        init.close();
    }
    // Done with signaling: close our side; the remote does the same.
    let _ = writer.close().await;
    Ok(())
}

enum Local {
    Candidate(Option<String>),
    Connected,
    Failed,
}

/// The signals `reader` sends, each checked for size and form.
fn signals<R: AsyncRead + Unpin>(reader: R) -> impl futures::Stream<Item = Result<Signal, Error>> {
    stream::unfold(Some(reader), |reader| async move {
        let mut reader = reader?;
        match read_signal(&mut reader).await {
            Ok(Some(signal)) => Some((Ok(signal), Some(reader))),
            Ok(None) => None,
            Err(e) => Some((Err(e), None)),
        }
    })
}

async fn expect<S>(incoming: &mut S, kind: SignalType) -> Result<String, Error>
where
    S: futures::Stream<Item = Result<Signal, Error>> + Unpin,
{
    match incoming.next().await {
        Some(Ok(signal)) if signal.kind() == Some(kind) => Ok(signal.data.unwrap_or_default()),
        Some(Ok(signal)) => Err(Error::Signaling(format!(
            "expected {kind:?}, got {:?}",
            signal.kind()
        ))),
        Some(Err(e)) => Err(e),
        None => Err(Error::Signaling(format!("stream closed before {kind:?}"))),
    }
}

fn sdp_of(description: &JsValue) -> Result<String, Error> {
    js_sys::Reflect::get(description, &JsValue::from_str("sdp"))
        .ok()
        .and_then(|v| v.as_string())
        .ok_or_else(|| Error::Signaling("session description without SDP".into()))
}

async fn set_description(
    pc: &web_sys::RtcPeerConnection,
    kind: RtcSdpType,
    sdp: &str,
    local: bool,
) -> Result<(), Error> {
    let description = RtcSessionDescriptionInit::new(kind);
    description.set_sdp(sdp);
    let promise = if local {
        pc.set_local_description(&description)
    } else {
        pc.set_remote_description(&description)
    };
    JsFuture::from(promise).await.map_err(Error::js)?;
    Ok(())
}

/// Adds a remote candidate. `null` (the end of gathering) and `""` (the end
/// of one generation) are skipped, as js-libp2p skips them: the browser
/// keeps checking the pairs it has. A candidate the browser cannot use is
/// skipped too: others may still work.
async fn add_candidate(pc: &web_sys::RtcPeerConnection, json: &str) {
    let Ok(value) = js_sys::JSON::parse(json) else {
        tracing::debug!(%json, "remote ICE candidate is not JSON");
        return;
    };
    if !value.is_object() {
        return;
    }
    let init = value.unchecked_into::<RtcIceCandidateInit>();
    if init.get_candidate().is_empty() {
        return;
    }
    if let Err(e) =
        JsFuture::from(pc.add_ice_candidate_with_opt_rtc_ice_candidate_init(Some(&init))).await
    {
        tracing::debug!(error = %Error::js(e), %json, "remote ICE candidate not usable");
    }
}
