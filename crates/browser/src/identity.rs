//! The page's identity: its key is kept in this tab's `sessionStorage`, so
//! a reload keeps the peer id (others see the same person, and the page's
//! own lines in its saved history stay its own), while another tab gets
//! another one. A duplicated tab starts with a copy of the original's
//! `sessionStorage`, and libp2p cannot have one peer id twice, so a page
//! holds a Web Lock named after its peer id while it lives, and uses a
//! stored key only once it holds that key's lock. A reload gets the lock
//! as soon as the page it replaces is gone (no wait); a duplicated tab
//! does not get it within [`CLAIM_WAIT`] and makes a new key. Where the
//! page has no Web Locks (served over plain http from another host, not a
//! secure context) it asks the other tabs instead (a `BroadcastChannel`),
//! and waits [`CLAIM_WAIT`] for an answer; every page answers there.

use std::cell::RefCell;

use futures::channel::oneshot;
use futures_timer::Delay;
use js_sys::{Object, Promise, Reflect};
use meshtalk_protocol::libp2p::{PeerId, identity::Keypair};
use wasm_bindgen::{JsCast, JsValue, closure::Closure, prelude::wasm_bindgen};
use web_sys::{AbortController, BroadcastChannel, MessageEvent};
use web_time::Duration;

const STORAGE_KEY: &str = "meshtalk-identity";
const CHANNEL: &str = "meshtalk-identity";
/// How long another tab may hold a stored identity before this one makes
/// a new one (or, without Web Locks, has to say the identity is its own).
const CLAIM_WAIT: Duration = Duration::from_millis(100);

/// A channel and the handler of its messages.
type Listening = (BroadcastChannel, Closure<dyn FnMut(MessageEvent)>);

thread_local! {
    /// The channel on which this tab answers for its identity, kept open
    /// while the page lives.
    static ANSWERING: RefCell<Option<Listening>> = const { RefCell::new(None) };
    /// The name of the Web Lock this page holds, once it holds one.
    static HELD: RefCell<Option<String>> = const { RefCell::new(None) };
}

#[wasm_bindgen]
extern "C" {
    /// The Web Locks API's `navigator.locks` (web-sys has it only among
    /// its unstable APIs).
    type LockManager;
    #[wasm_bindgen(method)]
    fn request(
        this: &LockManager,
        name: &str,
        options: &JsValue,
        granted: &Closure<dyn FnMut(JsValue) -> Promise>,
    ) -> Promise;
}

/// `navigator.locks`, where the page has it (secure contexts only).
fn lock_manager() -> Option<LockManager> {
    let navigator = web_sys::window()?.navigator();
    let locks = Reflect::get(&navigator, &"locks".into()).ok()?;
    (!locks.is_undefined()).then(|| locks.unchecked_into())
}

fn lock_name(peer: PeerId) -> String {
    format!("{CHANNEL}:{peer}")
}

/// Asks for `peer`'s lock, held for the rest of the page's life once
/// granted; whether it was granted within `wait` (`None`: no limit).
/// `None` when the page has no Web Locks.
async fn take_lock(peer: PeerId, wait: Option<Duration>) -> Option<bool> {
    let locks = lock_manager()?;
    let name = lock_name(peer);
    if HELD.with(|held| held.borrow().as_deref() == Some(name.as_str())) {
        return Some(true);
    }
    let (tx, rx) = oneshot::channel();
    let mut tx = Some(tx);
    // Granted: say so, and hold the lock with a promise that never settles.
    let granted = Closure::<dyn FnMut(JsValue) -> Promise>::new(move |_lock: JsValue| {
        if let Some(tx) = tx.take() {
            let _ = tx.send(());
        }
        Promise::new(&mut |_, _| {})
    });
    let abort = AbortController::new().ok();
    let options = Object::new();
    if let Some(abort) = &abort {
        let _ = Reflect::set(&options, &"signal".into(), &abort.signal());
    }
    // An aborted request rejects its promise: nothing to report. (At most
    // two requests a page: the handler is left to the page's life.)
    let ignore = Closure::<dyn FnMut(JsValue)>::new(|_: JsValue| {});
    let _ = locks.request(&name, &options, &granted).catch(&ignore);
    ignore.forget();
    let got = match wait {
        Some(wait) => matches!(
            futures::future::select(rx, Box::pin(Delay::new(wait))).await,
            futures::future::Either::Left((Ok(()), _))
        ),
        None => rx.await.is_ok(),
    };
    if got {
        // The closure must outlive the page's lock.
        granted.forget();
        HELD.with(|held| *held.borrow_mut() = Some(name));
    } else if let Some(abort) = abort {
        abort.abort();
    }
    Some(got)
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

fn stored() -> Option<Keypair> {
    let text = crate::page::stored_for_tab(STORAGE_KEY)?;
    Keypair::from_protobuf_encoding(&unhex(&text)?).ok()
}

fn store(keypair: &Keypair) {
    if let (Some(storage), Ok(bytes)) = (crate::page::tab_storage(), keypair.to_protobuf_encoding())
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

/// Whether this page may be `peer`: it holds `peer`'s lock (taken within
/// [`CLAIM_WAIT`]), or, without Web Locks, no other tab says it is `peer`.
async fn claim(peer: PeerId) -> bool {
    match take_lock(peer, Some(CLAIM_WAIT)).await {
        Some(got) => got,
        None => !in_use(peer).await,
    }
}

/// This tab's identity: the one it had before a reload, unless another tab
/// is using it; otherwise a new one, kept for the next reload.
pub async fn for_this_tab() -> Keypair {
    let keypair = match stored() {
        Some(keypair) if claim(keypair.public().to_peer_id()).await => keypair,
        Some(_) => {
            tracing::info!("another tab is this peer already: a new identity for this one");
            Keypair::generate_ed25519()
        }
        None => Keypair::generate_ed25519(),
    };
    store(&keypair);
    let peer = keypair.public().to_peer_id();
    // A new key's lock is free: taken at once (a duplicate of this tab will
    // wait for it in vain). Pages without Web Locks ask on the channel, and
    // so may pages of an older version: every page answers there.
    wasm_bindgen_futures::spawn_local(async move {
        take_lock(peer, None).await;
    });
    answer_for(peer);
    keypair
}
