//! The file layer the journal writes through. The real one is [`OsFiles`]; tests put a layer in
//! its place that fails like a full disk, to check the journal fails closed.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// An open file the journal appends to.
pub trait SegmentFile: Send {
    /// Writes all of `bytes` at the end of the file.
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes everything written so far durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
}

/// Creates, renames and syncs the journal's files.
pub trait FileLayer: Send + Sync {
    /// Creates `path` empty (truncating it if it exists), for writing.
    fn create(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>>;
    /// Opens `path` for appending after cutting it to `length` bytes (dropping a torn tail).
    fn open_append(&self, path: &Path, length: u64) -> io::Result<Box<dyn SegmentFile>>;
    /// Renames `from` to `to` atomically.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, directory: &Path) -> io::Result<()>;
}

/// The operating system's files.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsFiles;

struct OsSegment(File);

impl SegmentFile for OsSegment {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl FileLayer for OsFiles {
    fn create(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)?;
        Ok(Box::new(OsSegment(file)))
    }

    fn open_append(&self, path: &Path, length: u64) -> io::Result<Box<dyn SegmentFile>> {
        let file = OpenOptions::new().write(true).open(path)?;
        if file.metadata()?.len() != length {
            file.set_len(length)?;
            file.sync_all()?;
        }
        let file = OpenOptions::new().append(true).open(path)?;
        Ok(Box::new(OsSegment(file)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, directory: &Path) -> io::Result<()> {
        File::open(directory)?.sync_all()
    }
}

/// A layer that behaves like a disk with `bytes_budget` bytes free: once a write would exceed
/// it, that write (and every later one) fails with "no space left on device". For tests.
pub struct FullDisk {
    budget: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl FullDisk {
    /// A disk that accepts `bytes_budget` more bytes of journal writes.
    pub fn new(bytes_budget: i64) -> Self {
        FullDisk {
            budget: std::sync::Arc::new(std::sync::atomic::AtomicI64::new(bytes_budget)),
        }
    }
}

struct BudgetedSegment {
    inner: Box<dyn SegmentFile>,
    budget: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl SegmentFile for BudgetedSegment {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        use std::sync::atomic::Ordering;
        let left = self.budget.fetch_sub(bytes.len() as i64, Ordering::SeqCst);
        if left < bytes.len() as i64 {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "no space left on device (simulated)",
            ));
        }
        self.inner.write_all(bytes)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.inner.sync_data()
    }
}

impl FileLayer for FullDisk {
    fn create(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let inner = OsFiles.create(path)?;
        Ok(Box::new(BudgetedSegment {
            inner,
            budget: self.budget.clone(),
        }))
    }

    fn open_append(&self, path: &Path, length: u64) -> io::Result<Box<dyn SegmentFile>> {
        let inner = OsFiles.open_append(path, length)?;
        Ok(Box::new(BudgetedSegment {
            inner,
            budget: self.budget.clone(),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        OsFiles.rename(from, to)
    }

    fn sync_dir(&self, directory: &Path) -> io::Result<()> {
        OsFiles.sync_dir(directory)
    }
}
