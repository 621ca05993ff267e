//! Command-line definitions (clap). The README's CLI reference mirrors this.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use fleetscore_models::{Gamma, ScalerChoice};
use fleetscore_stream::Span;

/// fleetscore: score thousands to millions of per-device anomaly models,
/// exactly as scikit-learn would, from the pickles you already have.
#[derive(Parser, Debug)]
#[command(name = "fleetscore", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command understands.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Home of all embedded state.
    #[arg(
        long,
        global = true,
        env = "FLEETSCORE_DATA",
        default_value = "./fleetscore-data"
    )]
    pub data: PathBuf,
    /// Object-store root: a path or file:// URL, s3://BUCKET[/PREFIX], az://CONTAINER[/PREFIX],
    /// gs://BUCKET[/PREFIX], or memory:// [default: DATA/store]. Cloud credentials come from the
    /// AWS_…, AZURE_…, GOOGLE_… environment variables (see the README).
    #[arg(long, global = true, env = "FLEETSCORE_STORE")]
    pub store: Option<String>,
    /// Job-store URL: sqlite://PATH or postgres://USER@HOST:PORT/DATABASE
    /// [default: the config's [jobs] db, else sqlite://DATA/fleetscore.db].
    /// Used by the scheduled service; models are indexed in the object store.
    #[arg(long, global = true, env = "FLEETSCORE_DB")]
    pub db: Option<String>,
    /// Service config file (TOML); see `fleetscore config`.
    #[arg(long, global = true, env = "FLEETSCORE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More log output (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// No progress bars.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// Log output formats.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Manage the model registry.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Score readings with the registered models: from a file (--input),
    /// or a window of the store's raw/ partitions (--from/--to, or the
    /// window a --schedule is due to score); to a folder (--out) or into
    /// the store (--write-store).
    Score(ScoreArgs),
    /// Ingest readings files into the store's raw/ partitions (one Parquet
    /// object per UTC hour and file).
    ///
    /// Each file is checked whole first: a bad row refuses the file (with
    /// its line or row) and nothing of it is written; other files still go.
    /// Object names derive from the file's content, so ingesting the same
    /// file again overwrites its objects instead of duplicating them.
    Ingest(IngestArgs),
    /// Compute windows from the raw/ partitions and write them to windows/.
    ///
    /// Windows starting in [--from, --to), widened to whole hours (the
    /// partition size), are written to
    /// windows/size=SIZE[_hop=HOP]/date=YYYY-MM-DD/hour=HH/part-0.parquet;
    /// rerunning overwrites them. The recompute replaces each partition of
    /// the range: every other part-*.parquet there (such as the parts
    /// `serve` writes) is deleted, also in hours that now have no windows.
    /// Hours are computed in parallel on all cores.
    Aggregate(AggregateArgs),
    /// Run the whole service end to end on a generated fleet: train its
    /// models, stream its readings, score them, serve the dashboard.
    ///
    /// In DATA/demo (recreated each run): generates a fleet of pumps
    /// (temperature, vibration, pressure, current) with 24 hours of
    /// history, trains in Rust a OneClassSVM per pump for temperature and
    /// for pressure (on 5-minute windows) and one IsolationForest for the
    /// fleet for vibration and for current, starts the server, streams the
    /// last --hours of readings through its HTTP ingest while a few pumps
    /// develop a fault (a temperature drift, vibration spikes, a stuck
    /// pressure sensor), lets the hourly schedule score each hour, prints
    /// which faults were found and how many healthy readings were flagged,
    /// then serves the dashboard until Ctrl-C (--exit stops after the
    /// summary).
    Demo(DemoArgs),
    /// Run the service: ingest, windows, scheduled scoring, the API and
    /// the dashboard, in one process.
    ///
    /// - Ingest: POST /write (InfluxDB v1 line protocol), /api/v2/write
    ///   (v2), /v1/readings (JSON, NDJSON or CSV), MQTT (--mqtt URL, or
    ///   [mqtt]) and Kafka/Event Hubs ([kafka]). A batch is answered (204,
    ///   or 200 for /v1/readings) only once it is durable in the ingest log
    ///   under DATA/log; a bad line refuses the whole batch (400, with line
    ///   numbers; [ingest] bad_lines = "skip" keeps the good lines), and
    ///   what a source cannot read is kept under the store's rejected/.
    /// - Storage: log segments are compacted into the store's raw/
    ///   partitions on start, every --compact-interval, before a job is
    ///   created, and on SIGTERM/SIGINT. Readings are aggregated into
    ///   windows over event time, each written once to windows/ when it
    ///   closes (open windows survive restarts, checkpointed under
    ///   DATA/windows).
    /// - Scoring: the schedules of the config ([[schedules]], by default
    ///   hourly) create jobs with catch-up, recorded in the job store
    ///   (--db); this process runs them unless --no-workers (then
    ///   `fleetscore worker` processes do).
    /// - API and UI: /v1 (jobs, models, predictions, anomalies, readings;
    ///   /v1/openapi.json describes it), the dashboard at /, /healthz,
    ///   /readyz, /metrics (Prometheus).
    ///
    /// Prints `listening on ADDR` on stdout once bound, then a line for
    /// each job it finishes.
    Serve(ServeArgs),
    /// Score past windows now: one job per window of --window in
    /// [--from, --to), run in this process, recorded in the job store like
    /// scheduled jobs (outputs overwrite a scheduled run of the same window).
    Backfill(BackfillArgs),
    /// Run scoring work from a shared job store until stopped: plan
    /// queued jobs, run their map tasks (reading the window) and score
    /// tasks, finalize them.
    ///
    /// Start any number on any hosts against one PostgreSQL job store
    /// (`--db postgres://…`) and one object store (`--store s3://…`, `az://…`
    /// or a shared folder), beside `fleetscore serve --no-workers`. Work is
    /// leased (`FOR UPDATE SKIP LOCKED`) and renewed while it runs; the work
    /// of a worker that vanished is taken over when its lease expires. On
    /// SIGTERM or Ctrl-C a worker takes no new work, lets its current task
    /// finish for up to --grace, else hands it back, and exits.
    Worker(WorkerArgs),
    /// Inspect and manage jobs: list, show, logs, retry, cancel, run.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Export the configured schedules for another scheduler.
    Schedule {
        #[command(subcommand)]
        command: ScheduleCommand,
    },
    /// Print the effective service config (defaults, then --config FILE,
    /// then FLEETSCORE__SECTION__KEY variables) as TOML: a starting point
    /// for a config file.
    Config,
}

impl Command {
    /// The command's name, as typed (`serve`, `models`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Models { .. } => "models",
            Command::Score(_) => "score",
            Command::Ingest(_) => "ingest",
            Command::Aggregate(_) => "aggregate",
            Command::Demo(_) => "demo",
            Command::Serve(_) => "serve",
            Command::Backfill(_) => "backfill",
            Command::Worker(_) => "worker",
            Command::Jobs { .. } => "jobs",
            Command::Schedule { .. } => "schedule",
            Command::Config => "config",
        }
    }
}

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// Tasks this worker runs at the same time.
    #[arg(long, default_value_t = 1)]
    pub slots: usize,
    /// Scoring threads per task [default: all cores].
    #[arg(long, env = "FLEETSCORE_WORKER_THREADS")]
    pub threads: Option<usize>,
    /// Lease length: a vanished worker's task is taken over this long after
    /// its last renewal (renewed every third of it).
    #[arg(long, value_name = "DUR", default_value = "30s")]
    pub lease: Span,
    /// How often an idle worker asks for work (on PostgreSQL it is also
    /// woken at once when new work is announced).
    #[arg(long, value_name = "DUR", default_value = "1s")]
    pub poll: Span,
    /// On SIGTERM, how long the current task may run on before it is handed
    /// back (keep it below the pod's terminationGracePeriodSeconds).
    #[arg(long, value_name = "DUR", default_value = "25s")]
    pub grace: Span,
    /// Stop once no work is left (instead of waiting for more).
    #[arg(long)]
    pub exit_when_idle: bool,
    /// Run only on these CPUs (`0`, `0,2`, `0-3`; Linux), e.g. one worker
    /// per core on a host that runs several: each then keeps its threads
    /// on its own core instead of waking them on another worker's.
    #[arg(long, value_name = "LIST", env = "FLEETSCORE_WORKER_CPUS")]
    pub cpus: Option<String>,
    /// Answer `/healthz`, `/readyz` (job store and object store) and
    /// `/metrics` on this address (e.g. `0.0.0.0:9090`), for Kubernetes
    /// probes and Prometheus [default: no listener].
    #[arg(long, value_name = "ADDR", env = "FLEETSCORE_WORKER_LISTEN")]
    pub listen: Option<String>,
}

#[derive(Args, Debug)]
pub struct BackfillArgs {
    /// Start (RFC 3339 or ns), rounded down to a window boundary.
    #[arg(long)]
    pub from: String,
    /// End (exclusive), rounded up to a window boundary.
    #[arg(long)]
    pub to: String,
    /// Window length; one job per window.
    #[arg(long, value_name = "DUR", default_value = "1h")]
    pub window: Span,
    /// Only these models (`device/tag`, repeatable) [default: all].
    #[arg(long = "model", value_name = "DEVICE/TAG")]
    pub models: Vec<String>,
    /// Models per task [default: `[jobs] batch_size`, 1000].
    #[arg(long)]
    pub batch_size: Option<u32>,
    /// A job fails past this many failed models: `5` or `10%`
    /// [default: `[jobs] max_failed_models`].
    #[arg(long)]
    pub max_failed_models: Option<String>,
    /// Retries per task [default: `[jobs] max_retries`, 2].
    #[arg(long)]
    pub max_retries: Option<u32>,
    /// Print JSON.
    /// Only queue the jobs, for `fleetscore worker` processes (or a
    /// running server) to run; print their ids and exit.
    #[arg(long)]
    pub queue: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum ScheduleCommand {
    /// Print one Kubernetes CronJob per `[[schedules]]` entry of --config
    /// (YAML on stdout, for `kubectl apply -f -`).
    ///
    /// Each CronJob fires when its schedule's window becomes due (the cron
    /// moved later by the delay) and runs an Indexed Job of --shards pods,
    /// each `fleetscore score --schedule NAME --shard auto/N
    /// --write-store`: the pod works out the window itself, so a late
    /// start still scores the right window. The pods read the store URL
    /// from the Secret `fleetscore` (key `store-url`; or the global
    /// --store, written in as it is) and the config from the ConfigMap
    /// `fleetscore-config`, as deploy/kubernetes/ sets them up: export
    /// from the same config file. See deploy/README.md.
    Export(ScheduleExportArgs),
}

#[derive(Args, Debug)]
pub struct ScheduleExportArgs {
    /// Kubernetes CronJobs (the only export format so far).
    #[arg(long, required = true)]
    pub kubernetes: bool,
    /// Container image of the pods.
    #[arg(long, value_name = "IMG", default_value = concat!("fleetscore:", env!("CARGO_PKG_VERSION")))]
    pub image: String,
    /// Pods per run: each scores a disjoint shard of the (device, tag) pairs.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub shards: u32,
    /// Namespace of the CronJobs [default: kubectl's current one].
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// Jobs, newest first.
    List {
        /// Only this state: queued, running, succeeded, failed, cancelled,
        /// skipped.
        #[arg(long)]
        state: Option<String>,
        /// Only this schedule.
        #[arg(long)]
        schedule: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One job with its tasks and failed models.
    Show {
        /// Job id.
        id: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The job's log and its tasks' logs (from the store's logs/ID/).
    Logs {
        /// Job id.
        id: i64,
    },
    /// Queue a failed, cancelled or skipped job again (`serve` runs it, or
    /// `fleetscore jobs run`).
    Retry {
        /// Job id.
        id: i64,
    },
    /// Cancel a queued or running job.
    Cancel {
        /// Job id.
        id: i64,
    },
    /// Run every queued job now, in this process.
    Run {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// Import scikit-learn models (pickle or joblib files) into the registry.
    ///
    /// Files named like `model_{device}_{tag}` map to (device, tag); use
    /// --device/--tag for one file, or --manifest for anything else. A
    /// directory imports every file in it. Re-importing an unchanged model
    /// is a no-op; a changed model becomes a new live version.
    Import(ImportArgs),
    /// List registered models.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one model's versions and structure.
    Show {
        /// Device (or `*` for the fallback model of a tag).
        device: String,
        /// Tag.
        tag: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild the compiled model pack from the stored model versions.
    Pack,
    /// Make a stored version the live one (roll back, or forward again).
    Promote {
        /// Device (or `*` for the fallback model of a tag).
        device: String,
        /// Tag.
        tag: String,
        /// The version to make live (see `models show`).
        version: u32,
    },
    /// Train a OneClassSVM per (device, tag) from the readings in raw/
    /// (libsvm's algorithm, as scikit-learn fits it) and register each as
    /// a new model version; an identical model is not registered again.
    Train(TrainArgs),
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Model files or directories of model files.
    #[arg(required_unless_present = "manifest")]
    pub paths: Vec<PathBuf>,
    /// Device for a single imported file (`*` registers a fallback model).
    #[arg(long, requires = "tag")]
    pub device: Option<String>,
    /// Tag for a single imported file.
    #[arg(long, requires = "device")]
    pub tag: Option<String>,
    /// CSV with columns path,device,tag (paths relative to the manifest).
    #[arg(long, conflicts_with_all = ["device", "tag"])]
    pub manifest: Option<PathBuf>,
    /// What the models take as rows: `raw` (each reading's value) or
    /// `window:SIZE:FEATURES` (each closed window of SIZE from windows/,
    /// e.g. `window:1m:mean,std`; features from count, sum, mean, min, max,
    /// std, first, last, in the model's column order).
    #[arg(long, default_value = "raw", value_name = "INPUT")]
    pub input: String,
    /// How the models run: `native` (compiled by fleetscore, never
    /// executed) or `python` (the file is stored as given and run by the
    /// opt-in Python runtime of a deployment with `[python] enabled =
    /// true`: the file's code will be executed there). Registering never
    /// executes anything.
    #[arg(long, default_value = "native", value_name = "RUNTIME")]
    pub runtime: String,
    /// With --runtime python: what the models predict (`outlier`,
    /// `regressor`, `classifier`); default: the workers tell from each
    /// model (scikit-learn's estimator type).
    #[arg(long, value_name = "KIND")]
    pub kind: Option<String>,
    /// With --runtime python: the methods to call, comma-separated (an
    /// outlier detector's score and label methods, a regressor's
    /// prediction, a classifier's label and probability methods); default:
    /// decision_function,predict / predict / predict,predict_proba.
    #[arg(long, value_name = "METHODS", value_delimiter = ',')]
    pub methods: Vec<String>,
    /// Print the outcome per model as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Output formats of `score`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Parquet parts (part-NNNNN.parquet).
    Parquet,
    /// CSV (predictions.csv, or one file per model with --layout per-model).
    Csv,
}

/// File layouts of `score`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// All models together.
    Combined,
    /// One CSV per model: preds_{device}_{tag}_{yymmddHHMMSS} (the reference job's layout).
    PerModel,
}

/// Where `score` reads: a file (`--input`), or a window of the store's
/// raw/ partitions (`--from`/`--to`, or `--schedule`).
#[derive(Args, Debug)]
pub struct ScoreArgs {
    /// Readings: CSV with header TS,Device,Tag,Value, or Parquet with those
    /// columns. Without it, the readings of the window (--from/--to, or
    /// --schedule) are read from the store's raw/ partitions.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Only readings at or after this time (`2018-08-28 23:00:00` UTC, or
    /// RFC 3339); without --input, the window's start (required).
    #[arg(long, conflicts_with = "schedule")]
    pub from: Option<String>,
    /// Only readings before this time; without --input, the window's end
    /// (required).
    #[arg(long, conflicts_with = "schedule")]
    pub to: Option<String>,
    /// Score the store's readings of the window that this schedule
    /// (`[[schedules]]` of --config) most recently became due: its newest
    /// nominal time T with T + delay <= now gives [T - window, T). What a
    /// Kubernetes CronJob's pod runs (see `schedule export --kubernetes`).
    #[arg(long, value_name = "NAME", conflicts_with = "input")]
    pub schedule: Option<String>,
    /// The time --schedule takes as now (tests, reruns).
    #[arg(long, hide = true, requires = "schedule", value_name = "TIME")]
    pub now: Option<String>,
    /// Output folder (created if missing); --out, --write-store or both.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write the predictions into the store (with a store window only):
    /// predictions/date=…/hour=…/part-raw-W-shard-I-of-N.parquet and its
    /// manifest-raw-W-shard-I-of-N.json (I-of-N = 0-of-1 unsharded;
    /// raw-W-HHMMSS for a window not starting on the hour). A
    /// rerun overwrites the same objects; outputs of the window with
    /// another shard count are deleted. Scheduled jobs' parts keep their
    /// own names.
    #[arg(long, conflicts_with = "input")]
    pub write_store: bool,
    /// Output format (of --out).
    #[arg(long, value_enum, default_value_t = Format::Parquet)]
    pub format: Format,
    /// Output layout of --out (per-model needs --format csv).
    #[arg(long, value_enum, default_value_t = Layout::Combined)]
    pub layout: Layout,
    /// Score only shard I of N (0-based): the (device, tag) pairs whose
    /// stable hash falls in it, so N processes (a Kubernetes Indexed Job)
    /// together score every pair exactly once. `auto/N` takes I from
    /// JOB_COMPLETION_INDEX. Output goes to OUT/shard-I-of-N/.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct IngestArgs {
    /// Readings files: CSV with header TS,Device,Tag,Value, or Parquet with those columns.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct AggregateArgs {
    /// First window start (`2018-08-28 23:00:00` UTC, or RFC 3339); rounded down to the hour.
    #[arg(long)]
    pub from: String,
    /// Window starts before this time; rounded up to the hour.
    #[arg(long)]
    pub to: String,
    /// Window size, e.g. `1m`, `5m`, `1h`.
    #[arg(long)]
    pub size: Span,
    /// Distance between window starts (hopping windows) [default: SIZE, tumbling].
    #[arg(long)]
    pub hop: Option<Span>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Pumps in the generated fleet (`pump-0001`…), each with four tags:
    /// temperature (°C), vibration (mm/s), pressure (bar), current (A).
    #[arg(long, default_value_t = 500)]
    pub devices: usize,
    /// Hours of readings streamed through the HTTP ingest (one every 30 s
    /// per (device, tag)), ending at the last full hour; each hour is then
    /// scored by the hourly schedule.
    #[arg(long, default_value_t = 3)]
    pub hours: usize,
    /// Pumps that develop a fault during the streamed hours, in turn a
    /// temperature drift, vibration spikes and a stuck pressure sensor
    /// (0: a healthy fleet) [default: 1% of the pumps, at least 3].
    #[arg(long, value_name = "N")]
    pub faulty: Option<usize>,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Address of the demo's server (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Stop after the summary instead of serving until Ctrl-C.
    #[arg(long)]
    pub exit: bool,
}

/// `serve` flags. Each one overrides the same setting of the config file
/// (`--config`) and of `FLEETSCORE__…` variables; the defaults shown are
/// those of an empty config.
#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// Create scheduled jobs but run none: `fleetscore worker` processes
    /// (on any hosts, sharing a PostgreSQL --db) do the scoring.
    #[arg(long, env = "FLEETSCORE_NO_WORKERS")]
    pub no_workers: bool,
    /// Address to listen on (port 0 picks a free port) [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Require this token: `Authorization: Bearer TOKEN` (or `Token TOKEN`,
    /// or `?p=TOKEN` for InfluxDB v1 clients); added to `[auth]
    /// ingest_tokens`.
    #[arg(long, env = "FLEETSCORE_INGEST_TOKEN", hide_env_values = true)]
    pub ingest_token: Option<String>,
    /// Largest accepted request body; larger ones get 413 [default: 33554432].
    #[arg(long, value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,
    /// How often the active log segment is closed and closed segments are
    /// compacted into raw/ (also done before every job is created)
    /// [default: 60s].
    #[arg(long, value_name = "DUR")]
    pub compact_interval: Option<Span>,
    /// Size at which the ingest log starts a new segment [default: 67108864].
    #[arg(long, value_name = "BYTES")]
    pub log_segment_bytes: Option<u64>,
    /// Also ingest from this MQTT broker (`mqtt://host[:port]`, or
    /// `mqtts://host[:port]` for TLS; login, CA and client certificate in
    /// `[mqtt]`): QoS 1, each message acknowledged once its readings are
    /// durable.
    #[arg(long, value_name = "URL")]
    pub mqtt: Option<String>,
    /// MQTT topic: a template whose `{device}` and `{tag}` levels name a
    /// reading's device and tag (`fleet/{device}` for objects with several
    /// sensors), or a plain filter whose last two levels do
    /// [default: fleet/{device}/{tag}].
    #[arg(long, value_name = "FILTER")]
    pub mqtt_topic: Option<String>,
    /// Subscribe as `$share/NAME/FILTER` (MQTT 5 shared subscription), so
    /// several ingest nodes split the topic's messages.
    #[arg(long, value_name = "NAME")]
    pub mqtt_shared_group: Option<String>,
    /// MQTT client id (default `fleetscore-<pid>`); a stable id lets the
    /// broker redeliver unacknowledged messages after a restart.
    #[arg(long, value_name = "ID")]
    pub mqtt_client_id: Option<String>,
    /// Line protocol: the tag whose value is the device [default: device].
    #[arg(long, value_name = "TAG")]
    pub lp_device_tag: Option<String>,
    /// Line protocol: name sensor tags `measurement.field` instead of
    /// `field`.
    #[arg(long)]
    pub lp_prefix_measurement: bool,
    /// A window layout computed from the ingested readings and written to
    /// windows/: `1m` (tumbling) or `5m/1m` (size/hop). Repeat for several;
    /// replaces `[stream] windows` [default: 1m].
    #[arg(long = "window", value_name = "SIZE[/HOP]")]
    pub window: Vec<String>,
    /// How far behind its device's newest reading a reading may be and
    /// still count as in order; windows close this much after their end
    /// [default: 5s].
    #[arg(long, value_name = "DUR")]
    pub out_of_order: Option<Span>,
    /// How much later still a reading is accepted into its window (windows
    /// wait for it too) [default: 0s].
    #[arg(long, value_name = "DUR")]
    pub allowed_lateness: Option<Span>,
    /// What happens to readings later than that: dropped, or moved to the
    /// oldest open window (counted either way on /metrics) [default: drop].
    #[arg(long, value_enum)]
    pub late_policy: Option<LatePolicyArg>,
    /// Whose clock closes windows: each device's own, or the fleet's newest
    /// reading [default: per-device].
    #[arg(long, value_enum)]
    pub watermark: Option<WatermarkArg>,
    /// How often closed windows are written to windows/, with a checkpoint
    /// [default: 10s].
    #[arg(long, value_name = "DUR")]
    pub window_flush_interval: Option<Span>,
    /// Ingest only: no streaming windows.
    #[arg(long)]
    pub no_windows: bool,
    /// Serve on a non-loopback address without admin tokens: anyone who
    /// can reach the port may then upload models and trigger jobs. Without
    /// this flag (or `[auth] allow_unauthenticated_admin`), `serve` refuses
    /// to start that way.
    #[arg(long)]
    pub allow_unauthenticated_admin: bool,
}

/// `--late-policy` values.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatePolicyArg {
    /// Discard and count as too_late.
    Drop,
    /// Aggregate at the oldest time still accepted; count as adjusted.
    Adjust,
}

/// `--watermark` values.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatermarkArg {
    /// Each device's clock closes its own windows.
    #[value(alias = "per_device")]
    PerDevice,
    /// One clock for the fleet.
    Global,
}

impl From<LatePolicyArg> for fleetscore_stream::LatePolicy {
    fn from(a: LatePolicyArg) -> Self {
        match a {
            LatePolicyArg::Drop => fleetscore_stream::LatePolicy::Drop,
            LatePolicyArg::Adjust => fleetscore_stream::LatePolicy::Adjust,
        }
    }
}

impl From<WatermarkArg> for fleetscore_stream::WatermarkMode {
    fn from(a: WatermarkArg) -> Self {
        match a {
            WatermarkArg::PerDevice => fleetscore_stream::WatermarkMode::PerDevice,
            WatermarkArg::Global => fleetscore_stream::WatermarkMode::Global,
        }
    }
}

/// `fleetscore models train` flags.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// First reading time used (`2018-08-28 23:00:00` UTC, or RFC 3339).
    #[arg(long)]
    pub from: String,
    /// Readings before this time are used (the range is from <= ts < to).
    #[arg(long)]
    pub to: String,
    /// OneClassSVM nu: an upper bound on the fraction of training readings
    /// flagged as anomalies, in (0, 1].
    #[arg(long, default_value_t = 0.05)]
    pub nu: f64,
    /// RBF kernel coefficient: `scale` (1 / (n_features * var)), `auto`
    /// (1 / n_features) or a number, as scikit-learn's `gamma`.
    #[arg(long, default_value = "scale", value_parser = parse_gamma)]
    pub gamma: Gamma,
    /// Scaler in front of the SVM: `standard` trains
    /// Pipeline(StandardScaler, OneClassSVM), `none` a bare OneClassSVM.
    #[arg(long, default_value = "standard", value_parser = parse_scaler)]
    pub scaler: ScalerChoice,
    /// Series with fewer readings in the range are skipped.
    #[arg(long, default_value_t = 20)]
    pub min_readings: usize,
    /// Only this device.
    #[arg(long)]
    pub device: Option<String>,
    /// Only this tag.
    #[arg(long)]
    pub tag: Option<String>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

fn parse_gamma(s: &str) -> Result<Gamma, String> {
    s.parse()
}

fn parse_scaler(s: &str) -> Result<ScalerChoice, String> {
    s.parse()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `--watermark` takes the config file's spelling too.
    #[test]
    fn watermark_takes_both_spellings() {
        for w in ["per-device", "per_device"] {
            let cli = Cli::try_parse_from(["fleetscore", "serve", "--watermark", w]).unwrap();
            match cli.command {
                Command::Serve(a) => assert_eq!(a.watermark, Some(WatermarkArg::PerDevice)),
                other => panic!("{other:?}"),
            }
        }
    }
}
