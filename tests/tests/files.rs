//! File sharing between `meshtalk chat` peers: offered in the room,
//! fetched through a relay circuit byte for byte, from another holder once
//! the first has gone; bytes that do not match their hash are refused; a
//! name that tries to leave the download directory is cut down to its
//! last component.

use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use meshtalk_protocol::{
    arch::files::FileSource,
    engine::EngineConfig,
    files::{self, FileHash},
    rooms::Room,
    transport::Transport,
};
use meshtalk_tests::{ChatPeer, Relay, WAIT, noise, peer, sha256_of, temp_dir};
use serde_json::Value;

/// A chat peer that saves files into a directory of its own.
fn peer_with_downloads(name: &str, relay: &Relay, room: &str) -> Result<(ChatPeer, PathBuf)> {
    let dir = temp_dir(&format!("files-{name}"));
    std::fs::create_dir_all(&dir)?;
    let peer = ChatPeer::start(
        name,
        &relay.addr(Transport::Tcp)?,
        room,
        &[
            "--discovery",
            "bootstrap",
            "--nick",
            name,
            "--download-dir",
            &dir.display().to_string(),
        ],
    )?;
    Ok((peer, dir))
}

/// Waits for the offer of `sha256`.
fn wait_offer(peer: &mut ChatPeer, sha256: &str) -> Result<Value> {
    peer.proc.wait_json(&format!("the offer of {sha256}"), |v| {
        (v["type"] == "file" && v["sha256"] == sha256).then(|| v.clone())
    })
}

/// Waits until `sha256` is saved or refused.
fn wait_outcome(peer: &mut ChatPeer, sha256: &str) -> Result<Value> {
    peer.proc
        .wait_json(&format!("{sha256} saved or refused"), |v| {
            ((v["type"] == "file_saved" || v["type"] == "file_failed") && v["sha256"] == sha256)
                .then(|| v.clone())
        })
}

#[test]
fn a_file_goes_from_peer_to_peer_through_the_relay_and_on_from_any_holder() -> Result<()> {
    let relay = Relay::start(&temp_dir("files"))?;
    let (mut ada, ada_dir) = peer_with_downloads("ada", &relay, "files")?;
    let (mut bob, bob_dir) = peer_with_downloads("bob", &relay, "files")?;
    bob.wait_joined(&ada.peer_id)?;

    let bytes = noise(300_000, 1);
    let original = ada_dir.join("holiday photo.png");
    std::fs::write(&original, &bytes)?;
    let sha256 = sha256_of(&original)?;
    ada.proc
        .send_line(&format!("/send {}", original.display()))?;
    let offer = wait_offer(&mut bob, &sha256)?;
    ensure!(
        offer["name"] == "holiday photo.png"
            && offer["size"] == 300_000
            && offer["media_type"] == "image/png"
            && offer["from"] == ada.peer_id.as_str()
            && offer["nick"] == "ada",
        "{offer}"
    );

    bob.proc.send_line(&format!("/get {sha256}"))?;
    let saved = wait_outcome(&mut bob, &sha256)?;
    ensure!(saved["type"] == "file_saved", "{saved}");
    let path = PathBuf::from(saved["path"].as_str().context("a path")?);
    ensure!(path == bob_dir.join("holiday photo.png"), "{saved}");
    ensure!(std::fs::read(&path)? == bytes, "the bytes differ");
    let progress = bob
        .proc
        .seen
        .iter()
        .filter(|l| l.contains("\"file_progress\""))
        .count();
    ensure!(progress >= 2, "{progress} progress lines");
    // No temporary file is left behind.
    let left: Vec<_> = std::fs::read_dir(&bob_dir)?.collect::<Result<_, _>>()?;
    ensure!(left.len() == 1, "{left:?}");

    // Ada leaves; Carol gets the file from Bob, who holds it now.
    ada.proc.close_stdin();
    ada.proc.wait_exit(WAIT)?;
    let (mut carol, carol_dir) = peer_with_downloads("carol", &relay, "files")?;
    carol.wait_joined(&bob.peer_id)?;
    // The offer carol saw is Bob's: he offered it once saved.
    wait_offer(&mut carol, &sha256)?;
    carol.proc.send_line(&format!("/get {sha256}"))?;
    let saved = wait_outcome(&mut carol, &sha256)?;
    ensure!(saved["type"] == "file_saved", "{saved}");
    ensure!(
        std::fs::read(carol_dir.join("holiday photo.png"))? == bytes,
        "the bytes differ"
    );
    Ok(())
}

#[test]
fn bytes_that_do_not_match_their_hash_are_refused_and_names_stay_in_the_directory() -> Result<()> {
    let relay = Relay::start(&temp_dir("files-hostile"))?;
    let (mut bob, bob_dir) = peer_with_downloads("bob", &relay, "hostile")?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let room = Room::new("hostile")?;
        let config = EngineConfig {
            rooms: vec![room.clone()],
            ..EngineConfig::default()
        };
        let mallory = peer::connect(config, &[relay.addr(Transport::Tcp)?]).await?;
        let dir = temp_dir("files-mallory");
        std::fs::create_dir_all(&dir)?;

        // A file that changes after it was offered: its bytes no longer
        // hash to what the offer says.
        let changed = dir.join("changed.bin");
        std::fs::write(&changed, noise(100_000, 2))?;
        let source = FileSource::path(&changed);
        let offer = files::describe(&source, "changed.bin", "application/octet-stream").await?;
        std::fs::write(&changed, noise(100_000, 3))?;
        let bad_hash = offer.sha256.to_string();
        mallory
            .handle
            .share_file(room.clone(), offer, source)
            .await?;

        // A name that climbs out of the download directory.
        let escape = dir.join("escape.txt");
        std::fs::write(&escape, b"only a name to sanitise")?;
        let source = FileSource::path(&escape);
        let mut offer = files::describe(&source, "escape.txt", "text/plain").await?;
        offer.name = "../../escape.txt".into();
        let escape_hash = offer.sha256.to_string();
        mallory.handle.share_file(room, offer, source).await?;

        let bob_sees = tokio::task::block_in_place(|| -> Result<()> {
            let offer = wait_offer(&mut bob, &bad_hash)?;
            ensure!(offer["name"] == "changed.bin", "{offer}");
            bob.proc.send_line(&format!("/get {bad_hash}"))?;
            let outcome = wait_outcome(&mut bob, &bad_hash)?;
            ensure!(
                outcome["type"] == "file_failed"
                    && outcome["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("refused")),
                "{outcome}"
            );

            let offer = wait_offer(&mut bob, &escape_hash)?;
            ensure!(offer["name"] == "escape.txt", "{offer}");
            bob.proc.send_line(&format!("/get {escape_hash}"))?;
            let outcome = wait_outcome(&mut bob, &escape_hash)?;
            ensure!(outcome["type"] == "file_saved", "{outcome}");
            ensure!(
                outcome["path"].as_str() == Some(&bob_dir.join("escape.txt").display().to_string()),
                "{outcome}"
            );
            // Nothing else was written, nowhere else.
            let names: Vec<String> = std::fs::read_dir(&bob_dir)?
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect();
            ensure!(names == ["escape.txt"], "{names:?}");
            let parent = bob_dir.parent().context("a parent")?;
            ensure!(!parent.join("escape.txt").exists(), "escaped");
            Ok(())
        });
        drop(mallory);
        bob_sees
    })?;

    // Asking for what nobody offered, or nonsense, is a one-line error.
    bob.proc.send_line(&format!("/get {}", FileHash([9; 32])))?;
    bob.proc.send_line("/get 12345")?;
    bob.proc.close_stdin();
    let status = bob.proc.wait_exit(WAIT)?;
    ensure!(status.success(), "bob exited with {status}");
    let errors = bob.proc.stderr_lines();
    ensure!(
        errors.iter().any(|l| l.contains("was offered here"))
            && errors.iter().any(|l| l.contains("not a SHA-256"))
            && !errors.iter().any(|l| l.contains("panicked")),
        "{errors:?}"
    );
    Ok(())
}
