//! The dataflow crate's error type.

use std::path::PathBuf;

/// Errors of the dataflow crate: reading inputs and writing tables ([`Error::Io`], which names
/// the file), configuration, operators and models, and the run itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading an input, writing an output or a state file failed (the file is named).
    #[error(transparent)]
    Io(#[from] personaflow_io::Error),
    /// The configuration cannot be used (where, which key, what is wrong).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An operator state file a checkpoint names cannot be used.
    #[error("{}: {kind}", path.display())]
    StateFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        kind: StateFileError,
    },
    /// An operator failed (for example an embedder).
    #[error(transparent)]
    Operator(#[from] personaflow_operators::Error),
    /// A model could not be loaded or run.
    #[error(transparent)]
    Model(#[from] personaflow_models::Error),
    /// A worker of the dataflow panicked (with this message).
    #[error("dataflow: worker panicked: {message}")]
    WorkerPanicked {
        /// The panic's message.
        message: String,
    },
    /// The thread that reads the input panicked (with this message): the input was not read
    /// to its end, and nothing is written.
    #[error("input reader panicked: {message}")]
    ReaderPanicked {
        /// The panic's message.
        message: String,
    },
    /// The dataflow could not be run (timely's error).
    #[error("dataflow: {0}")]
    Dataflow(String),
    /// The run was stopped by a signal (SIGINT, SIGTERM) before it finished; nothing was
    /// written.
    #[error("interrupted by {}: stopped before writing any output", signal_name(*.signal))]
    Interrupted {
        /// The signal's number.
        signal: i32,
    },
}

/// A configuration that cannot be used: where the value came from, its key, and what is
/// wrong with it (as ripgrep's globset reports a glob: context plus a kind).
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigError {
    /// The file or the `PERSONAFLOW__*` variable that set the value; `<defaults>` when none
    /// did, `<config>` for a configuration built in code.
    pub origin: PathBuf,
    /// The key (`sequence.length`), when the error is about one.
    pub key: Option<String>,
    /// What is wrong.
    pub kind: ConfigErrorKind,
}

/// What is wrong with a configuration.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// The text is not TOML.
    #[error("{}{message}", at.map(|(l, c)| format!("line {l}, column {c}: ")).unwrap_or_default())]
    Syntax {
        /// Line and column (1-based) where it went wrong, when known.
        at: Option<(usize, usize)>,
        /// The parser's message, on one line.
        message: String,
    },
    /// A value has the wrong type or form, or the key is unknown.
    #[error("{0}")]
    Type(String),
    /// A size or duration is above its documented bound.
    #[error("is {value}, above its bound of {bound}")]
    AboveBound {
        /// The value as given.
        value: String,
        /// The bound.
        bound: String,
    },
    /// A value is outside its range.
    #[error("{0}")]
    OutOfRange(String),
    /// A `PERSONAFLOW_*` variable looks like a setting but is not one.
    #[error(
        "not a configuration variable: they are PERSONAFLOW__SECTION__KEY, with two underscores \
         around the section{hint}"
    )]
    NotAVariable {
        /// What it may have meant (` (did you mean ...?)`), or the sections.
        hint: String,
    },
}

impl ConfigError {
    /// An error of `key` (none: the configuration as a whole) from `origin`.
    pub fn new(origin: impl Into<PathBuf>, key: Option<&str>, kind: ConfigErrorKind) -> Self {
        ConfigError {
            origin: origin.into(),
            key: key.map(str::to_owned),
            kind,
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: ", self.origin.display())?;
        match (&self.key, &self.kind) {
            // `sequence.length must be at least 1`, `sequence.length is 100000, above ...`
            (Some(key), ConfigErrorKind::OutOfRange(_) | ConfigErrorKind::AboveBound { .. }) => {
                write!(f, "{key} {}", self.kind)
            }
            // `sequence.length: expected an integer, got "sixteen"`
            (Some(key), _) => write!(f, "{key}: {}", self.kind),
            (None, _) => write!(f, "{}", self.kind),
        }
    }
}

impl std::error::Error for ConfigError {}

/// What is wrong with an operator state file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateFileError {
    /// It cannot be read (missing, unreadable).
    #[error(
        "the checkpoint needs this operator state file ({0}); without it personas, pins and \
         drift baselines cannot resume: restore it, or start a new output directory"
    )]
    Unreadable(std::io::Error),
    /// It does not start with the state header.
    #[error("not a personaflow operator state (no PFSTATE header)")]
    NoHeader,
    /// It is of another version of the format.
    #[error("operator state version {found} is not {expected}")]
    Version {
        /// The file's version.
        found: u32,
        /// The version read.
        expected: u32,
    },
    /// Its payload is not as long as its header says.
    #[error(
        "corrupt operator state: {found} payload bytes, the header says {expected} (truncated?)"
    )]
    Truncated {
        /// Payload bytes in the file.
        found: u64,
        /// Payload bytes the header gives.
        expected: u64,
    },
    /// Its payload does not hash to the header's hash.
    #[error("corrupt operator state: its hash does not match")]
    HashMismatch,
    /// Its payload does not decode (the decoder's message).
    #[error("not a personaflow operator state: {0}")]
    Undecodable(String),
    /// The state does not encode (the encoder's message).
    #[error("operator state does not serialise: {0}")]
    Unencodable(String),
    /// It holds another worker's or window's state.
    #[error(
        "holds worker {} of {} at window {}, not worker {} of {} at window {}",
        found.0, found.1, found.2, expected.0, expected.1, expected.2
    )]
    OtherPart {
        /// Worker, workers and window in the file.
        found: (usize, usize, u64),
        /// Worker, workers and window asked for.
        expected: (usize, usize, u64),
    },
}

/// The name of a signal number, for messages.
pub fn signal_name(signal: i32) -> String {
    match signal {
        2 => "SIGINT".into(),
        15 => "SIGTERM".into(),
        1 => "SIGHUP".into(),
        n => format!("signal {n}"),
    }
}

/// Result type of the dataflow crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the file it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        personaflow_io::Error::io(path, source).into()
    }
}
