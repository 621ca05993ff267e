//! The `fleetscore` binary: a thin command line over the library crates.
//!
//! Exit codes: 0 success; 1 the command failed (nothing or not everything
//! was done, see the message); 2 usage error; 3 the command completed but
//! some models or files failed (each is listed with its reason).

mod batch;
mod cli;
mod demo;
mod import;
mod jobs_cmd;
mod kube;
mod score;
mod serve_cmd;
mod telemetry;
mod train;
mod util;

// The deployment's configuration and the service live in the server crate.
use fleetscore_server::config;

use std::process::ExitCode;

use clap::Parser;

// mimalloc keeps freed pages for reuse; with glibc's allocator the scoring
// job's large column buffers were unmapped and faulted in again, costing a
// third of the job in system time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (the same index in its v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long `serve` keeps freed memory before returning it to the OS.
const SERVE_PURGE_DELAY_MS: std::ffi::c_long = 1000;

fn main() -> ExitCode {
    // Parsing spawns no thread, so the allocator can still be set below.
    let cli = cli::Cli::parse();
    // mimalloc returns freed memory to the OS 10 ms after it is freed (a
    // "purge") and faults it in again on the next large allocation. With
    // transparent huge pages (`always` on many hosts) each fault zeroes
    // 2 MiB: that was more than half of a scoring worker's time, in the
    // kernel. Batch commands and workers keep freed memory for reuse
    // instead (resident memory stays at their peak). `serve` runs for
    // months and its peaks come from bursts of requests: it returns memory
    // a second after it is freed, which is long enough for the buffers of
    // back-to-back tasks to be reused without faults. `MIMALLOC_PURGE_DELAY`
    // (milliseconds, -1 = never) overrides both.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        let delay = match cli.command {
            cli::Command::Serve(_) | cli::Command::Demo(_) => SERVE_PURGE_DELAY_MS,
            _ => -1,
        };
        // SAFETY: no other thread exists yet.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, delay) };
    }
    // Like other Unix tools, end quietly when the reader of our output goes
    // away (`fleetscore models list | head`) instead of panicking on EPIPE.
    // Except `serve`: it keeps serving when its reader goes, and its lines
    // about finished jobs go nowhere (Rust's default, SIGPIPE ignored, is
    // kept for it).
    #[cfg(unix)]
    if !matches!(cli.command, cli::Command::Serve(_)) {
        // SAFETY: setting a signal disposition to its default before any
        // other thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let telemetry = telemetry::init(&cli.global, cli.command.name());
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", util::chain(&e));
            ExitCode::from(1)
        }
    };
    telemetry.shutdown();
    code
}

fn run(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    // Before the runtime starts its threads, which inherit the CPU set.
    if let cli::Command::Worker(cli::WorkerArgs {
        cpus: Some(list), ..
    }) = &cli.command
    {
        util::pin_to_cpus(list)?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .thread_keep_alive(std::time::Duration::from_secs(600))
        .enable_all()
        .build()?;
    let g = &cli.global;
    match cli.command {
        cli::Command::Models { command } => match command {
            cli::ModelsCommand::Import(args) => rt.block_on(import::run(g, args)),
            cli::ModelsCommand::List { json } => rt.block_on(import::list(g, json)),
            cli::ModelsCommand::Show { device, tag, json } => {
                rt.block_on(import::show(g, &device, &tag, json))
            }
            cli::ModelsCommand::Pack => rt.block_on(import::repack(g)),
            cli::ModelsCommand::Promote {
                device,
                tag,
                version,
            } => rt.block_on(import::promote(g, &device, &tag, version)),
            cli::ModelsCommand::Train(args) => rt.block_on(train::run(g, args)),
        },
        cli::Command::Score(args) => rt.block_on(score::run(g, args)),
        cli::Command::Ingest(args) => rt.block_on(batch::ingest(g, args)),
        cli::Command::Aggregate(args) => rt.block_on(batch::aggregate(g, args)),
        cli::Command::Demo(args) => rt.block_on(demo::run(g, args)),
        cli::Command::Serve(args) => rt.block_on(serve_cmd::run(g, args)),
        cli::Command::Backfill(args) => rt.block_on(jobs_cmd::backfill(g, args)),
        cli::Command::Worker(args) => rt.block_on(jobs_cmd::worker(g, args)),
        cli::Command::Jobs { command } => rt.block_on(jobs_cmd::jobs(g, command)),
        cli::Command::Schedule {
            command: cli::ScheduleCommand::Export(args),
        } => {
            let c = config::load(g.config.as_deref())?;
            print!("{}", kube::cronjobs(g, &args, &c.schedule_specs()?)?);
            Ok(ExitCode::SUCCESS)
        }
        cli::Command::Config => {
            let c = config::load(g.config.as_deref())?;
            print!("{}", config::to_toml(&c)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
