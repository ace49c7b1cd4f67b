//! The file layer the journal writes through. The real one is [`OsFiles`]; tests put a layer in
//! its place that fails like a full disk, to check the journal fails closed.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
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
    /// Creates `path` empty (truncating it if it exists), for writing (snapshots).
    fn create(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>>;
    /// Creates the journal segment `path` empty (truncating it if it exists). It may grow ahead
    /// of what is written, with zeros (see [`SEGMENT_GROWTH_BYTES`]).
    fn create_segment(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>>;
    /// Opens the segment `path` for appending after cutting it to `length` bytes (dropping a
    /// torn tail or room grown ahead). Like a new segment, it may grow ahead with zeros.
    fn open_append(&self, path: &Path, length: u64) -> io::Result<Box<dyn SegmentFile>>;
    /// Renames `from` to `to` atomically.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, directory: &Path) -> io::Result<()>;
}

/// How much a segment grows at a time. The room is written with zeros (and reaches the disk with
/// the next sync) before records go into it, so most syncs find the file's size and blocks
/// unchanged and write only the data: on ext4 that saves the inode write a growing file costs each
/// `fdatasync`. Recovery reads zeros from a record boundary to the end of a file as the end of
/// its records.
pub const SEGMENT_GROWTH_BYTES: u64 = 1024 * 1024;

/// Zeros written to grow a segment, a piece at a time.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// The operating system's files.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsFiles;

/// A file written from its start, in order.
struct OsFile {
    file: File,
    /// Where the next bytes go: the end of what was written.
    end: u64,
    /// The file's size: `end`, or beyond it when the file grows ahead of its contents.
    size: u64,
    /// Bytes to grow by when a write does not fit (0: grow exactly by each write).
    growth: u64,
}

impl OsFile {
    /// Writing continues at `end`, which is the file's size.
    fn new(mut file: File, end: u64, growth: u64) -> io::Result<Self> {
        file.seek(SeekFrom::Start(end))?;
        Ok(OsFile {
            file,
            end,
            size: end,
            growth,
        })
    }

    /// Writes zeros from the current size up to the next multiple of the growth that holds
    /// `needed` bytes.
    fn grow(&mut self, needed: u64) -> io::Result<()> {
        let target = needed.div_ceil(self.growth) * self.growth;
        self.file.seek(SeekFrom::Start(self.size))?;
        while self.size < target {
            let piece = (target - self.size).min(ZEROS.len() as u64) as usize;
            self.file.write_all(&ZEROS[..piece])?;
            self.size += piece as u64;
        }
        self.file.seek(SeekFrom::Start(self.end))?;
        Ok(())
    }
}

impl SegmentFile for OsFile {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let end = self.end + bytes.len() as u64;
        if self.growth > 0 && end > self.size {
            self.grow(end)?;
        }
        self.file.write_all(bytes)?;
        self.end = end;
        self.size = self.size.max(end);
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// Creates `path` empty for writing, truncating it if it exists.
fn create_empty(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
}

impl FileLayer for OsFiles {
    fn create(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        Ok(Box::new(OsFile::new(create_empty(path)?, 0, 0)?))
    }

    fn create_segment(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        Ok(Box::new(OsFile::new(
            create_empty(path)?,
            0,
            SEGMENT_GROWTH_BYTES,
        )?))
    }

    fn open_append(&self, path: &Path, length: u64) -> io::Result<Box<dyn SegmentFile>> {
        let file = OpenOptions::new().write(true).open(path)?;
        // Cut whatever follows the last whole record (a torn tail, or room grown ahead); the
        // segment grows again from there.
        if file.metadata()?.len() != length {
            file.set_len(length)?;
            file.sync_all()?;
        }
        Ok(Box::new(OsFile::new(file, length, SEGMENT_GROWTH_BYTES)?))
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

    fn create_segment(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let inner = OsFiles.create_segment(path)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn size(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().len()
    }

    #[test]
    fn segments_grow_in_steps_of_zeros_and_other_files_do_not() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("segment");
        let mut segment = OsFiles.create_segment(&path).unwrap();
        segment.write_all(b"abc").unwrap();
        assert_eq!(size(&path), SEGMENT_GROWTH_BYTES);
        let almost = vec![7u8; SEGMENT_GROWTH_BYTES as usize - 3];
        segment.write_all(&almost).unwrap();
        assert_eq!(size(&path), SEGMENT_GROWTH_BYTES, "exactly full: no growth");
        segment.write_all(b"d").unwrap();
        assert_eq!(size(&path), 2 * SEGMENT_GROWTH_BYTES);
        segment.sync_data().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..3], b"abc");
        assert_eq!(bytes[SEGMENT_GROWTH_BYTES as usize], b'd');
        assert!(bytes[SEGMENT_GROWTH_BYTES as usize + 1..]
            .iter()
            .all(|byte| *byte == 0));

        let mut reopened = OsFiles.open_append(&path, 3).unwrap();
        assert_eq!(size(&path), 3, "reopening cuts what follows");
        reopened.write_all(b"e").unwrap();
        assert_eq!(&std::fs::read(&path).unwrap()[..4], b"abce");

        let plain = directory.path().join("snapshot");
        let mut file = OsFiles.create(&plain).unwrap();
        file.write_all(b"abc").unwrap();
        file.write_all(b"def").unwrap();
        assert_eq!(std::fs::read(&plain).unwrap(), b"abcdef");
    }
}
