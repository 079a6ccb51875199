//! `meshtalk chat` at a terminal: a ratatui interface. Messages with
//! nicknames and times on the left, the room's members and our
//! connections (transport, round trip) on the right, an input line with
//! its own history at the bottom. The same commands as in line mode
//! ([`crate::commands`]).
//!
//! [`App`] is the state and the drawing, with no terminal in it (tests
//! draw it on ratatui's `TestBackend`); [`run`] connects it to the
//! terminal and the engine.

use std::{
    collections::{BTreeMap, VecDeque},
    io,
};

use anyhow::Result;
use futures::StreamExt;
use meshtalk_protocol::{
    engine::Event,
    files::{FileHash, size_text},
    libp2p::PeerId,
    rooms::Room,
    validate::now_ms,
};
use ratatui::{
    Frame, Terminal,
    backend::CrosstermBackend,
    crossterm::{
        event::{self, Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers},
        execute,
        terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode},
    },
    layout::{Constraint, Layout, Position},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Borders, List, ListItem, Paragraph, Wrap},
};

use crate::{
    commands::{self, Peers, Typed},
    output::{sanitize, short_id},
};
use meshtalk::node::Node;

/// Lines kept on screen; older ones scroll away.
const MAX_LINES: usize = 2000;
/// Typed lines remembered for Up and Down.
const MAX_HISTORY: usize = 200;

/// What a shown line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Message,
    Earlier,
    Dm,
    Notice,
}

/// Who a shown line is from.
enum Who {
    /// A peer, under the nickname it came with (else the one known when
    /// drawn: a name learnt later fills in).
    Peer(PeerId, Option<String>),
    /// A label of our own (`*`, `you → ada`).
    Label(String),
}

/// One line of the message pane.
struct Shown {
    time: String,
    who: Who,
    text: String,
    kind: Kind,
}

/// The input line: text, cursor (in characters) and typed history.
#[derive(Default)]
struct Input {
    text: String,
    cursor: usize,
    history: Vec<String>,
    /// Where Up/Down is in `history`, and what was typed before.
    browsing: Option<(usize, String)>,
}

impl Input {
    fn byte_at(&self, chars: usize) -> usize {
        self.text
            .char_indices()
            .nth(chars)
            .map_or(self.text.len(), |(i, _)| i)
    }

    fn insert(&mut self, c: char) {
        let at = self.byte_at(self.cursor);
        self.text.insert(at, c);
        self.cursor += 1;
    }

    fn backspace(&mut self) {
        if self.cursor > 0 {
            self.cursor -= 1;
            let at = self.byte_at(self.cursor);
            self.text.remove(at);
        }
    }

    fn delete(&mut self) {
        if self.cursor < self.text.chars().count() {
            let at = self.byte_at(self.cursor);
            self.text.remove(at);
        }
    }

    fn set(&mut self, text: String) {
        self.cursor = text.chars().count();
        self.text = text;
    }

    fn up(&mut self) {
        let (next, draft) = match self.browsing.take() {
            None if self.history.is_empty() => return,
            None => (self.history.len() - 1, self.text.clone()),
            Some((0, draft)) => (0, draft),
            Some((i, draft)) => (i - 1, draft),
        };
        self.browsing = Some((next, draft));
        self.set(self.history[next].clone());
    }

    fn down(&mut self) {
        match self.browsing.take() {
            None => {}
            Some((i, draft)) if i + 1 >= self.history.len() => self.set(draft),
            Some((i, draft)) => {
                self.browsing = Some((i + 1, draft));
                self.set(self.history[i + 1].clone());
            }
        }
    }

    /// Enter: the line, remembered.
    fn submit(&mut self) -> String {
        let line = std::mem::take(&mut self.text);
        self.cursor = 0;
        self.browsing = None;
        if !line.trim().is_empty() && self.history.last() != Some(&line) {
            self.history.push(line.clone());
            if self.history.len() > MAX_HISTORY {
                self.history.remove(0);
            }
        }
        line
    }
}

/// The terminal UI's state.
pub struct App {
    room: Room,
    me: PeerId,
    nick: Option<String>,
    lines: VecDeque<Shown>,
    /// Members of the current room, with their nicknames.
    members: BTreeMap<PeerId, ()>,
    nicks: BTreeMap<PeerId, String>,
    peers: Peers,
    /// Files on their way: name, bytes received, size.
    transfers: BTreeMap<FileHash, (String, u64, u64)>,
    /// Names of the files offered, for the transfers.
    names: BTreeMap<FileHash, String>,
    input: Input,
    /// Set by `/quit` and Ctrl-C.
    pub quit: bool,
}

/// `HH:MM` UTC of a time in ms since the epoch.
fn clock(ms: i64) -> String {
    let minutes = ms.div_euclid(60_000);
    format!(
        "{:02}:{:02}",
        minutes.div_euclid(60).rem_euclid(24),
        minutes.rem_euclid(60)
    )
}

impl App {
    /// A fresh screen for `me` in `room`.
    pub fn new(me: PeerId, room: Room, nick: Option<String>) -> Self {
        let mut app = Self {
            room,
            me,
            nick,
            lines: VecDeque::new(),
            members: BTreeMap::new(),
            nicks: BTreeMap::new(),
            peers: Peers::default(),
            transfers: BTreeMap::new(),
            names: BTreeMap::new(),
            input: Input::default(),
            quit: false,
        };
        app.notice(format!(
            "you are {} in room {}; /help lists the commands",
            short_id(&me),
            app.room
        ));
        app
    }

    fn name(&self, peer: &PeerId, nick: Option<&String>) -> String {
        if *peer == self.me {
            return self.nick.clone().unwrap_or_else(|| "you".into());
        }
        nick.or_else(|| self.nicks.get(peer))
            .map(|n| sanitize(n))
            .unwrap_or_else(|| short_id(peer))
    }

    fn push(&mut self, time: String, who: Who, text: String, kind: Kind) {
        self.lines.push_back(Shown {
            time,
            who,
            text,
            kind,
        });
        while self.lines.len() > MAX_LINES {
            self.lines.pop_front();
        }
    }

    /// A line of our own (a notice, an error, a command's answer).
    pub fn notice(&mut self, text: String) {
        self.push(clock(now_ms()), Who::Label("*".into()), text, Kind::Notice);
    }

    /// What the engine reported.
    pub fn on_event(&mut self, event: &Event) {
        self.peers.on_event(event);
        match event {
            Event::Message {
                room,
                from,
                nick,
                message,
                history,
            } if *room == self.room => {
                let who = Who::Peer(*from, nick.clone());
                let kind = if *history {
                    Kind::Earlier
                } else {
                    Kind::Message
                };
                self.push(
                    clock(message.created_ms),
                    who,
                    sanitize(&message.text),
                    kind,
                );
            }
            Event::DirectMessage {
                from,
                nick,
                message,
            } => {
                let who = Who::Label(format!("{} → you", self.name(from, nick.as_ref())));
                self.push(
                    clock(message.created_ms),
                    who,
                    sanitize(&message.text),
                    Kind::Dm,
                );
            }
            Event::Nick { room, from, nick } if *room == self.room && !nick.is_empty() => {
                self.nicks.insert(*from, nick.clone());
            }
            Event::PeerJoined { room, peer } if *room == self.room => {
                self.members.insert(*peer, ());
                self.push(
                    clock(now_ms()),
                    Who::Peer(*peer, None),
                    "joined".into(),
                    Kind::Notice,
                );
            }
            Event::PeerLeft { room, peer } if *room == self.room => {
                self.members.remove(peer);
                self.push(
                    clock(now_ms()),
                    Who::Peer(*peer, None),
                    "left".into(),
                    Kind::Notice,
                );
            }
            Event::DmSent { to, .. } => {
                self.notice(format!(
                    "direct message to {} delivered",
                    self.name(to, None)
                ));
            }
            Event::DmFailed { to, error, .. } => self.notice(format!(
                "direct message to {} not delivered: {}",
                self.name(to, None),
                sanitize(error)
            )),
            Event::FileOffered {
                room,
                from,
                nick,
                offer,
            } if *room == self.room => {
                self.names.insert(offer.sha256, sanitize(&offer.name));
                let who = Who::Peer(*from, nick.clone());
                self.push(
                    clock(offer.created_ms),
                    who,
                    format!(
                        "offers {} ({}): /get {}",
                        sanitize(&offer.name),
                        size_text(offer.size),
                        offer.sha256
                    ),
                    Kind::Message,
                );
            }
            Event::FileProgress {
                sha256,
                received,
                size,
            } => {
                let name = self.names.get(sha256).cloned();
                let entry = self.transfers.entry(*sha256).or_insert_with(|| {
                    (
                        name.unwrap_or_else(|| sha256.to_string()[..12].to_owned()),
                        0,
                        0,
                    )
                });
                (entry.1, entry.2) = (*received, *size);
            }
            Event::FileSaved { sha256, saved, .. } => {
                self.transfers.remove(sha256);
                self.notice(format!("saved {}", saved.display()));
            }
            Event::FileFailed { sha256, error } => {
                self.transfers.remove(sha256);
                self.notice(format!(
                    "file {}… not fetched: {}",
                    &sha256.to_string()[..12],
                    sanitize(error)
                ));
            }
            Event::UcFileFailed { from, id, error } => self.notice(format!(
                "file {} from {} not fetched: {}",
                sanitize(id),
                short_id(from),
                sanitize(error)
            )),
            _ => {}
        }
    }

    /// A key: edits the input line, or gives back a line typed.
    pub fn on_key(&mut self, key: KeyEvent) -> Option<String> {
        if key.kind == KeyEventKind::Release {
            return None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Char('c' | 'd') if ctrl => self.quit = true,
            KeyCode::Char('a') if ctrl => self.input.cursor = 0,
            KeyCode::Char('e') if ctrl => self.input.cursor = self.input.text.chars().count(),
            KeyCode::Char('u') if ctrl => self.input.set(String::new()),
            KeyCode::Char(c) => self.input.insert(c),
            KeyCode::Backspace => self.input.backspace(),
            KeyCode::Delete => self.input.delete(),
            KeyCode::Left => self.input.cursor = self.input.cursor.saturating_sub(1),
            KeyCode::Right => {
                self.input.cursor = (self.input.cursor + 1).min(self.input.text.chars().count());
            }
            KeyCode::Home => self.input.cursor = 0,
            KeyCode::End => self.input.cursor = self.input.text.chars().count(),
            KeyCode::Up => self.input.up(),
            KeyCode::Down => self.input.down(),
            KeyCode::Enter => return Some(self.input.submit()),
            _ => {}
        }
        None
    }

    /// `/help`, `/peers` and `/quit`, which are about the screen.
    fn local(&mut self, typed: &Typed) -> bool {
        match typed {
            Typed::Help => {
                for (command, what) in commands::HELP {
                    self.notice(format!("{command:<18} {what}"));
                }
            }
            Typed::Peers => {
                self.notice(format!("{} connected peers", self.peers.len()));
                let rows: Vec<String> = self
                    .peers
                    .list()
                    .map(|(peer, transport, rtt)| {
                        let rtt = rtt.map_or("-".into(), |ms| format!("{ms:.1} ms"));
                        format!("{} ({peer}) {transport} {rtt}", self.name(peer, None))
                    })
                    .collect();
                for row in rows {
                    self.notice(row);
                }
            }
            Typed::Quit => self.quit = true,
            _ => return false,
        }
        true
    }

    /// What we said, as the room will see it.
    fn said(&mut self, typed: &Typed) {
        match typed {
            Typed::Say(text) => {
                self.push(
                    clock(now_ms()),
                    Who::Peer(self.me, None),
                    text.clone(),
                    Kind::Message,
                );
            }
            Typed::Msg(to, text) => {
                let who = Who::Label(format!("you → {}", self.name(to, None)));
                self.push(clock(now_ms()), who, text.clone(), Kind::Dm);
            }
            Typed::Nick(nick) => {
                self.nick = Some(nick.clone());
                self.notice(format!("you are now {nick}"));
            }
            Typed::Room(room) => {
                self.room = room.clone();
                self.members.clear();
                self.notice(format!("now in room {room}"));
            }
            _ => {}
        }
    }

    /// Draws the screen.
    pub fn draw(&self, frame: &mut Frame) {
        let [main, input] =
            Layout::vertical([Constraint::Min(3), Constraint::Length(3)]).areas(frame.area());
        let [messages, side] =
            Layout::horizontal([Constraint::Min(20), Constraint::Length(34)]).areas(main);

        // Messages: the newest at the bottom.
        let height = messages.height.saturating_sub(2) as usize;
        let shown: Vec<ListItem> = self
            .lines
            .iter()
            .rev()
            .take(height)
            .rev()
            .map(|l| {
                let (who_style, text_style) = match l.kind {
                    Kind::Message => (
                        Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
                        Style::new(),
                    ),
                    Kind::Earlier => (
                        Style::new().fg(Color::DarkGray),
                        Style::new().fg(Color::DarkGray),
                    ),
                    Kind::Dm => (
                        Style::new().fg(Color::Magenta).add_modifier(Modifier::BOLD),
                        Style::new().fg(Color::Magenta),
                    ),
                    Kind::Notice => (
                        Style::new().fg(Color::Yellow),
                        Style::new().fg(Color::Yellow),
                    ),
                };
                ListItem::new(Line::from(vec![
                    Span::styled(format!("{} ", l.time), Style::new().fg(Color::DarkGray)),
                    Span::styled(
                        match &l.who {
                            Who::Peer(peer, nick) => {
                                format!("{}: ", self.name(peer, nick.as_ref()))
                            }
                            Who::Label(label) => format!("{label}: "),
                        },
                        who_style,
                    ),
                    Span::styled(l.text.clone(), text_style),
                ]))
            })
            .collect();
        let title = format!(" meshtalk · {} · times UTC ", self.room);
        frame.render_widget(
            List::new(shown).block(Block::new().borders(Borders::ALL).title(title)),
            messages,
        );

        // Members, then connections.
        let mut side_lines: Vec<Line> = vec![Line::styled(
            format!("members ({})", self.members.len()),
            Style::new().add_modifier(Modifier::BOLD),
        )];
        for peer in self.members.keys() {
            side_lines.push(Line::from(format!(" {}", self.name(peer, None))));
        }
        side_lines.push(Line::from(""));
        side_lines.push(Line::styled(
            format!("connections ({})", self.peers.len()),
            Style::new().add_modifier(Modifier::BOLD),
        ));
        for (peer, transport, rtt) in self.peers.list() {
            let rtt = rtt.map_or(String::new(), |ms| format!(" {ms:.1} ms"));
            side_lines.push(Line::from(format!(
                " {} {transport}{rtt}",
                self.name(peer, None)
            )));
        }
        if !self.transfers.is_empty() {
            side_lines.push(Line::from(""));
            side_lines.push(Line::styled(
                "files on their way",
                Style::new().add_modifier(Modifier::BOLD),
            ));
            for (name, received, size) in self.transfers.values() {
                let percent = (*received * 100).checked_div(*size).unwrap_or(0);
                side_lines.push(Line::from(format!(" {name} {percent}%")));
            }
        }
        frame.render_widget(
            Paragraph::new(side_lines)
                .wrap(Wrap { trim: false })
                .block(Block::new().borders(Borders::ALL)),
            side,
        );

        // The input line, scrolled so the cursor shows.
        let width = input.width.saturating_sub(2) as usize;
        let skip = self.input.cursor.saturating_sub(width.saturating_sub(1));
        let visible: String = self.input.text.chars().skip(skip).take(width).collect();
        let who = self.nick.clone().unwrap_or_else(|| short_id(&self.me));
        frame.render_widget(
            Paragraph::new(visible).block(
                Block::new()
                    .borders(Borders::ALL)
                    .title(format!(" {who} · Enter sends · /help ")),
            ),
            input,
        );
        frame.set_cursor_position(Position::new(
            input.x + 1 + (self.input.cursor - skip) as u16,
            input.y + 1,
        ));
    }
}

/// Puts the terminal back however we leave.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = disable_raw_mode();
        let _ = execute!(io::stdout(), LeaveAlternateScreen);
    }
}

/// Runs the terminal UI until `/quit` or Ctrl-C, then shuts the node down
/// (what is still queued goes out first).
pub async fn run(
    mut node: Node,
    room: Room,
    nick: Option<String>,
    early: Vec<Event>,
) -> Result<()> {
    enable_raw_mode()?;
    let restore = Restore;
    execute!(io::stdout(), EnterAlternateScreen)?;
    let mut terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;

    // Keys come from a thread of their own (crossterm reads block).
    let (keys_tx, mut keys) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        while let Ok(event) = event::read() {
            if keys_tx.send(event).is_err() {
                break;
            }
        }
    });

    let mut app = App::new(node.peer_id, room.clone(), nick);
    let mut room = room;
    for event in &early {
        app.on_event(event);
    }
    let mut shutting_down = false;
    loop {
        terminal.draw(|frame| app.draw(frame))?;
        tokio::select! {
            key = keys.recv() => match key {
                Some(TermEvent::Key(key)) => {
                    if let Some(line) = app.on_key(key) {
                        match commands::parse(&line) {
                            Ok(Some(typed)) if app.local(&typed) => {}
                            Ok(Some(typed)) => {
                                app.said(&typed);
                                if let Err(e) = commands::execute(&node, &mut room, typed).await {
                                    app.notice(e);
                                }
                            }
                            Ok(None) => {}
                            Err(e) => app.notice(e),
                        }
                    }
                }
                Some(_) => {}
                None => app.quit = true,
            },
            event = node.events.next() => match event {
                Some(event) => app.on_event(&event),
                None => break,
            },
        }
        if app.quit && !shutting_down {
            shutting_down = true;
            app.notice("leaving…".into());
            let _ = node.handle.shutdown().await;
        }
    }
    drop(terminal);
    drop(restore);
    let _ = node.task.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use meshtalk_protocol::{transport::Transport, wire::ChatMessage};
    use ratatui::backend::TestBackend;

    use super::*;

    fn screen(app: &App) -> String {
        let mut terminal = Terminal::new(TestBackend::new(100, 20)).expect("terminal");
        terminal.draw(|f| app.draw(f)).expect("draw");
        let buffer = terminal.backend().buffer().clone();
        (0..buffer.area.height)
            .map(|y| {
                (0..buffer.area.width)
                    .map(|x| buffer[(x, y)].symbol().to_owned())
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn typed(app: &mut App, text: &str) -> Option<String> {
        for c in text.chars() {
            app.on_key(key(KeyCode::Char(c)));
        }
        app.on_key(key(KeyCode::Enter))
    }

    #[test]
    fn messages_members_and_connections_show() {
        let me = PeerId::random();
        let ada = PeerId::random();
        let room = Room::new("lobby").expect("room");
        let mut app = App::new(me, room.clone(), Some("bob".into()));
        app.on_event(&Event::PeerJoined {
            room: room.clone(),
            peer: ada,
        });
        app.on_event(&Event::Nick {
            room: room.clone(),
            from: ada,
            nick: "ada".into(),
        });
        let mut message = ChatMessage::new("hello \u{1b}[2J bob");
        message.created_ms = 13 * 3_600_000 + 7 * 60_000;
        app.on_event(&Event::Message {
            room: room.clone(),
            from: ada,
            nick: None,
            message,
            history: false,
        });
        app.on_event(&Event::Ping {
            peer: ada,
            rtt: std::time::Duration::from_micros(1500),
            transport: Transport::Quic,
            addr: "/ip4/127.0.0.1/udp/1/quic-v1".parse().expect("addr"),
        });
        let shown = screen(&app);
        assert!(
            shown.contains("13:07 ada: hello \u{fffd}[2J bob"),
            "{shown}"
        );
        assert!(shown.contains("members (1)"), "{shown}");
        assert!(shown.contains(" ada quic 1.5 ms"), "{shown}");
        assert!(shown.contains("meshtalk · lobby"), "{shown}");
        // Another room's lines do not show here.
        app.on_event(&Event::Message {
            room: Room::new("elsewhere").expect("room"),
            from: ada,
            nick: None,
            message: ChatMessage::new("not here"),
            history: false,
        });
        assert!(!screen(&app).contains("not here"));
    }

    #[test]
    fn files_on_their_way_show_their_progress() {
        let ada = PeerId::random();
        let room = Room::lobby();
        let mut app = App::new(PeerId::random(), room.clone(), None);
        let offer = meshtalk_protocol::files::Offer {
            name: "photo.png".into(),
            size: 2048,
            sha256: FileHash([1; 32]),
            media_type: "image/png".into(),
            created_ms: 0,
        };
        app.on_event(&Event::FileOffered {
            room,
            from: ada,
            nick: Some("ada".into()),
            offer,
        });
        assert!(screen(&app).contains("ada: offers photo.png (2.0 KiB): /get 0101"));
        app.on_event(&Event::FileProgress {
            sha256: FileHash([1; 32]),
            received: 1024,
            size: 2048,
        });
        assert!(screen(&app).contains(" photo.png 50%"), "{}", screen(&app));
        app.on_event(&Event::FileSaved {
            sha256: FileHash([1; 32]),
            name: "photo.png".into(),
            saved: "/tmp/photo.png".into(),
        });
        let shown = screen(&app);
        assert!(
            !shown.contains("50%") && shown.contains("saved /tmp/photo.png"),
            "{shown}"
        );
    }

    #[test]
    fn the_input_line_edits_and_remembers() {
        let mut app = App::new(PeerId::random(), Room::lobby(), None);
        assert_eq!(typed(&mut app, "first"), Some("first".into()));
        assert_eq!(typed(&mut app, "second"), Some("second".into()));
        // Up twice brings back the first line; edit it in the middle.
        app.on_key(key(KeyCode::Up));
        app.on_key(key(KeyCode::Up));
        app.on_key(key(KeyCode::Home));
        app.on_key(key(KeyCode::Right));
        app.on_key(key(KeyCode::Delete));
        app.on_key(key(KeyCode::Char('I')));
        assert_eq!(app.on_key(key(KeyCode::Enter)), Some("fIrst".into()));
        // Down past the newest returns to what was being typed.
        app.on_key(key(KeyCode::Char('x')));
        app.on_key(key(KeyCode::Up));
        app.on_key(key(KeyCode::Down));
        assert!(screen(&app).contains("│x"), "{}", screen(&app));
        app.on_key(key(KeyCode::Backspace));
        assert_eq!(app.on_key(key(KeyCode::Enter)), Some(String::new()));
        app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
        assert!(app.quit);
    }

    #[test]
    fn local_commands_answer_on_screen() {
        let mut app = App::new(PeerId::random(), Room::lobby(), None);
        let line = typed(&mut app, "/help").expect("a line");
        let help = commands::parse(&line).expect("parses").expect("a command");
        assert!(app.local(&help));
        assert!(screen(&app).contains("/send PATH"));
        let quit = commands::parse("/quit")
            .expect("parses")
            .expect("a command");
        assert!(app.local(&quit) && app.quit);
        let say = commands::parse("hi").expect("parses").expect("a line");
        assert!(!app.local(&say));
        app.said(&say);
        assert!(screen(&app).contains("you: hi"));
    }
}
