//! Test harness: starts real `meshtalk-relay` and `meshtalk` processes on
//! loopback and reads what they print. Every wait is bounded.
//!
//! The binaries must be built first (`cargo xtask test` does it; by hand:
//! `cargo build --bins`).

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        mpsc::{Receiver, RecvTimeoutError, channel},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail, ensure};
use meshtalk_protocol::{
    libp2p::{Multiaddr, multiaddr::Protocol},
    transport::Transport,
};
use serde_json::Value;

pub mod foreign;
pub mod hostile;
pub mod load;
pub mod netns;
pub mod page;
pub mod peer;
pub mod sim;
pub mod stats;
pub mod webdriver;

/// How long any single wait may take before a test fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// Checks `check` every 100 ms until it holds, for at most [`WAIT`].
pub fn eventually(what: &str, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    while !check()? {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Path of a workspace binary next to the running test's directory.
pub fn bin(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the test executable")?;
    // target/<profile>/deps/<test> or target/<profile>/<bin> -> target/<profile>/<name>
    let mut dir = exe
        .parent()
        .ok_or_else(|| anyhow!("unexpected executable path {}", exe.display()))?;
    if dir.ends_with("deps") {
        dir = dir.parent().unwrap_or(dir);
    }
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} is missing: build the binaries first (cargo build --bins)",
            path.display()
        );
    }
    Ok(path)
}

/// `len` bytes that compress badly (xorshift), different for each `seed`:
/// the contents of test and benchmark files.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The SHA-256 of a file, hex, as an offer of it names it.
pub fn sha256_of(path: &Path) -> Result<String> {
    let offer = futures::executor::block_on(meshtalk_protocol::files::describe(
        &meshtalk_protocol::arch::files::FileSource::path(path),
        "x",
        "application/octet-stream",
    ))?;
    Ok(offer.sha256.to_string())
}

/// `addr` (a WebRTC-direct or other UDP address) with its port swapped for
/// that of a socket that takes datagrams and never reads them, so no
/// answer and no ICMP error come back: a dial there behaves as on a network
/// that drops UDP. The socket must be kept while the address is in use.
pub fn udp_blackhole(addr: &Multiaddr) -> Result<(std::net::UdpSocket, Multiaddr)> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let port = socket.local_addr()?.port();
    let mut swapped = false;
    let addr = addr
        .iter()
        .map(|p| match p {
            Protocol::Udp(_) => {
                swapped = true;
                Protocol::Udp(port)
            }
            p => p,
        })
        .collect();
    ensure!(swapped, "{addr} has no UDP port");
    Ok((socket, addr))
}

/// A fresh, empty directory under the system temp dir.
pub fn temp_dir(name: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let unique = format!(
        "meshtalk-test-{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let dir = std::env::temp_dir().join(unique);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A child process whose stdout lines are read on a thread.
pub struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Receiver<String>,
    /// Every stdout line seen so far.
    pub seen: Vec<String>,
    err_seen: Vec<String>,
    /// Name for failure messages.
    pub name: String,
}

impl Proc {
    /// Spawns `program args...` with piped stdio.
    pub fn spawn(name: &str, program: &Path, args: &[String]) -> Result<Self> {
        let mut command = Command::new(program);
        // The binaries' own default log filter, unless a test run asks for
        // more with MESHTALK_TEST_LOG.
        match std::env::var("MESHTALK_TEST_LOG") {
            Ok(filter) => command.env("RUST_LOG", filter),
            Err(_) => command.env_remove("RUST_LOG"),
        };
        let mut child = command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let err_pipe = child.stderr.take().context("no stderr")?;
        let (tx, lines) = channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (etx, stderr) = channel();
        let tag = name.to_owned();
        thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("MESHTALK_TEST_VERBOSE").is_some() {
                    eprintln!("[{tag}] {line}");
                }
                if etx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
            seen: Vec::new(),
            err_seen: Vec::new(),
            name: name.to_owned(),
        })
    }

    /// Waits for a stdout line for which `pick` returns something.
    pub fn wait_for<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&str) -> Option<T>,
    ) -> Result<T> {
        for line in &self.seen {
            if let Some(found) = pick(line) {
                return Ok(found);
            }
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = pick(&line);
                    self.seen.push(line);
                    if let Some(found) = found {
                        return Ok(found);
                    }
                }
                Err(e) => {
                    let stderr = self.stderr_lines();
                    let how = match e {
                        RecvTimeoutError::Timeout => "timed out",
                        RecvTimeoutError::Disconnected => "exited",
                    };
                    bail!(
                        "{}: {how} while waiting for {what}; stdout: {:?}; stderr: {stderr:?}",
                        self.name,
                        self.seen
                    )
                }
            }
        }
    }

    /// Waits for a JSON line for which `pick` returns something.
    pub fn wait_json<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&Value) -> Option<T>,
    ) -> Result<T> {
        self.wait_for(what, |line| {
            serde_json::from_str::<Value>(line)
                .ok()
                .and_then(|v| pick(&v))
        })
    }

    /// Collects stdout lines for `period` without waiting for anything.
    pub fn drain_for(&mut self, period: Duration) {
        let deadline = Instant::now() + period;
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line);
        }
    }

    /// Reads what the exited process left in its pipes, until both reader
    /// threads hang up (bounded).
    fn drain_after_exit(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let left = || deadline.saturating_duration_since(Instant::now());
        while let Ok(line) = self.lines.recv_timeout(left()) {
            self.seen.push(line);
        }
        while let Ok(line) = self.stderr.recv_timeout(left()) {
            self.err_seen.push(line);
        }
    }

    /// Writes a line to stdin.
    pub fn send_line(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("stdin already closed")?;
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        Ok(())
    }

    /// Writes raw bytes to stdin.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        let stdin = self.stdin.as_mut().context("stdin already closed")?;
        stdin.write_all(bytes)?;
        stdin.flush()?;
        Ok(())
    }

    /// Closes stdin.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.drain_after_exit();
                return Ok(status);
            }
            if Instant::now() > deadline {
                let stderr = self.stderr_lines();
                bail!(
                    "{}: still running after {timeout:?}; stderr: {stderr:?}",
                    self.name
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every stderr line so far.
    pub fn stderr_lines(&mut self) -> Vec<String> {
        self.err_seen.extend(self.stderr.try_iter());
        self.err_seen.clone()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the process (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        self.wait_exit(timeout)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running relay on loopback with all four transports on free ports.
pub struct Relay {
    /// The process.
    pub proc: Proc,
    /// Its full listen addresses.
    pub addrs: Vec<Multiaddr>,
    /// Its HTTP base URL.
    pub http: String,
    /// Its data directory.
    pub data_dir: PathBuf,
}

/// Listen addresses for a test relay: every transport, loopback, port 0.
pub fn loopback_listen() -> String {
    [
        "/ip4/127.0.0.1/tcp/0",
        "/ip4/127.0.0.1/udp/0/quic-v1",
        "/ip4/127.0.0.1/tcp/0/ws",
        "/ip4/127.0.0.1/udp/0/webrtc-direct",
    ]
    .join(",")
}

impl Relay {
    /// Starts a relay keeping its keys in `data_dir`.
    pub fn start(data_dir: &Path) -> Result<Self> {
        Self::start_with(data_dir, &[])
    }

    /// Starts a relay with extra arguments.
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Result<Self> {
        let listen = loopback_listen();
        let mut args = vec!["--http", "127.0.0.1:0", "--listen", &listen];
        args.extend_from_slice(extra);
        Self::launch(data_dir, &args)
    }

    fn launch(data_dir: &Path, extra: &[&str]) -> Result<Self> {
        let mut args: Vec<String> = vec!["--data-dir".into(), data_dir.display().to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut proc = Proc::spawn("relay", &bin("meshtalk-relay")?, &args)?;
        let http = proc.wait_for("http line", |l| {
            l.strip_prefix("http on ").map(str::to_owned)
        })?;
        let mut addrs = Vec::new();
        for transport in [
            Transport::Tcp,
            Transport::Quic,
            Transport::WebSocket,
            Transport::WebRtcDirect,
        ] {
            let addr = proc.wait_for(&format!("{transport} listen address"), |l| {
                let addr: Multiaddr = l.strip_prefix("listening on ")?.parse().ok()?;
                (Transport::of(&addr) == transport).then_some(addr)
            })?;
            addrs.push(addr);
        }
        Ok(Self {
            proc,
            addrs,
            http,
            data_dir: data_dir.to_owned(),
        })
    }

    /// Stops the relay and starts it again on the same data dir, HTTP
    /// address and ports, with the same extra arguments.
    pub fn restart(&mut self, extra: &[&str]) -> Result<()> {
        if self.proc.child.try_wait()?.is_none() {
            self.proc.terminate(WAIT)?;
        }
        let listen: Vec<String> = self
            .addrs
            .iter()
            .map(|a| {
                a.iter()
                    .take_while(|p| !matches!(p, Protocol::Certhash(_) | Protocol::P2p(_)))
                    .collect::<Multiaddr>()
                    .to_string()
            })
            .collect();
        let (listen, http) = (listen.join(","), self.http.trim_start_matches("http://"));
        let mut args = vec!["--listen", &listen, "--http", http];
        args.extend_from_slice(extra);
        let restarted = Self::launch(&self.data_dir, &args)?;
        *self = restarted;
        Ok(())
    }

    /// The listen address of one transport.
    pub fn addr(&self, transport: Transport) -> Result<Multiaddr> {
        self.addrs
            .iter()
            .find(|a| Transport::of(a) == transport)
            .cloned()
            .ok_or_else(|| anyhow!("relay has no {transport} address"))
    }

    /// GETs a path of the HTTP API and returns the body.
    pub fn get(&self, path: &str) -> Result<String> {
        http_get(&self.http, path)
    }

    /// A metric from `/metrics`: the sum of the series whose name (with
    /// its labels, if given: `name{reason="x"}`) is `series`; 0 when it is
    /// absent.
    pub fn metric(&self, series: &str) -> Result<f64> {
        let metrics = self.get("/metrics")?;
        Ok(metrics
            .lines()
            .filter_map(|l| l.strip_prefix(series))
            .filter(|rest| rest.starts_with([' ', '{']))
            .filter_map(|rest| rest.rsplit(' ').next()?.trim().parse::<f64>().ok())
            .sum())
    }

    /// Its peer id, from `/api/addrs`.
    pub fn peer_id(&self) -> Result<String> {
        let body: Value = serde_json::from_str(&self.get("/api/addrs")?)?;
        body["peer_id"]
            .as_str()
            .map(str::to_owned)
            .context("no peer_id in /api/addrs")
    }

    /// The peer ids of the other relays it lists in `/api/addrs`.
    pub fn listed_relays(&self) -> Result<BTreeSet<String>> {
        let body: Value = serde_json::from_str(&self.get("/api/addrs")?)?;
        Ok(body["relays"]
            .as_array()
            .context("no relays array in /api/addrs")?
            .iter()
            .filter_map(|r| r["peer_id"].as_str().map(str::to_owned))
            .collect())
    }

    /// Waits until it lists every one of `others` as a linked relay.
    pub fn wait_listing(&self, others: &BTreeSet<String>) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        loop {
            let listed = self.listed_relays()?;
            if others.is_subset(&listed) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the relay lists {listed:?}, not all of {others:?}");
            }
            thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Starts `n` relays on loopback, each after the first joining it with
/// `--bootstrap` (and `extra` arguments for all), and waits until every
/// relay lists every other: the later ones find each other in the DHT.
pub fn relay_network(n: usize, extra: &[&str]) -> Result<Vec<Relay>> {
    let first = Relay::start_with(&temp_dir("relays"), extra)?;
    let boot = first.addr(Transport::Tcp)?.to_string();
    let mut relays = vec![first];
    for _ in 1..n {
        let mut args = vec!["--bootstrap", boot.as_str()];
        args.extend_from_slice(extra);
        relays.push(Relay::start_with(&temp_dir("relays"), &args)?);
    }
    let ids: Vec<String> = relays.iter().map(Relay::peer_id).collect::<Result<_>>()?;
    for (i, relay) in relays.iter().enumerate() {
        let others = ids
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, id)| id.clone())
            .collect();
        relay
            .wait_listing(&others)
            .with_context(|| format!("relay {i} of {n}"))?;
    }
    Ok(relays)
}

/// The built chat page (`cargo xtask web` writes it to the workspace's
/// `dist/`).
pub fn web_dir() -> Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist");
    if !dir.join("index.html").is_file() {
        bail!(
            "{} has no chat page: build it first (cargo xtask web)",
            dir.display()
        );
    }
    Ok(dir)
}

/// A minimal HTTP/1.1 GET over a loopback TCP socket; the body of a 200.
pub fn http_get(base: &str, path: &str) -> Result<String> {
    let response = http_request(base, path, &[])?;
    if response.status != 200 {
        bail!("GET {path}: {}", response.status);
    }
    Ok(String::from_utf8_lossy(&response.body).into_owned())
}

/// An HTTP answer: status, headers (names in lower case), body.
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body, as sent (not decoded).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The value of header `name` (lower case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A GET of `path` with extra `headers`, over a loopback TCP socket.
pub fn http_request(base: &str, path: &str, headers: &[(&str, &str)]) -> Result<HttpResponse> {
    use std::io::Read;
    let host = base.strip_prefix("http://").context("not an http:// URL")?;
    let mut stream = std::net::TcpStream::connect(host)?;
    stream.set_read_timeout(Some(WAIT))?;
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("malformed HTTP response")?;
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let body = response[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// A self-signed certificate for `127.0.0.1` and `localhost`, written as
/// PEM files for the relay's `--tls-cert` and `--tls-key`.
pub struct TestCertificate {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
    /// Base64 SHA-256 of its public key, which Chromium's
    /// `--ignore-certificate-errors-spki-list` trusts.
    pub spki_sha256: String,
}

impl TestCertificate {
    /// Makes one and writes it into `dir`.
    pub fn write(dir: &Path) -> Result<Self> {
        use base64::Engine as _;
        use sha2::Digest as _;
        let rcgen::CertifiedKey { cert, key_pair } =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])?;
        std::fs::create_dir_all(dir)?;
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_path, cert.pem())?;
        std::fs::write(&key_path, key_pair.serialize_pem())?;
        Ok(Self {
            cert: cert_path,
            key: key_path,
            spki_sha256: base64::engine::general_purpose::STANDARD
                .encode(sha2::Sha256::digest(key_pair.public_key_der())),
        })
    }
}

/// A `meshtalk chat --json` peer.
pub struct ChatPeer {
    /// The process.
    pub proc: Proc,
    /// Its peer id.
    pub peer_id: String,
}

impl ChatPeer {
    /// Starts a chat peer connected to `addr` and waits until connected.
    pub fn start(name: &str, addr: &Multiaddr, room: &str, extra: &[&str]) -> Result<Self> {
        // Connections get the harness's wait: on a loaded 2-core machine a
        // WebRTC-direct handshake has taken more than the CLI's default 10 s.
        let wait = WAIT.as_secs().to_string();
        let mut args: Vec<String> = vec![
            "chat".into(),
            "--json".into(),
            "--connect".into(),
            addr.to_string(),
            "--room".into(),
            room.into(),
            "--timeout".into(),
            wait,
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut proc = Proc::spawn(name, &bin("meshtalk")?, &args)?;
        let peer_id = proc.wait_json("ready line", |v| {
            (v["type"] == "ready")
                .then(|| v["peer"].as_str().map(str::to_owned))
                .flatten()
        })?;
        proc.wait_json("connected", |v| (v["type"] == "connected").then_some(()))?;
        Ok(Self { proc, peer_id })
    }

    /// Waits until `other` has been seen in the room.
    pub fn wait_joined(&mut self, other: &str) -> Result<()> {
        self.proc.wait_json(&format!("{other} joined"), |v| {
            (v["type"] == "peer_joined" && v["peer"] == other).then_some(())
        })
    }

    /// Waits for a message with this text and returns its JSON.
    pub fn wait_message(&mut self, text: &str) -> Result<Value> {
        self.proc.wait_json(&format!("message {text:?}"), |v| {
            (v["type"] == "message" && v["text"] == text).then(|| v.clone())
        })
    }

    /// Every message text received so far.
    pub fn texts(&self) -> Vec<String> {
        self.proc
            .seen
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["type"] == "message")
            .filter_map(|v| v["text"].as_str().map(str::to_owned))
            .collect()
    }
}
