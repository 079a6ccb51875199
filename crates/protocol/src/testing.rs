//! Helpers shared by the crate's unit tests.

use std::time::Duration;

use libp2p::{
    Multiaddr, Swarm, SwarmBuilder,
    core::{Transport as _, transport::MemoryTransport, upgrade},
    identity::Keypair,
    noise,
    swarm::NetworkBehaviour,
    yamux,
};

/// A node on libp2p's in-memory transport (Noise, Yamux) running the
/// behaviour `behaviour` makes, listening at `/memory/{port}`.
pub(crate) fn memory_node<B: NetworkBehaviour>(
    port: u64,
    behaviour: impl FnOnce(&Keypair) -> B,
) -> (Swarm<B>, Multiaddr) {
    let mut swarm = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(|key| {
            Ok(MemoryTransport::default()
                .upgrade(upgrade::Version::V1)
                .authenticate(noise::Config::new(key)?)
                .multiplex(yamux::Config::default()))
        })
        .expect("transport")
        .with_behaviour(|key| behaviour(key))
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build();
    let addr: Multiaddr = format!("/memory/{port}").parse().expect("address");
    swarm.listen_on(addr.clone()).expect("listen");
    (swarm, addr)
}
