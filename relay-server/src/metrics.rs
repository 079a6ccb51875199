//! Prometheus metrics: libp2p's own (connections by protocol stack,
//! gossipsub, identify, ping, Kademlia, relay) plus meshtalk's (connections
//! by transport, chat messages, rejected messages by reason, pubsub message
//! copies received, peers speaking no pubsub protocol of ours, peers
//! disconnected for their score).

use std::fmt;

use meshtalk_protocol::{
    behaviour::{BehaviourEvent, GossipEvent},
    engine::{EngineHandle, Event},
    libp2p::{
        metrics::{Metrics, Recorder},
        swarm::SwarmEvent,
    },
    transport::Transport,
    validate::Rejection,
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{
        TypedMetric,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::Gauge,
    },
    registry::Registry,
};

type Labels = Vec<(&'static str, String)>;

/// Every metric the relay exports.
pub struct RelayMetrics {
    libp2p: Metrics,
    connections: Family<Labels, Gauge>,
    messages: Counter,
    rejected: Family<Labels, Counter>,
    pubsub_unsupported: Counter,
    graylisted: Counter,
    /// History records written to disk.
    pub history_saved: Counter,
}

impl RelayMetrics {
    /// Registers the metrics in `registry`; `engine` is read at each
    /// scrape for the counts the engine keeps itself.
    pub fn new(registry: &mut Registry, engine: EngineHandle) -> Self {
        let libp2p = Metrics::new(registry);
        let meshtalk = registry.sub_registry_with_prefix("meshtalk");
        meshtalk.register_collector(Box::new(PubsubCopies(engine)));
        let connections = Family::default();
        meshtalk.register(
            "connections",
            "Open connections by transport",
            connections.clone(),
        );
        let messages = Counter::default();
        meshtalk.register(
            "messages",
            "Chat messages accepted and forwarded",
            messages.clone(),
        );
        let history_saved = Counter::default();
        meshtalk.register(
            "history_records_saved",
            "Room history records committed to the database",
            history_saved.clone(),
        );
        let pubsub_unsupported = Counter::default();
        meshtalk.register(
            "pubsub_unsupported_peers",
            "Peers that connected speaking none of our pubsub protocols",
            pubsub_unsupported.clone(),
        );
        let graylisted = Counter::default();
        meshtalk.register(
            "graylisted_peers",
            "Peers disconnected because their gossipsub score fell below the graylist threshold",
            graylisted.clone(),
        );
        let rejected = Family::default();
        meshtalk.register(
            "rejected_messages",
            "Received messages that failed validation, by reason",
            rejected.clone(),
        );
        // Every series exists from the start, so dashboards see zeros rather
        // than gaps.
        for transport in [
            Transport::Tcp,
            Transport::Quic,
            Transport::WebSocket,
            Transport::WebRtcDirect,
            Transport::Circuit,
        ] {
            let _ = connections.get_or_create(&vec![("transport", transport.to_string())]);
        }
        for reason in Rejection::LABELS {
            let _ = rejected.get_or_create(&vec![("reason", reason.to_owned())]);
        }
        Self {
            libp2p,
            connections,
            messages,
            rejected,
            pubsub_unsupported,
            graylisted,
            history_saved,
        }
    }

    /// Records a raw swarm event with libp2p's recorders.
    pub fn record_swarm(&self, event: &SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(GossipEvent::Pubsub(e))) => {
                self.libp2p.record(e)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(e)) => self.libp2p.record(e),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(e)) => self.libp2p.record(e),
            SwarmEvent::Behaviour(BehaviourEvent::RelayServer(e)) => self.libp2p.record(e),
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(e)) => self.libp2p.record(e),
            other => self.libp2p.record(other),
        }
    }

    /// Records an engine event.
    pub fn record_event(&self, event: &Event) {
        let transport =
            |t: &meshtalk_protocol::transport::Transport| vec![("transport", t.to_string())];
        match event {
            Event::Connected { transport: t, .. } => {
                self.connections.get_or_create(&transport(t)).inc();
            }
            Event::Disconnected { transport: t, .. } => {
                self.connections.get_or_create(&transport(t)).dec();
            }
            Event::Message { .. } => {
                self.messages.inc();
            }
            Event::Rejected { reason, .. } => {
                self.rejected
                    .get_or_create(&vec![("reason", reason.label().to_owned())])
                    .inc();
            }
            Event::PubsubUnsupported { .. } => {
                self.pubsub_unsupported.inc();
            }
            Event::Graylisted { .. } => {
                self.graylisted.inc();
            }
            _ => {}
        }
    }
}

/// `meshtalk_pubsub_copies_received_total`: pubsub message copies that
/// arrived, duplicates included, read from the engine at each scrape. Next
/// to `meshtalk_messages_total` it shows what the pubsub router costs.
struct PubsubCopies(EngineHandle);

impl fmt::Debug for PubsubCopies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PubsubCopies")
    }
}

impl Collector for PubsubCopies {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let counter = ConstCounter::new(self.0.pubsub_copies_received());
        let metric = encoder.encode_descriptor(
            "pubsub_copies_received",
            "Pubsub message copies received, duplicates included.",
            None,
            ConstCounter::<u64>::TYPE,
        )?;
        counter.encode(metric)
    }
}
