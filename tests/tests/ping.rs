//! `meshtalk ping` reports round-trip times over every transport.

use anyhow::Result;
use meshtalk_protocol::transport::Transport;
use meshtalk_tests::{Proc, Relay, WAIT, bin, temp_dir};

#[test]
fn ping_prints_round_trip_times_over_each_transport() -> Result<()> {
    let relay = Relay::start(&temp_dir("ping"))?;
    for transport in [
        Transport::Tcp,
        Transport::Quic,
        Transport::WebSocket,
        Transport::WebRtcDirect,
    ] {
        let addr = relay.addr(transport)?;
        let mut ping = Proc::spawn(
            "ping",
            &bin("meshtalk")?,
            &[
                "ping".into(),
                addr.to_string(),
                "--count".into(),
                "3".into(),
            ],
        )?;
        let status = ping.wait_exit(WAIT)?;
        let stderr = ping.stderr_lines();
        assert!(status.success(), "ping over {transport} failed: {stderr:?}");
        let replies: Vec<&String> = ping
            .seen
            .iter()
            .filter(|l| l.starts_with("reply from") && l.contains(&format!(" over {transport}: ")))
            .collect();
        assert_eq!(replies.len(), 3, "over {transport}: {:?}", ping.seen);
        for reply in replies {
            let ms: f64 = reply
                .rsplit("time=")
                .next()
                .and_then(|t| t.strip_suffix(" ms"))
                .and_then(|t| t.parse().ok())
                .unwrap_or(-1.0);
            assert!(ms > 0.0 && ms < 10_000.0, "bad rtt in {reply:?}");
        }
        assert!(
            ping.seen
                .iter()
                .any(|l| l.starts_with("3 replies, rtt min/avg/max")),
            "no summary over {transport}: {:?}",
            ping.seen
        );
    }
    Ok(())
}
