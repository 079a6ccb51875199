//! Peers of other libp2p implementations, for the interop tests: a
//! js-libp2p peer in Node.js (`tests/js/node-peer.mjs`) and a py-libp2p
//! peer (`tests/py/peer.py`). Both take the same flags and speak the same
//! JSON lines on stdin and stdout, so one [`ForeignPeer`] drives either.
//! Neither uses meshtalk's code: each encodes room messages with its own
//! protobuf library from `crates/protocol/proto/meshtalk.proto`.
//!
//! `cargo xtask test` installs both (npm ci in `tests/js`, a venv with
//! `tests/py/requirements.txt` in `target/interop-py`).

use std::{
    fmt,
    path::{Path, PathBuf},
};

use anyhow::{Result, bail};
use serde_json::Value;

use crate::Proc;

/// Which implementation a [`ForeignPeer`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Implementation {
    /// js-libp2p on Node.js.
    Js,
    /// py-libp2p on CPython.
    Py,
    /// js-libp2p on Node.js, configured as universal-connectivity's js
    /// peer (`tests/js/uc-peer.mjs`: its topics, message ids and direct
    /// messages; no meshtalk protocol, no nicknames; ignores `--room`,
    /// `--nick` and the other extras).
    JsUc,
}

impl fmt::Display for Implementation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Js => "js-libp2p",
            Self::Py => "py-libp2p",
            Self::JsUc => "js-libp2p (universal-connectivity)",
        })
    }
}

fn tests_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The venv `cargo xtask test` makes for py-libp2p.
pub fn py_venv() -> PathBuf {
    tests_dir().join("../target/interop-py")
}

impl Implementation {
    /// The program and the arguments before the peer's own flags.
    fn command(self) -> Result<(PathBuf, Vec<String>)> {
        let node_modules = tests_dir().join("js/node_modules");
        let (program, script, setup) = match self {
            Self::Js => (
                "node".into(),
                tests_dir().join("js/node-peer.mjs"),
                node_modules,
            ),
            Self::JsUc => (
                "node".into(),
                tests_dir().join("js/uc-peer.mjs"),
                node_modules,
            ),
            Self::Py => (
                py_venv().join("bin/python"),
                tests_dir().join("py/peer.py"),
                py_venv(),
            ),
        };
        if !setup.exists() {
            bail!(
                "{self} is not set up ({} is missing): `cargo xtask test` installs it",
                setup.display()
            );
        }
        let mut args = Vec::new();
        if matches!(self, Self::Js | Self::JsUc) {
            // Node.js 20 has WebSocket only behind this flag (22 has it
            // always); @libp2p/websockets dials with it.
            args.push("--experimental-websocket".to_owned());
            args.push("--no-warnings".to_owned());
        }
        args.push(script.display().to_string());
        Ok((program, args))
    }
}

/// A running peer of another implementation, in a room.
pub struct ForeignPeer {
    /// The process.
    pub proc: Proc,
    /// Its peer id.
    pub peer_id: String,
    /// Its listen addresses, with `/p2p/` (empty unless it listens).
    pub addrs: Vec<String>,
}

impl ForeignPeer {
    /// Starts a peer of `implementation` in `room` under `nick`, dialing
    /// `dial` and listening on `listen`; waits until it is ready. `extra`
    /// goes on its command line as it is (`--pubsub floodsub`).
    pub fn start(
        implementation: Implementation,
        room: &str,
        nick: &str,
        dial: &[String],
        listen: &[&str],
        extra: &[&str],
    ) -> Result<Self> {
        let (program, mut args) = implementation.command()?;
        if implementation != Implementation::JsUc {
            args.extend(["--room", room, "--nick", nick].map(String::from));
        }
        for addr in dial {
            args.extend(["--dial".to_owned(), addr.clone()]);
        }
        for addr in listen {
            args.extend(["--listen".to_owned(), (*addr).to_owned()]);
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let mut proc = Proc::spawn(&format!("{implementation} {nick}"), &program, &args)?;
        let (peer_id, addrs) = proc.wait_json("the ready line", |v| {
            let peer = (v["type"] == "ready").then(|| v["peer"].as_str())??;
            let addrs = v["addrs"].as_array()?.iter().filter_map(Value::as_str);
            Some((peer.to_owned(), addrs.map(str::to_owned).collect()))
        })?;
        Ok(Self {
            proc,
            peer_id,
            addrs,
        })
    }

    /// Says `text` in the room.
    pub fn say(&mut self, text: &str) -> Result<()> {
        self.proc.send_line(text)
    }

    /// Writes a PNG-looking file (the PNG signature, then `len` bytes of
    /// noise from `seed`) under `name` in a test directory and has the peer
    /// announce it (`/file`, universal-connectivity's peer only); returns
    /// the bytes and its `file_sent` line (`id`, `sha256`).
    pub fn announce_png(&mut self, name: &str, len: usize, seed: u64) -> Result<(Vec<u8>, Value)> {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend(crate::noise(len, seed));
        let path = crate::temp_dir(name).with_extension("png");
        std::fs::write(&path, &png)?;
        self.say(&format!("/file {}", path.display()))?;
        let sent = self.proc.wait_json("file_sent", |v| {
            (v["type"] == "file_sent").then(|| v.clone())
        })?;
        Ok((png, sent))
    }

    /// Waits until `from` has announced `nick` (UPDATE_PEER).
    pub fn wait_nick(&mut self, from: &str, nick: &str) -> Result<()> {
        self.proc
            .wait_json(&format!("{from}'s nickname {nick:?}"), |v| {
                (v["type"] == "nick" && v["from"] == from && v["nick"] == nick).then_some(())
            })
    }

    /// Waits for the line `text` from `from` and returns the nickname it
    /// was attributed to.
    pub fn wait_message(&mut self, from: &str, text: &str) -> Result<Option<String>> {
        self.proc.wait_json(&format!("{text:?} from {from}"), |v| {
            (v["type"] == "message" && v["from"] == from && v["text"] == text)
                .then(|| v["nick"].as_str().map(str::to_owned))
        })
    }
}
