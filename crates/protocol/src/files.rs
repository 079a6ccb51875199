//! File sharing: offers on a room's files topic, bytes on
//! `/meshtalk/file/1.0.0`.
//!
//! ```proto
//! // On the gossipsub topic `meshtalk/files/<room>`, signed by the author.
//! message FileOffer {
//!   optional string name = 1;        // the file's name, no directories
//!   optional uint64 size = 2;        // bytes
//!   optional bytes sha256 = 3;       // 32 bytes, the whole file's hash
//!   optional string media_type = 4;  // e.g. "image/png"
//!   optional int64 created_ms = 5;   // when it was offered
//! }
//! // On a stream: the asker writes a request, the holder an answer and,
//! // unless it is an error, the bytes from `offset` to the end as chunks
//! // of at most 64 KiB, then closes.
//! message FileRequest  { optional bytes sha256 = 1; optional uint64 offset = 2; }
//! message FileResponse { optional uint64 size = 1; optional string error = 2; }
//! message FileChunk    { optional bytes data = 1; }
//! ```
//!
//! Each stream message is varint-length-prefixed ([`crate::framing`]).
//! A peer that fetched and verified a file offers it again: the offer
//! tells the room one more peer holds it, and the bytes can come from any
//! holder (a transfer cut off goes on from the next holder, from where it
//! stopped). Bytes are hashed as they arrive and the file is given to the
//! user only when the SHA-256 matches; memory stays one chunk per transfer
//! whatever the size.
//!
//! [`Files`] drives the streams for the engine; the engine keeps the
//! offers and decides what to fetch from whom. It also speaks
//! universal-connectivity's file exchange ([`crate::uc::FILE_PROTOCOL`]):
//! it serves what we announced there and fetches what its peers announce.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{
    AsyncWriteExt, FutureExt, StreamExt,
    channel::mpsc,
    stream::{FuturesUnordered, SelectAll},
};
use libp2p::{PeerId, Stream, StreamProtocol, gossipsub::IdentTopic, gossipsub::TopicHash};
use libp2p_stream::Control;
use prost::Message as _;
use sha2::{Digest, Sha256};

use crate::{
    arch::files::{Download, FileSource, Saved, Task, task},
    framing::{
        Inbound, Next, PerMinute, accept, next_inbound, next_of, read_length, read_message, within,
        write_length, write_message,
    },
    rooms::Room,
    uc,
    validate::{self, MAX_FUTURE},
};

/// The file protocol id.
pub const FILE_PROTOCOL: StreamProtocol = StreamProtocol::new("/meshtalk/file/1.0.0");
/// Prefix of a room's files topic.
pub const FILES_TOPIC_PREFIX: &str = "meshtalk/files/";
/// Largest file fetched unless configured otherwise: 100 MiB.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 100 * 1024 * 1024;
/// Largest chunk on the wire.
pub const CHUNK: usize = 64 * 1024;
/// Longest file name, in bytes.
pub const MAX_NAME_BYTES: usize = 255;
/// Longest media type, in bytes.
pub const MAX_MEDIA_TYPE_BYTES: usize = 127;
/// Transfers one peer may ask of us in a minute.
pub const REQUESTS_PER_MINUTE: u32 = 60;
/// How long a holder may stay silent (no answer, no chunk).
const SILENCE: Duration = Duration::from_secs(20);
/// Progress is reported every this much of a file (and at the end), or
/// every chunk for small files.
const PROGRESS_STEPS: u64 = 20;

/// A file's SHA-256.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileHash(pub [u8; 32]);

impl fmt::Display for FileHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for FileHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileHash({self})")
    }
}

impl std::str::FromStr for FileHash {
    type Err = String;

    /// 64 hexadecimal digits.
    fn from_str(s: &str) -> Result<Self, String> {
        let bytes = hex::decode(s.trim())
            .map_err(|_| format!("{s:?} is not a SHA-256 (64 hexadecimal digits)"))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| format!("{s:?} is not a SHA-256 (64 hexadecimal digits)"))?;
        Ok(Self(bytes))
    }
}

/// The files topic of `room`: `meshtalk/files/<room>`.
pub fn topic(room: &Room) -> IdentTopic {
    IdentTopic::new(format!("{FILES_TOPIC_PREFIX}{}", room.name()))
}

/// The room whose files topic `topic` is, if it is one.
pub fn room_of(topic: &TopicHash) -> Option<Room> {
    Room::new(topic.as_str().strip_prefix(FILES_TOPIC_PREFIX)?).ok()
}

/// A file offer on the wire.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct FileOffer {
    /// The file's name.
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// Its size in bytes.
    #[prost(uint64, optional, tag = "2")]
    pub size: Option<u64>,
    /// Its SHA-256, 32 bytes.
    #[prost(bytes = "vec", optional, tag = "3")]
    pub sha256: Option<Vec<u8>>,
    /// Its media type.
    #[prost(string, optional, tag = "4")]
    pub media_type: Option<String>,
    /// When it was offered, ms since the Unix epoch.
    #[prost(int64, optional, tag = "5")]
    pub created_ms: Option<i64>,
}

/// A checked offer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    /// The name, sanitised ([`sanitise`]).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// The whole file's SHA-256.
    pub sha256: FileHash,
    /// Media type (`application/octet-stream` when unknown).
    pub media_type: String,
    /// When it was offered.
    pub created_ms: i64,
}

/// Why an offer is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    /// Not a protobuf `FileOffer`.
    #[error("undecodable file offer: {0}")]
    Malformed(String),
    /// A field is absent.
    #[error("file offer without {0}")]
    Missing(&'static str),
    /// The hash is not 32 bytes.
    #[error("file hash of {0} bytes, not 32")]
    BadHash(usize),
    /// The name is too long, or nothing is left of it once sanitised.
    #[error("unusable file name")]
    BadName,
    /// The media type is too long or not printable ASCII.
    #[error("unusable media type")]
    BadMediaType,
    /// `created` is too far ahead.
    #[error("file offer from the future")]
    FromTheFuture,
}

impl Offer {
    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        FileOffer {
            name: Some(self.name.clone()),
            size: Some(self.size),
            sha256: Some(self.sha256.0.to_vec()),
            media_type: Some(self.media_type.clone()),
            created_ms: Some(self.created_ms),
        }
        .encode_to_vec()
    }

    /// Decodes and checks an offer; its name comes back sanitised.
    pub fn decode(bytes: &[u8], now_ms: i64) -> Result<Self, OfferError> {
        let wire = FileOffer::decode(bytes).map_err(|e| OfferError::Malformed(e.to_string()))?;
        let name = wire.name.ok_or(OfferError::Missing("name"))?;
        let size = wire.size.ok_or(OfferError::Missing("size"))?;
        let hash = wire.sha256.ok_or(OfferError::Missing("sha256"))?;
        let created_ms = wire.created_ms.ok_or(OfferError::Missing("created_ms"))?;
        let hash: [u8; 32] = hash
            .as_slice()
            .try_into()
            .map_err(|_| OfferError::BadHash(hash.len()))?;
        if name.len() > MAX_NAME_BYTES {
            return Err(OfferError::BadName);
        }
        let name = sanitise(&name).ok_or(OfferError::BadName)?;
        let media_type = wire
            .media_type
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "application/octet-stream".into());
        if media_type.len() > MAX_MEDIA_TYPE_BYTES
            || !media_type.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(OfferError::BadMediaType);
        }
        if created_ms > now_ms.saturating_add(MAX_FUTURE.as_millis() as i64) {
            return Err(OfferError::FromTheFuture);
        }
        Ok(Self {
            name,
            size,
            sha256: FileHash(hash),
            media_type,
            created_ms,
        })
    }

    /// Whether it is an image a page may show inline.
    pub fn is_image(&self) -> bool {
        matches!(
            self.media_type.as_str(),
            "image/png" | "image/jpeg" | "image/gif" | "image/webp" | "image/avif" | "image/bmp"
        )
    }
}

/// A name that is safe to save under in any directory: only its last
/// path component, without control characters, not `.` or `..`, not
/// starting with a dot, at most [`MAX_NAME_BYTES`]. `None` when nothing
/// is left.
pub fn sanitise(name: &str) -> Option<String> {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, ':' | '*' | '?' | '"' | '<' | '>' | '|'))
        .collect();
    let cleaned = cleaned.trim_start_matches(|c: char| c == '.' || c.is_whitespace());
    let mut end = cleaned.len().min(MAX_NAME_BYTES);
    while !cleaned.is_char_boundary(end) {
        end -= 1;
    }
    let cleaned = cleaned[..end].trim_end();
    (!cleaned.is_empty()).then(|| cleaned.to_owned())
}

/// A media type for a file name, from its extension.
pub fn media_type_of(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("txt" | "md") => "text/plain",
        Some("pdf") => "application/pdf",
        Some("json") => "application/json",
        Some("zip") => "application/zip",
        _ => "application/octet-stream",
    }
}

/// A media type for a file's first bytes, for files announced without one
/// (universal-connectivity's): the image formats a page shows, PDF, or
/// `application/octet-stream`.
pub fn sniff_media_type(head: &[u8]) -> &'static str {
    match head {
        [0x89, b'P', b'N', b'G', ..] => "image/png",
        [0xff, 0xd8, 0xff, ..] => "image/jpeg",
        [b'G', b'I', b'F', b'8', ..] => "image/gif",
        [
            b'R',
            b'I',
            b'F',
            b'F',
            _,
            _,
            _,
            _,
            b'W',
            b'E',
            b'B',
            b'P',
            ..,
        ] => "image/webp",
        [b'%', b'P', b'D', b'F', ..] => "application/pdf",
        _ => "application/octet-stream",
    }
}

/// A size for people: `292.9 KiB`.
pub fn size_text(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Reads `source` through and describes it for an offer.
pub async fn describe(source: &FileSource, name: &str, media_type: &str) -> std::io::Result<Offer> {
    let name = sanitise(name).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "unusable file name")
    })?;
    let mut reader = source.reader(0)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    loop {
        let chunk = reader.read(CHUNK * 4).await?;
        if chunk.is_empty() {
            break;
        }
        size += chunk.len() as u64;
        hasher.update(&chunk);
    }
    Ok(Offer {
        name,
        size,
        sha256: FileHash(hasher.finalize().into()),
        media_type: media_type.to_owned(),
        created_ms: validate::now_ms(),
    })
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
struct FileRequest {
    #[prost(bytes = "vec", optional, tag = "1")]
    sha256: Option<Vec<u8>>,
    #[prost(uint64, optional, tag = "2")]
    offset: Option<u64>,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
struct FileResponse {
    #[prost(uint64, optional, tag = "1")]
    size: Option<u64>,
    #[prost(string, optional, tag = "2")]
    error: Option<String>,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
struct FileChunk {
    #[prost(bytes = "vec", optional, tag = "1")]
    data: Option<Vec<u8>>,
}

/// What the file streams did.
#[derive(Debug)]
pub(crate) enum FileEvent {
    /// More of a file arrived.
    Progress {
        sha256: FileHash,
        received: u64,
        size: u64,
    },
    /// A file arrived whole and matched its hash.
    Fetched { sha256: FileHash, saved: Saved },
    /// A fetch gave up.
    FetchFailed { sha256: FileHash, error: String },
    /// We sent (part of) a file.
    Served {
        to: PeerId,
        sha256: FileHash,
        bytes: u64,
    },
    /// A request for a file was not served.
    NotServed { to: PeerId, reason: String },
    /// A file a universal-connectivity peer announced arrived; `offer`
    /// describes it as we would have (its name is the sanitised id).
    UcFetched {
        from: PeerId,
        offer: Offer,
        saved: Saved,
    },
    /// A file a universal-connectivity peer announced did not arrive.
    UcFetchFailed {
        from: PeerId,
        id: String,
        error: String,
    },
}

/// Serves the files we offer and fetches others'.
pub(crate) struct Files {
    control: Control,
    incoming: Option<Inbound>,
    /// Requests on universal-connectivity's protocol.
    uc_incoming: Option<Inbound>,
    tasks: FuturesUnordered<Task>,
    reports: SelectAll<mpsc::UnboundedReceiver<FileEvent>>,
    report: mpsc::UnboundedSender<FileEvent>,
    /// What we serve, by hash.
    shared: Arc<Mutex<HashMap<FileHash, FileSource>>>,
    asked: PerMinute,
}

impl Files {
    /// Takes over both file protocols on `control`.
    pub(crate) fn new(mut control: Control) -> Self {
        let incoming = accept(&mut control, FILE_PROTOCOL);
        let uc_incoming = accept(&mut control, uc::FILE_PROTOCOL);
        let (report, reports) = mpsc::unbounded();
        let mut all = SelectAll::new();
        all.push(reports);
        Self {
            control,
            incoming,
            uc_incoming,
            tasks: FuturesUnordered::new(),
            reports: all,
            report,
            shared: Arc::default(),
            asked: PerMinute::new(REQUESTS_PER_MINUTE),
        }
    }

    /// Serves `source` as the file `sha256`.
    pub(crate) fn share(&mut self, sha256: FileHash, source: FileSource) {
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(sha256, source);
    }

    /// Whether we serve `sha256`.
    pub(crate) fn holds(&self, sha256: &FileHash) -> bool {
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(sha256)
    }

    /// Fetches `offer` from `holders` in turn into `download`.
    pub(crate) fn fetch(&mut self, offer: &Offer, holders: Vec<PeerId>, download: Download) {
        let control = self.control.clone();
        let report = self.report.clone();
        let offer = offer.clone();
        self.tasks.push(task(async move {
            let sha256 = offer.sha256;
            let event = match fetch(control, &offer, holders, download, &report).await {
                Ok(saved) => FileEvent::Fetched { sha256, saved },
                Err(error) => FileEvent::FetchFailed { sha256, error },
            };
            let _ = report.unbounded_send(event);
        }));
    }

    /// Fetches the file `id` that `from` announced on universal-
    /// connectivity's topic, if it is at most `limit` bytes.
    pub(crate) fn fetch_uc(&mut self, from: PeerId, id: String, limit: u64, download: Download) {
        let control = self.control.clone();
        let report = self.report.clone();
        self.tasks.push(task(async move {
            let event = match fetch_uc(control, from, &id, limit, download).await {
                Ok((offer, saved)) => FileEvent::UcFetched { from, offer, saved },
                Err(error) => FileEvent::UcFetchFailed { from, id, error },
            };
            let _ = report.unbounded_send(event);
        }));
    }

    fn serve(&mut self, from: PeerId, stream: Stream, uc: bool) {
        let shared = self.shared.clone();
        let report = self.report.clone();
        self.tasks.push(task(async move {
            let served = if uc {
                serve_uc(stream, &shared).await
            } else {
                serve(stream, &shared).await
            };
            let event = match served {
                Ok((sha256, bytes)) => FileEvent::Served {
                    to: from,
                    sha256,
                    bytes,
                },
                Err(reason) => FileEvent::NotServed { to: from, reason },
            };
            let _ = report.unbounded_send(event);
        }));
    }

    /// The next thing that happened. Pending forever when there is nothing
    /// to do, so it can sit in a `select!`.
    pub(crate) async fn next(&mut self) -> FileEvent {
        loop {
            let (peer, stream, uc) = {
                let transfers = next_of(&mut self.incoming, &mut self.tasks);
                let uc_asked = next_inbound(&mut self.uc_incoming);
                futures::select! {
                    next = transfers.fuse() => match next {
                        Next::Inbound(peer, stream) => (peer, *stream, false),
                        Next::Done(()) => continue,
                    },
                    (peer, stream) = uc_asked.fuse() => (peer, stream, true),
                    event = self.reports.select_next_some() => return event,
                }
            };
            if self.asked.allow(peer) {
                self.serve(peer, stream, uc);
            } else {
                drop(stream);
                return FileEvent::NotServed {
                    to: peer,
                    reason: "too many file requests".into(),
                };
            }
        }
    }
}

/// Answers one request on `stream`.
async fn serve(
    mut stream: Stream,
    shared: &Mutex<HashMap<FileHash, FileSource>>,
) -> Result<(FileHash, u64), String> {
    let bytes = within(SILENCE, async {
        read_message(&mut stream, 128)
            .await
            .map_err(|e| e.to_string())
    })
    .await?;
    let request = FileRequest::decode(bytes.as_slice()).map_err(|e| format!("undecodable: {e}"))?;
    let hash: [u8; 32] = request
        .sha256
        .as_deref()
        .and_then(|h| h.try_into().ok())
        .ok_or("no valid hash asked for")?;
    let sha256 = FileHash(hash);
    let offset = request.offset.unwrap_or(0);
    let source = shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&sha256)
        .cloned();
    // The file, its size, and a reader at the offset; or why not.
    let opened = async {
        let source = source.ok_or_else(|| format!("{sha256} is not shared here"))?;
        let size = source
            .size()
            .await
            .map_err(|e| format!("cannot read the file: {e}"))?;
        let reader = source
            .reader(offset.min(size))
            .map_err(|e| format!("cannot read the file: {e}"))?;
        Ok::<_, String>((size, reader))
    }
    .await;
    let response = match &opened {
        Ok((size, _)) => FileResponse {
            size: Some(*size),
            error: None,
        },
        Err(error) => FileResponse {
            size: None,
            error: Some(error.clone()),
        },
    };
    within(SILENCE, async {
        write_message(&mut stream, &response.encode_to_vec())
            .await
            .map_err(|e| e.to_string())
    })
    .await?;
    let (_, mut reader) = match opened {
        Ok(opened) => opened,
        Err(error) => {
            let _ = stream.close().await;
            return Err(error);
        }
    };
    let mut sent = 0u64;
    loop {
        let data = reader.read(CHUNK - 16).await.map_err(|e| e.to_string())?;
        if data.is_empty() {
            break;
        }
        sent += data.len() as u64;
        let chunk = FileChunk { data: Some(data) }.encode_to_vec();
        within(SILENCE, async {
            write_message(&mut stream, &chunk)
                .await
                .map_err(|e| e.to_string())
        })
        .await?;
    }
    let _ = stream.close().await;
    Ok((sha256, sent))
}

/// Answers one request on universal-connectivity's protocol: the id (our
/// files' SHA-256 in hex), answered by the whole file, length-prefixed.
/// There is no error answer: a request for anything else is closed
/// unanswered.
async fn serve_uc(
    mut stream: Stream,
    shared: &Mutex<HashMap<FileHash, FileSource>>,
) -> Result<(FileHash, u64), String> {
    let request = within(SILENCE, async {
        read_message(&mut stream, uc::MAX_FILE_ID)
            .await
            .map_err(|e| e.to_string())
    })
    .await?;
    let found = uc::check_file_id(&request)
        .map_err(|e| e.to_string())
        .and_then(|id| id.parse::<FileHash>())
        .and_then(|sha256| {
            shared
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&sha256)
                .cloned()
                .map(|source| (sha256, source))
                .ok_or_else(|| format!("{sha256} is not shared here"))
        });
    let (sha256, source) = match found {
        Ok(found) => found,
        Err(error) => {
            let _ = stream.close().await;
            return Err(error);
        }
    };
    let size = source
        .size()
        .await
        .map_err(|e| format!("cannot read the file: {e}"))?;
    if size > uc::MAX_FILE {
        let _ = stream.close().await;
        return Err(format!("{sha256} is larger than its peers take"));
    }
    let mut reader = source
        .reader(0)
        .map_err(|e| format!("cannot read the file: {e}"))?;
    within(SILENCE, async {
        write_length(&mut stream, size)
            .await
            .map_err(|e| e.to_string())
    })
    .await?;
    let mut sent = 0u64;
    while sent < size {
        let data = reader
            .read(CHUNK.min((size - sent) as usize))
            .await
            .map_err(|e| e.to_string())?;
        if data.is_empty() {
            return Err("the file shrank while it was sent".into());
        }
        sent += data.len() as u64;
        within(SILENCE, async {
            stream.write_all(&data).await.map_err(|e| e.to_string())
        })
        .await?;
    }
    let _ = stream.close().await;
    Ok((sha256, sent))
}

/// Fetches the file `id` from `from` on universal-connectivity's protocol
/// into `download`, hashing it on the way; at most `limit` bytes.
async fn fetch_uc(
    mut control: Control,
    from: PeerId,
    id: &str,
    limit: u64,
    mut download: Download,
) -> Result<(Offer, Saved), String> {
    let fetched = async {
        let mut stream = open(&mut control, from, uc::FILE_PROTOCOL).await?;
        write_message(&mut stream, id.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let size = within(SILENCE, async {
            read_length(&mut stream).await.map_err(|e| e.to_string())
        })
        .await?;
        if size > limit {
            return Err(format!(
                "it is {}, more than the {} taken",
                size_text(size),
                size_text(limit)
            ));
        }
        let mut hasher = Sha256::new();
        let mut head = Vec::new();
        let mut received = 0u64;
        let mut buf = vec![0; CHUNK];
        while received < size {
            let want = buf.len().min((size - received) as usize);
            let n = within(SILENCE, async {
                futures::AsyncReadExt::read(&mut stream, &mut buf[..want])
                    .await
                    .map_err(|e| e.to_string())
            })
            .await?;
            if n == 0 {
                return Err(format!(
                    "cut off after {} of {}",
                    size_text(received),
                    size_text(size)
                ));
            }
            let data = &buf[..n];
            if head.len() < 16 {
                head.extend_from_slice(&data[..n.min(16 - head.len())]);
            }
            hasher.update(data);
            download
                .write(data)
                .map_err(|e| format!("cannot save it: {e}"))?;
            received += n as u64;
        }
        let _ = stream.close().await;
        Ok((size, FileHash(hasher.finalize().into()), head))
    }
    .await;
    let (size, sha256, head) = match fetched {
        Ok(fetched) => fetched,
        Err(error) => {
            download.discard();
            return Err(error);
        }
    };
    let media_type = sniff_media_type(&head);
    let saved = download
        .finish(media_type)
        .map_err(|e| format!("cannot save it: {e}"))?;
    let offer = Offer {
        name: sanitise(id).unwrap_or_else(|| "file".into()),
        size,
        sha256,
        media_type: media_type.to_owned(),
        created_ms: validate::now_ms(),
    };
    Ok((offer, saved))
}

/// A stream of `protocol` to `holder`. A holder we are not connected to
/// is being dialed (by the engine, through a relay circuit): this tries
/// again until that is done, for [`SILENCE`] at most.
async fn open(
    control: &mut Control,
    holder: PeerId,
    protocol: StreamProtocol,
) -> Result<Stream, String> {
    within(SILENCE, async {
        loop {
            match control.open_stream(holder, protocol.clone()).await {
                Ok(stream) => return Ok(stream),
                Err(libp2p_stream::OpenStreamError::UnsupportedProtocol(_)) => {
                    return Err(format!("does not serve files on {protocol}"));
                }
                Err(e) => {
                    tracing::debug!(%holder, error = %e, "file: no stream yet");
                    crate::clock::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    })
    .await
}

/// Fetches `offer` from `holders` in turn, going on where the last one
/// stopped; checks the hash at the end.
async fn fetch(
    mut control: Control,
    offer: &Offer,
    holders: Vec<PeerId>,
    mut download: Download,
    report: &mpsc::UnboundedSender<FileEvent>,
) -> Result<Saved, String> {
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    let mut last_error = "nobody holds it".to_owned();
    for holder in holders {
        if received == offer.size {
            break;
        }
        match fetch_from(
            &mut control,
            holder,
            offer,
            &mut received,
            &mut hasher,
            &mut download,
            report,
        )
        .await
        {
            Ok(()) => break,
            Err(error) => {
                tracing::debug!(%holder, sha256 = %offer.sha256, %error, "file fetch cut off");
                last_error = format!("{holder}: {error}");
            }
        }
    }
    if received < offer.size {
        download.discard();
        return Err(last_error);
    }
    let got: [u8; 32] = hasher.finalize().into();
    if got != offer.sha256.0 {
        download.discard();
        return Err(format!(
            "refused: the bytes received hash to {}, not {}",
            FileHash(got),
            offer.sha256
        ));
    }
    download
        .finish(&offer.media_type)
        .map_err(|e| format!("cannot save it: {e}"))
}

/// Takes what `holder` sends of `offer` from `received` on.
async fn fetch_from(
    control: &mut Control,
    holder: PeerId,
    offer: &Offer,
    received: &mut u64,
    hasher: &mut Sha256,
    download: &mut Download,
    report: &mpsc::UnboundedSender<FileEvent>,
) -> Result<(), String> {
    let mut stream = open(control, holder, FILE_PROTOCOL).await?;
    let request = FileRequest {
        sha256: Some(offer.sha256.0.to_vec()),
        offset: Some(*received),
    };
    let quiet = |e: std::io::Error| e.to_string();
    write_message(&mut stream, &request.encode_to_vec())
        .await
        .map_err(quiet)?;
    let bytes = within(SILENCE, async {
        read_message(&mut stream, 1024).await.map_err(quiet)
    })
    .await?;
    let response =
        FileResponse::decode(bytes.as_slice()).map_err(|e| format!("undecodable answer: {e}"))?;
    if let Some(error) = response.error {
        return Err(error);
    }
    if response.size != Some(offer.size) {
        return Err(format!(
            "holds {} bytes, not the {} offered",
            response.size.unwrap_or(0),
            offer.size
        ));
    }
    let step = (offer.size / PROGRESS_STEPS).max(CHUNK as u64);
    let mut reported = *received;
    while *received < offer.size {
        let bytes = within(SILENCE, async {
            read_message(&mut stream, CHUNK).await.map_err(quiet)
        })
        .await?;
        let data = FileChunk::decode(bytes.as_slice())
            .map_err(|e| format!("undecodable chunk: {e}"))?
            .data
            .unwrap_or_default();
        if data.is_empty() || data.len() as u64 > offer.size - *received {
            return Err("sent more than the file holds".into());
        }
        download
            .write(&data)
            .map_err(|e| format!("cannot save it: {e}"))?;
        hasher.update(&data);
        *received += data.len() as u64;
        if *received - reported >= step || *received == offer.size {
            reported = *received;
            let _ = report.unbounded_send(FileEvent::Progress {
                sha256: offer.sha256,
                received: *received,
                size: offer.size,
            });
        }
    }
    let _ = stream.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn offer() -> Offer {
        Offer {
            name: "cat.png".into(),
            size: 300_000,
            sha256: FileHash([7; 32]),
            media_type: "image/png".into(),
            created_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn an_offer_round_trips_and_bad_ones_are_refused() {
        let now = 1_700_000_000_000;
        assert_eq!(Offer::decode(&offer().encode(), now), Ok(offer()));
        let mut wire = FileOffer::decode(offer().encode().as_slice()).expect("decodes");
        wire.sha256 = Some(vec![1; 31]);
        assert_eq!(
            Offer::decode(&wire.encode_to_vec(), now),
            Err(OfferError::BadHash(31))
        );
        let mut wire = FileOffer::decode(offer().encode().as_slice()).expect("decodes");
        wire.name = Some("../..".into());
        assert_eq!(
            Offer::decode(&wire.encode_to_vec(), now),
            Err(OfferError::BadName)
        );
        let mut wire = FileOffer::decode(offer().encode().as_slice()).expect("decodes");
        wire.media_type = Some("text/html; <script>".into());
        assert_eq!(
            Offer::decode(&wire.encode_to_vec(), now),
            Err(OfferError::BadMediaType)
        );
        let mut wire = FileOffer::decode(offer().encode().as_slice()).expect("decodes");
        wire.size = None;
        assert_eq!(
            Offer::decode(&wire.encode_to_vec(), now),
            Err(OfferError::Missing("size"))
        );
        assert!(matches!(
            Offer::decode(&[0xff, 0xff], now),
            Err(OfferError::Malformed(_))
        ));
    }

    #[test]
    fn names_are_sanitised() {
        assert_eq!(sanitise("../../etc/passwd").as_deref(), Some("passwd"));
        assert_eq!(sanitise("..\\..\\boot.ini").as_deref(), Some("boot.ini"));
        assert_eq!(sanitise("/abs/path/x.txt").as_deref(), Some("x.txt"));
        assert_eq!(sanitise(".bashrc").as_deref(), Some("bashrc"));
        assert_eq!(sanitise("a\u{0}b\nc.txt").as_deref(), Some("abc.txt"));
        assert_eq!(sanitise(".."), None);
        assert_eq!(sanitise("dir/"), None);
        assert_eq!(
            sanitise("ünïcødé ok.txt").as_deref(),
            Some("ünïcødé ok.txt")
        );
    }

    #[test]
    fn media_types_are_sniffed_from_the_first_bytes() {
        assert_eq!(sniff_media_type(b"\x89PNG\r\n\x1a\n"), "image/png");
        assert_eq!(sniff_media_type(&[0xff, 0xd8, 0xff, 0xe0]), "image/jpeg");
        assert_eq!(sniff_media_type(b"RIFF\0\0\0\0WEBPVP8 "), "image/webp");
        assert_eq!(
            sniff_media_type(b"RIFF\0\0\0\0WAVE"),
            "application/octet-stream"
        );
        assert_eq!(sniff_media_type(b""), "application/octet-stream");
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(size_text(512), "512 B");
        assert_eq!(size_text(300_000), "293.0 KiB");
        assert_eq!(size_text(50 * 1024 * 1024), "50.0 MiB");
    }

    #[test]
    fn hashes_parse_from_hex() {
        let hash = FileHash([0xab; 32]);
        assert_eq!(hash.to_string().parse::<FileHash>(), Ok(hash));
        assert!("abc".parse::<FileHash>().is_err());
        assert!("zz".repeat(32).parse::<FileHash>().is_err());
    }

    proptest! {
        #[test]
        fn a_sanitised_name_is_one_safe_component(name in "\\PC{0,300}") {
            if let Some(clean) = sanitise(&name) {
                prop_assert!(!clean.contains('/') && !clean.contains('\\'));
                prop_assert!(!clean.starts_with('.'));
                prop_assert!(clean.len() <= MAX_NAME_BYTES);
                prop_assert!(!clean.chars().any(char::is_control));
                prop_assert_eq!(sanitise(&clean), Some(clean.clone()));
            }
        }

        #[test]
        fn any_bytes_decode_to_an_offer_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(offer) = Offer::decode(&bytes, i64::MAX / 2) {
                prop_assert_eq!(Offer::decode(&offer.encode(), i64::MAX / 2), Ok(offer));
            }
        }
    }
}
