//! Two swarms in one page link over `/webrtc` through the test relay: one
//! reaches the relay over WebSocket, the other over WebRTC-direct, both
//! reserve a slot, and one dials the other's
//! `…/p2p-circuit/webrtc/p2p/PEER`. Once the relayed connections are
//! closed, streams opened both ways carry more than one data-channel
//! message (16 KiB) each and close with FIN answered by FIN_ACK.

use std::time::Duration;

use futures::{
    AsyncReadExt, AsyncWriteExt, FutureExt, StreamExt,
    channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded},
};
use futures_timer::Delay;
use meshtalk_protocol::{
    behaviour::{Behaviour, BehaviourEvent, Boxed},
    libp2p::{
        Multiaddr, PeerId, StreamProtocol, Swarm,
        multiaddr::Protocol,
        swarm::{ConnectionId, SwarmEvent},
    },
    libp2p_stream::{Control, IncomingStreams},
    transport::Transport,
};
use wasm_bindgen_test::wasm_bindgen_test;
use web_time::Instant;

use super::{peer_swarm, test_relay};

const ECHO: StreamProtocol = StreamProtocol::new("/meshtalk-test/reverse/1");
/// Bytes each way on a stream: three full data-channel messages and a bit.
const PAYLOAD: usize = 3 * 16 * 1024 + 100;
/// A close that waits this long got no FIN_ACK (the transport gives up
/// after 5 s).
const CLOSE_WITHIN: Duration = Duration::from_secs(3);
const STEP: Duration = Duration::from_secs(30);

type Command = Box<dyn FnOnce(&mut Swarm<Boxed<Behaviour>>)>;

/// A swarm run by its own task; the test sends it closures and reads its
/// events.
struct Node {
    peer: PeerId,
    control: Control,
    commands: UnboundedSender<Command>,
    events: UnboundedReceiver<SwarmEvent<BehaviourEvent>>,
}

impl Node {
    async fn start() -> Self {
        let mut swarm = peer_swarm().await;
        let peer = *swarm.local_peer_id();
        let control = swarm.behaviour().streams.new_control();
        let (commands, mut command_rx) = unbounded::<Command>();
        let (event_tx, events) = unbounded();
        wasm_bindgen_futures::spawn_local(async move {
            loop {
                futures::select! {
                    event = swarm.select_next_some() => {
                        if event_tx.unbounded_send(event).is_err() {
                            return;
                        }
                    }
                    command = command_rx.next() => match command {
                        Some(command) => command(&mut swarm),
                        None => return,
                    },
                }
            }
        });
        Self {
            peer,
            control,
            commands,
            events,
        }
    }

    fn run(&self, command: impl FnOnce(&mut Swarm<Boxed<Behaviour>>) + 'static) {
        self.commands
            .unbounded_send(Box::new(command))
            .expect("the swarm task runs");
    }

    /// The first event `f` picks, within [`STEP`].
    async fn wait<T>(
        &mut self,
        what: &str,
        mut f: impl FnMut(&SwarmEvent<BehaviourEvent>) -> Option<T>,
    ) -> T {
        let deadline = Delay::new(STEP).fuse();
        futures::pin_mut!(deadline);
        loop {
            futures::select! {
                event = self.events.next() => {
                    let event = event.expect("the swarm task runs");
                    if let Some(found) = f(&event) {
                        return found;
                    }
                }
                () = deadline => panic!("{what}: nothing within {} s", STEP.as_secs()),
            }
        }
    }

    /// Connects to the relay at `relay`, reserves a slot and listens on
    /// `/webrtc`; returns our `/webrtc` address.
    async fn reachable_through(&mut self, relay: &Multiaddr) -> Multiaddr {
        let addr = relay.clone();
        self.run(move |s| s.dial(addr).expect("dial the relay"));
        self.wait("connection to the relay", |e| match e {
            SwarmEvent::ConnectionEstablished { .. } => Some(()),
            SwarmEvent::OutgoingConnectionError { error, .. } => panic!("relay dial: {error}"),
            _ => None,
        })
        .await;
        let circuit = relay.clone().with(Protocol::P2pCircuit);
        self.run(move |s| {
            s.listen_on(circuit).expect("listen through the relay");
            s.listen_on(meshtalk_protocol::meshtalk_webrtc::addr::listen_addr())
                .expect("listen on /webrtc");
        });
        let me = self.peer;
        let circuit = self
            .wait("a relayed listen address", |e| match e {
                SwarmEvent::NewListenAddr { address, .. }
                    if Transport::of(address) == Transport::Circuit =>
                {
                    Some(address.clone())
                }
                SwarmEvent::ListenerClosed { reason, .. } => panic!("listener closed: {reason:?}"),
                _ => None,
            })
            .await;
        meshtalk_protocol::meshtalk_webrtc::addr::webrtc_addr_of_circuit(&circuit, me)
            .expect("a /webrtc address")
    }
}

/// A connection to `peer` coming up: its id and whether it is direct.
fn link_to(event: &SwarmEvent<BehaviourEvent>, peer: PeerId) -> Option<(ConnectionId, bool)> {
    match event {
        SwarmEvent::ConnectionEstablished {
            peer_id,
            connection_id,
            endpoint,
            ..
        } if *peer_id == peer => Some((
            *connection_id,
            Transport::of(endpoint.get_remote_address()) == Transport::WebRtc,
        )),
        SwarmEvent::OutgoingConnectionError { error, .. } => panic!("direct dial: {error}"),
        _ => None,
    }
}

/// Sends [`PAYLOAD`] bytes on a new stream to `peer`, closes our half and
/// checks the answer is the same bytes reversed; the close must be
/// acknowledged promptly.
async fn ask(control: &mut Control, peer: PeerId, seed: u8) {
    let mut stream = control
        .open_stream(peer, ECHO)
        .await
        .expect("open a stream over /webrtc");
    let data = payload(seed);
    stream.write_all(&data).await.expect("write");
    let started = Instant::now();
    stream.close().await.expect("close the writing half");
    assert!(
        started.elapsed() < CLOSE_WITHIN,
        "closing took {:?}: no FIN_ACK",
        started.elapsed()
    );
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .await
        .expect("read the answer");
    let mut expected = data;
    expected.reverse();
    assert!(
        answer == expected,
        "answer of {} bytes differs",
        answer.len()
    );
}

/// Answers one stream: reads to the end (the remote's FIN), sends the bytes
/// reversed and closes.
async fn answer(mut incoming: IncomingStreams) {
    let (_, mut stream) = incoming.next().await.expect("an incoming stream");
    let mut data = Vec::new();
    stream.read_to_end(&mut data).await.expect("read to FIN");
    assert_eq!(data.len(), PAYLOAD);
    data.reverse();
    stream.write_all(&data).await.expect("write the answer");
    stream.close().await.expect("close");
}

fn payload(seed: u8) -> Vec<u8> {
    (0..PAYLOAD).map(|i| (i % 251) as u8 ^ seed).collect()
}

#[wasm_bindgen_test]
async fn two_pages_link_over_webrtc_and_stream_both_ways() {
    let relay_ws = test_relay(option_env!("MESHTALK_TEST_RELAY_WS"));
    let relay_direct = test_relay(option_env!("MESHTALK_TEST_RELAY_WEBRTC_DIRECT"));
    let mut a = Node::start().await;
    let mut b = Node::start().await;
    a.reachable_through(&relay_ws).await;
    let b_addr = b.reachable_through(&relay_direct).await;

    a.run(move |s| s.dial(b_addr).expect("dial /webrtc"));
    let (a_peer, b_peer) = (a.peer, b.peer);
    // Each side gets the relayed connection that carries signaling, then
    // the direct link.
    let mut relayed = Vec::new();
    a.wait("A's direct link", |e| {
        let (id, direct) = link_to(e, b_peer)?;
        relayed.extend((!direct).then_some(id));
        direct.then_some(())
    })
    .await;
    b.wait("B's direct link", |e| link_to(e, a_peer)?.1.then_some(()))
        .await;
    assert!(
        !relayed.is_empty(),
        "the /webrtc dial used no relayed connection"
    );

    // Only the direct link is left: the streams cannot take the relay.
    let closing = relayed.clone();
    a.run(move |s| {
        for id in closing {
            s.close_connection(id);
        }
    });
    for id in relayed {
        a.wait("the relayed connection closing", |e| match e {
            SwarmEvent::ConnectionClosed {
                connection_id,
                num_established,
                ..
            } if *connection_id == id => {
                assert_eq!(*num_established, 1, "the direct link closed too");
                Some(())
            }
            _ => None,
        })
        .await;
    }

    // B too must have seen it go, or its stream could pick it.
    b.wait("B's relayed connection closing", |e| match e {
        SwarmEvent::ConnectionClosed {
            peer_id,
            num_established,
            ..
        } if *peer_id == a_peer => {
            assert_eq!(*num_established, 1, "B's direct link closed too");
            Some(())
        }
        _ => None,
    })
    .await;

    let mut a_control = a.control.clone();
    let mut b_control = b.control.clone();
    let a_incoming = a_control.accept(ECHO).expect("A accepts the test protocol");
    let b_incoming = b_control.accept(ECHO).expect("B accepts the test protocol");
    let work = async {
        futures::join!(
            answer(b_incoming),
            answer(a_incoming),
            ask(&mut a_control, b_peer, 1),
            ask(&mut b_control, a_peer, 2),
        )
    };
    futures::select! {
        _ = work.fuse() => {}
        () = Delay::new(STEP).fuse() => panic!("streams over /webrtc did not finish within {} s", STEP.as_secs()),
    }
}
