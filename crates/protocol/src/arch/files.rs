//! Where shared files are read from and fetched files go: the file system
//! natively, `Blob`s in a browser. Both offer the same items:
//!
//! - [`FileSource`]: a file we serve (a path; a `Blob`, such as the `File`
//!   a person picked), read a chunk at a time;
//! - [`Downloads`]: where fetched files are written (a directory; memory
//!   handed to the browser as `Blob` parts, not kept in wasm memory);
//! - [`Saved`]: a fetched, verified file (its path; its `Blob`);
//! - [`Task`]: a file transfer in flight (`Send` natively; a browser's
//!   `Blob` futures are not).

pub use imp::*;

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use std::{
        fs::File,
        io::{self, Read, Seek, SeekFrom, Write},
        path::{Path, PathBuf},
    };

    use futures::future::BoxFuture;

    /// A file transfer in flight.
    pub type Task = BoxFuture<'static, ()>;

    /// Boxes a transfer.
    pub fn task(work: impl std::future::Future<Output = ()> + Send + 'static) -> Task {
        Box::pin(work)
    }

    /// A fetched, verified file: where it was saved.
    pub type Saved = PathBuf;

    /// A file we serve.
    #[derive(Clone, Debug)]
    pub struct FileSource {
        path: PathBuf,
    }

    impl FileSource {
        /// The file at `path` (read when asked for, so it must stay there).
        pub fn path(path: impl Into<PathBuf>) -> Self {
            Self { path: path.into() }
        }

        /// A file we fetched and saved.
        pub fn saved(saved: &Saved) -> Self {
            Self::path(saved.clone())
        }

        /// Its size in bytes.
        pub async fn size(&self) -> io::Result<u64> {
            Ok(std::fs::metadata(&self.path)?.len())
        }

        /// Reads it from `offset` on.
        pub(crate) fn reader(&self, offset: u64) -> io::Result<SourceReader> {
            let mut file = File::open(&self.path)?;
            file.seek(SeekFrom::Start(offset))?;
            Ok(SourceReader(file))
        }
    }

    /// An open [`FileSource`].
    pub(crate) struct SourceReader(File);

    impl SourceReader {
        /// The next `len` bytes at most (fewer at the end; none past it).
        /// A chunk from the page cache takes microseconds, so this reads
        /// in place rather than on a blocking thread.
        pub(crate) async fn read(&mut self, len: usize) -> io::Result<Vec<u8>> {
            let mut buf = vec![0; len];
            let mut filled = 0;
            while filled < len {
                match self.0.read(&mut buf[filled..])? {
                    0 => break,
                    n => filled += n,
                }
            }
            buf.truncate(filled);
            Ok(buf)
        }
    }

    /// Where fetched files are saved.
    #[derive(Clone, Debug)]
    pub struct Downloads {
        dir: PathBuf,
    }

    impl Default for Downloads {
        /// The current directory.
        fn default() -> Self {
            Self::dir(".")
        }
    }

    impl Downloads {
        /// Into `dir`.
        pub fn dir(dir: impl Into<PathBuf>) -> Self {
            Self { dir: dir.into() }
        }

        /// Starts saving a file to be called `name` (already sanitised):
        /// a temporary file next to where it will go.
        pub(crate) fn start(&self, name: &str) -> io::Result<Download> {
            let suffix: u64 = rand::random();
            let temp = self
                .dir
                .join(format!(".{name}.{suffix:016x}.meshtalk-part"));
            let file = File::options().write(true).create_new(true).open(&temp)?;
            Ok(Download {
                file,
                temp,
                dir: self.dir.clone(),
                name: name.to_owned(),
            })
        }
    }

    /// A file being fetched.
    pub(crate) struct Download {
        file: File,
        temp: PathBuf,
        dir: PathBuf,
        name: String,
    }

    impl Download {
        /// Appends a chunk.
        pub(crate) fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
            self.file.write_all(bytes)
        }

        /// The bytes matched their hash: the file takes its name, or
        /// `name (1).ext`, `name (2).ext`… when that is taken (never
        /// overwriting: a hard link fails on an existing name).
        pub(crate) fn finish(self, _media_type: &str) -> io::Result<Saved> {
            self.file.sync_all()?;
            drop(self.file);
            let result = (0..1000).find_map(|n| {
                let path = self.dir.join(numbered(&self.name, n));
                match std::fs::hard_link(&self.temp, &path) {
                    Ok(()) => Some(Ok(path)),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => None,
                    Err(e) => Some(Err(e)),
                }
            });
            let _ = std::fs::remove_file(&self.temp);
            result.unwrap_or_else(|| {
                Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} and 999 numbered names are taken", self.name),
                ))
            })
        }

        /// The transfer failed or the bytes were wrong: nothing is kept.
        pub(crate) fn discard(self) {
            drop(self.file);
            let _ = std::fs::remove_file(&self.temp);
        }
    }

    /// `name`, or `name (n).ext`.
    fn numbered(name: &str, n: u32) -> String {
        if n == 0 {
            return name.to_owned();
        }
        match Path::new(name).extension().and_then(|e| e.to_str()) {
            Some(ext) if name.len() > ext.len() + 1 => {
                format!("{} ({n}).{ext}", &name[..name.len() - ext.len() - 1])
            }
            _ => format!("{name} ({n})"),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_saved_file_never_overwrites() {
            let dir = std::env::temp_dir().join(format!("meshtalk-dl-{}", rand::random::<u64>()));
            std::fs::create_dir_all(&dir).expect("dir");
            let downloads = Downloads::dir(&dir);
            let mut paths = Vec::new();
            for text in ["one", "two", "three"] {
                let mut d = downloads.start("notes.txt").expect("start");
                d.write(text.as_bytes()).expect("write");
                paths.push(d.finish("text/plain").expect("finish"));
            }
            let names: Vec<_> = paths
                .iter()
                .map(|p| p.file_name().and_then(|n| n.to_str()).unwrap_or_default())
                .collect();
            assert_eq!(names, ["notes.txt", "notes (1).txt", "notes (2).txt"]);
            assert_eq!(std::fs::read_to_string(&paths[0]).expect("read"), "one");
            let d = downloads.start("gone").expect("start");
            d.discard();
            let left = std::fs::read_dir(&dir).expect("list").count();
            assert_eq!(left, 3, "the temporary file is removed");
            let _ = std::fs::remove_dir_all(&dir);
        }

        #[test]
        fn numbered_names_keep_the_extension() {
            assert_eq!(numbered("a.tar.gz", 2), "a.tar (2).gz");
            assert_eq!(numbered("README", 1), "README (1)");
            assert_eq!(numbered(".hidden", 1), ".hidden (1)");
        }
    }
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use std::io;

    use futures::future::LocalBoxFuture;
    use wasm_bindgen_futures::JsFuture;

    /// A file transfer in flight.
    pub type Task = LocalBoxFuture<'static, ()>;

    /// Boxes a transfer.
    pub fn task(work: impl std::future::Future<Output = ()> + 'static) -> Task {
        Box::pin(work)
    }

    /// A fetched, verified file.
    pub type Saved = web_sys::Blob;

    fn js_error(what: &str, e: wasm_bindgen::JsValue) -> io::Error {
        io::Error::other(format!("{what}: {e:?}"))
    }

    /// A file we serve.
    #[derive(Clone, Debug)]
    pub struct FileSource {
        blob: web_sys::Blob,
    }

    impl FileSource {
        /// A `Blob` (a `File` from a file input is one).
        pub fn blob(blob: web_sys::Blob) -> Self {
            Self { blob }
        }

        /// A file we fetched.
        pub fn saved(saved: &Saved) -> Self {
            Self::blob(saved.clone())
        }

        /// Its size in bytes.
        pub async fn size(&self) -> io::Result<u64> {
            Ok(self.blob.size() as u64)
        }

        /// A `blob:` URL of it, for a link or an image.
        pub fn object_url(&self) -> Option<String> {
            web_sys::Url::create_object_url_with_blob(&self.blob).ok()
        }

        /// Reads it from `offset` on.
        pub(crate) fn reader(&self, offset: u64) -> io::Result<SourceReader> {
            Ok(SourceReader {
                blob: self.blob.clone(),
                pos: offset,
            })
        }
    }

    /// An open [`FileSource`].
    pub(crate) struct SourceReader {
        blob: web_sys::Blob,
        pos: u64,
    }

    impl SourceReader {
        /// The next `len` bytes at most (fewer at the end; none past it).
        pub(crate) async fn read(&mut self, len: usize) -> io::Result<Vec<u8>> {
            let size = self.blob.size() as u64;
            let end = (self.pos + len as u64).min(size);
            if self.pos >= end {
                return Ok(Vec::new());
            }
            let part = self
                .blob
                .slice_with_f64_and_f64(self.pos as f64, end as f64)
                .map_err(|e| js_error("slicing the file", e))?;
            let buffer = JsFuture::from(part.array_buffer())
                .await
                .map_err(|e| js_error("reading the file", e))?;
            let bytes = js_sys::Uint8Array::new(&buffer).to_vec();
            self.pos += bytes.len() as u64;
            Ok(bytes)
        }
    }

    /// Fetched files stay in the browser as `Blob`s.
    #[derive(Clone, Debug, Default)]
    pub struct Downloads;

    impl Downloads {
        pub(crate) fn start(&self, _name: &str) -> io::Result<Download> {
            Ok(Download {
                parts: js_sys::Array::new(),
            })
        }
    }

    /// A file being fetched: its chunks, copied out of wasm memory.
    pub(crate) struct Download {
        parts: js_sys::Array,
    }

    impl Download {
        /// Appends a chunk.
        pub(crate) fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
            self.parts.push(&js_sys::Uint8Array::from(bytes));
            Ok(())
        }

        /// The bytes matched their hash: one `Blob` of them.
        pub(crate) fn finish(self, media_type: &str) -> io::Result<Saved> {
            let options = web_sys::BlobPropertyBag::new();
            options.set_type(media_type);
            web_sys::Blob::new_with_u8_array_sequence_and_options(&self.parts, &options)
                .map_err(|e| js_error("assembling the file", e))
        }

        /// Nothing is kept.
        pub(crate) fn discard(self) {}
    }
}
