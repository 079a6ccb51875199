//! # meshtalk-browser
//!
//! The meshtalk browser peer: [`meshtalk_protocol`]'s behaviour, wire
//! format, validation and chat engine compiled to WebAssembly, behind a
//! Leptos chat page. `cargo xtask web` builds it, with `web/index.html`,
//! into `dist/`, and `meshtalk-relay` serves the result.
//!
//! The page connects to a relay over WebRTC-direct, falling back to
//! WebSocket, and joins the same gossipsub rooms as native peers.
//!
//! - [`params`]: the page's URL parameters and the order of addresses to try;
//! - [`net`]: the node, the engine and the link to the relay, with reconnects;
//! - [`model`]: what the page shows, as signals;
//! - [`ui`]: the components;
//! - [`page`]: the browser APIs used (URL, storage, fetch, console).

pub mod identity;
pub mod model;
pub mod net;
pub mod page;
pub mod params;
pub mod saved;
pub mod ui;

use leptos::prelude::*;
use wasm_bindgen::{JsCast, prelude::wasm_bindgen};

/// Id of the element the page mounts into. A document without it (a test
/// harness loading the library) gets no page.
pub const ROOT_ID: &str = "meshtalk";

/// Entry point, run when the module loads: reads the URL, starts the node
/// and mounts the page.
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
    let Some(root) = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.get_element_by_id(ROOT_ID))
        .and_then(|e| e.dyn_into::<web_sys::HtmlElement>().ok())
    else {
        return;
    };
    let params = params::Params::parse(&page::query());
    page::init_logging(params.log.unwrap_or(tracing::Level::INFO));
    // `?nick=` sets the nickname, kept for the next visits too.
    let nick = match &params.nick {
        Some(nick) => {
            page::store(net::NICK_KEY, nick);
            nick.clone()
        }
        None => page::stored(net::NICK_KEY).unwrap_or_default(),
    };
    let model = model::Model::new(params.room.name(), &nick);
    let actions = net::start(model, params);
    root.set_inner_html("");
    leptos::mount::mount_to(root, move || view! { <ui::App model actions/> }).forget();
}
