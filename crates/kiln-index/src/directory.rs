//! The index's folder as tantivy sees it: its `MmapDirectory`, except for the list of the
//! files tantivy manages (`.managed.json`), which lives in memory and is made from the folder
//! itself each time the index opens.
//!
//! Tantivy writes that list before it creates each file of a segment (six a segment here)
//! and after each garbage collection, every time as an atomic write: a new temporary file,
//! the data, `fdatasync`, a rename. In a profile of small commits that was a sixth of their
//! CPU. The list only serves garbage collection: a managed file that no committed segment
//! uses, and no running merge is writing, is deleted. Made from the folder at open, it names
//! every segment file there, so the files of a segment that was written but never committed
//! (a crash between the two) are collected as before.
//!
//! Measured with `cargo run --release -p kiln-index --example commit_cost` (1,020 chunks,
//! 73 commits of 14, merges included), five runs each, the two directories in turn: CPU
//! 1.30–1.48 s with the list on disk, 0.95–1.35 s without; on SciFact's texts 1.06–1.46 s
//! against 1.01–1.40 s. Each run costs more than the last on this host's ext4 without a
//! journal, where a new inode's allocation skips the inodes deleted in the last minutes.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tantivy::directory::error::{DeleteError, LockError, OpenReadError, OpenWriteError};
use tantivy::directory::{
    Directory, DirectoryLock, FileHandle, Lock, MmapDirectory, WatchCallback, WatchHandle, WritePtr,
};

/// Where tantivy keeps its list of managed files.
const MANAGED: &str = ".managed.json";

/// An index folder with tantivy's list of managed files kept in memory.
#[derive(Debug, Clone)]
pub(crate) struct IndexDir {
    files: MmapDirectory,
    root: Arc<PathBuf>,
    /// The list as tantivy last wrote it (JSON), shared by this directory's clones.
    managed: Arc<Mutex<Option<Vec<u8>>>>,
}

impl IndexDir {
    /// Opens `dir`. A list left on disk by an earlier version is removed: from now on the
    /// folder is the list.
    pub(crate) fn open(dir: &Path) -> tantivy::Result<IndexDir> {
        match std::fs::remove_file(dir.join(MANAGED)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        Ok(IndexDir {
            files: MmapDirectory::open(dir)?,
            root: Arc::new(dir.to_path_buf()),
            managed: Arc::default(),
        })
    }

    /// The segment files in the folder, as tantivy's list names them (JSON).
    fn list_segment_files(&self) -> io::Result<Vec<u8>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(self.root.as_path())? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            if let Some(name) = entry.file_name().to_str()
                && is_segment_file(name)
            {
                names.push(name.to_owned());
            }
        }
        serde_json::to_vec(&names).map_err(io::Error::other)
    }
}

/// A segment's file: its ID (32 hex digits), then a dot and an extension (`.del` files also
/// carry an operation stamp: `<id>.<stamp>.del`).
fn is_segment_file(name: &str) -> bool {
    let Some((id, rest)) = name.split_once('.') else {
        return false;
    };
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && !rest.is_empty()
}

fn is_managed_list(path: &Path) -> bool {
    path == Path::new(MANAGED)
}

impl Directory for IndexDir {
    fn get_file_handle(&self, path: &Path) -> Result<Arc<dyn FileHandle>, OpenReadError> {
        self.files.get_file_handle(path)
    }

    fn delete(&self, path: &Path) -> Result<(), DeleteError> {
        self.files.delete(path)
    }

    fn exists(&self, path: &Path) -> Result<bool, OpenReadError> {
        self.files.exists(path)
    }

    fn open_write(&self, path: &Path) -> Result<WritePtr, OpenWriteError> {
        self.files.open_write(path)
    }

    fn atomic_read(&self, path: &Path) -> Result<Vec<u8>, OpenReadError> {
        if !is_managed_list(path) {
            return self.files.atomic_read(path);
        }
        let mut managed = self.managed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = managed.as_ref() {
            return Ok(list.clone());
        }
        let list = self
            .list_segment_files()
            .map_err(|e| OpenReadError::wrap_io_error(e, path.to_path_buf()))?;
        *managed = Some(list.clone());
        Ok(list)
    }

    fn atomic_write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        if !is_managed_list(path) {
            return self.files.atomic_write(path, data);
        }
        *self.managed.lock().unwrap_or_else(|e| e.into_inner()) = Some(data.to_vec());
        Ok(())
    }

    fn sync_directory(&self) -> io::Result<()> {
        self.files.sync_directory()
    }

    fn acquire_lock(&self, lock: &Lock) -> Result<DirectoryLock, LockError> {
        self.files.acquire_lock(lock)
    }

    fn watch(&self, watch_callback: WatchCallback) -> tantivy::Result<WatchHandle> {
        self.files.watch(watch_callback)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_files_are_an_id_and_an_extension() {
        let id = "0123456789abcdef0123456789ABCDEF";
        assert!(is_segment_file(&format!("{id}.idx")));
        assert!(is_segment_file(&format!("{id}.17.del")));
        for name in [
            "meta.json",
            ".managed.json",
            ".tantivy-writer.lock",
            "0123.idx",
            id,
            &format!("{id}."),
            &format!("{id}x.idx"),
        ] {
            assert!(!is_segment_file(name), "{name}");
        }
    }
}
