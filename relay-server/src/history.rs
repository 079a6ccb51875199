//! Room history on disk: `history.redb` in the data directory, an embedded
//! ACID database (redb). The engine's history store tells a [`DiskJournal`]
//! what it keeps and drops; a writer thread commits those in batches (at
//! most [`BATCH_WAIT`] after they happen, each commit durable on return),
//! so the engine's loop never waits for the disk. At start the relay loads
//! every saved record, and the engine verifies each as if a peer served it.
//!
//! A file that is not a readable database (damaged, or not ours) is moved
//! aside to `history.redb.corrupt-<unix time>` with a warning and a fresh
//! one is started: a relay should come back up, and the old file stays for
//! whoever wants to look at it. A database another process holds open is an
//! error: two relays must not share a data directory.

use std::{
    path::{Path, PathBuf},
    sync::mpsc,
    thread::{self, JoinHandle},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use meshtalk_protocol::{
    history::{
        SignedMessage,
        store::{Journal, Key, storage_key},
    },
    libp2p::gossipsub::TopicHash,
};
use prometheus_client::metrics::counter::Counter;
use prost::Message as _;
use redb::{Database, DatabaseError, ReadableTable, StorageError, TableDefinition};

/// The one table: an encoded [`Key`] (room included) to a record.
const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
/// The database file in the data directory.
pub const FILE: &str = "history.redb";
/// Longest a change waits for its commit.
const BATCH_WAIT: Duration = Duration::from_millis(50);
/// Most changes in one commit.
const BATCH_MAX: usize = 2000;

enum Change {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// The database's side of the engine's history store.
pub struct DiskJournal {
    changes: mpsc::Sender<Change>,
}

/// The thread that writes the database; it ends once the journal is
/// dropped (the engine stopped) and every change is committed.
pub struct Writer(JoinHandle<()>);

impl Writer {
    /// Waits until every change is on disk.
    pub fn finish(self) {
        if self.0.join().is_err() {
            tracing::error!("the history writer failed");
        }
    }
}

/// Opens (or creates) the history database in `data_dir`: the saved
/// records, the journal that keeps the database up to date, and its
/// writer, which counts the records it saves in `saved`.
pub fn open(data_dir: &Path, saved: Counter) -> Result<(Vec<SignedMessage>, DiskJournal, Writer)> {
    let path = data_dir.join(FILE);
    let db = match Database::create(&path) {
        Ok(db) => db,
        Err(DatabaseError::Storage(damage)) if is_damage(&damage) => {
            let why = damage.to_string();
            let aside = move_aside(&path)?;
            tracing::warn!(
                file = %path.display(),
                moved_to = %aside.display(),
                reason = %why,
                "the history database is damaged; it was moved aside and a new one started"
            );
            Database::create(&path)
                .with_context(|| format!("cannot create the history database {}", path.display()))?
        }
        Err(DatabaseError::DatabaseAlreadyOpen) => bail!(
            "the history database {} is open in another process: is another relay using this data directory?",
            path.display()
        ),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot open the history database {}", path.display()));
        }
    };
    let records = read_all(&db).with_context(|| format!("cannot read {}", path.display()))?;
    let (changes, incoming) = mpsc::channel();
    let writer = thread::Builder::new()
        .name("history-writer".into())
        .spawn(move || write_loop(&db, &incoming, &saved, &path))
        .context("cannot start the history writer")?;
    Ok((records, DiskJournal { changes }, Writer(writer)))
}

/// Whether opening failed on the file's content (rather than, say,
/// permissions).
fn is_damage(error: &StorageError) -> bool {
    match error {
        StorageError::Corrupted(_) => true,
        StorageError::Io(e) => e.kind() == std::io::ErrorKind::InvalidData,
        _ => false,
    }
}

fn move_aside(path: &Path) -> Result<PathBuf> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let aside = path.with_file_name(format!("{FILE}.corrupt-{secs}"));
    std::fs::rename(path, &aside)
        .with_context(|| format!("cannot move the damaged {} aside", path.display()))?;
    Ok(aside)
}

fn read_all(db: &Database) -> Result<Vec<SignedMessage>> {
    let read = db.begin_read()?;
    let table = match read.open_table(RECORDS) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut saved = Vec::new();
    let mut undecodable = 0;
    for entry in table.iter()? {
        let (_, value) = entry?;
        match SignedMessage::decode(value.value()) {
            Ok(record) => saved.push(record),
            Err(_) => undecodable += 1,
        }
    }
    if undecodable > 0 {
        tracing::warn!(
            undecodable,
            "history records that do not decode were skipped"
        );
    }
    Ok(saved)
}

/// Commits changes as they come, a batch at a time, until the relay stops.
fn write_loop(db: &Database, incoming: &mpsc::Receiver<Change>, saved: &Counter, path: &Path) {
    while let Ok(first) = incoming.recv() {
        let mut batch = vec![first];
        let deadline = Instant::now() + BATCH_WAIT;
        while batch.len() < BATCH_MAX {
            let left = deadline.saturating_duration_since(Instant::now());
            match incoming.recv_timeout(left) {
                Ok(change) => batch.push(change),
                Err(_) => break,
            }
        }
        let puts = batch
            .iter()
            .filter(|c| matches!(c, Change::Put(..)))
            .count() as u64;
        match commit(db, &batch) {
            Ok(()) => {
                saved.inc_by(puts);
            }
            Err(e) => tracing::error!(
                file = %path.display(),
                error = %e,
                changes = batch.len(),
                "history not saved"
            ),
        }
    }
}

fn commit(db: &Database, batch: &[Change]) -> anyhow::Result<()> {
    let write = db.begin_write()?;
    {
        let mut table = write.open_table(RECORDS)?;
        for change in batch {
            match change {
                Change::Put(key, value) => {
                    table.insert(key.as_slice(), value.as_slice())?;
                }
                Change::Delete(key) => {
                    table.remove(key.as_slice())?;
                }
            }
        }
    }
    write.commit()?;
    Ok(())
}

impl Journal for DiskJournal {
    fn kept(&mut self, room: &TopicHash, key: &Key, record: &SignedMessage) {
        let _ = self
            .changes
            .send(Change::Put(storage_key(room, key), record.encode_to_vec()));
    }

    fn dropped(&mut self, room: &TopicHash, key: &Key) {
        let _ = self.changes.send(Change::Delete(storage_key(room, key)));
    }
}
