//! The page's identity: its key is kept in this tab's `sessionStorage`, so
//! a reload keeps the peer id (others see the same person, and the page's
//! own lines in its saved history stay its own), while another tab gets
//! another one. A duplicated tab starts with a copy of the original's
//! `sessionStorage`, so before using a stored key the page asks the other
//! tabs (a `BroadcastChannel`) whether one of them is that peer already,
//! and makes a new key if so: libp2p cannot have one peer id twice.

use std::cell::RefCell;

use futures::channel::oneshot;
use futures_timer::Delay;
use meshtalk_protocol::libp2p::{PeerId, identity::Keypair};
use wasm_bindgen::{JsCast, closure::Closure};
use web_sys::{BroadcastChannel, MessageEvent};
use web_time::Duration;

const STORAGE_KEY: &str = "meshtalk-identity";
const CHANNEL: &str = "meshtalk-identity";
/// How long another tab has to say a stored identity is its own.
const CLAIM_WAIT: Duration = Duration::from_millis(100);

/// A channel and the handler of its messages.
type Listening = (BroadcastChannel, Closure<dyn FnMut(MessageEvent)>);

thread_local! {
    /// The channel on which this tab answers for its identity, kept open
    /// while the page lives.
    static ANSWERING: RefCell<Option<Listening>> = const { RefCell::new(None) };
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.session_storage().ok().flatten()
}

fn stored() -> Option<Keypair> {
    let text = storage()?.get_item(STORAGE_KEY).ok().flatten()?;
    Keypair::from_protobuf_encoding(&unhex(&text)?).ok()
}

fn store(keypair: &Keypair) {
    if let (Some(storage), Ok(bytes)) = (storage(), keypair.to_protobuf_encoding())
        && storage.set_item(STORAGE_KEY, &hex(&bytes)).is_err()
    {
        tracing::warn!("cannot keep the identity in this tab: a reload will make a new one");
    }
}

/// Whether another open tab says it is `peer`.
async fn in_use(peer: PeerId) -> bool {
    let Ok(channel) = BroadcastChannel::new(CHANNEL) else {
        return false;
    };
    let (tx, rx) = oneshot::channel();
    let tx = RefCell::new(Some(tx));
    let mine = format!("mine:{peer}");
    let on_answer = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
        if event.data().as_string().as_deref() == Some(mine.as_str())
            && let Some(tx) = tx.borrow_mut().take()
        {
            let _ = tx.send(());
        }
    });
    channel.set_onmessage(Some(on_answer.as_ref().unchecked_ref()));
    let asked = channel.post_message(&format!("who:{peer}").into()).is_ok();
    let answered = asked
        && matches!(
            futures::future::select(rx, Box::pin(Delay::new(CLAIM_WAIT))).await,
            futures::future::Either::Left((Ok(()), _))
        );
    channel.set_onmessage(None);
    channel.close();
    answered
}

/// Answers other tabs that ask whether we are `peer`, while the page lives.
fn answer_for(peer: PeerId) {
    let Ok(channel) = BroadcastChannel::new(CHANNEL) else {
        return;
    };
    let who = format!("who:{peer}");
    let reply = channel.clone();
    let mine = format!("mine:{peer}");
    let on_ask = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
        if event.data().as_string().as_deref() == Some(who.as_str()) {
            let _ = reply.post_message(&mine.as_str().into());
        }
    });
    channel.set_onmessage(Some(on_ask.as_ref().unchecked_ref()));
    ANSWERING.with(|slot| *slot.borrow_mut() = Some((channel, on_ask)));
}

/// This tab's identity: the one it had before a reload, unless another tab
/// is using it; otherwise a new one, kept for the next reload.
pub async fn for_this_tab() -> Keypair {
    let keypair = match stored() {
        Some(keypair) if !in_use(keypair.public().to_peer_id()).await => keypair,
        Some(_) => {
            tracing::info!("another tab is this peer already: a new identity for this one");
            Keypair::generate_ed25519()
        }
        None => Keypair::generate_ed25519(),
    };
    store(&keypair);
    answer_for(keypair.public().to_peer_id());
    keypair
}
