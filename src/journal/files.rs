//! The file layer the journal reads and writes through: recovery, the writer and snapshots touch
//! the data directory only by way of a [`FileLayer`]. The real one is [`OsFiles`]; tests put a
//! layer in its place that fails like a full disk, to check the journal fails closed. Every
//! method but the two that open segments does the operating system's thing by default, so a test
//! layer overrides only what it changes.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// An open file the journal appends to.
pub trait SegmentFile: Send {
    /// Writes all of `bytes` at the end of what was written so far.
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes everything written so far durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
}

/// Lists, reads, creates, renames, removes and syncs the journal's files.
pub trait FileLayer: Send + Sync {
    /// Creates `path`, which must not exist (`O_CREAT | O_EXCL`: a symlink planted at the name is
    /// never followed), readable and writable by the owner only. With `growth` > 0 the file grows
    /// ahead of what is written, in steps of `growth` bytes of zeros, each made durable before
    /// anything is written into it (see [`SEGMENT_GROWTH_BYTES`]).
    fn create_new(&self, path: &Path, growth: u64) -> io::Result<Box<dyn SegmentFile>>;
    /// Opens the existing segment `path` (never through a symlink) to append after byte `end`,
    /// first overwriting bytes `end..zero_until` with zeros and syncing them (dropping a cut
    /// tail). The file keeps its size; it grows ahead as in [`FileLayer::create_new`].
    fn open_append(
        &self,
        path: &Path,
        end: u64,
        zero_until: u64,
    ) -> io::Result<Box<dyn SegmentFile>>;
    /// Renames `from` to `to` atomically.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, directory: &Path) -> io::Result<()> {
        File::open(directory)?.sync_all()
    }
    /// The names of the entries in `directory` (not `.` or `..`), in no particular order; a name
    /// that is not UTF-8 comes back with replacement characters (it is none of the journal's).
    fn list_dir(&self, directory: &Path) -> io::Result<Vec<String>> {
        std::fs::read_dir(directory)?
            .map(|entry| Ok(entry?.file_name().to_string_lossy().into_owned()))
            .collect()
    }
    /// The whole contents of the file `path`.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    /// Removes the entry `path` (a file, or a symlink, never what it points to).
    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    /// True when something (a file, a directory, a symlink, even a dangling one) is at `path`;
    /// a symlink is not followed.
    fn entry_exists(&self, path: &Path) -> bool {
        std::fs::symlink_metadata(path).is_ok()
    }
    /// Cuts the existing file `path` (never through a symlink) back to `length` bytes and makes
    /// that durable: how the first release dropped a torn tail.
    fn truncate(&self, path: &Path, length: u64) -> io::Result<()> {
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(no_follow())
            .open(path)?;
        file.set_len(length)?;
        file.sync_all()
    }
}

/// How much a segment grows at a time. The room is written with zeros and synced before records
/// go into it, so (1) most syncs find the file's size and blocks unchanged and write only the data
/// (on ext4 that saves the inode write a growing file costs each `fdatasync`), and (2) a write cut
/// short by a power loss leaves zeros, never stale bytes, where its sectors did not arrive: the
/// shape recovery recognises as a torn tail. Segments therefore always have a whole number of
/// steps: a shorter one was truncated.
pub const SEGMENT_GROWTH_BYTES: u64 = 1024 * 1024;

/// Permissions of every file the journal creates: the owner's only (the journal holds PIN
/// hashes).
pub const FILE_MODE: u32 = 0o600;

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
    /// Writing continues at `end`; the file is `size` bytes.
    fn new(mut file: File, end: u64, size: u64, growth: u64) -> io::Result<Self> {
        file.seek(SeekFrom::Start(end))?;
        Ok(OsFile {
            file,
            end,
            size,
            growth,
        })
    }

    /// Writes zeros from `from` up to `until`.
    fn write_zeros(&mut self, from: u64, until: u64) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(from))?;
        let mut at = from;
        while at < until {
            let piece = (until - at).min(ZEROS.len() as u64) as usize;
            self.file.write_all(&ZEROS[..piece])?;
            at += piece as u64;
        }
        Ok(())
    }

    /// Writes zeros from the current size up to the next multiple of the growth that holds
    /// `needed` bytes, and makes them durable before anything is written into them.
    fn grow(&mut self, needed: u64) -> io::Result<()> {
        let target = needed.div_ceil(self.growth) * self.growth;
        self.write_zeros(self.size, target)?;
        self.size = target;
        self.file.sync_data()?;
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

/// Opens `path` without following a symlink at it, owner-only if it is created.
fn options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(FILE_MODE).custom_flags(no_follow());
    options
}

/// The `O_NOFOLLOW` flag: opening fails on a symlink instead of opening what it points to.
pub fn no_follow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

impl FileLayer for OsFiles {
    fn create_new(&self, path: &Path, growth: u64) -> io::Result<Box<dyn SegmentFile>> {
        let file = options().write(true).create_new(true).open(path)?;
        Ok(Box::new(OsFile::new(file, 0, 0, growth)?))
    }

    fn open_append(
        &self,
        path: &Path,
        end: u64,
        zero_until: u64,
    ) -> io::Result<Box<dyn SegmentFile>> {
        let file = options().write(true).open(path)?;
        let size = file.metadata()?.len();
        let mut segment = OsFile::new(file, end, size, SEGMENT_GROWTH_BYTES)?;
        if zero_until > end {
            segment.write_zeros(end, zero_until.min(size))?;
            segment.file.sync_data()?;
            segment.file.seek(SeekFrom::Start(end))?;
        }
        Ok(Box::new(segment))
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

impl FullDisk {
    fn budgeted(&self, inner: Box<dyn SegmentFile>) -> Box<dyn SegmentFile> {
        Box::new(BudgetedSegment {
            inner,
            budget: self.budget.clone(),
        })
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
    fn create_new(&self, path: &Path, growth: u64) -> io::Result<Box<dyn SegmentFile>> {
        Ok(self.budgeted(OsFiles.create_new(path, growth)?))
    }

    fn open_append(
        &self,
        path: &Path,
        end: u64,
        zero_until: u64,
    ) -> io::Result<Box<dyn SegmentFile>> {
        Ok(self.budgeted(OsFiles.open_append(path, end, zero_until)?))
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
        let mut segment = OsFiles.create_new(&path, SEGMENT_GROWTH_BYTES).unwrap();
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

        let mut reopened = OsFiles.open_append(&path, 2, 4).unwrap();
        assert_eq!(
            size(&path),
            2 * SEGMENT_GROWTH_BYTES,
            "reopening keeps the size"
        );
        reopened.write_all(b"e").unwrap();
        reopened.sync_data().unwrap();
        assert_eq!(&std::fs::read(&path).unwrap()[..4], b"abe\0");

        let plain = directory.path().join("snapshot");
        let mut file = OsFiles.create_new(&plain, 0).unwrap();
        file.write_all(b"abc").unwrap();
        file.write_all(b"def").unwrap();
        assert_eq!(std::fs::read(&plain).unwrap(), b"abcdef");
        assert!(
            OsFiles.create_new(&plain, 0).is_err(),
            "never over an existing file"
        );
    }

    #[test]
    fn files_are_created_for_the_owner_only_and_never_through_a_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let directory = tempfile::tempdir().unwrap();
        let created = directory.path().join("created");
        OsFiles.create_new(&created, 0).unwrap();
        let mode = std::fs::metadata(&created).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, FILE_MODE);

        let victim = directory.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let planted = directory.path().join("planted");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        assert!(OsFiles.create_new(&planted, 0).is_err());
        assert!(OsFiles.open_append(&planted, 0, 8).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }
}
