//! `meshtalk chat` at a real terminal: run in tmux (its panes are
//! terminals), typed into with send-keys, read with capture-pane. It chats
//! with a `meshtalk chat --json` peer and leaves with `/quit`.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use meshtalk_protocol::transport::Transport;
use meshtalk_tests::{ChatPeer, Relay, WAIT, bin, temp_dir};

/// A tmux server of the test's own (its own socket), killed at the end.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .context("cannot run tmux (cargo xtask setup installs it)")?;
        ensure!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The pane's text now.
    fn screen(&self) -> Result<String> {
        self.run(&["capture-pane", "-p", "-t", "chat"])
    }

    /// Waits until the pane shows `text`.
    fn wait_for(&self, text: &str) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        loop {
            let screen = self.screen()?;
            if screen.contains(text) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the terminal never showed {text:?}; it shows:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn keys(&self, text: &str) -> Result<()> {
        self.run(&["send-keys", "-t", "chat", "-l", text])?;
        self.run(&["send-keys", "-t", "chat", "Enter"]).map(drop)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

#[test]
fn the_terminal_ui_chats_and_quits_in_tmux() -> Result<()> {
    let relay = Relay::start(&temp_dir("tui"))?;
    let tcp = relay.addr(Transport::Tcp)?;
    let mut ada = ChatPeer::start("ada", &tcp, "tui", &["--nick", "ada"])?;

    let tmux = Tmux {
        socket: format!("meshtalk-test-{}", std::process::id()),
    };
    let logs = temp_dir("tui-stderr");
    std::fs::create_dir_all(&logs)?;
    let command = format!(
        "{} chat --connect {tcp} --room tui --nick tess 2>{}",
        bin("meshtalk")?.display(),
        logs.join("stderr").display()
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "chat",
        "-x",
        "110",
        "-y",
        "30",
        &command,
    ])?;
    tmux.wait_for("/help lists the commands")?;

    // Tess joins; Ada learns her name; Tess speaks.
    let tess = ada.proc.wait_json("tess's name", |v| {
        (v["type"] == "nick" && v["nick"] == "tess").then(|| v["from"].clone())
    })?;
    // Members of a room link to each other (rooms as subnets): only a
    // neighbour sees a member leave, below.
    ada.proc.wait_json("a link to tess", |v| {
        (v["type"] == "connected" && v["peer"] == tess).then_some(())
    })?;
    tmux.keys("hello from a terminal")?;
    let m = ada.wait_message("hello from a terminal")?;
    ensure!(m["nick"] == "tess", "{m}");

    // Ada answers; the screen shows her under her name, in the members
    // pane, and the connection to the relay.
    ada.proc.send_line("hi tess")?;
    tmux.wait_for("ada: hi tess")?;
    tmux.wait_for("members (1)")?;
    tmux.wait_for("tcp")?;

    // Commands: /help answers on screen, a bad one says why, /quit leaves.
    tmux.keys("/help")?;
    tmux.wait_for("/send PATH")?;
    tmux.keys("/msg nobody hi")?;
    tmux.wait_for("not a peer id")?;
    tmux.keys("/quit")?;
    let deadline = Instant::now() + WAIT;
    while tmux.run(&["has-session", "-t", "chat"]).is_ok() {
        if Instant::now() > deadline {
            bail!("still running after /quit:\n{}", tmux.screen()?);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    ada.proc
        .wait_json("tess leaving", |v| (v["type"] == "peer_left").then_some(()))?;
    Ok(())
}
