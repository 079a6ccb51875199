//! Direct messages between `meshtalk chat` peers: through a relay circuit
//! when they are not linked, acknowledged, seen by nobody else; held and
//! retried while the peer is away; reported as failed after the deadline.

use anyhow::{Result, ensure};
use meshtalk_protocol::{keyfile, transport::Transport};
use meshtalk_tests::{ChatPeer, Relay, temp_dir};
use serde_json::Value;

/// Waits for a JSON line of `kind` about `peer` (in `field`).
fn wait_kind(peer: &mut ChatPeer, kind: &str, field: &str, who: &str) -> Result<Value> {
    peer.proc.wait_json(&format!("{kind} for {who}"), |v| {
        (v["type"] == kind && v[field] == who).then(|| v.clone())
    })
}

#[test]
fn a_direct_message_reaches_its_peer_only_and_is_acknowledged() -> Result<()> {
    let relay = Relay::start(&temp_dir("dm"))?;
    // Bootstrap only: the peers reach each other through the relay alone,
    // so a direct message needs a circuit of its own.
    let only_relay = ["--discovery", "bootstrap"];
    let tcp = relay.addr(Transport::Tcp)?;
    let quic = relay.addr(Transport::Quic)?;
    let mut ada = ChatPeer::start(
        "ada",
        &tcp,
        "lobby",
        &[&only_relay[..], &["--nick", "ada"]].concat(),
    )?;
    let mut bob = ChatPeer::start("bob", &quic, "lobby", &only_relay)?;
    let mut eve = ChatPeer::start("eve", &tcp, "lobby", &only_relay)?;

    ada.proc
        .send_line(&format!("/msg {} just for you, bob", bob.peer_id))?;
    let dm = wait_kind(&mut bob, "dm", "from", &ada.peer_id.clone())?;
    ensure!(
        dm["text"] == "just for you, bob" && dm["nick"] == "ada",
        "{dm}"
    );
    wait_kind(&mut ada, "dm_sent", "to", &bob.peer_id.clone())?;

    bob.proc
        .send_line(&format!("/msg {} and back", ada.peer_id))?;
    let dm = wait_kind(&mut ada, "dm", "from", &bob.peer_id.clone())?;
    ensure!(dm["text"] == "and back", "{dm}");
    wait_kind(&mut bob, "dm_sent", "to", &ada.peer_id.clone())?;

    // The room saw none of it, and neither did anyone else.
    ada.proc.send_line("in the room")?;
    eve.wait_message("in the room")?;
    let private: Vec<&String> = eve
        .proc
        .seen
        .iter()
        .filter(|l| l.contains("just for you") || l.contains("and back"))
        .collect();
    ensure!(private.is_empty(), "eve saw {private:?}");
    ensure!(!bob.texts().iter().any(|t| t.contains("just for you")));
    Ok(())
}

#[test]
fn a_direct_message_waits_for_its_peer_and_fails_only_after_the_deadline() -> Result<()> {
    let relay = Relay::start(&temp_dir("dm-wait"))?;
    let tcp = relay.addr(Transport::Tcp)?;
    let only_relay = ["--discovery", "bootstrap"];
    // Bob's identity exists before bob runs: ada writes to that peer.
    let file = temp_dir("dm-wait-bob").join("bob.key");
    let bob_id = keyfile::load_or_create_identity(&file)?
        .public()
        .to_peer_id()
        .to_string();
    let mut ada = ChatPeer::start(
        "ada",
        &tcp,
        "lobby",
        &[&only_relay[..], &["--dm-timeout", "30"]].concat(),
    )?;
    ada.proc
        .send_line(&format!("/msg {bob_id} are you there?"))?;
    std::thread::sleep(std::time::Duration::from_secs(2));
    let file = file.display().to_string();
    let mut bob = ChatPeer::start(
        "bob",
        &tcp,
        "lobby",
        &[&only_relay[..], &["--identity", &file]].concat(),
    )?;
    ensure!(bob.peer_id == bob_id);
    let dm = wait_kind(&mut bob, "dm", "from", &ada.peer_id.clone())?;
    ensure!(dm["text"] == "are you there?", "{dm}");
    wait_kind(&mut ada, "dm_sent", "to", &bob_id)?;

    // Nobody will ever be this peer: reported as failed, after the
    // deadline, not lost in silence.
    let mut carl = ChatPeer::start(
        "carl",
        &tcp,
        "lobby",
        &[&only_relay[..], &["--dm-timeout", "3"]].concat(),
    )?;
    let nobody = meshtalk_protocol::libp2p::identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id()
        .to_string();
    let sent = std::time::Instant::now();
    carl.proc.send_line(&format!("/msg {nobody} hello?"))?;
    let failed = wait_kind(&mut carl, "dm_failed", "to", &nobody)?;
    ensure!(sent.elapsed().as_secs_f64() >= 3.0, "failed too early");
    ensure!(
        failed["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{failed}"
    );
    Ok(())
}
