//! `meshtalk publish` and `meshtalk subscribe`: stdin to any gossipsub topic
//! and any topic to stdout.

use std::io::Write;

use anyhow::{Result, bail};
use futures::{StreamExt, future::BoxFuture};
use meshtalk_protocol::{
    engine::{CommandError, EngineConfig, Event},
    validate,
    wire::{self, ChatMessage, Payload},
};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{args::PubSubArgs, output};

fn check_topic(topic: &str) -> Result<()> {
    if topic.is_empty() {
        bail!("--topic must not be empty");
    }
    Ok(())
}

/// Publishes stdin, one message per line, then exits once all is sent.
/// A line is read only once the one before was taken by the network
/// (back-pressure: a fast writer waits, nothing is dropped); a network
/// slower than the input is said once.
pub async fn publish(args: PubSubArgs) -> Result<()> {
    check_topic(&args.topic)?;
    let mut node = args.net.start(EngineConfig::default()).await?;
    if !args.net.connect.is_empty() {
        node.connect(&args.net.connect, args.net.timeout).await?;
    }
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut line = Vec::new();
    let mut stdin_open = true;
    let mut sending: Option<BoxFuture<'static, Result<(), CommandError>>> = None;
    let mut slow_said = false;
    loop {
        tokio::select! {
            read = stdin.read_until(b'\n', &mut line), if stdin_open && sending.is_none() => {
                match read {
                    Ok(0) | Err(_) => {
                        stdin_open = false;
                        let _ = node.handle.shutdown().await;
                    }
                    Ok(_) => {
                        if line.last() == Some(&b'\n') {
                            line.pop();
                        }
                        if let Some(data) = message_bytes(&line, args.raw) {
                            let (handle, topic) = (node.handle.clone(), args.topic.clone());
                            sending = Some(Box::pin(async move {
                                handle.publish_raw(topic, data).await
                            }));
                        }
                        line.clear();
                    }
                }
            }
            sent = async { sending.as_mut().expect("guarded").await }, if sending.is_some() => {
                sending = None;
                sent?;
            }
            event = node.events.next() => match event {
                Some(Event::Held { topic, pending }) => {
                    tracing::info!(%topic, pending, "waiting for a subscriber");
                }
                Some(Event::Slowed { .. }) if !slow_said => {
                    slow_said = true;
                    eprintln!("meshtalk: the network takes messages slower than they come: input waits for it, nothing is dropped");
                }
                Some(_) => {}
                None => break,
            }
        }
    }
    let _ = node.task.await;
    Ok(())
}

/// What to publish for one stdin line, or `None` (with a message) to skip it.
fn message_bytes(line: &[u8], raw: bool) -> Option<Vec<u8>> {
    if raw {
        return Some(line.to_vec());
    }
    let Ok(text) = std::str::from_utf8(line) else {
        eprintln!("meshtalk: line not sent: it is not UTF-8 text (use --raw for bytes)");
        return None;
    };
    let text = text.trim_end_matches('\r');
    let payload = Payload::Message(ChatMessage::new(text));
    match validate::check(&payload, validate::now_ms()) {
        Ok(()) => Some(wire::encode(&payload)),
        Err(e) => {
            eprintln!("meshtalk: line not sent: {e}");
            None
        }
    }
}

/// Prints every message on the topic until interrupted.
pub async fn subscribe(args: PubSubArgs) -> Result<()> {
    check_topic(&args.topic)?;
    let mut node = args.net.start(EngineConfig::default()).await?;
    node.handle.subscribe_raw(args.topic.clone()).await?;
    if !args.net.connect.is_empty() {
        node.connect(&args.net.connect, args.net.timeout).await?;
    }
    while let Some(event) = node.events.next().await {
        let data = match event {
            Event::Raw { data, .. } => data,
            Event::Listening(addr) => {
                // Where a publisher can dial us (`--listen`).
                eprintln!("meshtalk: listening on {addr}");
                continue;
            }
            _ => continue,
        };
        let mut out = std::io::stdout().lock();
        let written = if args.raw {
            out.write_all(&data).and_then(|()| out.write_all(b"\n"))
        } else {
            match wire::decode(&data) {
                Ok(Payload::Message(m)) => writeln!(out, "{}", output::sanitize(&m.text)),
                Ok(Payload::Nick(_)) => Ok(()),
                Err(e) => {
                    eprintln!(
                        "meshtalk: skipped a message that is not meshtalk chat ({e}); use --raw"
                    );
                    Ok(())
                }
            }
        };
        if written.and_then(|()| out.flush()).is_err() {
            // stdout closed (e.g. `| head`): nothing left to do.
            break;
        }
    }
    Ok(())
}
