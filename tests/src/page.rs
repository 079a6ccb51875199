//! The chat page as a test sees it: a [`Session`] plus the page's
//! `data-testid` hooks.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::{
    WAIT,
    webdriver::{Driver, Session},
};

/// WebDriver's code for the Enter key.
pub const ENTER: &str = "\u{E007}";

/// One open chat page.
pub struct ChatPage<'a> {
    /// The browser window.
    pub session: Session<'a>,
    /// The page's own peer id.
    pub peer_id: String,
}

/// A received or sent message as the page shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    /// `data-from`.
    pub from: String,
    /// The nickname shown.
    pub nick: String,
    /// The text shown.
    pub text: String,
}

impl<'a> ChatPage<'a> {
    /// Opens `url` in a new window and waits until the page is connected
    /// (over `transport` when given).
    pub fn open(driver: &'a Driver, url: &str, transport: Option<&str>) -> Result<Self> {
        Self::open_with(driver, url, transport, None)
    }

    /// [`ChatPage::open`], with `probe` run in the page before its own
    /// scripts (benchmarks time the page with it).
    pub fn open_with(
        driver: &'a Driver,
        url: &str,
        transport: Option<&str>,
        probe: Option<&str>,
    ) -> Result<Self> {
        let session = driver.session()?;
        if let Some(probe) = probe {
            session.on_new_document(probe)?;
        }
        session.open(url)?;
        let peer_id = session
            .wait_for(
                "the page's peer id",
                WAIT,
                "return document.querySelector('[data-testid=self]')?.textContent || null",
            )?
            .as_str()
            .context("peer id is not text")?
            .to_owned();
        let page = Self { session, peer_id };
        page.wait_connected(transport, WAIT)?;
        Ok(page)
    }

    /// The status line.
    pub fn status(&self) -> Result<String> {
        let value = self
            .session
            .eval("return document.querySelector('[data-testid=status]').textContent")?;
        Ok(value.as_str().unwrap_or_default().to_owned())
    }

    /// Waits until the status says connected (over `transport` when given).
    pub fn wait_connected(&self, transport: Option<&str>, timeout: Duration) -> Result<()> {
        let script = format!(
            "const s = document.querySelector('[data-testid=status]'); \
             return !!s && s.dataset.state === 'connected' && s.textContent.includes('connected') \
             && s.textContent.includes({});",
            serde_json::to_string(transport.unwrap_or(""))?
        );
        self.session
            .wait_for("connected", timeout, &script)
            .map(drop)
    }

    /// Waits until the status leaves the connected state.
    pub fn wait_offline(&self, timeout: Duration) -> Result<()> {
        self.session
            .wait_for(
                "offline",
                timeout,
                "return document.querySelector('[data-testid=status]').dataset.state === 'offline'",
            )
            .map(drop)
    }

    /// Types a line into the composer and presses Enter.
    pub fn send(&self, text: &str) -> Result<()> {
        self.session
            .type_into("[data-testid=message-input]", &format!("{text}{ENTER}"))
    }

    /// Sets the nickname through its input.
    pub fn set_nick(&self, nick: &str) -> Result<()> {
        self.session.clear("[data-testid=nick-input]")?;
        self.session
            .type_into("[data-testid=nick-input]", &format!("{nick}{ENTER}"))
    }

    /// Opens the direct conversation with `peer` from the members list.
    pub fn open_dm(&self, peer: &str) -> Result<()> {
        let script = format!(
            "const b = document.querySelector('[data-testid=member-dm][data-peer=\"{peer}\"]'); \
             if (!b) return false; b.click(); return true;"
        );
        self.session
            .wait_for(
                &format!("a direct-message button for {peer}"),
                WAIT,
                &script,
            )
            .map(drop)
    }

    /// Types a direct message into the open conversation.
    pub fn send_dm(&self, text: &str) -> Result<()> {
        self.session
            .type_into("[data-testid=dm-input]", &format!("{text}{ENTER}"))
    }

    /// Waits until the open conversation shows `text` from `from`, in
    /// `state` (`received`, or for ours `sending`, `delivered`, `failed`).
    pub fn wait_dm(&self, from: &str, text: &str, state: &str) -> Result<()> {
        let script = format!(
            "return [...document.querySelectorAll('[data-testid=dm-message]')].some(m => \
               m.dataset.from === {} && m.dataset.state === {} && \
               m.querySelector('.text').textContent === {});",
            serde_json::to_string(from)?,
            serde_json::to_string(state)?,
            serde_json::to_string(text)?
        );
        self.session
            .wait_for(&format!("direct message {text:?} ({state})"), WAIT, &script)
            .map(drop)
    }

    /// Waits until the conversation with `peer` counts `unread` unread
    /// lines.
    pub fn wait_unread(&self, peer: &str, unread: usize) -> Result<()> {
        let script = format!(
            "const c = document.querySelector('[data-testid=conversation][data-peer=\"{peer}\"]'); \
             return !!c && c.dataset.unread === '{unread}';"
        );
        self.session
            .wait_for(&format!("{unread} unread from {peer}"), WAIT, &script)
            .map(drop)
    }

    /// Switches to another room through the room input.
    pub fn switch_room(&self, room: &str) -> Result<()> {
        self.session.clear("[data-testid=room-input]")?;
        self.session
            .type_into("[data-testid=room-input]", &format!("{room}{ENTER}"))
    }

    /// Every message the page shows, oldest first.
    pub fn messages(&self) -> Result<Vec<Shown>> {
        let value = self.session.eval(
            "return [...document.querySelectorAll('[data-testid=message]')].map(m => ({ \
               from: m.dataset.from, \
               nick: m.querySelector('[data-testid=message-nick]').textContent, \
               text: m.querySelector('[data-testid=message-text]').textContent }))",
        )?;
        Ok(value
            .as_array()
            .map(|a| a.iter().map(shown).collect())
            .unwrap_or_default())
    }

    /// Waits until a message with `text` shows and returns it.
    pub fn wait_message(&self, text: &str) -> Result<Shown> {
        let script = format!(
            "const t = {}; \
             const m = [...document.querySelectorAll('[data-testid=message]')] \
               .find(m => m.querySelector('[data-testid=message-text]').textContent === t); \
             return m ? {{ from: m.dataset.from, \
               nick: m.querySelector('[data-testid=message-nick]').textContent, \
               text: m.querySelector('[data-testid=message-text]').textContent }} : null;",
            serde_json::to_string(text)?
        );
        let value = self
            .session
            .wait_for(&format!("message {text:?}"), WAIT, &script)?;
        Ok(shown(&value))
    }

    /// Waits until the page shows exactly `texts` as history (lines said
    /// before it joined), in that order.
    pub fn wait_history(&self, texts: &[&str]) -> Result<()> {
        let script = format!(
            "const want = {}; \
             const got = [...document.querySelectorAll('[data-testid=message][data-history=true]')] \
               .map(m => m.querySelector('[data-testid=message-text]').textContent); \
             return JSON.stringify(got) === JSON.stringify(want);",
            serde_json::to_string(texts)?
        );
        self.session
            .wait_for(&format!("history {texts:?}"), WAIT, &script)
            .map(drop)
    }

    /// Waits until `peer` shows among the room's members.
    pub fn wait_member(&self, peer: &str) -> Result<()> {
        let script = format!(
            "return !!document.querySelector('[data-testid=member][data-peer=\"{peer}\"]')"
        );
        self.session
            .wait_for(&format!("member {peer}"), WAIT, &script)
            .map(drop)
    }

    /// Waits until the message with `text` shows `nick` as its author.
    pub fn wait_message_nick(&self, text: &str, nick: &str) -> Result<()> {
        let script = format!(
            "const [t, n] = [{}, {}]; \
             return [...document.querySelectorAll('[data-testid=message]')].some(m => \
               m.querySelector('[data-testid=message-text]').textContent === t && \
               m.querySelector('[data-testid=message-nick]').textContent === n);",
            serde_json::to_string(text)?,
            serde_json::to_string(nick)?
        );
        self.session
            .wait_for(&format!("{nick:?} on message {text:?}"), WAIT, &script)
            .map(drop)
    }

    /// Waits until the peers table shows a direct (`webrtc`) link to
    /// `peer` with a measured RTT, and the status line counts it.
    pub fn wait_direct(&self, peer: &str, timeout: Duration) -> Result<()> {
        let script = format!(
            "const row = document.querySelector('[data-testid=peer][data-peer=\"{peer}\"]'); \
             const s = document.querySelector('[data-testid=status]'); \
             return !!row && row.dataset.transport === 'webrtc' && row.dataset.rttMs !== '' \
               && Number(s.dataset.direct) >= 1 && s.textContent.includes('direct link');"
        );
        self.session
            .wait_for(&format!("a direct link to {peer}"), timeout, &script)
            .map(drop)
    }

    /// The rows of the connected-peers table: (peer, transport, rtt ms).
    pub fn peers(&self) -> Result<Vec<(String, String, String)>> {
        let value = self.session.eval(
            "return [...document.querySelectorAll('[data-testid=peer]')] \
               .map(p => [p.dataset.peer, p.dataset.transport, p.dataset.rttMs])",
        )?;
        Ok(value
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|r| (text(&r[0]), text(&r[1]), text(&r[2])))
                    .collect()
            })
            .unwrap_or_default())
    }
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

fn shown(value: &Value) -> Shown {
    Shown {
        from: text(&value["from"]),
        nick: text(&value["nick"]),
        text: text(&value["text"]),
    }
}
