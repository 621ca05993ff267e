//! The log on stderr, and with the `otel` feature, traces over OTLP.
//!
//! Traces go out when an OTLP endpoint is set the standard way
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
//! or `OTEL_TRACES_EXPORTER=otlp` for the default `http://localhost:4318`),
//! over OTLP/HTTP with protobuf bodies. The other standard variables
//! apply too: `OTEL_SERVICE_NAME` (default `fleetscore`),
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_TRACES_SAMPLER`, `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_SDK_DISABLED`.
//! The spans are fleetscore's own at `info` and above (`request`, `job`,
//! `plan`, `task`, `map_task`, `finalize`, `windows`, `source`, …), or
//! what `FLEETSCORE_TRACE_FILTER` selects (`RUST_LOG` syntax); the log's
//! verbosity does not change them.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::cli::{Global, LogFormat};

type Boxed = Box<dyn Layer<Registry> + Send + Sync>;

/// What must be flushed before the process exits.
#[must_use = "call shutdown() before exiting, or the last spans are lost"]
pub struct Telemetry {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still buffered (waiting at most the exporter's
    /// timeout).
    pub fn shutdown(self) {
        #[cfg(feature = "otel")]
        if let Some(p) = self.provider {
            if let Err(e) = p.shutdown() {
                eprintln!("warning: sending the last traces failed: {e}");
            }
        }
    }
}

/// Starts the log (level from `-v`, `RUST_LOG` overrides) and, if
/// configured, the traces. `command` names the process in its traces
/// (`serve`, `worker`, …).
pub fn init(g: &Global, command: &str) -> Telemetry {
    let default = match g.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt: Boxed = match g.log_format {
        LogFormat::Json => fmt.json().with_filter(filter).boxed(),
        LogFormat::Text => fmt.with_filter(filter).boxed(),
    };
    // The otel feature adds its layer.
    #[cfg_attr(not(feature = "otel"), allow(unused_mut))]
    let mut layers = vec![fmt];
    #[cfg(feature = "otel")]
    let (provider, problem) = match otel::layer(command) {
        Ok(Some((layer, provider))) => {
            layers.push(layer);
            (Some(provider), None)
        }
        Ok(None) => (None, None),
        Err(e) => (None, Some(e)),
    };
    tracing_subscriber::registry().with(layers).init();
    #[cfg(feature = "otel")]
    if let Some(e) = problem {
        tracing::warn!("traces are not sent: {e}");
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = command;
        if let Some(var) = otel_wanted() {
            tracing::warn!(
                "{var} is set, but this build sends no traces: build with `--features otel` (the container image has it)"
            );
        }
    }
    Telemetry {
        #[cfg(feature = "otel")]
        provider,
    }
}

/// The variable that asks for OTLP traces, if one does (and the SDK is
/// not disabled).
fn otel_wanted() -> Option<&'static str> {
    let set = |v: &str| std::env::var(v).is_ok_and(|s| !s.trim().is_empty());
    if std::env::var("OTEL_SDK_DISABLED").is_ok_and(|s| s.eq_ignore_ascii_case("true"))
        || std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|s| s.trim() == "none")
    {
        return None;
    }
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .into_iter()
    .find(|v| set(v))
    .or_else(|| {
        std::env::var("OTEL_TRACES_EXPORTER")
            .is_ok_and(|s| s.trim() == "otlp")
            .then_some("OTEL_TRACES_EXPORTER")
    })
}

#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry::KeyValue;
    use opentelemetry_otlp::WithExportConfig;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::{EnvFilter, Layer};

    use super::Boxed;

    /// The spans exported unless `FLEETSCORE_TRACE_FILTER` says otherwise.
    const DEFAULT_FILTER: &str = "warn,fleetscore=info";

    pub fn layer(command: &str) -> Result<Option<(Boxed, SdkTracerProvider)>, String> {
        let Some(var) = super::otel_wanted() else {
            return Ok(None);
        };
        for v in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Ok(p) = std::env::var(v) {
                if !p.trim().is_empty() && p.trim() != "http/protobuf" {
                    return Err(format!(
                        "{v}={p}: fleetscore sends OTLP over HTTP with protobuf bodies (port 4318 on most collectors); set {v}=http/protobuf or unset it"
                    ));
                }
            }
        }
        let filter = match std::env::var("FLEETSCORE_TRACE_FILTER") {
            Ok(f) => EnvFilter::try_new(&f)
                .map_err(|e| format!("FLEETSCORE_TRACE_FILTER={f:?} does not parse: {e}"))?,
            Err(_) => EnvFilter::new(DEFAULT_FILTER),
        };
        // The endpoint, headers, timeout and compression come from the
        // standard variables.
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .build()
            .map_err(|e| format!("{var}: the OTLP exporter cannot start: {e}"))?;
        let mut resource = opentelemetry_sdk::Resource::builder().with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("fleetscore.command", command.to_owned()),
        ]);
        let named = std::env::var("OTEL_SERVICE_NAME").is_ok()
            || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
        if !named {
            resource = resource.with_service_name("fleetscore");
        }
        let provider = SdkTracerProvider::builder()
            .with_id_generator(fleetscore_jobs::trace::JobIds::default())
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        // A span starts when it is first entered (context activation),
        // so a job's phases join the job's trace before that
        // (`fleetscore_jobs::trace::join`), and a long-lived span keeps
        // at most the SDK's limit of events.
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("fleetscore"))
            .with_filter(filter)
            .boxed();
        Ok(Some((layer, provider)))
    }
}
