//! A relay for the browser's wasm tests: the debug `meshtalk-relay` on
//! loopback, WebSocket and WebRTC-direct on free ports. The tests read its
//! addresses from environment variables at compile time.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
};

use anyhow::{Context, Result, bail};

use crate::cmd::workspace_root;

/// A running test relay; dropping it stops the process.
pub struct TestRelay {
    child: Child,
    ws: String,
    webrtc_direct: String,
}

impl TestRelay {
    /// Starts the relay and waits for its two listen addresses.
    pub fn start() -> Result<Self> {
        let data =
            std::env::temp_dir().join(format!("meshtalk-xtask-relay-{}", std::process::id()));
        let program = workspace_root().join("target/debug/meshtalk-relay");
        let mut child = Command::new(&program)
            .args([
                "--listen",
                "/ip4/127.0.0.1/tcp/0/ws,/ip4/127.0.0.1/udp/0/webrtc-direct",
                "--http",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(&data)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let stdout = child.stdout.take().context("relay stdout")?;
        let (mut ws, mut webrtc_direct) = (None, None);
        for line in BufReader::new(stdout).lines() {
            let line = line.context("reading the relay's output")?;
            if let Some(addr) = line.strip_prefix("listening on ") {
                if addr.contains("/ws/") {
                    ws = Some(addr.to_owned());
                } else if addr.contains("/webrtc-direct/") {
                    webrtc_direct = Some(addr.to_owned());
                }
            }
            if let (Some(ws), Some(webrtc_direct)) = (&ws, &webrtc_direct) {
                eprintln!("xtask: test relay on {ws} and {webrtc_direct}");
                return Ok(Self {
                    child,
                    ws: ws.clone(),
                    webrtc_direct: webrtc_direct.clone(),
                });
            }
        }
        let _ = child.kill();
        bail!("the test relay exited before printing its addresses")
    }

    /// The variables the wasm tests read.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("MESHTALK_TEST_RELAY_WS".into(), self.ws.clone()),
            (
                "MESHTALK_TEST_RELAY_WEBRTC_DIRECT".into(),
                self.webrtc_direct.clone(),
            ),
        ]
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
