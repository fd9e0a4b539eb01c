//! A load's input cut into pieces, one per job: each starts with the header line, holds whole
//! records only, and stays under `load.job_bytes` and `load.job_records`. A piece waits on disk
//! (owner-only, removed once it is dropped) until it is uploaded, and each record's digest goes
//! to a file of the job's (8 bytes a row) that matches the results later: the proxy's memory does
//! not grow with the input.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::loads::csv::{Found, LineEnding};

/// How large a piece may grow.
#[derive(Debug, Clone, Copy)]
pub struct PieceLimits {
    pub bytes: u64,
    pub records: u64,
}

/// A piece of input, complete, waiting on disk.
#[derive(Debug)]
pub struct Piece {
    pub file: Spooled,
    /// Its bytes, the header line included.
    pub bytes: u64,
    /// The input rows it holds, first and last (1 is the first row after the header).
    pub first_row: u64,
    pub last_row: u64,
    /// Each record's digest, in order, 8 bytes little-endian a row: row `first_row + i` is at
    /// `8 * i`.
    pub digests: Digests,
    /// The piece's own digest, of its records' digests in order: a piece sent again is known
    /// to be the same by it.
    pub digest: u64,
}

/// FNV-1a's offset basis and prime, 64 bits.
const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A piece's digest, of its records' digests in order (FNV-1a of their bytes).
#[derive(Debug, Clone, Copy)]
pub struct PieceDigest(u64);

impl PieceDigest {
    pub fn new() -> PieceDigest {
        PieceDigest(FNV_BASIS)
    }

    /// Takes the next record's digest.
    pub fn add(&mut self, row: u64) {
        for byte in row.to_le_bytes() {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(FNV_PRIME);
        }
    }

    pub fn value(self) -> u64 {
        self.0
    }
}

impl Default for PieceDigest {
    fn default() -> PieceDigest {
        PieceDigest::new()
    }
}

/// A job's row digests, in their file.
#[derive(Debug)]
pub struct Digests {
    pub file: Spooled,
    pub rows: u64,
}

impl Digests {
    /// Every digest, in row order, as kept: 8 bytes little-endian a row.
    pub fn bytes(&self) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.file.path())
    }

    /// Every digest, in row order.
    pub fn read(&self) -> std::io::Result<Vec<u64>> {
        let bytes = std::fs::read(self.file.path())?;
        Ok(bytes
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("chunks of 8")))
            .collect())
    }
}

/// A file of the spool, removed when dropped.
#[derive(Debug)]
pub struct Spooled {
    path: PathBuf,
}

impl Spooled {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Spooled {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A new owner-only file in `dir`, under a name nobody else can have taken.
fn create(dir: &Path, kind: &str) -> std::io::Result<(Spooled, File)> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    loop {
        let path = dir.join(format!("sfbulk-load-{:016x}.{kind}", fastrand::u64(..)));
        match options.open(&path) {
            Ok(file) => return Ok((Spooled { path }, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

struct Open {
    file: Spooled,
    writer: BufWriter<File>,
    bytes: u64,
    first_row: u64,
    last_row: u64,
    records: u64,
    digest_file: Spooled,
    digests: BufWriter<File>,
    digest: PieceDigest,
}

/// Cuts records into pieces as the reader finds them.
pub struct Splitter {
    dir: PathBuf,
    limits: PieceLimits,
    line_ending: LineEnding,
    header: Vec<u8>,
    open: Option<Open>,
    /// The last rows of the pieces a load already recorded, still to come: a load sent again
    /// is cut where it was cut the first time, whatever the limits say now.
    boundaries: std::collections::VecDeque<u64>,
}

impl Splitter {
    pub fn new(dir: PathBuf, limits: PieceLimits, line_ending: LineEnding) -> Splitter {
        Splitter {
            dir,
            limits,
            line_ending,
            header: Vec::new(),
            open: None,
            boundaries: Default::default(),
        }
    }

    /// Cuts the first pieces after these rows (a recorded load's), then by the limits.
    pub fn cut_after(mut self, last_rows: impl IntoIterator<Item = u64>) -> Splitter {
        self.boundaries = last_rows.into_iter().collect();
        self
    }

    /// Takes what the reader found; a record that does not fit the open piece completes it,
    /// which is returned, and starts the next. A piece that reaches `limits.records` is complete
    /// at once, not when a next record comes: a Bulk 1.0 load sends its pieces before a
    /// problem, and a next record that never ends (a quote never closed) must not hold back the
    /// whole piece before it.
    pub fn take(&mut self, found: Found<'_>) -> std::io::Result<Option<Piece>> {
        match found {
            Found::Header { raw, .. } => {
                self.header = raw.to_vec();
                if !self.header.ends_with(b"\n") {
                    self.header.extend_from_slice(self.line_ending.bytes());
                }
                Ok(None)
            }
            Found::Record {
                row, raw, digest, ..
            } => {
                let ending = if raw.ends_with(b"\n") {
                    &[][..]
                } else {
                    self.line_ending.bytes()
                };
                let size = (raw.len() + ending.len()) as u64;
                // An open piece holds fewer than `limits.records` (it is completed once it
                // holds that many), so at most one piece completes a record.
                let full = self.boundaries.is_empty()
                    && self
                        .open
                        .as_ref()
                        .is_some_and(|open| open.bytes + size > self.limits.bytes);
                let done = if full { self.complete()? } else { None };
                if self.open.is_none() {
                    let (file, handle) = create(&self.dir, "csv")?;
                    let mut writer = BufWriter::with_capacity(64 * 1024, handle);
                    writer.write_all(&self.header)?;
                    let (digest_file, digests) = create(&self.dir, "digests")?;
                    self.open = Some(Open {
                        file,
                        writer,
                        bytes: self.header.len() as u64,
                        first_row: row,
                        last_row: row,
                        records: 0,
                        digest_file,
                        digests: BufWriter::with_capacity(8 * 1024, digests),
                        digest: PieceDigest::new(),
                    });
                }
                let open = self.open.as_mut().expect("opened above");
                open.writer.write_all(raw)?;
                open.writer.write_all(ending)?;
                open.bytes += size;
                open.last_row = row;
                open.records += 1;
                open.digests.write_all(&digest.to_le_bytes())?;
                open.digest.add(digest);
                let cut = match self.boundaries.front() {
                    Some(&last) => row >= last,
                    None => open.records >= self.limits.records,
                };
                if cut {
                    debug_assert!(done.is_none(), "one record completes at most one piece");
                    if self.boundaries.front().is_some_and(|&last| row >= last) {
                        self.boundaries.pop_front();
                    }
                    return self.complete();
                }
                Ok(done)
            }
        }
    }

    /// The open piece, complete (the input ended, or its next record did not fit).
    pub fn complete(&mut self) -> std::io::Result<Option<Piece>> {
        let Some(mut open) = self.open.take() else {
            return Ok(None);
        };
        open.writer.flush()?;
        open.digests.flush()?;
        Ok(Some(Piece {
            file: open.file,
            bytes: open.bytes,
            first_row: open.first_row,
            last_row: open.last_row,
            digests: Digests {
                file: open.digest_file,
                rows: open.records,
            },
            digest: open.digest.value(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loads::csv::{Checks, Dialect, Reader};

    #[test]
    fn every_piece_starts_with_the_header_holds_whole_records_and_keeps_its_limits() {
        let dir = std::env::temp_dir();
        let mut reader = Reader::checking(
            Dialect {
                delimiter: b',',
                line_ending: LineEnding::Lf,
            },
            Checks {
                max_field_chars: 100,
            },
        );
        let mut splitter = Splitter::new(
            dir,
            PieceLimits {
                bytes: 30,
                records: 3,
            },
            LineEnding::Lf,
        );
        let mut pieces = Vec::new();
        let input = b"Name,Note\na,\"x\ny\"\nb,2\nc,3\nd,4\ne,\"a longer one\"\nlast,no-ending";
        for chunk in input.chunks(5) {
            reader.feed(chunk, &mut |found| {
                pieces.extend(splitter.take(found).unwrap());
            });
        }
        reader.finish(&mut |found| pieces.extend(splitter.take(found).unwrap()));
        pieces.extend(splitter.complete().unwrap());
        assert!(reader.problems().is_empty());
        let texts: Vec<String> = pieces
            .iter()
            .map(|p| std::fs::read_to_string(p.file.path()).unwrap())
            .collect();
        assert_eq!(
            texts,
            [
                "Name,Note\na,\"x\ny\"\nb,2\nc,3\n",
                "Name,Note\nd,4\n",
                "Name,Note\ne,\"a longer one\"\n",
                "Name,Note\nlast,no-ending\n",
            ]
        );
        let rows: Vec<(u64, u64, usize)> = pieces
            .iter()
            .map(|p| (p.first_row, p.last_row, p.digests.read().unwrap().len()))
            .collect();
        assert_eq!(rows, [(1, 3, 3), (4, 4, 1), (5, 5, 1), (6, 6, 1)]);
        for (piece, text) in pieces.iter().zip(&texts) {
            assert_eq!(piece.bytes, text.len() as u64);
        }
        let path = pieces[0].file.path().to_path_buf();
        drop(pieces);
        assert!(!path.exists(), "a dropped piece leaves no file");
    }
}
