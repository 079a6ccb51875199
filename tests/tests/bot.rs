//! `meshtalk bot` answers in its room and by direct message.

use anyhow::{Result, ensure};
use meshtalk_protocol::transport::Transport;
use meshtalk_tests::{ChatPeer, Proc, Relay, bin, temp_dir};
use serde_json::Value;

#[test]
fn the_bot_answers_in_the_room_and_by_direct_message() -> Result<()> {
    let relay = Relay::start(&temp_dir("bot"))?;
    let tcp = relay.addr(Transport::Tcp)?;
    let args: Vec<String> = ["bot", "--connect", &tcp.to_string(), "--room", "service"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut bot = Proc::spawn("bot", &bin("meshtalk")?, &args)?;
    let bot_id = bot.wait_json("the bot's ready line", |v| {
        (v["type"] == "ready")
            .then(|| v["peer"].as_str().map(str::to_owned))
            .flatten()
    })?;
    let mut ada = ChatPeer::start("ada", &tcp, "service", &[])?;
    ada.wait_joined(&bot_id)?;

    // In the room: answered in the room, by the robot.
    ada.proc.send_line("!echo hello, robot")?;
    let m = ada.wait_message("echo: hello, robot")?;
    ensure!(m["from"] == bot_id.as_str() && m["nick"] == "robot", "{m}");
    ada.proc.send_line("!time")?;
    ada.proc.wait_json("the time", |v| {
        (v["type"] == "message" && v["text"].as_str().is_some_and(|t| t.starts_with("it is ")))
            .then_some(())
    })?;

    // By direct message: answered by direct message, with a round trip.
    ada.proc.send_line(&format!("/msg {bot_id} !ping"))?;
    let pong = ada.proc.wait_json("a pong", |v| {
        (v["type"] == "dm" && v["from"] == bot_id.as_str()).then(|| v.clone())
    })?;
    let text = pong["text"].as_str().unwrap_or_default();
    ensure!(
        text.starts_with("pong: ") && text.contains("ms round trip"),
        "{pong}"
    );
    ada.proc.send_line(&format!("/msg {bot_id} !peers"))?;
    let ada_tail = &ada.peer_id[ada.peer_id.len() - 6..];
    ada.proc.wait_json("the peers", |v: &Value| {
        (v["type"] == "dm" && v["text"].as_str().is_some_and(|t| t.contains(ada_tail)))
            .then_some(())
    })?;
    Ok(())
}
