//! A local dataset's directory: `object_store`'s `LocalFileSystem`, confined to the directory.
//!
//! `LocalFileSystem` follows symbolic links wherever they lead, so a link placed in a dataset
//! (`0/98.json -> /etc/passwd`, a layer directory linked elsewhere) would be listed and served.
//! [`LocalDir`] answers only for what resolves inside the dataset's directory, as nginx's
//! `disable_symlinks` does for a web root: anything else is neither listed, read, reported as
//! existing nor quoted. A dataset assembled from links elsewhere says so in its URI
//! (`?links=follow`, [`Links::Follow`]).
//!
//! It also reads only regular files: a FIFO would block the reader thread in `open` (and
//! nothing frees it), so a file's type is checked from its metadata before the store opens it.
//!
//! The check resolves the path (`canonicalize`) and then lets `LocalFileSystem` open it, so a
//! link swapped in between, by someone who can write inside the dataset, is not caught; only a
//! Linux-specific `openat2(RESOLVE_BENEATH)` would close that window.

use std::{
    fmt,
    path::{Path as FsPath, PathBuf},
    str::FromStr,
    sync::Arc,
};

use async_trait::async_trait;
use futures::{StreamExt, stream::BoxStream};
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, local::LocalFileSystem, path::Path,
};

/// Whether a local dataset serves symbolic links that lead outside its directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Links {
    /// Links are followed only while they stay inside the dataset's directory (the default).
    #[default]
    Inside,
    /// Links are followed wherever they lead (`?links=follow`), for a dataset assembled from
    /// links to files elsewhere.
    Follow,
}

impl FromStr for Links {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        match value {
            "inside" => Ok(Links::Inside),
            "follow" => Ok(Links::Follow),
            other => Err(format!(
                "links={other:?}: expected links=inside (the default: links leading outside the \
                 dataset's directory are not served) or links=follow"
            )),
        }
    }
}

/// Why [`LocalDir`] refused a file; carried inside the `object_store` error it answers: a
/// `NotFound` for a link leading outside (to callers, that file does not exist), a `Generic`
/// for a file that is not a regular one (see `StoreError::from_object_store`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refused {
    /// The path resolves outside the dataset's directory.
    #[error(
        "it is a symbolic link leading outside the dataset's directory, which is not served \
         unless the dataset's URI allows it with ?links=follow"
    )]
    Outside,
    /// The file is not a regular file.
    #[error("it is {0}, not a regular file")]
    NotRegular(&'static str),
}

impl Refused {
    /// The refusal `error` carries, if it is one of [`LocalDir`]'s.
    pub fn of(error: &object_store::Error) -> Option<&Refused> {
        match error {
            object_store::Error::NotFound { source, .. }
            | object_store::Error::Generic { source, .. } => source.downcast_ref(),
            _ => None,
        }
    }
}

/// A local directory as a read-only store of the files inside it; see the module's docs.
#[derive(Debug)]
pub struct LocalDir {
    files: Arc<LocalFileSystem>,
    /// The directory, canonical: what resolves below it is inside.
    root: PathBuf,
    links: Links,
}

impl fmt::Display for LocalDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalDir({})", self.root.display())
    }
}

impl LocalDir {
    /// Opens the directory `dir`, which must exist.
    pub fn open(dir: &FsPath, links: Links) -> Result<LocalDir, String> {
        let root = dir.canonicalize().map_err(|e| e.to_string())?;
        if !root.is_dir() {
            return Err("not a directory".to_string());
        }
        let files = LocalFileSystem::new_with_prefix(&root).map_err(|e| e.to_string())?;
        Ok(LocalDir {
            files: Arc::new(files),
            root,
            links,
        })
    }

    /// Whether `resolved`, a canonical path, may be served.
    fn admits(&self, resolved: &FsPath) -> bool {
        self.links == Links::Follow || resolved.starts_with(&self.root)
    }

    /// Checks the file at `location` before the store opens it: it must resolve inside the
    /// directory and be a regular file. A file that cannot be resolved (missing, no permission)
    /// is left to the store, whose own answer says why.
    ///
    /// Runs on the caller's thread: a read calls it on a reader thread, outside the runtime; an
    /// existence check on an async worker, where it costs one `realpath` and one `stat` of a
    /// local path, a few microseconds.
    fn check_file(&self, location: &Path) -> object_store::Result<()> {
        let file = self.files.path_to_filesystem(location)?;
        let Ok(resolved) = file.canonicalize() else {
            return Ok(());
        };
        if !self.admits(&resolved) {
            // To callers this file does not exist; the operator learns why here, without the
            // link's target.
            tracing::warn!(
                dataset_dir = %self.root.display(),
                file = %location,
                "a symbolic link leading outside the dataset's directory is not served \
                 (?links=follow in the dataset's URI serves such links)"
            );
            return Err(object_store::Error::NotFound {
                path: location.to_string(),
                source: Box::new(Refused::Outside),
            });
        }
        // The resolved path has no links left: this is the file's own metadata.
        let Ok(metadata) = std::fs::metadata(&resolved) else {
            return Ok(());
        };
        if metadata.is_file() {
            return Ok(());
        }
        Err(object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(Refused::NotRegular(kind(&metadata.file_type()))),
        })
    }

    /// The filter for a listing's entries: keeps those that resolve inside the directory.
    fn entry_filter(&self) -> EntryFilter {
        EntryFilter {
            files: Arc::clone(&self.files),
            root: self.root.clone(),
            parent: None,
        }
    }
}

/// Decides, entry by entry, whether a listed path resolves inside the directory. Entries come
/// directory by directory, so a directory's verdict is kept for its next entries: an entry that
/// is not itself a link costs one `lstat`.
struct EntryFilter {
    files: Arc<LocalFileSystem>,
    root: PathBuf,
    /// The last directory looked at, and whether it resolves inside.
    parent: Option<(PathBuf, bool)>,
}

impl EntryFilter {
    fn admits(&mut self, location: &Path) -> bool {
        let Ok(entry) = self.files.path_to_filesystem(location) else {
            return false;
        };
        let parent_inside = match (entry.parent(), &self.parent) {
            (Some(parent), Some((known, inside))) if parent == known => *inside,
            (Some(parent), _) => {
                let inside = self.resolves_inside(parent);
                self.parent = Some((parent.to_path_buf(), inside));
                inside
            }
            (None, _) => false,
        };
        parent_inside
            && match std::fs::symlink_metadata(&entry) {
                Ok(metadata) if metadata.is_symlink() => self.resolves_inside(&entry),
                Ok(_) => true,
                Err(_) => false,
            }
    }

    fn resolves_inside(&self, path: &FsPath) -> bool {
        path.canonicalize()
            .is_ok_and(|resolved| resolved.starts_with(&self.root))
    }
}

/// What a file that is not a regular one is.
fn kind(file_type: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "a named pipe (FIFO)";
        }
        if file_type.is_socket() {
            return "a socket";
        }
        if file_type.is_block_device() || file_type.is_char_device() {
            return "a device";
        }
    }
    if file_type.is_dir() {
        "a directory"
    } else {
        "a special file"
    }
}

fn read_only() -> object_store::Error {
    object_store::Error::NotSupported {
        source: "a dataset's directory is read only to this server".into(),
    }
}

#[async_trait]
impl ObjectStore for LocalDir {
    async fn put_opts(
        &self,
        _location: &Path,
        _payload: PutPayload,
        _opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        Err(read_only())
    }

    async fn put_multipart_opts(
        &self,
        _location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Err(read_only())
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.check_file(location)?;
        self.files.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        locations.map(|_| Err(read_only())).boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let listed = self.files.list(prefix);
        if self.links == Links::Follow {
            return listed;
        }
        // One `lstat` per entry, on the caller's thread: this recursive listing is the
        // manifest builder's, not a call of the service.
        let mut filter = self.entry_filter();
        listed
            .filter(move |entry| {
                let keep = match entry {
                    Ok(meta) => filter.admits(&meta.location),
                    Err(_) => true,
                };
                std::future::ready(keep)
            })
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let listed = self.files.list_with_delimiter(prefix).await?;
        if self.links == Links::Follow {
            return Ok(listed);
        }
        // A layer's listing has thousands of entries, each looked at once: off the workers.
        let mut filter = self.entry_filter();
        let filtered = tokio::task::spawn_blocking(move || {
            let ListResult {
                mut common_prefixes,
                mut objects,
                extensions,
            } = listed;
            common_prefixes.retain(|dir| filter.admits(dir));
            objects.retain(|object| filter.admits(&object.location));
            ListResult {
                common_prefixes,
                objects,
                extensions,
            }
        });
        filtered.await.map_err(object_store::Error::from)
    }

    async fn copy_opts(
        &self,
        _from: &Path,
        _to: &Path,
        _options: CopyOptions,
    ) -> object_store::Result<()> {
        Err(read_only())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use object_store::ObjectStoreExt;

    use super::*;

    /// A dataset directory `data/` beside an `elsewhere/` directory, in a temporary directory.
    struct Fixture {
        _temp: tempfile::TempDir,
        data: PathBuf,
        elsewhere: PathBuf,
    }

    fn fixture() -> Fixture {
        let temp = tempfile::tempdir().unwrap();
        let data = temp.path().join("data");
        let elsewhere = temp.path().join("elsewhere");
        for dir in [data.join("0"), data.join("1"), elsewhere.join("7")] {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(data.join("0/1.json"), b"{}").unwrap();
        std::fs::write(elsewhere.join("secret.json"), b"secret").unwrap();
        std::fs::write(elsewhere.join("7/3.json"), b"secret").unwrap();
        Fixture {
            _temp: temp,
            data,
            elsewhere,
        }
    }

    fn names(listing: &ListResult) -> (Vec<String>, Vec<String>) {
        let name = |p: &Path| p.filename().unwrap_or_default().to_string();
        let mut dirs: Vec<_> = listing.common_prefixes.iter().map(name).collect();
        let mut files: Vec<_> = listing.objects.iter().map(|o| name(&o.location)).collect();
        dirs.sort();
        files.sort();
        (dirs, files)
    }

    #[tokio::test]
    async fn links_leading_outside_are_neither_read_nor_listed_unless_followed() {
        let Fixture {
            _temp: _kept,
            data,
            elsewhere,
        } = fixture();
        symlink(elsewhere.join("secret.json"), data.join("0/98.json")).unwrap();
        symlink("../../elsewhere/secret.json", data.join("0/97.json")).unwrap();
        symlink(elsewhere.join("7"), data.join("7")).unwrap();
        symlink(data.join("0/1.json"), data.join("0/2.json")).unwrap();
        symlink(data.join("0"), data.join("2")).unwrap();

        let confined = LocalDir::open(&data, Links::Inside).unwrap();
        for outside in ["0/98.json", "0/97.json", "7/3.json"] {
            let error = confined.get(&Path::from(outside)).await.unwrap_err();
            assert!(
                matches!(Refused::of(&error), Some(Refused::Outside)),
                "{outside}: {error}"
            );
            assert!(!error.to_string().contains("secret"), "{error}");
            assert!(confined.head(&Path::from(outside)).await.is_err());
        }
        for inside in ["0/1.json", "0/2.json", "2/1.json"] {
            let read = confined.get(&Path::from(inside)).await.unwrap();
            assert_eq!(read.bytes().await.unwrap().as_ref(), b"{}", "{inside}");
        }
        let top = confined.list_with_delimiter(None).await.unwrap();
        assert_eq!(names(&top).0, ["0", "1", "2"]);
        let layer = confined
            .list_with_delimiter(Some(&Path::from("0")))
            .await
            .unwrap();
        assert_eq!(names(&layer).1, ["1.json", "2.json"]);
        let linked_layer = confined
            .list_with_delimiter(Some(&Path::from("7")))
            .await
            .unwrap();
        assert_eq!(names(&linked_layer), (vec![], vec![]));
        let mut all: Vec<String> = confined
            .list(None)
            .map(|meta| meta.unwrap().location.to_string())
            .collect()
            .await;
        all.sort();
        assert_eq!(all, ["0/1.json", "0/2.json", "2/1.json", "2/2.json"]);

        let following = LocalDir::open(&data, Links::Follow).unwrap();
        let read = following.get(&Path::from("0/98.json")).await.unwrap();
        assert_eq!(read.bytes().await.unwrap().as_ref(), b"secret");
        let top = following.list_with_delimiter(None).await.unwrap();
        assert_eq!(names(&top).0, ["0", "1", "2", "7"]);
    }

    #[tokio::test]
    async fn only_regular_files_are_opened() {
        let Fixture {
            _temp: _kept, data, ..
        } = fixture();
        let fifo = data.join("0/10.json");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        std::fs::create_dir(data.join("0/11.json")).unwrap();
        symlink("/dev/null", data.join("0/12.json")).unwrap();
        let store = LocalDir::open(&data, Links::Follow).unwrap();
        for (file, expected) in [
            ("0/10.json", "a named pipe (FIFO)"),
            ("0/11.json", "a directory"),
            ("0/12.json", "a device"),
        ] {
            // A FIFO opened for reading would block here until a writer came.
            let error = store.get(&Path::from(file)).await.unwrap_err();
            assert!(
                matches!(Refused::of(&error), Some(Refused::NotRegular(kind)) if *kind == expected),
                "{file}: {error}"
            );
        }
    }

    #[tokio::test]
    async fn the_directory_is_read_only() {
        let Fixture {
            _temp: _kept, data, ..
        } = fixture();
        let store = LocalDir::open(&data, Links::Inside).unwrap();
        let file = Path::from("0/5.json");
        let put = store.put(&file, PutPayload::from_static(b"{}")).await;
        assert!(matches!(put, Err(object_store::Error::NotSupported { .. })));
        assert!(!data.join("0/5.json").exists());
    }

    #[test]
    fn links_setting_names_both_choices() {
        assert_eq!("follow".parse::<Links>(), Ok(Links::Follow));
        assert_eq!("inside".parse::<Links>(), Ok(Links::Inside));
        let refused = "yes".parse::<Links>().unwrap_err();
        assert!(refused.contains("links=inside") && refused.contains("links=follow"));
    }
}
