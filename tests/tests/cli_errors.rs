//! Bad input gets one clear line on stderr and a non-zero exit, never a
//! panic or a backtrace.

use anyhow::Result;
use meshtalk_protocol::{libp2p::identity::Keypair, transport::Transport};
use meshtalk_tests::{Proc, Relay, WAIT, bin, temp_dir};

/// Runs `meshtalk args...` with stdin closed and returns its one stderr line.
fn one_error_line(args: &[&str]) -> Result<String> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let mut proc = Proc::spawn("meshtalk", &bin("meshtalk")?, &args)?;
    proc.close_stdin();
    let status = proc.wait_exit(WAIT)?;
    let stderr = proc.stderr_lines();
    assert!(!status.success(), "{args:?} succeeded");
    assert_eq!(stderr.len(), 1, "{args:?} printed {stderr:?}");
    assert!(
        !stderr[0].contains("panicked") && !stderr[0].contains("backtrace"),
        "{stderr:?}"
    );
    Ok(stderr[0].clone())
}

#[test]
fn unparsable_multiaddr_is_one_line() -> Result<()> {
    let line = one_error_line(&["chat", "--connect", "/ip4/127.0.0.1/tcpp/4001"])?;
    assert!(
        line.contains("--connect") && line.contains("/ip4/127.0.0.1/tcpp/4001"),
        "{line}"
    );
    let line = one_error_line(&["ping", "not-an-address"])?;
    assert!(line.contains("not-an-address"), "{line}");
    Ok(())
}

#[test]
fn invalid_room_name_and_file_settings_are_one_line() -> Result<()> {
    let line = one_error_line(&[
        "chat",
        "--connect",
        "/ip4/127.0.0.1/tcp/1",
        "--room",
        "bad room",
    ])?;
    assert!(
        line.contains("invalid room name") && line.contains("bad room"),
        "{line}"
    );
    let line = one_error_line(&[
        "chat",
        "--connect",
        "/ip4/127.0.0.1/tcp/1",
        "--download-dir",
        "/no/such/dir",
    ])?;
    assert!(
        line.contains("--download-dir /no/such/dir: not a directory"),
        "{line}"
    );
    let line = one_error_line(&["chat", "--max-file-size", "12 parsecs"])?;
    assert!(
        line.contains("--max-file-size") && line.contains("not a size"),
        "{line}"
    );
    let long = "r".repeat(65);
    let line = one_error_line(&["chat", "--connect", "/ip4/127.0.0.1/tcp/1", "--room", &long])?;
    assert!(line.contains("invalid room name"), "{line}");
    Ok(())
}

#[test]
fn refused_address_is_named() -> Result<()> {
    // Bind then drop a listener: the port is free and refuses connections.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("/ip4/127.0.0.1/tcp/{port}");
    let line = one_error_line(&["chat", "--connect", &addr])?;
    assert!(
        line.contains(&addr) && line.contains("cannot connect"),
        "{line}"
    );
    Ok(())
}

#[test]
fn unreachable_address_times_out_naming_it() -> Result<()> {
    // Nothing answers QUIC on this UDP port, so the handshake never ends.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let addr = format!("/ip4/127.0.0.1/udp/{}/quic-v1", socket.local_addr()?.port());
    let line = one_error_line(&["chat", "--connect", &addr, "--timeout", "2"])?;
    assert!(line.contains("timed out") && line.contains(&addr), "{line}");
    Ok(())
}

#[test]
fn wrong_peer_id_is_one_line() -> Result<()> {
    let relay = Relay::start(&temp_dir("wrong-id"))?;
    let tcp = relay.addr(Transport::Tcp)?;
    let real = tcp.to_string();
    let (base, _) = real.rsplit_once("/p2p/").unwrap_or((&real, ""));
    let impostor = Keypair::generate_ed25519().public().to_peer_id();
    let addr = format!("{base}/p2p/{impostor}");
    let line = one_error_line(&["chat", "--connect", &addr])?;
    assert!(
        line.contains(&impostor.to_string()) && line.contains("not the peer id"),
        "{line}"
    );
    Ok(())
}

#[test]
fn oversized_line_is_refused_and_chat_goes_on() -> Result<()> {
    let relay = Relay::start(&temp_dir("long-line"))?;
    let addr = relay.addr(Transport::Tcp)?;
    let mut listener = meshtalk_tests::ChatPeer::start("listener", &addr, "lobby", &[])?;
    let mut sender = meshtalk_tests::ChatPeer::start("sender", &addr, "lobby", &[])?;
    listener.wait_joined(&sender.peer_id)?;
    sender.proc.send_line(&"y".repeat(5000))?;
    sender.proc.send_line("short one")?;
    sender.proc.close_stdin();
    assert!(sender.proc.wait_exit(WAIT)?.success());
    listener.wait_message("short one")?;
    assert!(!listener.texts().iter().any(|t| t.starts_with("yyyy")));
    let stderr = sender.proc.stderr_lines();
    assert!(
        stderr.iter().any(|l| l.contains("5000 bytes")),
        "{stderr:?}"
    );
    Ok(())
}

#[test]
fn an_identity_file_keeps_the_peer_id_and_a_corrupt_one_is_one_line() -> Result<()> {
    let relay = Relay::start(&temp_dir("identity"))?;
    let addr = relay.addr(Transport::Tcp)?;
    let dir = temp_dir("identity-file");
    let file = dir.join("me.key");
    let file = file.display().to_string();
    let mut ids = Vec::new();
    for run in 0..2 {
        let peer = meshtalk_tests::ChatPeer::start(
            &format!("run{run}"),
            &addr,
            "lobby",
            &["--identity", &file],
        )?;
        ids.push(peer.peer_id.clone());
    }
    assert_eq!(ids[0], ids[1], "a new peer id on the second run");
    // Another file is another peer.
    let other = dir.join("other.key").display().to_string();
    let peer = meshtalk_tests::ChatPeer::start("other", &addr, "lobby", &["--identity", &other])?;
    assert_ne!(peer.peer_id, ids[0]);

    std::fs::write(&file, b"not a key")?;
    let line = one_error_line(&["chat", "--connect", &addr.to_string(), "--identity", &file])?;
    assert!(line.contains(&file) && line.contains("corrupt"), "{line}");
    assert_eq!(std::fs::read(&file)?, b"not a key", "the file was replaced");
    Ok(())
}
