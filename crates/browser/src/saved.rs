//! The page's history in IndexedDB (database `meshtalk`, store `history`):
//! the browser's side of the engine's history [`Journal`], as the relay's
//! database is the native one. A reload shows the room from here before the
//! network is back; the engine verifies every saved record as if a peer had
//! served it, so a tampered store shows nothing false.
//!
//! Keys are the hex of [`storage_key`] (so a room's records share a
//! prefix), values the signed records' protobuf. Writes go through a
//! channel to one task, a transaction per batch, so the engine never waits.

use futures::{StreamExt, channel::mpsc};
use js_sys::Uint8Array;
use meshtalk_protocol::{
    history::{
        SignedMessage,
        store::{Journal, Key, storage_key},
    },
    libp2p::gossipsub::TopicHash,
};
use prost::Message as _;
use rexie::{ObjectStore, Rexie, TransactionMode};
use wasm_bindgen::{JsCast, JsValue};

const DATABASE: &str = "meshtalk";
const STORE: &str = "history";

enum Change {
    Put(String, Vec<u8>),
    Delete(String),
}

/// Writes what the engine's history store keeps and drops to IndexedDB.
pub struct LocalJournal {
    changes: mpsc::UnboundedSender<Change>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Journal for LocalJournal {
    fn kept(&mut self, room: &TopicHash, key: &Key, record: &SignedMessage) {
        let _ = self.changes.unbounded_send(Change::Put(
            hex(&storage_key(room, key)),
            record.encode_to_vec(),
        ));
    }

    fn dropped(&mut self, room: &TopicHash, key: &Key) {
        let _ = self
            .changes
            .unbounded_send(Change::Delete(hex(&storage_key(room, key))));
    }
}

fn js_error(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Opens the page's saved history: the records, and the journal that keeps
/// them up to date. An error (IndexedDB refused, as in some private
/// windows) leaves the page without saved history, nothing worse.
pub async fn open() -> Result<(Vec<SignedMessage>, LocalJournal), String> {
    let db = Rexie::builder(DATABASE)
        .version(1)
        .add_object_store(ObjectStore::new(STORE))
        .build()
        .await
        .map_err(js_error)?;
    let records = read_all(&db).await?;
    let (changes, incoming) = mpsc::unbounded();
    wasm_bindgen_futures::spawn_local(write_loop(db, incoming));
    Ok((records, LocalJournal { changes }))
}

async fn read_all(db: &Rexie) -> Result<Vec<SignedMessage>, String> {
    let tx = db
        .transaction(&[STORE], TransactionMode::ReadOnly)
        .map_err(js_error)?;
    let store = tx.store(STORE).map_err(js_error)?;
    let values = store.get_all(None, None).await.map_err(js_error)?;
    let mut records = Vec::with_capacity(values.len());
    let mut damaged = 0;
    for value in values {
        match value
            .dyn_into::<Uint8Array>()
            .map(|bytes| SignedMessage::decode(bytes.to_vec().as_slice()))
        {
            Ok(Ok(record)) => records.push(record),
            _ => damaged += 1,
        }
    }
    if damaged > 0 {
        tracing::warn!(
            damaged,
            "saved history entries that do not decode were skipped"
        );
    }
    Ok(records)
}

/// Applies changes as they come, those waiting together in one
/// transaction.
async fn write_loop(db: Rexie, mut incoming: mpsc::UnboundedReceiver<Change>) {
    while let Some(first) = incoming.next().await {
        let mut batch = vec![first];
        while let Ok(change) = incoming.try_recv() {
            batch.push(change);
        }
        if let Err(e) = apply(&db, batch).await {
            tracing::warn!(error = %e, "history not saved in this browser");
        }
    }
}

async fn apply(db: &Rexie, batch: Vec<Change>) -> Result<(), String> {
    let tx = db
        .transaction(&[STORE], TransactionMode::ReadWrite)
        .map_err(js_error)?;
    let store = tx.store(STORE).map_err(js_error)?;
    for change in batch {
        match change {
            Change::Put(key, value) => {
                let value: JsValue = Uint8Array::from(value.as_slice()).into();
                store
                    .put(&value, Some(&JsValue::from_str(&key)))
                    .await
                    .map_err(js_error)?;
            }
            Change::Delete(key) => {
                store
                    .delete(JsValue::from_str(&key))
                    .await
                    .map_err(js_error)?;
            }
        }
    }
    tx.done().await.map_err(js_error)?;
    Ok(())
}
