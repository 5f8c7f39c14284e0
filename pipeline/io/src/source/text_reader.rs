//! Delimited text readers: CSV and TSV (through the `csv` crate, with quoting),
//! whitespace-separated text (CDNOW style) and Zeek ASCII logs (`#fields` headers).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::convert::{Cell, Cells, N_FIELDS};
use super::mapping::{Compiled, TsUnit};
use super::{
    locate_columns, null_cells, open_text, printable, push_row, record_error, Chunk, EventReader,
    Format,
};
use crate::schema::CANONICAL_COLUMNS;
use crate::{Error, InputErrorKind, Result};

/// A text input: decompressed if need be, after [`open_text`]'s checks.
type Input = Box<dyn Read + Send>;

/// Zeek's field separator when a log has no `#separator` line.
const ZEEK_DEFAULT_SEPARATOR: u8 = b'\t';
/// The Zeek header line that names the columns.
const ZEEK_FIELDS: &str = "#fields";
/// The reason given for a text cell that is not UTF-8.
const NOT_UTF8: &str = "not valid UTF-8";
/// The UTF-8 byte order mark, stripped from the first header name.
const BOM: char = '\u{feff}';

/// How a line is split into fields.
#[derive(Clone, Copy, Debug)]
enum Split {
    /// Runs of ASCII whitespace.
    Whitespace,
    /// One separator byte, no quoting (Zeek).
    Byte(u8),
}

/// Where the records come from.
enum Source {
    /// CSV / TSV through the csv crate.
    Csv {
        reader: Box<csv::Reader<QuoteTracker>>,
        record: csv::ByteRecord,
    },
    /// Line-oriented formats (whitespace, Zeek).
    Lines {
        reader: BufReader<Input>,
        /// The current line.
        line: Vec<u8>,
        /// Whether `line` holds a data line read during the header scan, not yet processed.
        pending: bool,
        /// Field spans of the current line.
        spans: Vec<(usize, usize)>,
        split: Split,
        /// Lines starting with this byte are skipped.
        comment: Option<u8>,
        /// Zeek: `#` lines are headers, and a new `#fields` line changes the columns.
        zeek: bool,
    },
}

/// A reader of one delimited text file.
pub(crate) struct TextReader {
    path: PathBuf,
    file_label: String,
    source: Source,
    compiled: Compiled,
    indices: [Option<usize>; N_FIELDS],
    n_columns: usize,
    chunk_rows: usize,
    rows: u64,
    done: bool,
    /// Bytes read from the file.
    bytes: Arc<AtomicU64>,
}

impl std::fmt::Debug for TextReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextReader")
            .field("path", &self.path)
            .field("rows", &self.rows)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

fn csv_error(path: &Path, e: csv::Error) -> Error {
    if e.is_io_error() {
        match e.into_kind() {
            csv::ErrorKind::Io(io) => Error::io(path, io),
            other => Error::bad_input(path, InputErrorKind::Csv(format!("{other:?}"))),
        }
    } else {
        Error::bad_input(path, InputErrorKind::Csv(e.to_string()))
    }
}

fn utf8_cell(bytes: &[u8]) -> Cell<'_> {
    std::str::from_utf8(bytes).map_or(Cell::Invalid(NOT_UTF8), Cell::Str)
}

/// A header name: UTF-8 (lossy), trimmed, without a byte order mark.
fn header_name(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim_start_matches(BOM)
        .trim()
        .to_owned()
}

/// Where a CSV parser is within a record, byte by byte, as the `csv` crate parses it (RFC 4180
/// quoting: a quote opens a quoted field only at the start of a field; `""` inside it is a
/// quote; comment lines only at the start of a record).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum QuoteState {
    StartRecord,
    StartField,
    InField,
    InQuoted,
    /// A quote inside a quoted field: `""`, or the end of the quoting.
    QuoteInQuoted,
    InComment,
}

/// Passes a CSV file's bytes through and follows its quoting, so that a quote still open at
/// the end of the file is found (the `csv` crate ends the field there silently, and every
/// line after the quote becomes part of one value).
pub(crate) struct QuoteTracker {
    inner: Input,
    delimiter: u8,
    comment: Option<u8>,
    state: QuoteState,
    /// The current line, 1-based.
    line: u64,
    /// The line where the quoted field being read opened.
    quote_line: u64,
}

impl QuoteTracker {
    fn new(inner: Input, delimiter: u8, comment: Option<u8>) -> Self {
        QuoteTracker {
            inner,
            delimiter,
            comment,
            state: QuoteState::StartRecord,
            line: 1,
            quote_line: 0,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        use QuoteState::*;
        const QUOTE: u8 = b'"';
        for &b in bytes {
            let newline = b == b'\n' || b == b'\r';
            // Outside quotes, a delimiter starts a field and a line break a record.
            let unquoted = if b == self.delimiter {
                StartField
            } else if newline {
                StartRecord
            } else {
                InField
            };
            self.state = match self.state {
                StartRecord if self.comment == Some(b) => InComment,
                StartRecord | StartField if b == QUOTE => {
                    self.quote_line = self.line;
                    InQuoted
                }
                InQuoted if b == QUOTE => QuoteInQuoted,
                InQuoted => InQuoted,
                // `""`: a quote inside the quoted field.
                QuoteInQuoted if b == QUOTE => InQuoted,
                StartRecord | StartField | InField | QuoteInQuoted => unquoted,
                InComment if newline => StartRecord,
                InComment => InComment,
            };
            if b == b'\n' {
                self.line += 1;
            }
        }
    }

    /// The line of a quote still open (at the end of the file, a quote never closed).
    fn open_quote_line(&self) -> Option<u64> {
        (self.state == QuoteState::InQuoted).then_some(self.quote_line)
    }
}

impl Read for QuoteTracker {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.feed(&buf[..n]);
        Ok(n)
    }
}

/// Whether a field holds a line break (only a quoted field can).
fn has_line_break(field: &[u8]) -> bool {
    field.iter().any(|b| *b == b'\n' || *b == b'\r')
}

/// Lines a field spans.
fn lines_spanned(field: &[u8]) -> usize {
    1 + field.iter().filter(|b| **b == b'\n').count()
}

/// Removes the line terminator (`\n`, `\r\n`).
fn trim_newline(line: &mut Vec<u8>) {
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

fn split_line(line: &[u8], split: Split, spans: &mut Vec<(usize, usize)>) {
    spans.clear();
    match split {
        Split::Byte(sep) => {
            let mut start = 0;
            for (i, b) in line.iter().enumerate() {
                if *b == sep {
                    spans.push((start, i));
                    start = i + 1;
                }
            }
            spans.push((start, line.len()));
        }
        Split::Whitespace => {
            let mut start = None;
            for (i, b) in line.iter().enumerate() {
                match (b.is_ascii_whitespace(), start) {
                    (true, Some(s)) => {
                        spans.push((s, i));
                        start = None;
                    }
                    (false, None) => start = Some(i),
                    _ => {}
                }
            }
            if let Some(s) = start {
                spans.push((s, line.len()));
            }
        }
    }
}

/// Decodes Zeek's `\xHH` escapes (as in `#separator \x09`).
fn decode_escapes(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'x') {
            if let Some(v) = s
                .get(i + 2..i + 4)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// What a Zeek header block says.
#[derive(Debug, Default)]
struct ZeekHeader {
    separator: Option<u8>,
    fields: Option<Vec<String>>,
    types: Option<Vec<String>>,
    null_markers: Vec<String>,
}

impl ZeekHeader {
    /// Reads one `#` line into the header.
    fn read_line(&mut self, path: &Path, line: &[u8]) -> Result<()> {
        let text = String::from_utf8_lossy(line);
        if let Some(value) = text.strip_prefix("#separator ") {
            let decoded = decode_escapes(value.trim());
            match decoded.as_slice() {
                [sep] => self.separator = Some(*sep),
                _ => {
                    return Err(Error::bad_input(
                        path,
                        InputErrorKind::ZeekSeparator(value.to_string()),
                    ))
                }
            }
            return Ok(());
        }
        let sep = char::from(self.separator.unwrap_or(ZEEK_DEFAULT_SEPARATOR));
        let mut parts = text.split(sep);
        let key = parts.next().unwrap_or_default();
        let values = || parts.map(str::to_owned).collect::<Vec<String>>();
        match key {
            ZEEK_FIELDS => self.fields = Some(values()),
            "#types" => self.types = Some(values()),
            "#unset_field" | "#empty_field" => self.null_markers.extend(values()),
            _ => {}
        }
        Ok(())
    }
}

impl TextReader {
    /// Opens the file and reads its header; checks the mapping's columns against it.
    pub(crate) fn open(
        path: &Path,
        format: Format,
        compiled: Compiled,
        chunk_rows: usize,
    ) -> Result<Self> {
        let (file, bytes) = open_text(path)?;
        Self::from_input(path, file, bytes, format, compiled, chunk_rows)
    }

    /// A reader of `file` (named `path` in messages), whose bytes read `bytes` counts.
    pub(crate) fn from_input(
        path: &Path,
        file: Input,
        bytes: Arc<AtomicU64>,
        format: Format,
        compiled: Compiled,
        chunk_rows: usize,
    ) -> Result<Self> {
        let mut reader = match format {
            Format::Csv | Format::Tsv => Self::open_csv(path, file, format, compiled, chunk_rows),
            Format::Zeek => Self::open_zeek(path, file, compiled, chunk_rows),
            _ => Self::open_whitespace(path, file, compiled, chunk_rows),
        }?;
        reader.bytes = bytes;
        Ok(reader)
    }

    fn new(
        path: &Path,
        source: Source,
        compiled: Compiled,
        names: Option<Vec<String>>,
        chunk_rows: usize,
    ) -> Result<Self> {
        let (indices, n_columns, done) = match names {
            Some(names) => {
                let header: Vec<&str> = names.iter().map(String::as_str).collect();
                let indices = locate_columns(path, &compiled, &header, false)?;
                (indices, names.len(), false)
            }
            // An empty file: nothing to read, nothing to check.
            None => ([None; N_FIELDS], 0, true),
        };
        Ok(TextReader {
            path: path.to_path_buf(),
            file_label: path.display().to_string(),
            source,
            compiled,
            indices,
            n_columns,
            chunk_rows,
            rows: 0,
            done,
            bytes: Arc::default(),
        })
    }

    fn open_csv(
        path: &Path,
        file: Input,
        format: Format,
        compiled: Compiled,
        chunk_rows: usize,
    ) -> Result<Self> {
        let default_delimiter = if format == Format::Tsv { b'\t' } else { b',' };
        let delimiter = compiled.delimiter.unwrap_or(default_delimiter);
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(delimiter)
            .comment(compiled.comment)
            .from_reader(QuoteTracker::new(file, delimiter, compiled.comment));
        let mut record = csv::ByteRecord::new();
        let mut names = None;
        if compiled.header_expected() {
            if reader
                .read_byte_record(&mut record)
                .map_err(|e| csv_error(path, e))?
            {
                names = Some(record.iter().map(header_name).collect());
            }
        } else {
            names = Some(Vec::new());
        }
        if !compiled.column_names.is_empty() && names.is_some() {
            names = Some(compiled.column_names.clone());
        }
        let source = Source::Csv {
            reader: Box::new(reader),
            record,
        };
        Self::new(path, source, compiled, names, chunk_rows)
    }

    fn open_whitespace(
        path: &Path,
        file: Input,
        compiled: Compiled,
        chunk_rows: usize,
    ) -> Result<Self> {
        let mut reader = BufReader::new(file);
        let mut line = Vec::new();
        let mut names = None;
        let mut pending = false;
        loop {
            line.clear();
            if reader
                .read_until(b'\n', &mut line)
                .map_err(|e| Error::io(path, e))?
                == 0
            {
                break;
            }
            trim_newline(&mut line);
            if is_blank(&line) || compiled.comment.is_some_and(|c| line.first() == Some(&c)) {
                continue;
            }
            if compiled.header_expected() {
                let mut spans = Vec::new();
                split_line(&line, Split::Whitespace, &mut spans);
                names = Some(
                    spans
                        .iter()
                        .map(|&(s, e)| header_name(&line[s..e]))
                        .collect(),
                );
            } else {
                pending = true;
                names = Some(Vec::new());
            }
            break;
        }
        if !compiled.column_names.is_empty() && (names.is_some() || !compiled.header_expected()) {
            names = Some(compiled.column_names.clone());
        }
        let source = Source::Lines {
            reader,
            line,
            pending,
            spans: Vec::new(),
            split: Split::Whitespace,
            comment: compiled.comment,
            zeek: false,
        };
        Self::new(path, source, compiled, names, chunk_rows)
    }

    fn open_zeek(
        path: &Path,
        file: Input,
        mut compiled: Compiled,
        chunk_rows: usize,
    ) -> Result<Self> {
        let mut reader = BufReader::new(file);
        let mut line = Vec::new();
        let mut header = ZeekHeader::default();
        let mut pending = false;
        loop {
            line.clear();
            if reader
                .read_until(b'\n', &mut line)
                .map_err(|e| Error::io(path, e))?
                == 0
            {
                break;
            }
            trim_newline(&mut line);
            if line.first() == Some(&b'#') {
                header.read_line(path, &line)?;
            } else if !is_blank(&line) {
                pending = true;
                break;
            }
        }
        let names = if !compiled.column_names.is_empty() {
            Some(compiled.column_names.clone())
        } else {
            header.fields.clone()
        };
        if names.is_none() && pending {
            return Err(Error::bad_input(path, InputErrorKind::ZeekWithoutFields));
        }
        Self::apply_zeek_header(&mut compiled, &header);
        let source = Source::Lines {
            reader,
            line,
            pending,
            spans: Vec::new(),
            split: Split::Byte(header.separator.unwrap_or(ZEEK_DEFAULT_SEPARATOR)),
            comment: None,
            zeek: true,
        };
        Self::new(path, source, compiled, names, chunk_rows)
    }

    /// Zeek logs' timestamps are seconds and their null markers are declared in the header.
    fn apply_zeek_header(compiled: &mut Compiled, header: &ZeekHeader) {
        let converter = &mut compiled.converter;
        if !converter.ts_unit_explicit {
            converter.ts_unit = TsUnit::Seconds;
        }
        for marker in &header.null_markers {
            if !converter.null_markers.contains(marker) {
                converter.null_markers.push(marker.clone());
            }
        }
    }

    /// A new `#fields` header in the middle of a Zeek log (concatenated logs).
    fn zeek_reheader(&mut self, line: &[u8]) -> Result<()> {
        let mut header = ZeekHeader::default();
        if let Source::Lines {
            split: Split::Byte(sep),
            ..
        } = self.source
        {
            header.separator = Some(sep);
        }
        header.read_line(&self.path, line)?;
        if let Some(fields) = header.fields {
            if self.compiled.column_names.is_empty() {
                let names: Vec<&str> = fields.iter().map(String::as_str).collect();
                self.indices = locate_columns(&self.path, &self.compiled, &names, false)?;
                self.n_columns = fields.len();
            }
        }
        Ok(())
    }

    fn read_lines(&mut self, chunk: &mut Chunk) -> Result<usize> {
        let mut taken = 0;
        while taken < self.chunk_rows {
            let Source::Lines {
                reader,
                line,
                pending,
                spans,
                split,
                comment,
                zeek,
            } = &mut self.source
            else {
                return Ok(taken);
            };
            if !*pending {
                line.clear();
                if reader
                    .read_until(b'\n', line)
                    .map_err(|e| Error::io(&self.path, e))?
                    == 0
                {
                    self.done = true;
                    break;
                }
                trim_newline(line);
            }
            *pending = false;
            if is_blank(line) {
                continue;
            }
            if *zeek && line.first() == Some(&b'#') {
                if line.starts_with(ZEEK_FIELDS.as_bytes()) {
                    let header_line = line.clone();
                    self.zeek_reheader(&header_line)?;
                }
                continue;
            }
            if comment.is_some_and(|c| line.first() == Some(&c)) {
                continue;
            }
            split_line(line, *split, spans);
            self.rows += 1;
            taken += 1;
            let result = if spans.len() == self.n_columns {
                let mut cells: Cells<'_> = null_cells();
                for (cell, idx) in cells.iter_mut().zip(self.indices.iter()) {
                    if let Some(&(s, e)) = idx.and_then(|i| spans.get(i)) {
                        *cell = utf8_cell(&line[s..e]);
                    }
                }
                self.compiled.converter.event(&cells)
            } else {
                Err(record_error(format!(
                    "expected {} fields, found {}",
                    self.n_columns,
                    spans.len()
                )))
            };
            push_row(result, &self.file_label, self.rows, chunk);
        }
        Ok(taken)
    }

    fn read_csv(&mut self, chunk: &mut Chunk) -> Result<usize> {
        let Source::Csv { reader, record } = &mut self.source else {
            return Ok(0);
        };
        let mut taken = 0;
        while taken < self.chunk_rows {
            if !reader
                .read_byte_record(record)
                .map_err(|e| csv_error(&self.path, e))?
            {
                self.done = true;
                if let Some(line) = reader.get_ref().open_quote_line() {
                    return Err(Error::bad_input(
                        self.path.clone(),
                        InputErrorKind::UnclosedQuote { line },
                    ));
                }
                break;
            }
            self.rows += 1;
            taken += 1;
            if record.iter().any(has_line_break) {
                check_multiline_record(
                    &self.path,
                    record,
                    self.rows,
                    self.n_columns,
                    &self.indices,
                )?;
            }
            let result = if record.len() == self.n_columns {
                let mut cells: Cells<'_> = null_cells();
                for (cell, idx) in cells.iter_mut().zip(self.indices.iter()) {
                    if let Some(bytes) = idx.and_then(|i| record.get(i)) {
                        *cell = utf8_cell(bytes);
                    }
                }
                self.compiled.converter.event(&cells)
            } else {
                Err(record_error(format!(
                    "expected {} fields, found {}",
                    self.n_columns,
                    record.len()
                )))
            };
            push_row(result, &self.file_label, self.rows, chunk);
        }
        Ok(taken)
    }
}

/// Refuses a record that spans lines (a quoted field holds line breaks) when it does not look
/// like a legitimate multi-line value: it has the wrong number of fields, or a value of a
/// canonical column spans lines. Both mean, in practice, a quote that was never closed and
/// swallowed the lines after it; the error names the line where the record starts.
fn check_multiline_record(
    path: &Path,
    record: &csv::ByteRecord,
    row: u64,
    n_columns: usize,
    indices: &[Option<usize>; N_FIELDS],
) -> Result<()> {
    let line = record.position().map_or(0, |p| p.line());
    let spanned: usize = record.iter().map(lines_spanned).max().unwrap_or(1);
    let refuse = |what: String| {
        Err(Error::bad_input(
            path,
            InputErrorKind::QuoteSpansLines {
                line,
                record: row,
                what,
            },
        ))
    };
    if record.len() != n_columns {
        return refuse(format!(
            "a quoted field spans {spanned} lines and leaves the record with {} fields, not \
             {n_columns}",
            record.len()
        ));
    }
    for (canonical, idx) in CANONICAL_COLUMNS.iter().zip(indices) {
        if let Some(value) = idx.and_then(|i| record.get(i)) {
            if has_line_break(value) {
                return refuse(format!(
                    "the `{canonical}` value spans {} lines (it starts `{}`)",
                    lines_spanned(value),
                    printable(value.split(|b| *b == b'\n').next().unwrap_or_default())
                ));
            }
        }
    }
    Ok(())
}

impl EventReader for TextReader {
    fn next_chunk(&mut self, chunk: &mut Chunk) -> Result<bool> {
        if self.done {
            return Ok(false);
        }
        let taken = match self.source {
            Source::Csv { .. } => self.read_csv(chunk)?,
            Source::Lines { .. } => self.read_lines(chunk)?,
        };
        Ok(taken > 0 || !self.done)
    }

    fn rows_read(&self) -> u64 {
        self.rows
    }

    fn bytes_read(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_on_whitespace_runs_and_on_bytes() {
        let mut spans = Vec::new();
        let line = b"  00001 19970101  1   11.77\r";
        split_line(line, Split::Whitespace, &mut spans);
        let fields: Vec<&[u8]> = spans.iter().map(|&(s, e)| &line[s..e]).collect();
        assert_eq!(fields, [&b"00001"[..], b"19970101", b"1", b"11.77"]);
        split_line(b"a\t\tb", Split::Byte(b'\t'), &mut spans);
        assert_eq!(spans, [(0, 1), (2, 2), (3, 4)]);
    }

    #[test]
    fn the_quote_tracker_follows_csv_quoting() {
        let track = |text: &str| {
            let mut t = QuoteTracker::new(Box::new(std::io::empty()), b',', Some(b'#'));
            t.feed(text.as_bytes());
            t.open_quote_line()
        };
        assert_eq!(track("a,b\n1,\"x\"\n"), None);
        assert_eq!(track("a,\"multi\nline\",c\n"), None);
        assert_eq!(track("a,\"say \"\"hi\"\"\"\n"), None, "doubled quotes");
        assert_eq!(track("a,b\"c\n"), None, "a quote inside an unquoted field");
        assert_eq!(track("# a \"comment\n1,2\n"), None);
        assert_eq!(track("a,b\n\"open,1\n2,3\n"), Some(2));
        assert_eq!(track("a\r\nb\r\nc,\"x\r\n"), Some(3));
    }

    #[test]
    fn zeek_escapes_decode() {
        assert_eq!(decode_escapes("\\x09"), b"\t");
        assert_eq!(decode_escapes("\\x2c"), b",");
        assert_eq!(decode_escapes("ab"), b"ab");
        assert_eq!(decode_escapes("\\xZZ"), b"\\xZZ");
    }
}
