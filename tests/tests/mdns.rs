//! `meshtalk chat` without `--connect` finds its peers on the LAN by mDNS.
//! The LAN is two test hosts in network namespaces of this test's own
//! (see `meshtalk_tests::netns`), so the multicast never leaves them.

use anyhow::{Context, Result};
use meshtalk_tests::{Proc, bin, netns::Lan};
use serde_json::Value;

fn chat_on_lan(lan: &Lan, host: usize, nick: &str) -> Result<(Proc, String)> {
    let args: Vec<String> = ["chat", "--json", "--room", "lan", "--nick", nick]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut proc = lan.spawn(host, nick, &bin("meshtalk")?, &args)?;
    let peer = proc.wait_json("ready line", |v| {
        (v["type"] == "ready")
            .then(|| v["peer"].as_str().map(str::to_owned))
            .flatten()
    })?;
    Ok((proc, peer))
}

fn wait_text(proc: &mut Proc, text: &str) -> Result<Value> {
    proc.wait_json(&format!("message {text:?}"), |v| {
        (v["type"] == "message" && v["text"] == text).then(|| v.clone())
    })
}

#[test]
fn peers_on_a_lan_find_each_other_by_mdns_and_chat() -> Result<()> {
    let lan = Lan::create("md").context("cannot create the test LAN (needs root and iproute2)")?;
    let (mut a, a_id) = chat_on_lan(&lan, 0, "ada")?;
    let (mut b, b_id) = chat_on_lan(&lan, 1, "bob")?;

    // Each dials the other at its LAN address, found by mDNS.
    let lan_addr = |host: usize| format!("/ip4/{}/", lan.addr(host));
    let b_addr = lan_addr(1);
    a.wait_json("connection to b over the LAN", |v| {
        (v["type"] == "connected"
            && v["peer"] == b_id.as_str()
            && v["addr"].as_str().is_some_and(|s| s.starts_with(&b_addr)))
        .then_some(())
    })?;
    for (proc, other) in [(&mut a, &b_id), (&mut b, &a_id)] {
        proc.wait_json("the other joined", |v| {
            (v["type"] == "peer_joined" && v["peer"] == other.as_str()).then_some(())
        })?;
    }

    a.send_line("hello over the LAN from ada")?;
    let m = wait_text(&mut b, "hello over the LAN from ada")?;
    assert_eq!(m["from"], a_id.as_str());
    assert_eq!(m["nick"], "ada");
    b.send_line("hello back from bob")?;
    let m = wait_text(&mut a, "hello back from bob")?;
    assert_eq!(m["from"], b_id.as_str());
    assert_eq!(m["nick"], "bob");
    Ok(())
}
