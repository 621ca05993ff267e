//! One worker process: started, watched, asked, replaced.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, BufWriter};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use fleetscore_models::Kind;
use serde::Deserialize;

use crate::wire::{decode_output, encode_rows, read_frame, write_frame};
use crate::{CallError, Item, Output, PythonConfig, Shared, StartError, PASS_ENV, RUNNER};

/// What a worker reported when it started.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Hello {
    /// Python's version.
    pub python: String,
    /// numpy's.
    pub numpy: String,
    /// pyarrow's.
    pub pyarrow: String,
    /// joblib's.
    pub joblib: String,
    /// The process id.
    pub pid: u32,
}

/// Lines of a worker's stderr kept for the reason of a crash.
const STDERR_TAIL: usize = 12;

/// The deadline a watchdog thread enforces on a process.
#[derive(Default)]
struct Guard {
    deadline: Option<Instant>,
    done: bool,
}

/// A running worker process.
pub(crate) struct Process {
    child: Arc<Mutex<Child>>,
    stdin: BufWriter<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    guard: Arc<(Mutex<Guard>, Condvar)>,
    timed_out: Arc<AtomicBool>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    pub(crate) hello: Hello,
    timeout: Duration,
    memory_limit: u64,
    /// The pool's [`Shared::stopping`], if it belongs to one.
    stopping: Option<Arc<Shared>>,
    /// The working directory, removed when the process is.
    _scratch: tempfile::TempDir,
}

impl Process {
    /// Starts a worker and reads its hello. `shared`: count it and list it
    /// as live there.
    pub(crate) fn start(
        config: &PythonConfig,
        shared: Option<&Arc<Shared>>,
    ) -> Result<Process, StartError> {
        let path = config.interpreter.clone();
        let refused = |detail: String| StartError::Refused {
            path: path.clone(),
            detail,
        };
        let scratch = tempfile::Builder::new()
            .prefix("fleetscore-python-")
            .tempdir()
            .map_err(|e| refused(format!("no scratch directory: {e}")))?;
        let mut cmd = Command::new(&config.interpreter);
        cmd.arg("-u")
            .arg("-c")
            .arg(RUNNER)
            .arg(std::process::id().to_string())
            .arg(config.memory_limit.to_string())
            .arg(config.cache_bytes.to_string())
            .current_dir(scratch.path())
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for name in PASS_ENV
            .iter()
            .copied()
            .chain(config.pass_env.iter().map(String::as_str))
        {
            if let Some(v) = std::env::var_os(name) {
                cmd.env(name, v);
            }
        }
        if !config.path.is_empty() {
            let mut parts: Vec<std::path::PathBuf> = config.path.clone();
            if let Some(p) = std::env::var_os("PYTHONPATH") {
                parts.extend(std::env::split_paths(&p));
            }
            if let Ok(joined) = std::env::join_paths(parts) {
                cmd.env("PYTHONPATH", joined);
            }
        }
        // One BLAS thread per worker: the pool already has one worker per
        // core, and each BLAS thread reserves address space against the
        // memory limit.
        for name in ["OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"] {
            cmd.env(name, "1");
        }
        cmd.env("TMPDIR", scratch.path())
            .env("PYTHONDONTWRITEBYTECODE", "1");
        let mut child = cmd.spawn().map_err(|error| StartError::Spawn {
            path: path.clone(),
            error,
        })?;
        let pid = child.id();
        let stdin = BufWriter::new(child.stdin.take().expect("piped"));
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let stderr = child.stderr.take().expect("piped");
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        {
            let tail = Arc::clone(&stderr_tail);
            let _ = std::thread::Builder::new()
                .name(format!("python-stderr-{pid}"))
                .spawn(move || {
                    for line in BufReader::new(stderr).lines() {
                        let Ok(line) = line else { break };
                        tracing::info!(target: "fleetscore::python", pid, "{line}");
                        if let Ok(mut t) = tail.lock() {
                            if t.len() == STDERR_TAIL {
                                t.pop_front();
                            }
                            t.push_back(line);
                        }
                    }
                });
        }
        let child = Arc::new(Mutex::new(child));
        let guard: Arc<(Mutex<Guard>, Condvar)> = Arc::default();
        let timed_out = Arc::new(AtomicBool::new(false));
        {
            let (guard, child, timed_out) = (
                Arc::clone(&guard),
                Arc::clone(&child),
                Arc::clone(&timed_out),
            );
            let _ = std::thread::Builder::new()
                .name(format!("python-watchdog-{pid}"))
                .spawn(move || watchdog(&guard, &child, &timed_out));
        }
        let mut p = Process {
            child,
            stdin,
            stdout,
            guard,
            timed_out,
            stderr_tail,
            hello: Hello {
                python: String::new(),
                numpy: String::new(),
                pyarrow: String::new(),
                joblib: String::new(),
                pid,
            },
            timeout: config.timeout,
            memory_limit: config.memory_limit,
            stopping: shared.cloned(),
            _scratch: scratch,
        };
        // The hello, under the request limit (an interpreter that hangs at
        // start is not one that can run models).
        p.arm();
        let hello = read_frame(&mut p.stdout);
        p.disarm();
        let Ok((header, _)) = hello else {
            let status = p.end();
            return Err(refused(format!(
                "it ended before saying hello ({status}){}",
                p.tail()
            )));
        };
        if header["ok"].as_bool() != Some(true) {
            let detail = header["error"].as_str().unwrap_or("no reason").to_string();
            p.end();
            return Err(match header["missing"].as_str() {
                Some(package) => StartError::MissingPackage {
                    path,
                    package: package.to_string(),
                    detail,
                },
                None => refused(detail),
            });
        }
        p.hello = match serde_json::from_value(header) {
            Ok(h) => h,
            Err(e) => {
                p.end();
                return Err(refused(format!("an unexpected hello: {e}")));
            }
        };
        if let Some(s) = shared {
            s.started.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut l) = s.live.lock() {
                l.push((pid, Arc::clone(&p.child)));
            }
            // A shutdown that came while this one started.
            if s.stopping.load(Ordering::SeqCst) {
                p.end();
            }
        }
        tracing::debug!(pid, python = %p.hello.python, "python worker started");
        Ok(p)
    }

    fn arm(&self) {
        let (m, cv) = &*self.guard;
        if let Ok(mut g) = m.lock() {
            g.deadline = Some(Instant::now() + self.timeout);
        }
        cv.notify_all();
    }

    fn disarm(&self) {
        let (m, cv) = &*self.guard;
        if let Ok(mut g) = m.lock() {
            g.deadline = None;
        }
        cv.notify_all();
    }

    /// The last lines of its stderr, `: …`-separated, or nothing.
    fn tail(&self) -> String {
        let t = self
            .stderr_tail
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default();
        if t.is_empty() {
            String::new()
        } else {
            format!("; its stderr ended with: {}", Vec::from(t).join(" | "))
        }
    }

    /// Kills it (if still running), waits for it, and says how it ended.
    fn end(&mut self) -> String {
        {
            let (m, cv) = &*self.guard;
            if let Ok(mut g) = m.lock() {
                g.done = true;
            }
            cv.notify_all();
        }
        let Ok(mut c) = self.child.lock() else {
            return "unknown".into();
        };
        let status = match c.try_wait() {
            Ok(Some(s)) => s,
            _ => {
                let _ = c.kill();
                match c.wait() {
                    Ok(s) => s,
                    Err(e) => return format!("wait failed: {e}"),
                }
            }
        };
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => status.to_string(),
        }
    }

    /// Stops it: closes its input, then kills it.
    pub(crate) fn stop(mut self) {
        self.end();
    }

    /// One request and its answer, under the wall-clock limit. An I/O
    /// error means the process is gone.
    fn request(
        &mut self,
        header: &serde_json::Value,
        payload: &[u8],
    ) -> std::io::Result<(serde_json::Value, Vec<u8>)> {
        self.arm();
        let r = write_frame(&mut self.stdin, header, payload)
            .and_then(|()| read_frame(&mut self.stdout));
        self.disarm();
        r
    }

    /// Scores a call; `Err(e, replace)`: the call failed, and whether this
    /// process must be replaced.
    fn call(&mut self, item: &Item) -> Result<Output, (CallError, bool)> {
        let model = &item.call.model;
        let n = item.call.rows.len() / item.call.width.max(1);
        let rows = encode_rows(&item.call.rows, item.call.width);
        let header = serde_json::json!({
            "op": "score",
            "id": model.id,
            "kind": model.kind.map(|k| k.name()),
            "methods": model.methods,
        });
        let mut loaded = false;
        loop {
            let (answer, body) = self.request(&header, &rows).map_err(|e| self.gone(&e))?;
            if answer["ok"].as_bool() == Some(true) {
                let kind = match answer["kind"].as_str() {
                    Some("outlier") => Kind::Outlier,
                    Some("regressor") => Kind::Regressor,
                    Some("classifier") => Kind::Classifier,
                    other => {
                        return Err((CallError::Protocol(format!("kind {other:?}")), true));
                    }
                };
                let classes = answer["classes"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|c| c.as_str().unwrap_or_default().to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                let (score, label) =
                    decode_output(&body, n).map_err(|e| (CallError::Protocol(e), true))?;
                return Ok(Output {
                    kind,
                    classes,
                    score,
                    label,
                });
            }
            if answer["missing"].as_bool() == Some(true) && !loaded {
                let file = (item.loader)(model).map_err(|e| (CallError::Load(e), false))?;
                let (load, bytes) = match file {
                    crate::ModelFile::Bytes(b) => {
                        (serde_json::json!({"op": "load", "id": model.id}), b)
                    }
                    crate::ModelFile::Path(p) => (
                        serde_json::json!({"op": "load", "id": model.id, "path": p}),
                        Vec::new(),
                    ),
                };
                let (answer, _) = self.request(&load, &bytes).map_err(|e| self.gone(&e))?;
                if answer["ok"].as_bool() != Some(true) {
                    return Err(self.refused(&answer));
                }
                loaded = true;
                continue;
            }
            return Err(self.refused(&answer));
        }
    }

    /// A model error the worker reported.
    fn refused(&self, answer: &serde_json::Value) -> (CallError, bool) {
        let text = answer["error"]
            .as_str()
            .unwrap_or("the worker gave no reason")
            .to_string();
        let restart = answer["restart"].as_bool() == Some(true);
        let e = if answer["limit"].as_str() == Some("memory") {
            CallError::Memory {
                text,
                limit: self.memory_limit,
            }
        } else {
            CallError::Raised(text)
        };
        (e, restart)
    }

    /// The process stopped answering: why.
    fn gone(&mut self, e: &std::io::Error) -> (CallError, bool) {
        let status = self.end();
        if self
            .stopping
            .as_ref()
            .is_some_and(|s| s.stopping.load(Ordering::SeqCst))
        {
            return (CallError::Stopped, true);
        }
        if self.timed_out.load(Ordering::Relaxed) {
            return (
                CallError::Timeout {
                    limit: self.timeout,
                },
                true,
            );
        }
        // Let the stderr thread read the last lines.
        std::thread::sleep(Duration::from_millis(50));
        (
            CallError::Died {
                status: format!("{status}; {e}"),
                stderr: self.tail(),
            },
            true,
        )
    }
}

/// Kills the process when a deadline passes.
fn watchdog(guard: &(Mutex<Guard>, Condvar), child: &Mutex<Child>, timed_out: &AtomicBool) {
    let (m, cv) = guard;
    let Ok(mut g) = m.lock() else { return };
    loop {
        if g.done {
            return;
        }
        match g.deadline {
            None => {
                g = match cv.wait(g) {
                    Ok(g) => g,
                    Err(_) => return,
                };
            }
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    timed_out.store(true, Ordering::Relaxed);
                    if let Ok(mut c) = child.lock() {
                        let _ = c.kill();
                    }
                    g.deadline = None;
                } else {
                    g = match cv.wait_timeout(g, d - now) {
                        Ok((g, _)) => g,
                        Err(_) => return,
                    };
                }
            }
        }
    }
}

/// A pool thread: takes requests, keeps one process, replaces it when it
/// dies or must go.
pub(crate) fn worker_loop(
    shared: &Arc<Shared>,
    slot: usize,
    prestart: bool,
    report: Option<std::sync::mpsc::Sender<Result<Hello, StartError>>>,
) {
    let mut proc: Option<Process> = None;
    if prestart {
        match Process::start(&shared.config, Some(shared)) {
            Ok(p) => {
                if let Some(r) = report {
                    let _ = r.send(Ok(p.hello.clone()));
                }
                proc = Some(p);
            }
            // A call starts it again, and fails with the reason.
            Err(e) => {
                if let Some(r) = report {
                    let _ = r.send(Err(e));
                }
            }
        }
    }
    while let Some(item) = shared.next(slot) {
        let result = run(shared, &mut proc, &item);
        let _ = item.reply.send((item.index, result));
    }
    if let Some(p) = proc.take() {
        retire(shared, p);
    }
}

fn run(shared: &Arc<Shared>, proc: &mut Option<Process>, item: &Item) -> Result<Output, CallError> {
    if shared.stopping.load(Ordering::SeqCst) {
        return Err(CallError::Stopped);
    }
    if proc.is_none() {
        *proc = Some(
            Process::start(&shared.config, Some(shared))
                .map_err(|e| CallError::Start(e.to_string()))?,
        );
    }
    let p = proc.as_mut().expect("just started");
    match p.call(item) {
        Ok(out) => Ok(out),
        Err((e, replace)) => {
            if replace {
                if let Some(p) = proc.take() {
                    retire(shared, p);
                }
            }
            Err(e)
        }
    }
}

fn retire(shared: &Shared, p: Process) {
    let pid = p.hello.pid;
    p.stop();
    if let Ok(mut l) = shared.live.lock() {
        l.retain(|(x, _)| *x != pid);
    }
}
