//! `personaflow serve`: the HTTP API and persona store over a run's outputs.

use anyhow::{bail, Context, Result};
use clap::Args;
use personaflow_serve::api::{self, ApiConfig, AppState, DEFAULT_MAX_CONCURRENT};
use personaflow_serve::store::{PersonaStore, StoreConfig, DEFAULT_HISTORY_WINDOWS};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Where the server listens by default: loopback, so that it can run without a token.
pub(crate) const DEFAULT_BIND: &str = "127.0.0.1:8080";

#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// A run's output directory (backfill or continuous job), loaded into memory at start.
    #[arg(long)]
    outputs: PathBuf,
    /// Address to listen on (port 0: any free port; the one chosen is printed).
    #[arg(long, default_value = DEFAULT_BIND)]
    bind: SocketAddr,
    /// A file whose first line is the bearer token every /v1 request must carry. Without one
    /// the server runs without auth, and only on a loopback address.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Windows kept per user for /v1/users/{id}/history.
    #[arg(long, default_value_t = DEFAULT_HISTORY_WINDOWS)]
    history_windows: usize,
    /// Requests served at once; more get 503.
    #[arg(long, default_value_t = DEFAULT_MAX_CONCURRENT)]
    max_concurrent: usize,
}

/// The token in `path`: its first line, trimmed; an empty one is an error.
pub(crate) fn read_token(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the token file {}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        bail!("token file {}: its first line is empty", path.display());
    }
    Ok(token)
}

pub(crate) fn cmd_serve(a: ServeArgs, quiet: bool) -> Result<()> {
    let token = a.token_file.as_deref().map(read_token).transpose()?;
    api::check_bind(&a.bind, token.as_deref())?;
    if !a.outputs.is_dir() {
        bail!(
            "--outputs {}: not a directory (give a backfill's --output or a run's output)",
            a.outputs.display()
        );
    }
    let store = Arc::new(PersonaStore::new(StoreConfig {
        history_windows: a.history_windows,
        ..StoreConfig::default()
    }));
    let started = std::time::Instant::now();
    let bar = (!quiet).then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_message(format!("loading {}", a.outputs.display()));
        b.enable_steady_tick(std::time::Duration::from_millis(200));
        b
    });
    let warnings = store
        .load_outputs(&a.outputs, |table, rows| {
            if let Some(b) = &bar {
                b.set_message(format!("loaded {} ({rows} rows)", table.name()));
            }
        })
        .with_context(|| format!("loading {}", a.outputs.display()))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    for w in warnings {
        eprintln!("personaflow: warning: {w}");
    }
    let state = AppState::new(
        store.clone(),
        ApiConfig {
            token: token.clone(),
            max_concurrent: a.max_concurrent,
            outputs: Some(a.outputs.clone()),
            ..ApiConfig::default()
        },
    );
    state.ready.store(true, Ordering::Release);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the server's runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(a.bind)
            .await
            .with_context(|| format!("binding {}", a.bind))?;
        let addr = listener.local_addr().context("the bound address")?;
        // Tests and scripts wait for this line (it is printed even with --quiet).
        println!(
            "serving http://{addr}: {} users, {} rows loaded in {:.1} s; {}",
            store.users(),
            store.rows_applied(),
            started.elapsed().as_secs_f64(),
            if token.is_some() {
                "bearer token required on /v1"
            } else {
                "no auth (loopback only)"
            }
        );
        api::serve(listener, state, shutdown_signal()).await?;
        anyhow::Ok(())
    })
}

/// A server running on its own thread (for `run --serve`); stopped when dropped.
pub(crate) struct BackgroundServer {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl BackgroundServer {
    /// Binds `bind` (an error here is the caller's), prints the address, and serves `state`
    /// on a thread until dropped.
    pub(crate) fn start(bind: SocketAddr, state: Arc<AppState>) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the server's runtime")?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(bind))
            .with_context(|| format!("binding --serve {bind}"))?;
        let addr = listener.local_addr().context("the bound address")?;
        println!(
            "serving http://{addr}: {} users loaded; {}",
            state.store.users(),
            if state.has_token() {
                "bearer token required on /v1"
            } else {
                "no auth (loopback only)"
            }
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("personaflow-serve".into())
            .spawn(move || {
                runtime.block_on(api::serve(listener, state, async {
                    stopped.await.ok();
                }))?;
                Ok(())
            })
            .context("starting the server's thread")?;
        Ok(BackgroundServer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for BackgroundServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            s.send(()).ok();
        }
        if let Some(t) = self.thread.take() {
            if let Ok(Err(e)) = t.join() {
                eprintln!("personaflow: warning: the server stopped with: {e:#}");
            }
        }
    }
}

/// The store and server of `run --serve`: the store loaded from what `output` already holds
/// (a restart), then kept current by the job.
pub(crate) fn serve_job(
    output: &Path,
    bind: SocketAddr,
    token_file: Option<&Path>,
) -> Result<(Arc<PersonaStore>, BackgroundServer)> {
    let token = token_file.map(read_token).transpose()?;
    api::check_bind(&bind, token.as_deref())?;
    let store = Arc::new(PersonaStore::new(StoreConfig::default()));
    if output.is_dir() {
        let warnings = store
            .load_outputs(output, |_, _| {})
            .with_context(|| format!("loading {} into the store", output.display()))?;
        for w in warnings {
            eprintln!("personaflow: warning: {w}");
        }
    }
    let state = AppState::new(
        store.clone(),
        ApiConfig {
            token,
            outputs: Some(output.to_path_buf()),
            ..ApiConfig::default()
        },
    );
    state.ready.store(true, Ordering::Release);
    Ok((store, BackgroundServer::start(bind, state)?))
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
