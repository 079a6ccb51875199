//! The chat page's Leptos components. They read the [`Model`] and send
//! [`Action`]s; libp2p stays in [`crate::net`]. Every element a test or a
//! user's script may need carries a `data-testid`.

use std::collections::BTreeMap;

use leptos::{ev, html, prelude::*};
use meshtalk_protocol::files::size_text;
use send_wrapper::SendWrapper;
use wasm_bindgen::JsCast;

use crate::{
    model::{
        DmLine, DmState, FileLine, FileState, Line, LineKind, Model, PeerRow, direct_text, short_id,
    },
    net::{Action, Actions},
};

/// The whole page.
#[component]
pub fn App(
    /// What the page shows.
    model: Model,
    /// Where the page's actions go.
    actions: Actions,
) -> impl IntoView {
    view! {
        <div class="app">
            <header class="bar">
                <h1>"meshtalk"</h1>
                <RoomName model/>
                <StatusLine model/>
            </header>
            <main class="chat">
                <Messages model actions=actions.clone()/>
                <Composer actions=actions.clone()/>
                <DirectChat model actions=actions.clone()/>
            </main>
            <aside class="side">
                <Identity model actions=actions.clone()/>
                <RoomPicker model actions=actions.clone()/>
                <Members model/>
                <Conversations model/>
                <Peers model/>
                <RelayPicker actions/>
            </aside>
        </div>
    }
}

#[component]
fn RoomName(model: Model) -> impl IntoView {
    view! { <span class="room-name">"#" {move || model.room.get()}</span> }
}

#[component]
fn StatusLine(model: Model) -> impl IntoView {
    view! {
        <span
            class="status"
            data-testid="status"
            data-state=move || model.status.with(|s| s.state())
            data-direct=move || model.direct_links()
            data-direct-failures=move || model.direct_failures.get()
            role="status"
        >
            {move || model.status.with(|s| s.text())}
            {move || model.direct_problem.with(|p| direct_text(model.direct_links(), p.as_deref()))}
        </span>
    }
}

/// The current room's lines, scrolled to the newest.
#[component]
fn Messages(model: Model, actions: Actions) -> impl IntoView {
    let scroller: NodeRef<html::Div> = NodeRef::new();
    let lines = move || {
        let room = model.room.get();
        model.lines.with(|lines| {
            lines
                .iter()
                .filter(|l| l.room == room)
                .cloned()
                .collect::<Vec<_>>()
        })
    };
    Effect::new(move |_| {
        model.lines.track();
        request_animation_frame(move || {
            if let Some(el) = scroller.get_untracked() {
                el.set_scroll_top(el.scroll_height());
            }
        });
    });
    view! {
        <div class="scroll" node_ref=scroller>
            <ol class="lines" aria-live="polite">
                <For
                    each=lines
                    key=|l: &Line| (l.key, matches!(l.kind, LineKind::Message { pending: true, .. }))
                    children=move |l| line(model, &actions, l)
                />
            </ol>
        </div>
    }
}

fn line(model: Model, actions: &Actions, line: Line) -> AnyView {
    let Line {
        kind, time, text, ..
    } = line;
    match kind {
        LineKind::Notice => view! {
            <li class="notice" data-testid="notice">
                <time>{time}</time>
                <span>{text}</span>
            </li>
        }
        .into_any(),
        LineKind::File(file) => file_card(model, actions, time, text, file),
        LineKind::Message {
            from,
            nick,
            mine,
            pending,
            history,
            ..
        } => {
            // A nickname learnt after the message arrived fills in.
            let peer = from.clone();
            let name = move || nick.clone().unwrap_or_else(|| model.name_of(&peer));
            let short = short_id(&from);
            let title = from.clone();
            view! {
                <li
                    class="message"
                    class:mine=mine
                    class:pending=pending
                    class:history=history
                    data-testid="message"
                    data-from=from
                    data-history=history.then_some("true")
                >
                    <div class="meta">
                        <span class="nick" data-testid="message-nick">{name}</span>
                        <span class="peer" title=title>{short}</span>
                        <time>{time}</time>
                        {pending.then(|| view! { <span class="sending">"sending…"</span> })}
                    </div>
                    <p class="text" data-testid="message-text">{text}</p>
                </li>
            }
            .into_any()
        }
    }
}

/// A file offered in the room: name, size, who; a download button, a
/// progress bar while it comes, then a link to save it and, for an image,
/// the image.
fn file_card(
    model: Model,
    actions: &Actions,
    time: String,
    name: String,
    file: FileLine,
) -> AnyView {
    let FileLine {
        sha256,
        size,
        media_type,
        image,
        from,
        nick,
        mine,
    } = file;
    let peer = from.clone();
    let who = move || nick.clone().unwrap_or_else(|| model.name_of(&peer));
    let key = sha256.clone();
    let state = Memo::new(move |_| {
        model
            .files
            .with(|files| files.get(&key).cloned())
            .unwrap_or(FileState::Offered)
    });
    let get = {
        let actions = actions.clone();
        let sha256 = sha256.clone();
        move |_| actions.send(Action::GetFile(sha256.clone()))
    };
    let download_name = name.clone();
    let preview_name = name.clone();
    let data_name = name.clone();
    let body = move || {
        match state.get() {
        FileState::Offered => view! {
            <button data-testid="file-download" on:click=get.clone()>"Download"</button>
        }
        .into_any(),
        FileState::Fetching { received, .. } => view! {
            <progress data-testid="file-progress" max=size.to_string() value=received.to_string()></progress>
        }
        .into_any(),
        FileState::Ready { url } => view! {
            <progress data-testid="file-progress" max=size.to_string() value=size.to_string()></progress>
            <a data-testid="file-link" href=url.clone() download=download_name.clone()>"Save"</a>
            {image.then(|| view! {
                <img data-testid="file-preview" src=url alt=preview_name.clone()/>
            })}
        }
        .into_any(),
        FileState::Failed(error) => view! {
            <span class="error" data-testid="file-error">{error}</span>
            <button data-testid="file-download" on:click=get.clone()>"Try again"</button>
        }
        .into_any(),
    }
    };
    view! {
        <li
            class="file"
            class:mine=mine
            data-testid="file"
            data-sha256=sha256
            data-name=data_name
            data-size=size.to_string()
            data-state=move || state.get().name()
            data-from=from
        >
            <div class="meta">
                <span class="nick">{who}</span>
                <time>{time}</time>
            </div>
            <p class="file-about">
                <span class="file-name">{name}</span>
                " · "
                <span class="file-size">{size_text(size)}</span>
                " · "
                <span class="file-type">{media_type}</span>
            </p>
            <div class="file-body">{body}</div>
        </li>
    }
    .into_any()
}

/// The message box: Enter (or the button) sends.
#[component]
fn Composer(actions: Actions) -> impl IntoView {
    let input: NodeRef<html::Input> = NodeRef::new();
    let picked = actions.clone();
    let send = move || {
        if let Some(el) = input.get_untracked() {
            let text = el.value();
            if !text.trim().is_empty() {
                actions.send(Action::Send(text));
                el.set_value("");
            }
        }
    };
    let on_key = {
        let send = send.clone();
        move |e: ev::KeyboardEvent| {
            if e.key() == "Enter" && !e.shift_key() {
                e.prevent_default();
                send();
            }
        }
    };
    view! {
        <div class="composer">
            <input
                node_ref=input
                data-testid="message-input"
                type="text"
                placeholder="Write a message, Enter sends"
                maxlength="4096"
                autocomplete="off"
                aria-label="message"
                on:keydown=on_key
            />
            <button data-testid="send" on:click=move |_| send()>"Send"</button>
            <label class="attach" title="Send a file to the room">
                "📎"
                <input
                    data-testid="file-input"
                    type="file"
                    aria-label="send a file"
                    on:change=move |e: ev::Event| {
                        let Some(input) = e
                            .target()
                            .and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok())
                        else {
                            return;
                        };
                        if let Some(file) = input.files().and_then(|f| f.get(0)) {
                            picked.send(Action::SendFile(SendWrapper::new(file)));
                        }
                        input.set_value("");
                    }
                />
            </label>
        </div>
    }
}

/// An input that applies its value on Enter or when it loses focus.
fn field(
    testid: &'static str,
    label: &'static str,
    placeholder: &'static str,
    value: Signal<String>,
    apply: impl Fn(String) + Clone + Send + Sync + 'static,
) -> impl IntoView {
    let input: NodeRef<html::Input> = NodeRef::new();
    let commit = move || {
        if let Some(el) = input.get_untracked() {
            let text = el.value();
            if text != value.get_untracked() {
                apply(text);
            }
        }
    };
    let on_key = {
        let commit = commit.clone();
        move |e: ev::KeyboardEvent| {
            if e.key() == "Enter" {
                e.prevent_default();
                commit();
            }
        }
    };
    view! {
        <label class="field">
            <span>{label}</span>
            <input
                node_ref=input
                data-testid=testid
                type="text"
                placeholder=placeholder
                prop:value=move || value.get()
                on:keydown=on_key
                on:change=move |_| commit()
            />
        </label>
    }
}

#[component]
fn Identity(model: Model, actions: Actions) -> impl IntoView {
    let nick = field(
        "nick-input",
        "Nickname",
        "anonymous",
        model.nick.into(),
        move |n| actions.send(Action::Nick(n)),
    );
    view! {
        <section class="panel">
            {nick}
            <p class="me">
                "You are " <code data-testid="self" title="your peer id">{move || model.me.get()}</code>
            </p>
        </section>
    }
}

#[component]
fn RoomPicker(model: Model, actions: Actions) -> impl IntoView {
    let clear = actions.clone();
    let room = field("room-input", "Room", "lobby", model.room.into(), move |r| {
        actions.send(Action::Room(r))
    });
    view! {
        <section class="panel">
            {room}
            <button
                type="button"
                class="clear-history"
                data-testid="clear-history"
                title="Forget this room's messages in this browser (others keep theirs)"
                on:click=move |_| clear.send(Action::ClearHistory)
            >
                "Clear history"
            </button>
        </section>
    }
}

#[component]
fn Members(model: Model) -> impl IntoView {
    let members = move || {
        let room = model.room.get();
        model
            .members
            .with(|m| m.get(&room).map(|p| p.keys().cloned().collect::<Vec<_>>()))
            .unwrap_or_default()
    };
    view! {
        <section class="panel">
            <h2>"In this room"</h2>
            <ul class="members">
                <For
                    each=members
                    key=|p: &String| p.clone()
                    children=move |peer| {
                        let id = peer.clone();
                        let button_id = peer.clone();
                        let target = peer.clone();
                        let name = move || model.name_of(&peer);
                        view! {
                            <li data-testid="member" data-peer=id>
                                {name}
                                <button
                                    type="button"
                                    class="member-dm"
                                    data-testid="member-dm"
                                    data-peer=button_id
                                    title="Direct message"
                                    on:click=move |_| model.open_conversation(Some(target.clone()))
                                >
                                    "✉"
                                </button>
                            </li>
                        }
                    }
                />
            </ul>
        </section>
    }
}

/// Every direct conversation, with its unread count; a click opens it.
#[component]
fn Conversations(model: Model) -> impl IntoView {
    let list = move || {
        model.dms.with(|dms| {
            dms.iter()
                .map(|(peer, c)| (peer.clone(), c.unread))
                .collect::<Vec<_>>()
        })
    };
    view! {
        <section class="panel" class:hidden=move || model.dms.with(BTreeMap::is_empty)>
            <h2>"Direct messages"</h2>
            <ul class="conversations">
                <For
                    each=list
                    key=|(peer, unread): &(String, usize)| (peer.clone(), *unread)
                    children=move |(peer, unread)| {
                        let id = peer.clone();
                        let open = peer.clone();
                        let name = move || model.name_of(&peer);
                        view! {
                            <li
                                data-testid="conversation"
                                data-peer=id
                                data-unread=unread
                                on:click=move |_| model.open_conversation(Some(open.clone()))
                            >
                                {name}
                                {(unread > 0).then(|| view! { <span class="unread" data-testid="dm-unread">{unread}</span> })}
                            </li>
                        }
                    }
                />
            </ul>
        </section>
    }
}

/// The open direct conversation: its lines and a composer.
#[component]
fn DirectChat(model: Model, actions: Actions) -> impl IntoView {
    let input: NodeRef<html::Input> = NodeRef::new();
    let lines = move || {
        let peer = model.open_dm.get().unwrap_or_default();
        model
            .dms
            .with(|dms| dms.get(&peer).map(|c| c.lines.clone()).unwrap_or_default())
    };
    let on_key = move |e: ev::KeyboardEvent| {
        if e.key() != "Enter" || e.shift_key() {
            return;
        }
        e.prevent_default();
        if let (Some(el), Some(peer)) = (input.get_untracked(), model.open_dm.get_untracked()) {
            let text = el.value();
            if !text.trim().is_empty() {
                actions.send(Action::SendDm(peer, text));
                el.set_value("");
            }
        }
    };
    view! {
        <section
            class="dm"
            data-testid="dm"
            data-peer=move || model.open_dm.get().unwrap_or_default()
            class:hidden=move || model.open_dm.with(Option::is_none)
        >
            <h2>
                "Direct messages with "
                {move || model.open_dm.get().map(|p| model.name_of(&p)).unwrap_or_default()}
                <button type="button" data-testid="dm-close" on:click=move |_| model.open_conversation(None)>
                    "×"
                </button>
            </h2>
            <ol class="lines">
                <For
                    each=lines
                    key=|l: &DmLine| (l.key, l.state)
                    children=move |l: DmLine| {
                        let state = l.state.map(DmState::name).unwrap_or("received");
                        let from = l.from.clone();
                        let name = move || model.name_of(&from);
                        view! {
                            <li class="message" data-testid="dm-message" data-from=l.from.clone() data-state=state>
                                <div class="meta">
                                    <span class="nick">{name}</span>
                                    <time>{l.time}</time>
                                    <span class="dm-state">{(state != "received").then_some(state)}</span>
                                </div>
                                <div class="text">{l.text}</div>
                            </li>
                        }
                    }
                />
            </ol>
            <input
                node_ref=input
                data-testid="dm-input"
                type="text"
                placeholder="Write a direct message, Enter sends"
                maxlength="4096"
                autocomplete="off"
                aria-label="direct message"
                on:keydown=on_key
            />
        </section>
    }
}

/// The live cross-transport table: every connected peer, its transport,
/// address and round-trip time.
#[component]
fn Peers(model: Model) -> impl IntoView {
    let rows = move || {
        model
            .peers
            .with(|p| p.values().cloned().collect::<Vec<_>>())
    };
    view! {
        <section class="panel">
            <h2>"Connections"</h2>
            <table class="peers">
                <thead>
                    <tr><th>"peer"</th><th>"transport"</th><th>"rtt"</th></tr>
                </thead>
                <tbody>
                    <For
                        each=rows
                        key=|r: &PeerRow| (r.peer.clone(), r.transport.clone(), r.addr.clone(), r.rtt_ms.map(f64::to_bits), r.connections)
                        children=move |r| peer_row(r)
                    />
                </tbody>
            </table>
        </section>
    }
}

fn peer_row(row: PeerRow) -> impl IntoView {
    let rtt = row.rtt_ms.map(|ms| format!("{ms:.1}")).unwrap_or_default();
    let shown = if rtt.is_empty() {
        "…".to_owned()
    } else {
        format!("{rtt} ms")
    };
    let PeerRow {
        peer,
        transport,
        addr,
        connections,
        ..
    } = row;
    let short = short_id(&peer);
    let (title, label) = (peer.clone(), transport.clone());
    view! {
        <tr
            data-testid="peer"
            data-peer=peer
            data-transport=transport
            data-rtt-ms=rtt
            data-connections=connections
        >
            <td title=title>{short}</td>
            <td>
                <span class="transport">{label}</span>
                <code class="addr">{addr}</code>
            </td>
            <td class="rtt">{shown}</td>
        </tr>
    }
}

#[component]
fn RelayPicker(actions: Actions) -> impl IntoView {
    let input: NodeRef<html::Input> = NodeRef::new();
    let connect = move || {
        if let Some(el) = input.get_untracked() {
            actions.send(Action::Relay(el.value()));
        }
    };
    let on_key = {
        let connect = connect.clone();
        move |e: ev::KeyboardEvent| {
            if e.key() == "Enter" {
                connect();
            }
        }
    };
    view! {
        <details class="panel">
            <summary>"Connect to another relay"</summary>
            <input
                node_ref=input
                data-testid="relay-input"
                type="text"
                placeholder="/ip4/…/udp/…/webrtc-direct/certhash/…/p2p/…"
                on:keydown=on_key
            />
            <button data-testid="relay-connect" on:click=move |_| connect()>"Connect"</button>
        </details>
    }
}
