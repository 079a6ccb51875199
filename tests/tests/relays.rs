//! Several relays in one network: relays joined with `--bootstrap` share
//! the DHT and the gossipsub mesh, peers on different relays chat, peers
//! move to another relay when theirs dies, rooms stay apart, and room
//! members find each other in the DHT.
//!
//! The tests run one at a time: each starts several relays and peers, and
//! the machine may have two cores.

use std::{
    collections::BTreeSet,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use meshtalk_protocol::transport::Transport;
use meshtalk_tests::{ChatPeer, Proc, Relay, WAIT, bin, relay_network, temp_dir};
use serde_json::Value;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits until every peer has seen every other one in the room.
fn wait_all_joined(peers: &mut [ChatPeer]) -> Result<()> {
    let ids: Vec<String> = peers.iter().map(|p| p.peer_id.clone()).collect();
    for peer in peers.iter_mut() {
        let me = peer.peer_id.clone();
        for id in ids.iter().filter(|id| **id != me) {
            peer.wait_joined(id)?;
        }
    }
    Ok(())
}

/// Every peer sends a line tagged `tag`; every other peer must get all.
fn everyone_hears_everyone(peers: &mut [ChatPeer], tag: &str) -> Result<()> {
    let n = peers.len();
    for (i, peer) in peers.iter_mut().enumerate() {
        peer.proc.send_line(&format!("{tag} from peer {i}"))?;
    }
    for (i, peer) in peers.iter_mut().enumerate() {
        for j in (0..n).filter(|j| *j != i) {
            peer.wait_message(&format!("{tag} from peer {j}"))
                .with_context(|| format!("peer {i} missed peer {j}'s {tag:?}"))?;
        }
    }
    Ok(())
}

#[test]
fn three_relays_six_peers_one_room_and_a_relay_dies() -> Result<()> {
    let _serial = serial();
    let mut relays = relay_network(3, &[])?;
    let relay_ids: Vec<String> = relays.iter().map(Relay::peer_id).collect::<Result<_>>()?;
    let tcp: Vec<String> = relays
        .iter()
        .map(|r| r.addr(Transport::Tcp).map(|a| a.to_string()))
        .collect::<Result<_>>()?;

    // Two peers per relay, over different transports. Peers 0 and 3 know
    // relay 0 only and keep one connection: when it dies they must find
    // another relay themselves (they learned of them in the DHT). Peer 3
    // also names relay 1 as a second bootstrap address.
    let mut peers = Vec::new();
    for i in 0..6 {
        let relay = &relays[i % 3];
        let transport = if i < 3 {
            Transport::Tcp
        } else {
            Transport::Quic
        };
        let addr = relay.addr(transport)?;
        let mut extra = vec!["--min-peers", "1", "--discovery", "bootstrap,random-walk"];
        if i == 3 {
            extra.extend(["--connect", &tcp[1]]);
        }
        peers.push(ChatPeer::start(&format!("p{i}"), &addr, "r", &extra)?);
    }
    wait_all_joined(&mut peers)?;
    everyone_hears_everyone(&mut peers, "before")?;

    relays[0].proc.kill();
    for i in [0, 3] {
        let others = [&relay_ids[1], &relay_ids[2]];
        peers[i]
            .proc
            .wait_json("a connection to another relay", |v| {
                (v["type"] == "connected" && others.iter().any(|id| v["peer"] == id.as_str()))
                    .then_some(())
            })?;
    }
    everyone_hears_everyone(&mut peers, "after")?;
    Ok(())
}

#[test]
fn rooms_stay_apart_and_members_are_found_in_the_dht() -> Result<()> {
    let _serial = serial();
    let relays = relay_network(2, &[])?;
    let addr = |i: usize| relays[i].addr(Transport::Tcp);
    let mut x = vec![
        ChatPeer::start("x0", &addr(0)?, "x", &[])?,
        ChatPeer::start("x1", &addr(1)?, "x", &[])?,
    ];
    let mut y = vec![
        ChatPeer::start("y0", &addr(0)?, "y", &[])?,
        ChatPeer::start("y1", &addr(1)?, "y", &[])?,
        ChatPeer::start("y2", &addr(0)?, "y", &[])?,
    ];
    let y_ids: BTreeSet<String> = y.iter().map(|p| p.peer_id.clone()).collect();

    wait_all_joined(&mut x)?;
    wait_all_joined(&mut y)?;
    for (i, peer) in y.iter_mut().enumerate() {
        peer.proc.send_line(&format!("y line {i}"))?;
    }
    x[0].proc.send_line("x line")?;
    x[1].wait_message("x line")?;
    for (j, peer) in y.iter_mut().enumerate() {
        for i in (0..3).filter(|i| *i != j) {
            peer.wait_message(&format!("y line {i}"))?;
        }
    }
    // Room y's members are announced in the DHT.
    let deadline = Instant::now() + WAIT;
    loop {
        let listed = providers(&addr(1)?.to_string(), "y")?;
        if listed == y_ids {
            break;
        }
        if Instant::now() > deadline {
            bail!("providers of room y: {listed:?}, expected {y_ids:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for peer in x.iter_mut() {
        peer.proc.drain_for(Duration::from_secs(2));
        let texts = peer.texts();
        assert!(
            texts.iter().all(|t| !t.starts_with("y line")),
            "{} got room y's messages: {texts:?}",
            peer.proc.name
        );
        // A member of x needs no connection to the members of y.
        let linked: Vec<String> = connected_peers(&peer.proc);
        assert!(
            linked.iter().all(|p| !y_ids.contains(p)),
            "{} connected to members of y: {linked:?}",
            peer.proc.name
        );
    }
    Ok(())
}

#[test]
fn dht_discover_reports_each_source() -> Result<()> {
    let _serial = serial();
    let relays = relay_network(2, &[])?;
    let mut proc = Proc::spawn(
        "discover",
        &bin("meshtalk")?,
        &[
            "dht".into(),
            "--connect".into(),
            relays[0].addr(Transport::Tcp)?.to_string(),
            "discover".into(),
            "--duration".into(),
            "6".into(),
        ],
    )?;
    let other = relays[1].peer_id()?;
    proc.wait_for("the other relay found by the random walk", |l| {
        (l.starts_with(&format!("found {other} via random-walk"))).then_some(())
    })?;
    proc.wait_for("the summary", |l| {
        (l == "bootstrap: 1 peer(s)").then_some(())
    })?;
    proc.wait_for("mdns switched off", |l| (l == "mdns: off").then_some(()))?;
    Ok(())
}

#[test]
fn a_relay_with_a_small_mesh_names_members_and_they_link_up() -> Result<()> {
    let _serial = serial();
    // The relay keeps 2 peers in its mesh of the room and prunes the rest,
    // naming other members (peer exchange). The peers use no DHT: the
    // names can only have come from the relay's PRUNE.
    let relay = Relay::start_with(&temp_dir("px"), &["--room-mesh-max", "2"])?;
    let addr = relay.addr(Transport::Tcp)?;
    let relay_id = relay.peer_id()?;
    let only_px = ["--discovery", "bootstrap,peer-exchange"];
    let mut peers = (0..5)
        .map(|i| ChatPeer::start(&format!("px{i}"), &addr, "lobby", &only_px))
        .collect::<Result<Vec<_>>>()?;
    let ids: BTreeSet<String> = peers.iter().map(|p| p.peer_id.clone()).collect();
    wait_all_joined(&mut peers)?;

    // Some pruned peer hears of another member and links to it (through
    // the relay: members hold a reservation there).
    let deadline = Instant::now() + WAIT;
    let (i, named) = loop {
        let found = peers.iter_mut().enumerate().find_map(|(i, p)| {
            p.proc.drain_for(Duration::from_millis(100));
            json_lines(&p.proc)
                .find(|v| v["type"] == "discovered" && v["source"] == "peer-exchange")
                .and_then(|v| v["peer"].as_str().map(|id| (i, id.to_owned())))
        });
        if let Some(found) = found {
            break found;
        }
        if Instant::now() > deadline {
            bail!("no peer was told of a member by peer exchange");
        }
    };
    assert!(
        ids.contains(&named),
        "peer exchange named {named}, no member"
    );
    let peer = &mut peers[i];
    peer.proc
        .wait_json("a link to the member it was told of", |v| {
            (v["type"] == "connected" && v["peer"] == named.as_str()).then_some(())
        })?;
    assert_ne!(named, relay_id);

    // Pruned or not, everyone still hears everyone.
    everyone_hears_everyone(&mut peers, "after peer exchange")?;

    // `dht discover` in the room is pruned at once and reports the names.
    let mut discover = Proc::spawn(
        "discover",
        &bin("meshtalk")?,
        &[
            "dht".into(),
            "--connect".into(),
            addr.to_string(),
            "discover".into(),
            "--room".into(),
            "lobby".into(),
            "--duration".into(),
            "5".into(),
        ],
    )?;
    let named = discover.wait_for("a member found by peer exchange", |l| {
        let rest = l.strip_prefix("found ")?;
        let (peer, how) = rest.split_once(' ')?;
        how.starts_with("via peer-exchange")
            .then(|| peer.to_owned())
    })?;
    assert!(
        ids.contains(&named),
        "dht discover named {named}, no member"
    );
    discover.wait_for("the summary", |l| {
        let n: usize = l
            .strip_prefix("peer-exchange: ")?
            .strip_suffix(" peer(s)")?
            .parse()
            .ok()?;
        (n >= 1).then_some(())
    })?;
    Ok(())
}

/// Every JSON line a process printed so far.
fn json_lines(proc: &Proc) -> impl Iterator<Item = Value> + '_ {
    proc.seen
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
}

/// The members of `room` that `meshtalk dht providers` lists.
fn providers(relay: &str, room: &str) -> Result<BTreeSet<String>> {
    let out = std::process::Command::new(bin("meshtalk")?)
        .args(["dht", "--connect", relay, "providers", "--room", room])
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "dht providers failed: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout
        .lines()
        .filter_map(|l| l.strip_prefix("provider "))
        .filter_map(|l| l.split(' ').next().map(str::to_owned))
        .collect())
}

/// Peers a `--json` chat peer reported connections to.
fn connected_peers(proc: &Proc) -> Vec<String> {
    json_lines(proc)
        .filter(|v| v["type"] == "connected")
        .filter_map(|v| v["peer"].as_str().map(str::to_owned))
        .collect()
}
