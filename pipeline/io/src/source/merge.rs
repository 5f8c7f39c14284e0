//! Several input files read as one stream in event-time order.
//!
//! Inputs are often split by something other than time: by user, by host, by shard, each
//! file covering the same hours. Read one after the other, the second file's events would
//! all lie behind the first's newest event, and a streaming reader would call them late.
//! [`TimeOrdered`] reads them as a k-way merge instead:
//!
//! 1. each file is peeked (its first [`PEEK_ROWS`] records, or until its first valid event):
//!    its key is the earliest event time among them, a lower bound of where it starts;
//! 2. files are opened in key order, lazily (only files whose time ranges overlap are open at
//!    once), and the stream always continues with the open file whose next event is the
//!    earliest; a file stays in its own record order.
//!
//! So an event comes after an earlier-dated event only when its own file has it so: the
//! disorder a reader sees is the disorder within each file, whatever the number and order of
//! the files. A single file is read as it is, without a peek.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use personaflow_operators::Event;

use super::{open_reader, Chunk, EventReader, IngestMapping, InputFile, Reject};
use crate::Result;

/// Records read from each file to find where it starts.
pub const PEEK_ROWS: usize = 256;

/// Events in event-time order across files, with where each came from.
#[derive(Debug, Default)]
pub struct Merged {
    /// Events.
    pub events: Vec<Event>,
    /// Index (into [`TimeOrdered::files`]) of each event's file.
    pub files: Vec<u32>,
    /// Row of each event in its file.
    pub rows: Vec<u64>,
    /// Records rejected by the readers meanwhile.
    pub rejects: Vec<Reject>,
    /// Records read meanwhile (events plus rejects).
    pub records: u64,
}

impl Merged {
    /// Empties it, keeping the allocations.
    pub fn clear(&mut self) {
        self.events.clear();
        self.files.clear();
        self.rows.clear();
        self.rejects.clear();
        self.records = 0;
    }
}

/// One open file: its reader and the chunk being handed out.
struct Open {
    reader: Box<dyn EventReader>,
    chunk: Chunk,
    /// Next event of `chunk` to hand out.
    next: usize,
    /// Whether the reader may have more.
    more: bool,
}

impl Open {
    /// The event time of the next event, reading on when the chunk is used up; `None` when
    /// the file is exhausted. Rejects read on the way go to `out`.
    fn head(&mut self, out: &mut Merged) -> Result<Option<i64>> {
        while self.next >= self.chunk.events.len() {
            if !self.more {
                return Ok(None);
            }
            self.chunk.clear();
            self.next = 0;
            self.more = self.reader.next_chunk(&mut self.chunk)?;
            out.records += self.chunk.records() as u64;
            out.rejects.append(&mut self.chunk.rejects);
        }
        Ok(Some(self.chunk.events[self.next].ts_ms))
    }
}

enum Slot {
    /// Not opened yet.
    Waiting,
    Open(Box<Open>),
    Done,
}

/// Reads input files as one stream in event-time order (see the [module docs](self)).
pub struct TimeOrdered {
    files: Vec<InputFile>,
    mapping: IngestMapping,
    chunk_rows: usize,
    slots: Vec<Slot>,
    /// (key, file): a waiting file's key is its peeked start; an open file's, its next event.
    heap: BinaryHeap<Reverse<(i64, usize)>>,
    /// Bytes of the files read to the end.
    done_bytes: u64,
}

impl std::fmt::Debug for TimeOrdered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimeOrdered")
            .field("files", &self.files.len())
            .field("heap", &self.heap)
            .finish_non_exhaustive()
    }
}

impl TimeOrdered {
    /// Prepares to read `files` through `mapping`, `chunk_rows` records at a time, peeking
    /// every file first when there are several.
    pub fn new(files: Vec<InputFile>, mapping: &IngestMapping, chunk_rows: usize) -> Result<Self> {
        let mut heap = BinaryHeap::with_capacity(files.len());
        if files.len() == 1 {
            heap.push(Reverse((i64::MIN, 0)));
        } else {
            for (i, file) in files.iter().enumerate() {
                let key = start_key(file, mapping)?.unwrap_or(i64::MIN);
                heap.push(Reverse((key, i)));
            }
        }
        Ok(TimeOrdered {
            slots: files.iter().map(|_| Slot::Waiting).collect(),
            files,
            mapping: mapping.clone(),
            chunk_rows,
            heap,
            done_bytes: 0,
        })
    }

    /// The files, in the order given.
    pub fn files(&self) -> &[InputFile] {
        &self.files
    }

    /// Bytes read so far, over all files (for progress reports).
    pub fn bytes_read(&self) -> u64 {
        self.done_bytes
            + self
                .slots
                .iter()
                .map(|s| match s {
                    Slot::Open(o) => o.reader.bytes_read(),
                    _ => 0,
                })
                .sum::<u64>()
    }

    /// Appends up to the chunk size of events to `out` (nothing is cleared), in event-time
    /// order across files. `Ok(false)`: every file is read to its end.
    pub fn next_chunk(&mut self, out: &mut Merged) -> Result<bool> {
        let (start, records) = (out.events.len(), out.records);
        while out.events.len() - start < self.chunk_rows {
            let Some(Reverse((_, i))) = self.heap.pop() else {
                return Ok(out.events.len() > start || out.records > records);
            };
            if matches!(self.slots[i], Slot::Waiting) {
                let reader = open_reader(&self.files[i], &self.mapping, self.chunk_rows)?;
                self.slots[i] = Slot::Open(Box::new(Open {
                    reader,
                    chunk: Chunk::default(),
                    next: 0,
                    more: true,
                }));
            }
            let Slot::Open(open) = &mut self.slots[i] else {
                continue;
            };
            // Hand out this file's events while none of another file's is earlier.
            let bound = self.heap.peek().map_or(i64::MAX, |Reverse((k, _))| *k);
            let mut head = open.head(out)?;
            while let Some(ts) = head {
                if ts > bound || out.events.len() - start >= self.chunk_rows {
                    break;
                }
                let e = std::mem::replace(
                    &mut open.chunk.events[open.next],
                    Event::new(0, String::new(), String::new()),
                );
                out.rows.push(open.chunk.rows[open.next]);
                out.events.push(e);
                out.files.push(i as u32);
                open.next += 1;
                head = open.head(out)?;
            }
            match head {
                Some(ts) => self.heap.push(Reverse((ts, i))),
                None => {
                    self.done_bytes += self.files[i].size_bytes;
                    self.slots[i] = Slot::Done;
                }
            }
        }
        Ok(true)
    }
}

/// Where a file starts: the earliest event time among its first [`PEEK_ROWS`] records (read
/// on until a valid event is found); `None` for a file without a valid event.
fn start_key(file: &InputFile, mapping: &IngestMapping) -> Result<Option<i64>> {
    let mut reader = open_reader(file, mapping, PEEK_ROWS)?;
    let mut chunk = Chunk::default();
    loop {
        chunk.clear();
        let more = reader.next_chunk(&mut chunk)?;
        if let Some(min) = chunk.events.iter().map(|e| e.ts_ms).min() {
            return Ok(Some(min));
        }
        if !more {
            return Ok(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Format;

    fn csv(dir: &std::path::Path, name: &str, rows: &[(i64, &str)]) -> InputFile {
        let mut text = String::from("ts,user_id,action\n");
        for (ts, user) in rows {
            text.push_str(&format!("{ts},{user},x\n"));
        }
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        InputFile::new(path, Format::Csv).unwrap()
    }

    fn read(files: Vec<InputFile>, chunk_rows: usize) -> Vec<(i64, u32, u64)> {
        let mut merged = TimeOrdered::new(files, &IngestMapping::identity(), chunk_rows).unwrap();
        let mut out = Merged::default();
        while merged.next_chunk(&mut out).unwrap() {}
        out.events
            .iter()
            .zip(&out.files)
            .zip(&out.rows)
            .map(|((e, f), r)| (e.ts_ms, *f, *r))
            .collect()
    }

    #[test]
    fn files_split_by_user_over_the_same_hours_interleave_by_time() {
        let dir = tempfile::tempdir().unwrap();
        let a: Vec<(i64, &str)> = (0..50).map(|i| (i * 1000, "a")).collect();
        let b: Vec<(i64, &str)> = (0..50).map(|i| (i * 1000 + 500, "b")).collect();
        let files = vec![csv(dir.path(), "a.csv", &a), csv(dir.path(), "b.csv", &b)];
        for chunk_rows in [1, 3, 64] {
            let got = read(files.clone(), chunk_rows);
            assert_eq!(got.len(), 100);
            assert!(got.windows(2).all(|w| w[0].0 <= w[1].0), "in time order");
            // Rows are the files' own record numbers.
            assert_eq!(got[0], (0, 0, 1));
            assert_eq!(got[1], (500, 1, 1));
            assert_eq!(got[99], (49_500, 1, 50));
        }
    }

    #[test]
    fn each_file_keeps_its_own_order_and_later_files_open_lazily() {
        let dir = tempfile::tempdir().unwrap();
        let a = csv(dir.path(), "a.csv", &[(10, "a"), (5, "a"), (20, "a")]);
        let b = csv(dir.path(), "b.csv", &[(7, "b"), (30, "b")]);
        let c = csv(dir.path(), "c.csv", &[(100, "c")]);
        let got: Vec<(i64, u32)> = read(vec![c, a, b], 2)
            .into_iter()
            .map(|(t, f, _)| (t, f))
            .collect();
        // a starts at 5 (its peeked minimum), so it opens first; its 5 stays after its 10.
        assert_eq!(got, [(7, 2), (10, 1), (5, 1), (20, 1), (30, 2), (100, 0)]);
    }

    #[test]
    fn rejects_and_empty_files_are_read_too() {
        let dir = tempfile::tempdir().unwrap();
        let a = csv(dir.path(), "a.csv", &[(10, "a"), (-5, "a")]);
        let empty = csv(dir.path(), "e.csv", &[]);
        let mut merged = TimeOrdered::new(vec![a, empty], &IngestMapping::identity(), 8).unwrap();
        let mut out = Merged::default();
        while merged.next_chunk(&mut out).unwrap() {}
        assert_eq!(out.events.len(), 1);
        assert_eq!(out.rejects.len(), 1);
        assert_eq!(out.rejects[0].row, 2);
        assert_eq!(out.records, 2);
    }
}
