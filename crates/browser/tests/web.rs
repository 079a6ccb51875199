//! Browser tests, run in headless Chromium by
//! `wasm-pack test --headless --chrome crates/browser` (`cargo xtask test`
//! does it): the shared codec and validation compiled to wasm, the page's
//! parameter parsing, and real connections from a wasm peer to a native
//! relay over WebRTC-direct and WebSocket; two wasm peers linked directly
//! over `/webrtc` through that relay (`web/webrtc.rs`).
//!
//! The relay is started by `cargo xtask test`, which passes its addresses
//! in `MESHTALK_TEST_RELAY_WS` and `MESHTALK_TEST_RELAY_WEBRTC_DIRECT`.

#![allow(missing_docs)]

use std::time::Duration;

use futures::{FutureExt, StreamExt};
use futures_timer::Delay;
use meshtalk_browser::params::{Params, TransportChoice, candidates, prefer_last};
use meshtalk_protocol::{
    arch::{self, TransportConfig},
    behaviour::{Behaviour, BehaviourConfig, Boxed, Pubsub, Role},
    engine::{Engine, EngineConfig, Event},
    libp2p::{Multiaddr, Swarm, identity::Keypair},
    rooms::Room,
    transport::Transport,
    validate::{self, Rejection},
    wire::{self, ChatMessage, Payload},
};
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

#[path = "web/webrtc.rs"]
mod webrtc;

#[wasm_bindgen_test]
fn codec_round_trips_in_wasm() {
    let message = ChatMessage::new("héllo from wasm");
    let bytes = wire::encode(&Payload::Message(message.clone()));
    let decoded = validate::accept(&bytes, validate::now_ms()).expect("valid message");
    assert_eq!(decoded, Payload::Message(message));
    let nick = wire::encode(&Payload::Nick("alice".into()));
    assert_eq!(
        validate::accept(&nick, validate::now_ms()),
        Ok(Payload::Nick("alice".into()))
    );
}

#[wasm_bindgen_test]
fn validation_rejects_bad_input_in_wasm() {
    let now = validate::now_ms();
    assert!(matches!(
        validate::accept(&[0xff, 0xff, 0xff], now),
        Err(Rejection::Malformed(_))
    ));
    let long = wire::encode(&Payload::Message(ChatMessage::new("x".repeat(4097))));
    assert_eq!(
        validate::accept(&long, now),
        Err(Rejection::TextTooLong(4097))
    );
    let mut future = ChatMessage::new("later");
    future.created_ms = now + 6 * 60 * 1000;
    let future = wire::encode(&Payload::Message(future));
    assert!(matches!(
        validate::accept(&future, now),
        Err(Rejection::FromTheFuture(_))
    ));
    let nick = wire::encode(&Payload::Nick("n".repeat(65)));
    assert_eq!(
        validate::accept(&nick, now),
        Err(Rejection::NickTooLong(65))
    );
}

#[wasm_bindgen_test]
fn page_parameters_parse_and_report_problems() {
    let p = Params::parse(
        "?room=dev-1&transport=ws&relay=%2Fip4%2F127.0.0.1%2Ftcp%2F4002%2Fws,/ip4/127.0.0.1/tcp/5002/ws&relay=/ip4/127.0.0.1/tcp/6002/ws",
    );
    assert_eq!(p.room, Room::new("dev-1").expect("room"));
    assert_eq!(p.transport, TransportChoice::Ws);
    let relays: Vec<String> = p.relays.iter().map(ToString::to_string).collect();
    assert_eq!(
        relays,
        [
            "/ip4/127.0.0.1/tcp/4002/ws",
            "/ip4/127.0.0.1/tcp/5002/ws",
            "/ip4/127.0.0.1/tcp/6002/ws"
        ]
    );
    assert!(p.problems.is_empty());

    let bad = Params::parse("?room=no%20spaces&transport=carrier-pigeon&relay=/ip4/999");
    assert_eq!(bad.room, Room::lobby());
    assert_eq!(bad.transport, TransportChoice::Auto);
    assert!(bad.relays.is_empty());
    assert_eq!(bad.problems.len(), 3, "{:?}", bad.problems);

    assert!(!p.no_direct, "direct links are on by default");
    assert!(Params::parse("?direct=off").no_direct);
    let typo = Params::parse("?direct=of");
    assert!(!typo.no_direct);
    assert_eq!(typo.problems, ["?direct=of: use on or off"]);

    assert_eq!(p.pubsub, Pubsub::Gossipsub, "gossipsub by default");
    assert_eq!(Params::parse("?pubsub=floodsub").pubsub, Pubsub::Floodsub);
    let typo = Params::parse("?pubsub=flood");
    assert_eq!(typo.pubsub, Pubsub::Gossipsub);
    assert_eq!(typo.problems.len(), 1, "{:?}", typo.problems);

    let uc = Params::parse("?compat=uc&room=dev");
    assert!(uc.uc);
    assert_eq!(uc.room.name(), "universal-connectivity");
    assert_eq!(Params::parse("?compat=irc").problems.len(), 1);
}

#[wasm_bindgen_test]
fn candidates_prefer_webrtc_direct_then_websocket_and_secure_websocket_over_https() {
    let addrs: Vec<Multiaddr> = [
        "/ip4/127.0.0.1/tcp/4001",
        "/ip4/127.0.0.1/tcp/4002/ws",
        "/ip6/::1/udp/4002/webrtc-direct",
        "/ip4/127.0.0.1/udp/4002/webrtc-direct",
        "/ip4/127.0.0.1/udp/4001/quic-v1",
        "/ip4/127.0.0.1/tcp/4003/tls/ws",
    ]
    .iter()
    .map(|a| a.parse().expect("multiaddr"))
    .collect();
    let order = |choice, secure| -> Vec<String> {
        candidates(&addrs, choice, secure)
            .iter()
            .map(|(_, a)| a.to_string())
            .collect()
    };
    assert_eq!(
        order(TransportChoice::Auto, false),
        [
            "/ip4/127.0.0.1/udp/4002/webrtc-direct",
            "/ip6/::1/udp/4002/webrtc-direct",
            "/ip4/127.0.0.1/tcp/4002/ws",
            "/ip4/127.0.0.1/tcp/4003/tls/ws",
        ]
    );
    assert_eq!(order(TransportChoice::Ws, false).len(), 2);
    // Served over https: secure WebSocket first, plain WebSocket never.
    assert_eq!(
        order(TransportChoice::Auto, true),
        [
            "/ip4/127.0.0.1/tcp/4003/tls/ws",
            "/ip4/127.0.0.1/udp/4002/webrtc-direct",
            "/ip6/::1/udp/4002/webrtc-direct",
        ]
    );
    assert_eq!(
        order(TransportChoice::Ws, true),
        ["/ip4/127.0.0.1/tcp/4003/tls/ws"]
    );
    // Reached over WebSocket last time: WebSocket first, the rest as before.
    let mut queue = candidates(&addrs, TransportChoice::Auto, false);
    prefer_last(&mut queue, "ws");
    let names: Vec<String> = queue.iter().map(|(_, a)| a.to_string()).collect();
    assert_eq!(
        names,
        [
            "/ip4/127.0.0.1/tcp/4002/ws",
            "/ip4/127.0.0.1/tcp/4003/tls/ws",
            "/ip4/127.0.0.1/udp/4002/webrtc-direct",
            "/ip6/::1/udp/4002/webrtc-direct",
        ]
    );
    prefer_last(&mut queue, "webrtc-direct");
    assert_eq!(
        queue[0].1.to_string(),
        "/ip4/127.0.0.1/udp/4002/webrtc-direct"
    );
}

/// The test relay's address that `cargo xtask test` compiled in.
fn test_relay(addr: Option<&str>) -> Multiaddr {
    addr.expect("no test relay address: run the browser tests with `cargo xtask test`")
        .parse()
        .expect("relay multiaddr")
}

/// A page's swarm (peer role, default transports).
async fn peer_swarm() -> Swarm<Boxed<Behaviour>> {
    arch::build_swarm(
        Keypair::generate_ed25519(),
        TransportConfig::default(),
        &BehaviourConfig {
            role: Role::Peer,
            ..BehaviourConfig::default()
        },
    )
    .await
    .expect("swarm")
}

/// Dials the relay from a wasm node running the shared engine, and waits
/// for the connection over `transport` and a ping round trip on it.
async fn connect_to_relay(addr: Option<&str>, transport: Transport) {
    let addr = test_relay(addr);
    let swarm = peer_swarm().await;
    let config = EngineConfig {
        rooms: vec![Room::lobby()],
        ping_interval: Some(Duration::from_millis(500)),
        ..EngineConfig::default()
    };
    let (engine, handle, mut events) = Engine::new(swarm, Role::Peer, config);
    wasm_bindgen_futures::spawn_local(engine.run());
    handle.dial(addr.clone()).await.expect("dial starts");
    let wait = async {
        let mut connected = false;
        while let Some(event) = events.next().await {
            match event {
                Event::Connected { transport: t, .. } => {
                    assert_eq!(t, transport);
                    connected = true;
                }
                Event::DialFailed { error, .. } => panic!("dial {addr} failed: {error}"),
                Event::Ping {
                    transport: t, rtt, ..
                } if connected && t == transport => {
                    assert!(rtt < Duration::from_secs(5));
                    return;
                }
                _ => {}
            }
        }
        panic!("engine stopped");
    };
    futures::select! {
        () = wait.fuse() => {}
        () = Delay::new(Duration::from_secs(20)).fuse() => panic!("no connection and ping over {transport} within 20 s"),
    }
    let _ = handle.shutdown().await;
}

#[wasm_bindgen_test]
async fn wasm_peer_connects_to_native_relay_over_webrtc_direct() {
    connect_to_relay(
        option_env!("MESHTALK_TEST_RELAY_WEBRTC_DIRECT"),
        Transport::WebRtcDirect,
    )
    .await;
}

#[wasm_bindgen_test]
async fn wasm_peer_connects_to_native_relay_over_websocket() {
    connect_to_relay(option_env!("MESHTALK_TEST_RELAY_WS"), Transport::WebSocket).await;
}
