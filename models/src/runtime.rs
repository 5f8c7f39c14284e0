//! Finding and loading onnxruntime, and opening sessions on the chosen execution provider.
//!
//! personaflow loads `libonnxruntime` at run time (ort's `load-dynamic`), from the
//! `onnxruntime==1.31.1` wheel that `scripts/setup-onnxruntime.sh` installs into the project's
//! `.venv/`. [`find_library`] looks, in order, at `ORT_DYLIB_PATH`, then for
//! `.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1` under the current
//! directory, the executable's directory and their ancestors.

use crate::{Error, Result};
use ort::environment::Environment;
use ort::ep::ExecutionProvider as _;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::OnceLock;

/// The environment variable naming the onnxruntime library file.
pub const ORT_DYLIB_ENV: &str = "ORT_DYLIB_PATH";
/// The onnxruntime version personaflow is built against (ort's `api-31`).
pub const ORT_VERSION: &str = "1.31.1";
/// The library's file name in the onnxruntime wheel (there is no unversioned name).
pub const ORT_LIBRARY_FILE: &str = "libonnxruntime.so.1.31.1";
/// Default intra-op threads per session: timely already runs one worker per core.
pub const DEFAULT_INTRA_THREADS: usize = 1;

/// Where inference runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// onnxruntime's CPU execution provider.
    Cpu,
    /// The CUDA execution provider; an error if this onnxruntime build or machine has none.
    Cuda,
    /// CUDA when it registers, else the CPU (the provider used is reported).
    #[default]
    Auto,
}

impl FromStr for Provider {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Provider::Cpu),
            "cuda" => Ok(Provider::Cuda),
            "auto" => Ok(Provider::Auto),
            other => Err(Error::BadOption(format!(
                "execution provider {other:?}: expected cpu, cuda or auto"
            ))),
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Provider::Cpu => "cpu",
            Provider::Cuda => "cuda",
            Provider::Auto => "auto",
        })
    }
}

/// The onnxruntime name of the CPU execution provider.
pub const CPU_PROVIDER: &str = "CPUExecutionProvider";
/// The onnxruntime name of the CUDA execution provider.
pub const CUDA_PROVIDER: &str = "CUDAExecutionProvider";

/// Options of every session personaflow opens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionOptions {
    /// Intra-op threads per session.
    pub intra_threads: usize,
    /// Execution provider choice.
    pub provider: Provider,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            intra_threads: DEFAULT_INTRA_THREADS,
            provider: Provider::default(),
        }
    }
}

/// Finds the onnxruntime library: `ORT_DYLIB_PATH` if set (it must exist), else the project's
/// `.venv` under the current directory, the executable's directory or their ancestors.
pub fn find_library() -> Result<PathBuf> {
    let env = std::env::var_os(ORT_DYLIB_ENV).map(PathBuf::from);
    let mut roots = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            roots.push(dir.to_path_buf());
        }
    }
    find_library_in(env.as_deref(), &roots)
}

/// [`find_library`] with explicit inputs: `env` is the value of `ORT_DYLIB_PATH`, `roots` the
/// directories whose ancestors may hold a `.venv`.
///
/// ```
/// use personaflow_models::runtime::find_library_in;
/// let err = find_library_in(Some("/nonexistent/libonnxruntime.so.1.31.1".as_ref()), &[]).unwrap_err();
/// assert!(err.to_string().contains("ORT_DYLIB_PATH"));
/// ```
pub fn find_library_in(env: Option<&Path>, roots: &[PathBuf]) -> Result<PathBuf> {
    if let Some(path) = env {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(Error::LibraryNotFound {
                searched: vec![path.to_path_buf()],
                hint: format!("{ORT_DYLIB_ENV} names a file that does not exist"),
            })
        };
    }
    let mut searched = Vec::new();
    for root in roots {
        for dir in root.ancestors() {
            let lib = dir.join(".venv").join("lib");
            searched.push(
                lib.join("python3*/site-packages/onnxruntime/capi")
                    .join(ORT_LIBRARY_FILE),
            );
            let Ok(entries) = std::fs::read_dir(&lib) else {
                continue;
            };
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
                .map(|e| {
                    e.path()
                        .join("site-packages/onnxruntime/capi")
                        .join(ORT_LIBRARY_FILE)
                })
                .filter(|p| p.is_file())
                .collect();
            found.sort();
            if let Some(p) = found.pop() {
                return Ok(p);
            }
        }
    }
    Err(Error::LibraryNotFound {
        searched,
        hint: format!(
            "run scripts/setup-onnxruntime.sh (installs the onnxruntime=={ORT_VERSION} wheel \
             into .venv), or set {ORT_DYLIB_ENV} to a {ORT_LIBRARY_FILE}"
        ),
    })
}

static ENVIRONMENT: OnceLock<std::result::Result<(Environment, PathBuf), String>> = OnceLock::new();

/// The process's onnxruntime environment, loading the library on first use.
pub fn environment() -> Result<Environment> {
    let loaded = ENVIRONMENT.get_or_init(|| {
        let path = find_library().map_err(|e| e.to_string())?;
        let builder = ort::init_from(&path)
            .map_err(|e| format!("cannot load onnxruntime from {}: {e}", path.display()))?;
        let env = builder
            .with_name("personaflow")
            .build()
            .map_err(|e| format!("cannot start onnxruntime from {}: {e}", path.display()))?;
        Ok((env, path))
    });
    match loaded {
        Ok((env, _)) => Ok(env.clone()),
        Err(reason) => Err(Error::Runtime(reason.clone())),
    }
}

/// The library file the environment was loaded from, once it is loaded.
pub fn library_path() -> Option<&'static Path> {
    ENVIRONMENT
        .get()
        .and_then(|r| r.as_ref().ok())
        .map(|(_, p)| p.as_path())
}

/// A session and the execution provider it runs on.
#[derive(Debug)]
pub struct OpenSession {
    /// The session (reused for every batch).
    pub session: Session,
    /// The execution provider that registered (`CPUExecutionProvider` or
    /// `CUDAExecutionProvider`).
    pub provider: &'static str,
}

/// Opens the model at `path` with `options`.
pub fn open_session(path: &Path, options: &SessionOptions) -> Result<OpenSession> {
    let model = path.display().to_string();
    if !path.is_file() {
        return Err(Error::ModelNotFound { path: model });
    }
    let env = environment()?;
    let ort_err = |what: &str, e: String| Error::Ort {
        model: model.clone(),
        reason: format!("{what}: {e}"),
    };
    let mut builder = Session::builder(&env)
        .map_err(|e| ort_err("session builder", e.to_string()))?
        .with_intra_threads(options.intra_threads.max(1))
        .map_err(|e| ort_err("intra-op threads", e.to_string()))?
        .with_inter_threads(1)
        .map_err(|e| ort_err("inter-op threads", e.to_string()))?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| ort_err("optimisation level", e.to_string()))?;
    let provider = match options.provider {
        Provider::Cpu => CPU_PROVIDER,
        Provider::Cuda | Provider::Auto => {
            let cuda = ort::ep::CUDA::default();
            let compiled = ort::ep::CUDA::is_available().unwrap_or(false);
            let registered = if compiled {
                cuda.register(&mut builder).map_err(|e| e.to_string())
            } else {
                Err(format!(
                    "this onnxruntime ({}) has no CUDA execution provider; install \
                     onnxruntime-gpu and the nvidia-*-cu12 runtime wheels",
                    library_path()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                ))
            };
            match (registered, options.provider) {
                (Ok(()), _) => CUDA_PROVIDER,
                (Err(reason), Provider::Cuda) => {
                    return Err(Error::ProviderUnavailable {
                        provider: Provider::Cuda,
                        reason,
                    })
                }
                (Err(_), _) => CPU_PROVIDER,
            }
        }
    };
    let session = builder
        .commit_from_file(path)
        .map_err(|e| ort_err("loading the model", e.to_string()))?;
    Ok(OpenSession { session, provider })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_library_names_what_was_searched_and_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let err = find_library_in(None, &[dir.path().to_path_buf()]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("scripts/setup-onnxruntime.sh"), "{msg}");
        assert!(msg.contains(ORT_DYLIB_ENV), "{msg}");
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
        // A wheel layout under an ancestor's .venv is found.
        let capi = dir
            .path()
            .join(".venv/lib/python3.11/site-packages/onnxruntime/capi");
        std::fs::create_dir_all(&capi).unwrap();
        std::fs::write(capi.join(ORT_LIBRARY_FILE), b"").unwrap();
        let nested = dir.path().join("a/b");
        std::fs::create_dir_all(&nested).unwrap();
        assert_eq!(
            find_library_in(None, &[nested]).unwrap(),
            capi.join(ORT_LIBRARY_FILE)
        );
        // ORT_DYLIB_PATH wins, and must exist.
        let bogus = dir.path().join("nope.so");
        let err = find_library_in(Some(&bogus), &[dir.path().to_path_buf()]).unwrap_err();
        assert!(err.to_string().contains("nope.so"), "{err}");
    }

    #[test]
    fn providers_parse_and_print() {
        for p in [Provider::Cpu, Provider::Cuda, Provider::Auto] {
            assert_eq!(p.to_string().parse::<Provider>().unwrap(), p);
        }
        assert!("gpu".parse::<Provider>().is_err());
    }
}
