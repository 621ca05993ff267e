//! The opt-in Python runtime: models that no native reader can compile (a
//! pipeline with a `FunctionTransformer` or a team's own class, a LightGBM
//! or XGBoost booster) scored by long-lived Python worker processes.
//!
//! ```text
//! jobs ──► Pool::score(calls) ──► queue ──► worker thread 1 ──pipes──► python (runner.py)
//!                                      └──► worker thread 2 ──pipes──► python
//!                                            (one per core)     Arrow IPC batches,
//!                                                               model bytes on a miss
//! ```
//!
//! A [`Pool`] starts no process until it is first asked to score, then one
//! per worker thread, and keeps them: a worker loads a model the first time
//! it is asked for it (fleetscore sends the file's bytes, read through the
//! caller's [`Loader`]) and keeps a bounded cache, so 1,000 models need
//! 1,000 loads, not 1,000 interpreters. The runner script ([`RUNNER`]) is
//! embedded in the binary.
//!
//! Containment, per worker process ([`PythonConfig`]):
//! - a wall-clock limit per request: past it the process is killed, the
//!   model fails saying so, and the next request starts a fresh process;
//! - a memory limit (`RLIMIT_AS`, set by the runner before it reads a
//!   model): an allocation past it fails that model with Python's
//!   `MemoryError`, and the process is replaced;
//! - a scratch working directory (also `TMPDIR`), removed with it;
//! - an environment cleared of everything but what Python needs to find
//!   its code ([`PASS_ENV`], `PYTHONPATH` plus `[python] path`), so the
//!   process never sees fleetscore's tokens or credentials;
//! - the kernel kills it when its worker thread ends or fleetscore dies,
//!   even by SIGKILL (`PR_SET_PDEATHSIG`, set by the runner).
//!
//! A model that raises, exceeds a limit or kills its process fails only
//! that call ([`CallError`]); the worker is replaced and the others go on.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

mod process;
mod wire;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use fleetscore_models::Kind;

pub use process::Hello;

/// The worker script, as embedded in the binary.
pub const RUNNER: &str = include_str!("runner.py");

/// Environment variables a worker process keeps from fleetscore's (all
/// others are removed, with fleetscore's secrets among them).
pub const PASS_ENV: [&str; 14] = [
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "PYTHONPATH",
    "PYTHONHOME",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    "CONDA_DEFAULT_ENV",
    "LD_LIBRARY_PATH",
    "SSL_CERT_FILE",
];

/// How the runtime runs (`[python]` in the service config).
#[derive(Debug, Clone, PartialEq)]
pub struct PythonConfig {
    /// The Python to run, e.g. a virtualenv's `bin/python`.
    pub interpreter: PathBuf,
    /// Folders added to the workers' `PYTHONPATH` (where a team's own
    /// modules live).
    pub path: Vec<PathBuf>,
    /// Worker processes at most (0: one per core).
    pub workers: usize,
    /// Wall-clock limit of one request (loading a model, or scoring one
    /// model's rows).
    pub timeout: Duration,
    /// Address-space limit of each worker process, bytes (0: none).
    pub memory_limit: u64,
    /// Model files a worker keeps loaded, by their size in bytes; the least
    /// recently used go first (the one in use always stays).
    pub cache_bytes: u64,
    /// More environment variables to pass through (besides [`PASS_ENV`]).
    pub pass_env: Vec<String>,
}

impl Default for PythonConfig {
    fn default() -> Self {
        PythonConfig {
            interpreter: PathBuf::from("python3"),
            path: Vec::new(),
            workers: 0,
            timeout: Duration::from_secs(300),
            memory_limit: 4 << 30,
            cache_bytes: 1 << 30,
            pass_env: Vec::new(),
        }
    }
}

impl PythonConfig {
    /// Worker processes this config runs at most.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        }
    }
}

/// A model the runtime runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelRef {
    /// Its identity (the SHA-256 of its file): what a worker caches it by.
    pub id: String,
    /// Where the caller's [`Loader`] finds its bytes (a store key).
    pub object: String,
    /// What it predicts; `None`: the worker tells from the model
    /// (scikit-learn's estimator type).
    pub kind: Option<Kind>,
    /// The methods to call (see [`RUNNER`]); empty: the kind's defaults.
    pub methods: Vec<String>,
}

/// Where a worker gets a model's file from (see [`Loader`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelFile {
    /// Its bytes, sent over the pipe.
    Bytes(Vec<u8>),
    /// A file on this host the worker reads itself (a local store's): no
    /// copy through fleetscore.
    Path(PathBuf),
}

/// Finds a model's file (called by a worker thread, on a miss).
pub type Loader = dyn Fn(&ModelRef) -> Result<ModelFile, String> + Send + Sync;

/// One model's rows to score.
#[derive(Debug, Clone)]
pub struct Call {
    /// The model.
    pub model: Arc<ModelRef>,
    /// Columns per row.
    pub width: usize,
    /// Rows, row-major (`width` values each).
    pub rows: Vec<f64>,
}

/// What a model gave for a call's rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// What it predicts.
    pub kind: Kind,
    /// A classifier's classes as text, in `classes_` order.
    pub classes: Vec<String>,
    /// Per row: the decision (detectors), the prediction (regressors), the
    /// predicted class's probability (classifiers; NaN without
    /// `predict_proba`).
    pub score: Vec<f64>,
    /// Per row: 1 anomaly / 0 normal (detectors), the class's index in
    /// `classes` (classifiers), [`fleetscore_models::NO_LABEL`] (regressors).
    pub label: Vec<u32>,
}

/// Why a call gave no output. Each fails one model only.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The model's code raised (loading or scoring): Python's text.
    #[error("{0}")]
    Raised(String),
    /// The request ran past the wall-clock limit; the process was killed.
    #[error("killed after the wall-clock limit of {limit:?} per request ([python] timeout)")]
    Timeout {
        /// The limit.
        limit: Duration,
    },
    /// An allocation went past the memory limit.
    #[error("{text} (past the worker's memory limit of {limit} bytes, [python] memory_limit)")]
    Memory {
        /// Python's text.
        text: String,
        /// The limit.
        limit: u64,
    },
    /// The process ended while working on the request (`os._exit`, a
    /// crash in native code, killed from outside).
    #[error("the Python worker process died while running the model ({status}){stderr}")]
    Died {
        /// How it ended.
        status: String,
        /// Its last lines on stderr, if any (with a leading separator).
        stderr: String,
    },
    /// The model's bytes could not be read.
    #[error("reading the model file failed: {0}")]
    Load(String),
    /// No worker process could be started (see [`StartError`]).
    #[error("{0}")]
    Start(String),
    /// The worker answered something the protocol does not allow (a bug).
    #[error("the Python worker answered out of protocol: {0}")]
    Protocol(String),
    /// The pool was shut down (fleetscore is stopping) before or while the
    /// call ran: no fault of the model; the work is to be done again.
    #[error(
        "the Python runtime was stopped (fleetscore is shutting down) before the model was scored"
    )]
    Stopped,
}

impl CallError {
    /// The limit a call hit, if it hit one: `timeout` or `memory`.
    pub fn limit(&self) -> Option<&'static str> {
        match self {
            CallError::Timeout { .. } => Some("timeout"),
            CallError::Memory { .. } => Some("memory"),
            _ => None,
        }
    }
}

/// Why the interpreter cannot run the runtime.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The interpreter could not be run at all.
    #[error("the Python interpreter {path} could not be started: {error}; set [python] interpreter to a Python 3.8 or later with numpy, pyarrow and joblib (e.g. a virtualenv's bin/python)")]
    Spawn {
        /// The interpreter.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// A package the runtime needs does not import.
    #[error("the Python interpreter {path} cannot import {package} ({detail}); install it: {path} -m pip install {package}")]
    MissingPackage {
        /// The interpreter.
        path: PathBuf,
        /// numpy, pyarrow or joblib.
        package: String,
        /// Python's error.
        detail: String,
    },
    /// It started but refused (too old) or did not speak the protocol.
    #[error("the Python interpreter {path} cannot run fleetscore's worker: {detail}")]
    Refused {
        /// The interpreter.
        path: PathBuf,
        /// What it said or did.
        detail: String,
    },
}

/// A request waiting for a worker.
struct Item {
    index: usize,
    /// The worker this model goes to when it is free (the one that loaded
    /// it last time, as long as the pool's size does not change).
    slot: usize,
    call: Call,
    loader: Arc<Loader>,
    reply: mpsc::Sender<(usize, Result<Output, CallError>)>,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Item>,
    stop: bool,
}

/// The worker a model goes to by preference: by its identity, so that
/// it finds the model already loaded in the jobs after the first.
fn slot_of(id: &str, workers: usize) -> usize {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: the same slot in every job and process.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    (h.finish() % workers as u64) as usize
}

/// What the pool's threads share.
struct Shared {
    config: PythonConfig,
    queue: Mutex<Queue>,
    ready: Condvar,
    /// Worker processes started so far.
    started: AtomicU64,
    /// The worker processes alive now, by process id.
    live: Mutex<Vec<(u32, Arc<Mutex<std::process::Child>>)>>,
    /// Set by [`Pool::shutdown`]: calls end with [`CallError::Stopped`].
    stopping: AtomicBool,
}

impl Shared {
    /// The next request for worker `slot`: the first queued for it, else
    /// the first of any other (so no worker idles while work waits);
    /// `None` when the pool stops.
    fn next(&self, slot: usize) -> Option<Item> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if q.stop {
                return None;
            }
            let mine = q.items.iter().position(|i| i.slot == slot);
            if let Some(item) = q.items.remove(mine.unwrap_or(0)) {
                return Some(item);
            }
            q = self.ready.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Long-lived Python worker processes, one per worker thread, started on
/// first use. Dropping the pool stops them (and waits for them).
pub struct Pool {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("config", &self.shared.config)
            .field("workers", &self.threads.len())
            .finish()
    }
}

impl Pool {
    /// Runs the interpreter once and checks it can run the runtime
    /// (version, that numpy, pyarrow and joblib import); returns what it
    /// reported.
    pub fn check(config: &PythonConfig) -> Result<Hello, StartError> {
        let p = process::Process::start(config, None)?;
        let hello = p.hello.clone();
        p.stop();
        Ok(hello)
    }

    /// A pool of `config.worker_count()` worker threads; no process is
    /// started until a call needs one.
    pub fn new(config: PythonConfig) -> Pool {
        Pool::spawn(config, None, false)
    }

    /// A pool whose worker processes start now, in the background, while
    /// the caller goes on (reading its input, say); returns once the first
    /// one has said hello, which checks the interpreter as [`Pool::check`]
    /// does. Each process is started by its own worker thread, the one
    /// whose end the kernel ties it to.
    pub fn start(config: PythonConfig) -> Result<(Pool, Hello), StartError> {
        let (tx, rx) = mpsc::channel();
        let pool = Pool::spawn(config, Some(tx), true);
        match rx.recv() {
            Ok(Ok(hello)) => Ok((pool, hello)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StartError::Refused {
                path: pool.shared.config.interpreter.clone(),
                detail: "its worker thread ended before it started".into(),
            }),
        }
    }

    fn spawn(
        config: PythonConfig,
        first: Option<mpsc::Sender<Result<Hello, StartError>>>,
        prestart: bool,
    ) -> Pool {
        let n = config.worker_count();
        let shared = Arc::new(Shared {
            config,
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            started: AtomicU64::new(0),
            live: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
        });
        let mut first = first;
        let threads = (0..n)
            .map(|slot| {
                let shared = Arc::clone(&shared);
                let report = if slot == 0 { first.take() } else { None };
                std::thread::Builder::new()
                    .name(format!("python-{slot}"))
                    .spawn(move || process::worker_loop(&shared, slot, prestart, report))
                    .expect("spawning a thread")
            })
            .collect();
        Pool { shared, threads }
    }

    /// The config it runs with.
    pub fn config(&self) -> &PythonConfig {
        &self.shared.config
    }

    /// Scores every call on the workers (as many at once as there are
    /// workers) and returns their results in the calls' order. Blocks.
    pub fn score(&self, calls: Vec<Call>, loader: &Arc<Loader>) -> Vec<Result<Output, CallError>> {
        self.score_with_progress(calls, loader, &|_| {})
    }

    /// [`Pool::score`], calling `progress` with each call's rows as it
    /// finishes.
    pub fn score_with_progress(
        &self,
        calls: Vec<Call>,
        loader: &Arc<Loader>,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Vec<Result<Output, CallError>> {
        let n = calls.len();
        let rows: Vec<u64> = calls
            .iter()
            .map(|c| (c.rows.len() / c.width.max(1)) as u64)
            .collect();
        let (tx, rx) = mpsc::channel();
        let workers = self.threads.len().max(1);
        {
            let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            for (index, call) in calls.into_iter().enumerate() {
                q.items.push_back(Item {
                    index,
                    slot: slot_of(&call.model.id, workers),
                    call,
                    loader: Arc::clone(loader),
                    reply: tx.clone(),
                });
            }
        }
        drop(tx);
        self.shared.ready.notify_all();
        let mut out: Vec<Option<Result<Output, CallError>>> = vec![None; n];
        for (i, r) in rx {
            progress(rows[i]);
            out[i] = Some(r);
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(CallError::Start("the Python pool stopped".into()))))
            .collect()
    }

    /// Worker processes started since the pool was made (replacements
    /// included).
    pub fn processes_started(&self) -> u64 {
        self.shared.started.load(Ordering::Relaxed)
    }

    /// Process ids of the worker processes alive now.
    pub fn live_pids(&self) -> Vec<u32> {
        self.shared
            .live
            .lock()
            .map(|l| l.iter().map(|(pid, _)| *pid).collect())
            .unwrap_or_default()
    }

    /// Stops the pool now: queued calls and the calls running end with
    /// [`CallError::Stopped`] (their processes are killed), and no process
    /// starts again. For a service stopping while a model may run for a
    /// long time; dropping the pool does the same, then waits for its
    /// threads.
    pub fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let queued: Vec<Item> = match self.shared.queue.lock() {
            Ok(mut q) => {
                q.stop = true;
                q.items.drain(..).collect()
            }
            Err(_) => Vec::new(),
        };
        self.shared.ready.notify_all();
        for item in queued {
            let _ = item.reply.send((item.index, Err(CallError::Stopped)));
        }
        let live: Vec<Arc<Mutex<std::process::Child>>> = self
            .shared
            .live
            .lock()
            .map(|l| l.iter().map(|(_, c)| Arc::clone(c)).collect())
            .unwrap_or_default();
        for child in live {
            if let Ok(mut c) = child.lock() {
                let _ = c.kill();
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
