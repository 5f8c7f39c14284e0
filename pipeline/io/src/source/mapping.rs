//! Ingest mappings: how an input schema maps onto the canonical event schema.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::convert::{Converter, TsFormat, N_FIELDS, SCALABLE};
use super::Format;
use crate::schema::CANONICAL_COLUMNS;
use crate::{Error, Result, SettingsErrorKind};

/// The values that mean "no value" when a mapping does not say: the empty string.
pub const DEFAULT_NULL_MARKERS: [&str; 1] = [""];
/// The unit of numeric timestamps when a mapping does not say (Zeek logs: seconds).
pub const DEFAULT_TS_UNIT: TsUnit = TsUnit::Millis;
/// Where a mapping that was not read from a file says it comes from, in messages.
pub const BUILT_IN_ORIGIN: &str = "<built-in identity mapping>";

/// An ingest mapping: how an input schema maps onto the canonical event schema.
///
/// A mapping is a TOML file. Every table is optional; the empty mapping is the identity
/// ([`IngestMapping::identity`]): canonical column names, millisecond timestamps, the format
/// taken from the file extension. Unknown keys are errors.
///
/// ```toml
/// # Input format for every file read with this mapping (otherwise from the extension):
/// # parquet | csv | tsv | ndjson | zeek | whitespace
/// format = "zeek"
/// # Text values meaning "no value" (default [""]); Zeek headers add their own markers.
/// null_markers = ["-", "(empty)", ""]
///
/// [columns]            # canonical column = source column
/// user_id = "id.orig_h"
/// session_id = "uid"
/// latency_ms = "duration"
///
/// [constants]          # canonical column = literal value (string, integer, float or bool)
/// category = "network"
///
/// [scale]              # canonical numeric column = factor (bytes_in, bytes_out, latency_ms)
/// latency_ms = 1000.0  # seconds -> milliseconds
///
/// [timestamp]
/// unit = "s"           # numeric timestamps: s | ms | us | ns (default ms; Zeek: s)
/// # format = "%Y%m%d"  # string timestamps: a chrono format or "rfc3339"
///
/// [text]               # CSV / TSV / whitespace options
/// delimiter = ","      # one character (default: `,` for csv, tab for tsv)
/// has_header = true    # default: true, or false when column_names is given
/// column_names = []    # names of the columns, in order (replace the header when both are set)
/// comment = "#"        # lines starting with this character are skipped
/// ```
///
/// A canonical column not named in `[columns]` or `[constants]` is read from the source
/// column of the same name, when the input has it. A source column named in `[columns]` must
/// exist in every input (except NDJSON, whose objects may leave keys out), or
/// [`check_input`](super::check_input) fails naming it. Integer columns (`bytes_in`,
/// `bytes_out`) with a `scale` are read as numbers, multiplied and rounded to the nearest
/// integer (e.g. dollars × 100 = cents). Timestamps without a UTC offset are UTC.
///
/// # Example
///
/// ```
/// use std::path::Path;
/// use personaflow_io::source::{Format, IngestMapping};
///
/// let mapping = IngestMapping::from_toml_str(
///     r#"
///     format = "whitespace"
///     [text]
///     column_names = ["customer", "date", "cds", "dollars"]
///     [columns]
///     user_id = "customer"
///     ts = "date"
///     [timestamp]
///     format = "%Y%m%d"
///     [constants]
///     action = "purchase"
///     "#,
///     Path::new("cdnow.toml"),
/// )
/// .unwrap();
/// assert_eq!(mapping.format, Some(Format::Whitespace));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestMapping {
    /// Input format for every file; `None` = detect from the file extension.
    #[serde(default)]
    pub format: Option<Format>,
    /// Renames: canonical column -> source column.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// Constants: canonical column -> value used for every record.
    #[serde(default)]
    pub constants: BTreeMap<String, Literal>,
    /// Factors: canonical numeric column -> multiplier applied to the source value.
    #[serde(default)]
    pub scale: BTreeMap<String, f64>,
    /// How timestamps are parsed.
    #[serde(default)]
    pub timestamp: TimestampSpec,
    /// Options of delimited text formats.
    #[serde(default)]
    pub text: TextOptions,
    /// Text values that mean "no value".
    #[serde(default = "default_null_markers")]
    pub null_markers: Vec<String>,
    /// The file the mapping was read from (for messages).
    #[serde(skip)]
    origin: PathBuf,
}

/// A constant value in a mapping.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Literal {
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string (parsed like a text cell of the column it is for).
    Str(String),
}

/// How timestamps are parsed (`[timestamp]`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampSpec {
    /// Unit of numeric timestamps (integers, floats or numeric strings); default
    /// [`DEFAULT_TS_UNIT`], or seconds for Zeek logs.
    #[serde(default)]
    pub unit: Option<TsUnit>,
    /// Format of string timestamps: a chrono `strftime` format (e.g. `%Y%m%d`, taken as UTC
    /// unless it has `%z`) or `rfc3339`. Default: numbers in `unit`, otherwise RFC 3339.
    #[serde(default)]
    pub format: Option<String>,
}

/// The unit of a numeric timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TsUnit {
    /// Seconds (`s`); fractions allowed, e.g. `1379262000.123456`.
    #[serde(rename = "s")]
    Seconds,
    /// Milliseconds (`ms`).
    #[serde(rename = "ms")]
    Millis,
    /// Microseconds (`us`).
    #[serde(rename = "us", alias = "µs")]
    Micros,
    /// Nanoseconds (`ns`).
    #[serde(rename = "ns")]
    Nanos,
}

/// Options of delimited text inputs (`[text]`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextOptions {
    /// Field delimiter, one ASCII character; default `,` (CSV) or tab (TSV). Ignored for
    /// whitespace-separated and Zeek inputs.
    #[serde(default)]
    pub delimiter: Option<String>,
    /// Whether the first record is a header; default true unless `column_names` is given.
    #[serde(default)]
    pub has_header: Option<bool>,
    /// Column names in order, for headerless inputs (or to replace a header).
    #[serde(default)]
    pub column_names: Vec<String>,
    /// Lines starting with this ASCII character are skipped.
    #[serde(default)]
    pub comment: Option<String>,
}

fn default_null_markers() -> Vec<String> {
    DEFAULT_NULL_MARKERS
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

impl Default for IngestMapping {
    fn default() -> Self {
        IngestMapping::identity()
    }
}

/// Where a canonical column comes from in the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SourceColumn {
    /// Name of the source column.
    pub name: String,
    /// Whether the mapping named it in `[columns]` (then it must exist).
    pub explicit: bool,
}

/// A validated mapping, ready for readers.
#[derive(Clone, Debug)]
pub(crate) struct Compiled {
    /// Source column per canonical column (None when a constant provides it).
    pub sources: [Option<SourceColumn>; N_FIELDS],
    /// Some source column is a dotted path (JSON objects are then looked up through a
    /// `serde_json::Value`).
    pub dotted_sources: bool,
    /// Row converter.
    pub converter: Converter,
    /// Field delimiter, if set.
    pub delimiter: Option<u8>,
    /// Header option, if set.
    pub has_header: Option<bool>,
    /// Column names, if given.
    pub column_names: Vec<String>,
    /// Comment character, if set.
    pub comment: Option<u8>,
    /// The mapping file.
    pub origin: PathBuf,
}

impl Compiled {
    /// Whether the first record of a delimited text input is a header.
    pub(crate) fn header_expected(&self) -> bool {
        self.has_header.unwrap_or(self.column_names.is_empty())
    }
}

impl IngestMapping {
    /// The identity mapping: canonical column names, everything else default.
    pub fn identity() -> Self {
        IngestMapping {
            format: None,
            columns: BTreeMap::new(),
            constants: BTreeMap::new(),
            scale: BTreeMap::new(),
            timestamp: TimestampSpec::default(),
            text: TextOptions::default(),
            null_markers: default_null_markers(),
            origin: PathBuf::from(BUILT_IN_ORIGIN),
        }
    }

    /// Reads and validates a mapping file.
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml_str(&text, path)
    }

    /// Parses and validates a mapping; `origin` names it in error messages.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Self> {
        let mut mapping: IngestMapping = toml::from_str(text).map_err(|e| {
            let (at, message) = crate::error::toml_error_at(text, &e);
            Error::Config {
                path: origin.to_path_buf(),
                kind: SettingsErrorKind::Parse { at, message },
            }
        })?;
        mapping.origin = origin.to_path_buf();
        mapping.validate()?;
        Ok(mapping)
    }

    /// The file this mapping was read from (or [`BUILT_IN_ORIGIN`]).
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// Checks the mapping: only canonical columns, no column both renamed and constant,
    /// scales only on numeric columns, valid constants, delimiter and timestamp format.
    pub fn validate(&self) -> Result<()> {
        self.compile().map(drop)
    }

    fn config_error(&self, reason: String) -> Error {
        Error::Config {
            path: self.origin.clone(),
            kind: SettingsErrorKind::Invalid(reason),
        }
    }

    fn canonical_index(&self, table: &str, name: &str) -> Result<usize> {
        CANONICAL_COLUMNS
            .iter()
            .position(|c| *c == name)
            .ok_or_else(|| {
                self.config_error(format!(
                    "[{table}] names `{name}`, which is not a canonical column (one of {})",
                    CANONICAL_COLUMNS.join(", ")
                ))
            })
    }

    fn ascii_char(&self, key: &str, value: Option<&str>) -> Result<Option<u8>> {
        match value {
            None => Ok(None),
            Some(s) if s.len() == 1 && s.is_ascii() => Ok(s.bytes().next()),
            Some(s) => {
                Err(self.config_error(format!("text.{key} must be one ASCII character, not {s:?}")))
            }
        }
    }

    /// Validates the mapping and prepares it for readers.
    pub(crate) fn compile(&self) -> Result<Compiled> {
        let mut sources: [Option<SourceColumn>; N_FIELDS] = std::array::from_fn(|i| {
            Some(SourceColumn {
                name: CANONICAL_COLUMNS[i].to_owned(),
                explicit: false,
            })
        });
        for (canonical, source) in &self.columns {
            let i = self.canonical_index("columns", canonical)?;
            if source.is_empty() {
                return Err(self.config_error(format!("columns.{canonical} is empty")));
            }
            sources[i] = Some(SourceColumn {
                name: source.clone(),
                explicit: true,
            });
        }
        let mut constants: [Option<Literal>; N_FIELDS] = std::array::from_fn(|_| None);
        for (canonical, value) in &self.constants {
            let i = self.canonical_index("constants", canonical)?;
            if self.columns.contains_key(canonical) {
                return Err(self.config_error(format!(
                    "`{canonical}` is both renamed in [columns] and set in [constants]"
                )));
            }
            sources[i] = None;
            constants[i] = Some(value.clone());
        }
        let mut scale = [None; N_FIELDS];
        for (canonical, factor) in &self.scale {
            let i = self.canonical_index("scale", canonical)?;
            if !SCALABLE.contains(&i) {
                return Err(self.config_error(format!(
                    "scale.{canonical}: only bytes_in, bytes_out and latency_ms can be scaled"
                )));
            }
            if !(factor.is_finite() && *factor > 0.0) {
                return Err(self.config_error(format!(
                    "scale.{canonical} must be a positive number, not {factor}"
                )));
            }
            scale[i] = Some(*factor);
        }
        let ts_format = TsFormat::from_spec(self.timestamp.format.as_deref())
            .map_err(|r| self.config_error(format!("timestamp.format: {r}")))?;
        let converter = Converter {
            ts_unit: self.timestamp.unit.unwrap_or(DEFAULT_TS_UNIT),
            ts_unit_explicit: self.timestamp.unit.is_some(),
            ts_format,
            scale,
            constants,
            null_markers: self.null_markers.clone(),
        };
        converter.check_constants().map_err(|e| {
            self.config_error(format!(
                "constants.{}: {}",
                e.field.unwrap_or("?"),
                e.reason
            ))
        })?;
        let delimiter = self.ascii_char("delimiter", self.text.delimiter.as_deref())?;
        let comment = self.ascii_char("comment", self.text.comment.as_deref())?;
        if delimiter.is_some() && delimiter == comment {
            return Err(self.config_error("text.delimiter and text.comment must differ".to_owned()));
        }
        let mut seen = std::collections::BTreeSet::new();
        for name in &self.text.column_names {
            if !seen.insert(name.as_str()) {
                return Err(self.config_error(format!("text.column_names lists `{name}` twice")));
            }
        }
        if self.text.has_header == Some(false)
            && self.text.column_names.is_empty()
            && matches!(
                self.format,
                None | Some(Format::Csv | Format::Tsv | Format::Whitespace)
            )
        {
            return Err(
                self.config_error("text.has_header = false needs text.column_names".to_owned())
            );
        }
        let dotted_sources = sources.iter().flatten().any(|s| s.name.contains('.'));
        Ok(Compiled {
            sources,
            dotted_sources,
            converter,
            delimiter,
            has_header: self.text.has_header,
            column_names: self.text.column_names.clone(),
            comment,
            origin: self.origin.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<IngestMapping> {
        IngestMapping::from_toml_str(text, Path::new("test.toml"))
    }

    fn config_reason(text: &str) -> String {
        match parse(text) {
            Err(Error::Config { path, kind }) => {
                assert_eq!(path, Path::new("test.toml"));
                kind.to_string()
            }
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn empty_mapping_is_the_identity() {
        let mapping = parse("").unwrap();
        let identity = IngestMapping::identity();
        assert_eq!(mapping.columns, identity.columns);
        assert_eq!(mapping.null_markers, vec![String::new()]);
        let compiled = identity.compile().unwrap();
        for (i, source) in compiled.sources.iter().enumerate() {
            let source = source.as_ref().unwrap();
            assert_eq!(source.name, CANONICAL_COLUMNS[i]);
            assert!(!source.explicit);
        }
        assert_eq!(compiled.converter.ts_unit, TsUnit::Millis);
    }

    #[test]
    fn full_mapping_parses() {
        let mapping = parse(
            r##"
            format = "tsv"
            null_markers = ["-", ""]
            [columns]
            user_id = "uid"
            [constants]
            action = "buy"
            authenticated = true
            status = 200
            [scale]
            latency_ms = 1000.0
            [timestamp]
            unit = "us"
            [text]
            delimiter = "|"
            has_header = false
            column_names = ["uid", "ts"]
            comment = "#"
            "##,
        )
        .unwrap();
        assert_eq!(mapping.format, Some(Format::Tsv));
        assert_eq!(mapping.timestamp.unit, Some(TsUnit::Micros));
        assert_eq!(mapping.constants["authenticated"], Literal::Bool(true));
        assert_eq!(mapping.constants["status"], Literal::Int(200));
        let compiled = mapping.compile().unwrap();
        assert_eq!(compiled.delimiter, Some(b'|'));
        assert_eq!(compiled.comment, Some(b'#'));
        assert!(!compiled.header_expected());
        assert!(compiled.sources[5].is_none(), "action is a constant");
        assert!(compiled.sources[1].as_ref().unwrap().explicit);
        assert_eq!(mapping.origin(), Path::new("test.toml"));
    }

    #[test]
    fn documented_example_parses() {
        let source = include_str!("mapping.rs");
        let start = source.find("/// ```toml\n").unwrap();
        let block: String = source[start..]
            .lines()
            .skip(1)
            .take_while(|l| !l.starts_with("/// ```"))
            .map(|l| format!("{}\n", l.trim_start_matches("///").trim_start_matches(' ')))
            .collect();
        let mapping = parse(&block).unwrap();
        assert_eq!(mapping.format, Some(Format::Zeek));
        assert_eq!(mapping.columns["user_id"], "id.orig_h");
        assert_eq!(mapping.scale["latency_ms"], 1000.0);
        assert_eq!(mapping.text.comment.as_deref(), Some("#"));
    }

    #[test]
    fn micro_sign_is_accepted_for_microseconds() {
        let mapping = parse("[timestamp]\nunit = \"µs\"").unwrap();
        assert_eq!(mapping.timestamp.unit, Some(TsUnit::Micros));
    }

    #[test]
    fn invalid_mappings_are_config_errors() {
        assert!(config_reason("colums = {}").contains("unknown field"));
        assert!(config_reason("[timestamp]\nzone = \"UTC\"").contains("unknown field"));
        assert!(config_reason("[columns]\nuser = \"x\"").contains("not a canonical column"));
        assert!(
            config_reason("[columns]\naction = \"a\"\n[constants]\naction = \"b\"")
                .contains("both")
        );
        assert!(config_reason("[scale]\nuser_id = 2.0").contains("only bytes_in"));
        assert!(config_reason("[scale]\nlatency_ms = -1.0").contains("positive"));
        assert!(config_reason("[timestamp]\nunit = \"minutes\"").contains("unknown variant"));
        assert!(config_reason("[timestamp]\nformat = \"%Q\"").contains("invalid"));
        assert!(config_reason("[constants]\nbytes_in = -3").contains("negative"));
        assert!(config_reason("[constants]\nuser_id = \"\"").contains("user_id"));
        assert!(config_reason("[text]\ndelimiter = \"ab\"").contains("one ASCII character"));
        assert!(config_reason("[text]\nhas_header = false").contains("column_names"));
        assert!(config_reason("[text]\ncolumn_names = [\"a\", \"a\"]").contains("twice"));
        assert!(config_reason("format = \"xml\"").contains("unknown variant"));
    }

    #[test]
    fn shipped_mappings_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mappings");
        for name in ["zeek_conn.toml", "cdnow.toml"] {
            let mapping = IngestMapping::from_toml_file(&dir.join(name))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(mapping.origin().ends_with(name));
        }
    }

    #[test]
    fn missing_mapping_file_is_an_io_error_naming_it() {
        let err = IngestMapping::from_toml_file(Path::new("/nonexistent/m.toml")).unwrap_err();
        assert!(matches!(err, Error::Io { .. }));
        assert!(err.to_string().contains("/nonexistent/m.toml"));
    }
}
