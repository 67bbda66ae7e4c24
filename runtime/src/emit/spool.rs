//! A bounded on-disk queue of records, for outputs whose far end may be away.
//!
//! Records are appended to segment files named after the sequence number of their first record
//! (`00000000000000000042.seg`), each record a little-endian `u32` length and the bytes. The
//! `committed` file holds the sequence number below which every record was delivered; segments
//! wholly below it are deleted. Both survive a restart: reopening scans the segments, cuts a
//! record torn by a power loss, and resumes after `committed`.
//!
//! Durability: every record reaches the kernel with one `write(2)` before [`Spool::append`]
//! returns, so a crash or SIGKILL of the process loses nothing. Segment data and the committed
//! offset are `fsync`ed at most once per `fsync_interval` (every append when it is zero), so a
//! power loss loses at most that much spooled data and may deliver that much again.
//!
//! The bound is `max_bytes`: when an append would exceed it, whole segments are deleted, oldest
//! first. The newest records are the ones a consumer of live results wants, and deleting a file
//! costs one `unlink` where dropping the newest would leave the stream stuck on stale data.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Largest record accepted; a longer length prefix on disk marks a torn or foreign file.
pub const MAX_RECORD: usize = 16 << 20;
const LEN_BYTES: u64 = 4;
const COMMITTED: &str = "committed";

/// Why the spool failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool folder or one of its files could not be created, read or written: check the
    /// folder exists or can be created, is writable by the service, and has space.
    #[error("spool {path}: cannot {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    /// A record is longer than the spool accepts; it is not written.
    #[error("spool record of {len} bytes exceeds the {MAX_RECORD}-byte limit")]
    TooLong { len: usize },
}

/// One segment file: records `first..first + records`.
#[derive(Clone, Copy, Debug)]
struct Segment {
    first: u64,
    records: u64,
    bytes: u64,
}

impl Segment {
    fn end(&self) -> u64 {
        self.first + self.records
    }
}

/// Where [`Spool::read`] is: the record `seq` starts at byte `pos` of the segment `first`.
struct Cursor {
    seq: u64,
    first: u64,
    pos: u64,
    file: Option<File>,
}

/// Records deleted by the bound: `first..end` in sequence numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Evicted {
    pub first: u64,
    pub end: u64,
}

/// The spool: append at the tail, read from a cursor, commit what was delivered.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    fsync_interval: Duration,
    segments: VecDeque<Segment>,
    /// The last segment, open for appending.
    tail: Option<File>,
    committed_file: File,
    committed: u64,
    next_seq: u64,
    bytes: u64,
    cursor: Cursor,
    scratch: Vec<u8>,
    dirty: bool,
    synced: Instant,
}

impl Spool {
    /// Opens or creates the spool in `dir`, keeping at most `max_bytes` of records.
    pub fn open(dir: &Path, max_bytes: u64, fsync_interval: Duration) -> Result<Self, SpoolError> {
        let io = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| SpoolError::Io { path, op, source }
        };
        fs::create_dir_all(dir).map_err(io("create the folder", dir))?;
        let mut firsts = Vec::new();
        for entry in fs::read_dir(dir).map_err(io("list the folder", dir))? {
            let name = entry.map_err(io("list the folder", dir))?.file_name();
            let name = name.to_string_lossy();
            if let Some(first) = name
                .strip_suffix(".seg")
                .and_then(|s| s.parse::<u64>().ok())
            {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        let mut segments = VecDeque::new();
        for first in firsts {
            let path = segment_path(dir, first);
            let seg = scan(&path, first).map_err(io("read a segment", &path))?;
            segments.push_back(seg);
        }
        let path = dir.join(COMMITTED);
        let committed_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("open", &path))?;
        let mut word = [0u8; 8];
        let committed = match committed_file.read_exact_at(&mut word, 0) {
            Ok(()) => u64::from_le_bytes(word),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(io("read", &path)(e)),
        };
        let next_seq = segments
            .back()
            .map_or(committed, Segment::end)
            .max(committed);
        let bytes = segments.iter().map(|s| s.bytes).sum();
        let mut spool = Self {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes: (max_bytes / 8).clamp(4096, 4 << 20),
            fsync_interval,
            segments,
            tail: None,
            committed_file,
            committed,
            next_seq,
            bytes,
            cursor: Cursor {
                seq: committed,
                first: u64::MAX,
                pos: 0,
                file: None,
            },
            scratch: Vec::new(),
            dirty: false,
            synced: Instant::now(),
        };
        spool.delete_acked()?;
        Ok(spool)
    }

    /// Appends `record`; returns the records the bound deleted to make room, if any.
    pub fn append(&mut self, record: &[u8]) -> Result<Option<Evicted>, SpoolError> {
        if record.len() > MAX_RECORD {
            return Err(SpoolError::TooLong { len: record.len() });
        }
        let len = LEN_BYTES + record.len() as u64;
        let mut evicted: Option<Evicted> = None;
        while self.bytes + len > self.max_bytes && !self.segments.is_empty() {
            if self.segments.len() == 1 {
                // The only segment is the one being written: close it so it can go.
                self.roll()?;
            }
            let seg = self.segments.pop_front().expect("checked non-empty");
            let path = segment_path(&self.dir, seg.first);
            fs::remove_file(&path).map_err(|source| SpoolError::Io {
                path,
                op: "delete an evicted segment",
                source,
            })?;
            self.bytes -= seg.bytes;
            let e = evicted.get_or_insert(Evicted {
                first: seg.first,
                end: seg.first,
            });
            e.end = seg.end();
        }
        let roll = self
            .segments
            .back()
            .is_none_or(|s| s.bytes + len > self.segment_bytes && s.records > 0);
        if roll || self.tail.is_none() {
            self.start_segment(roll)?;
        }
        self.scratch.clear();
        self.scratch
            .extend_from_slice(&(record.len() as u32).to_le_bytes());
        self.scratch.extend_from_slice(record);
        let seg = self.segments.back_mut().expect("a segment was started");
        let path = segment_path(&self.dir, seg.first);
        let tail = self.tail.as_mut().expect("a segment was started");
        // One write per record: the reader, in this process, never sees half of one.
        tail.write_all(&self.scratch)
            .map_err(|source| SpoolError::Io {
                path,
                op: "append to",
                source,
            })?;
        seg.records += 1;
        seg.bytes += len;
        self.bytes += len;
        self.next_seq += 1;
        self.dirty = true;
        self.maybe_sync()?;
        Ok(evicted)
    }

    /// Opens the segment for `next_seq`: a new file when `new`, else the last one for appending.
    fn start_segment(&mut self, new: bool) -> Result<(), SpoolError> {
        if new {
            self.roll()?;
            self.segments.push_back(Segment {
                first: self.next_seq,
                records: 0,
                bytes: 0,
            });
        }
        let first = self.segments.back().expect("a segment exists").first;
        let path = segment_path(&self.dir, first);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| SpoolError::Io {
                path,
                op: "open a segment",
                source,
            })?;
        self.tail = Some(file);
        Ok(())
    }

    /// Closes the tail segment, syncing it first unless syncing is left to the interval.
    fn roll(&mut self) -> Result<(), SpoolError> {
        if let Some(tail) = self.tail.take()
            && self.fsync_interval.is_zero()
        {
            tail.sync_data().map_err(|source| SpoolError::Io {
                path: self.dir.clone(),
                op: "sync a segment",
                source,
            })?;
        }
        Ok(())
    }

    /// Reads the record at the cursor into `out` and moves past it; `None` when the cursor is at
    /// the tail. A cursor below the oldest record skips ahead to it.
    pub fn read(&mut self, out: &mut Vec<u8>) -> Result<Option<u64>, SpoolError> {
        let seq = self.cursor.seq.max(self.oldest());
        if seq >= self.next_seq {
            return Ok(None);
        }
        let Some(seg) = self
            .segments
            .iter()
            .find(|s| (s.first..s.end()).contains(&seq))
        else {
            return Ok(None);
        };
        let seg = *seg;
        let path = segment_path(&self.dir, seg.first);
        let io = |op| {
            let path = path.clone();
            move |source| SpoolError::Io { path, op, source }
        };
        if self.cursor.first != seg.first || self.cursor.seq != seq || self.cursor.file.is_none() {
            let file = File::open(&path).map_err(io("open a segment"))?;
            let mut pos = 0;
            for _ in seg.first..seq {
                pos += LEN_BYTES + record_len(&file, pos).map_err(io("read a segment"))? as u64;
            }
            self.cursor = Cursor {
                seq,
                first: seg.first,
                pos,
                file: Some(file),
            };
        }
        let file = self.cursor.file.as_ref().expect("opened above");
        let len = record_len(file, self.cursor.pos).map_err(io("read a segment"))?;
        out.clear();
        out.resize(len, 0);
        file.read_exact_at(out, self.cursor.pos + LEN_BYTES)
            .map_err(io("read a segment"))?;
        self.cursor.pos += LEN_BYTES + len as u64;
        self.cursor.seq = seq + 1;
        Ok(Some(seq))
    }

    /// Moves the cursor back (or forward) to `seq`, e.g. to send again what was not acknowledged.
    pub fn seek(&mut self, seq: u64) {
        if seq != self.cursor.seq {
            self.cursor.seq = seq;
            self.cursor.file = None;
        }
    }

    /// Records below `seq` were delivered: remember that and delete the segments they filled.
    pub fn commit(&mut self, seq: u64) -> Result<(), SpoolError> {
        if seq <= self.committed {
            return Ok(());
        }
        self.committed = seq;
        let path = self.dir.join(COMMITTED);
        self.committed_file
            .write_all_at(&seq.to_le_bytes(), 0)
            .map_err(|source| SpoolError::Io {
                path,
                op: "write",
                source,
            })?;
        self.dirty = true;
        self.delete_acked()?;
        self.maybe_sync()
    }

    fn delete_acked(&mut self) -> Result<(), SpoolError> {
        // The tail segment stays while it is being written.
        while self.segments.len() > 1 && self.segments[0].end() <= self.committed {
            let seg = self.segments.pop_front().expect("checked length");
            let path = segment_path(&self.dir, seg.first);
            fs::remove_file(&path).map_err(|source| SpoolError::Io {
                path,
                op: "delete a delivered segment",
                source,
            })?;
            self.bytes -= seg.bytes;
        }
        Ok(())
    }

    /// Syncs what was written when the interval has passed; the caller's idle loop calls it too.
    pub fn maybe_sync(&mut self) -> Result<(), SpoolError> {
        if !self.dirty || self.synced.elapsed() < self.fsync_interval {
            return Ok(());
        }
        self.sync()
    }

    /// Syncs the tail segment, the committed offset and the folder now.
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        let io = |source| SpoolError::Io {
            path: self.dir.clone(),
            op: "sync",
            source,
        };
        if let Some(tail) = &self.tail {
            tail.sync_data().map_err(io)?;
        }
        self.committed_file.sync_data().map_err(io)?;
        // New and deleted segment names are durable only once the folder is.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        self.dirty = false;
        self.synced = Instant::now();
        Ok(())
    }

    /// Sequence number of the oldest record still kept.
    pub fn oldest(&self) -> u64 {
        self.segments
            .iter()
            .find(|s| s.records > 0)
            .map_or(self.next_seq, |s| s.first)
            .max(self.committed)
    }

    /// Below this, every record was delivered or evicted.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Sequence number the next appended record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Records kept and not yet committed.
    pub fn depth(&self) -> u64 {
        self.next_seq - self.oldest()
    }

    /// Bytes of the segment files on disk.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.seg"))
}

fn record_len(file: &File, pos: u64) -> io::Result<usize> {
    let mut len = [0u8; LEN_BYTES as usize];
    file.read_exact_at(&mut len, pos)?;
    Ok(u32::from_le_bytes(len) as usize)
}

/// Counts the whole records of a segment and cuts a torn last one.
fn scan(path: &Path, first: u64) -> io::Result<Segment> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let size = file.metadata()?.len();
    let (mut pos, mut records) = (0u64, 0u64);
    while pos + LEN_BYTES <= size {
        let len = record_len(&file, pos)?;
        if len > MAX_RECORD || pos + LEN_BYTES + len as u64 > size {
            break;
        }
        pos += LEN_BYTES + len as u64;
        records += 1;
    }
    if pos < size {
        file.set_len(pos)?;
    }
    Ok(Segment {
        first,
        records,
        bytes: pos,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ocelli-spool-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn drain(spool: &mut Spool) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while let Some(seq) = spool.read(&mut buf).unwrap() {
            out.push((seq, buf.clone()));
        }
        out
    }

    #[test]
    fn records_come_back_in_order_after_a_reopen_and_commits_delete_segments() {
        let dir = scratch("order");
        let lazy = Duration::from_secs(60);
        let mut spool = Spool::open(&dir, 64 << 10, lazy).unwrap();
        for i in 0..3000u32 {
            assert_eq!(
                spool.append(format!("record {i}").as_bytes()).unwrap(),
                None
            );
        }
        let segments = fs::read_dir(&dir).unwrap().count() - 1;
        assert!(segments > 2, "{segments} segments");
        let got = drain(&mut spool);
        assert_eq!(got.len(), 3000);
        spool.commit(1000).unwrap();
        drop(spool);

        let mut spool = Spool::open(&dir, 64 << 10, lazy).unwrap();
        assert!(fs::read_dir(&dir).unwrap().count() - 1 < segments);
        assert_eq!((spool.committed(), spool.depth()), (1000, 2000));
        let got = drain(&mut spool);
        for (i, (seq, rec)) in got.iter().enumerate() {
            assert_eq!(*seq, 1000 + i as u64);
            assert_eq!(rec, format!("record {seq}").as_bytes());
        }
        spool.seek(2990);
        assert_eq!(drain(&mut spool).len(), 10);
        spool.commit(3000).unwrap();
        assert_eq!(spool.depth(), 0);
        spool.append(b"after").unwrap();
        assert_eq!(drain(&mut spool), vec![(3000, b"after".to_vec())]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_bound_evicts_the_oldest_segments_and_says_which_records() {
        let dir = scratch("bound");
        let mut spool = Spool::open(&dir, 64 << 10, Duration::from_secs(1)).unwrap();
        let record = [7u8; 996];
        let mut evicted = 0;
        for _ in 0..1000 {
            if let Some(e) = spool.append(&record).unwrap() {
                assert_eq!(e.first, evicted, "evicted from the oldest on");
                evicted = e.end;
            }
        }
        assert!(spool.bytes() <= 64 << 10);
        assert_eq!(spool.oldest(), evicted);
        assert_eq!(spool.depth(), 1000 - evicted);
        let got = drain(&mut spool);
        assert_eq!(got.first().unwrap().0, evicted);
        assert_eq!(got.last().unwrap().0, 999);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_last_record_is_cut_on_reopen() {
        let dir = scratch("torn");
        let mut spool = Spool::open(&dir, 1 << 20, Duration::ZERO).unwrap();
        spool.append(b"whole").unwrap();
        spool.append(b"torn record").unwrap();
        drop(spool);
        let seg = segment_path(&dir, 0);
        let len = fs::metadata(&seg).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let mut spool = Spool::open(&dir, 1 << 20, Duration::ZERO).unwrap();
        spool.append(b"next").unwrap();
        assert_eq!(
            drain(&mut spool),
            vec![(0, b"whole".to_vec()), (1, b"next".to_vec())]
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
