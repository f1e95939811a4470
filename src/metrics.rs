//! Every metric batisync exports, declared in one place.
//!
//! Instruments are OpenTelemetry ones; [`init_prometheus`] installs a meter provider
//! whose Prometheus registry the admin listener renders at `/metrics`. Before that (in
//! unit tests, say) the instruments are no-ops.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, MeterProvider};
use opentelemetry_sdk::metrics::SdkMeterProvider;

/// Buckets (seconds) for durations and latencies: 1 ms to 10 min.
const SECONDS_BUCKETS: [f64; 17] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 600.0,
];

/// A row of the backlog gauges, refreshed by the maintenance task.
#[derive(Debug, Clone, PartialEq)]
pub struct BacklogRow {
    pub flow: String,
    pub status: String,
    pub events: i64,
    pub oldest_age_seconds: f64,
}

/// The latest full load of a flow (initial load or resync), refreshed by the
/// maintenance task.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadRow {
    pub flow: String,
    pub total: i64,
    /// Delivered or superseded.
    pub done: i64,
    pub dead: i64,
    pub running: bool,
    /// Events finished per second (recent while running, average once finished).
    pub rate_per_s: f64,
    /// Seconds left at the current rate, while running and moving.
    pub eta_seconds: Option<f64>,
}

/// The instruments.
#[derive(Debug)]
pub struct Metrics {
    captured: Counter<u64>,
    superseded: Counter<u64>,
    dispatched: Counter<u64>,
    retried: Counter<u64>,
    dead: Counter<u64>,
    rescued: Counter<u64>,
    rejected: Counter<u64>,
    conflicts: Counter<u64>,
    dispatch_duration: Histogram<f64>,
    propagation_latency: Histogram<f64>,
    /// Last backlog snapshot, read by the gauge callbacks at scrape time so that a scrape
    /// never queries the database. Written by the maintenance task only.
    backlog: Arc<Mutex<Vec<BacklogRow>>>,
    /// Last load snapshot, same arrangement as `backlog`.
    loads: Arc<Mutex<Vec<LoadRow>>>,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process-wide instruments.
pub fn get() -> &'static Metrics {
    METRICS.get_or_init(|| Metrics::new(&opentelemetry::global::meter("batisync")))
}

/// Installs a meter provider exporting to a new Prometheus registry, and returns it.
///
/// # Errors
/// When the exporter cannot be built.
pub fn init_prometheus() -> anyhow::Result<prometheus::Registry> {
    let registry = prometheus::Registry::new();
    let exporter = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .without_target_info()
        .build()?;
    let provider = SdkMeterProvider::builder().with_reader(exporter).build();
    let metrics = Metrics::new(&provider.meter("batisync"));
    opentelemetry::global::set_meter_provider(provider);
    if METRICS.set(metrics).is_err() {
        tracing::debug!("metrics were already initialised; keeping the first registry");
    }
    Ok(registry)
}

/// Renders the registry in the Prometheus text format.
pub fn render(registry: &prometheus::Registry) -> String {
    prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap_or_else(|e| format!("# metrics encoding failed: {e}\n"))
}

impl Metrics {
    fn new(meter: &Meter) -> Self {
        let backlog: Arc<Mutex<Vec<BacklogRow>>> = Arc::default();
        register_backlog_gauges(meter, &backlog);
        let loads: Arc<Mutex<Vec<LoadRow>>> = Arc::default();
        register_load_gauges(meter, &loads);
        let counter = |name: &'static str, description: &'static str| {
            meter
                .u64_counter(name)
                .with_description(description)
                .build()
        };
        let seconds = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_description(description)
                .with_unit("s")
                .with_boundaries(SECONDS_BUCKETS.to_vec())
                .build()
        };
        Self {
            captured: counter("batisync.events.captured", "Events written to the outbox"),
            superseded: counter(
                "batisync.events.superseded",
                "Pending events replaced by a newer one",
            ),
            dispatched: counter("batisync.events.dispatched", "Events applied to the target"),
            retried: counter("batisync.events.retried", "Failed attempts scheduled again"),
            dead: counter("batisync.events.dead", "Events quarantined as dead letters"),
            rescued: counter("batisync.events.rescued", "Events whose lease expired"),
            rejected: counter(
                "batisync.records.rejected",
                "Source records that could not be read (reported, not captured)",
            ),
            conflicts: counter(
                "batisync.conflicts",
                "Latest-modification-wins decisions where both sides had changed",
            ),
            dispatch_duration: seconds(
                "batisync.dispatch.duration",
                "Time a handler took to apply one event",
            ),
            propagation_latency: seconds(
                "batisync.propagation.latency",
                "Time from capture to successful delivery",
            ),
            backlog,
            loads,
        }
    }

    pub fn captured(&self, flow: &str, inserted: u64, superseded: u64) {
        let attrs = [flow_attr(flow)];
        self.captured.add(inserted, &attrs);
        self.superseded.add(superseded, &attrs);
    }

    pub fn dispatched(&self, flow: &str, duration: Duration, since_capture: Duration) {
        let attrs = [flow_attr(flow)];
        self.dispatched.add(1, &attrs);
        self.dispatch_duration
            .record(duration.as_secs_f64(), &attrs);
        self.propagation_latency
            .record(since_capture.as_secs_f64(), &attrs);
    }

    pub fn failed(&self, flow: &str, kind: &'static str, dead: bool, duration: Duration) {
        let attrs = [flow_attr(flow), KeyValue::new("kind", kind)];
        if dead {
            self.dead.add(1, &attrs);
        } else {
            self.retried.add(1, &attrs);
        }
        self.dispatch_duration
            .record(duration.as_secs_f64(), &attrs[..1]);
    }

    pub fn rescued(&self, events: u64) {
        self.rescued.add(events, &[]);
    }

    /// Records of a source read that could not be read.
    pub fn rejected(&self, flow: &str, records: u64) {
        self.rejected.add(records, &[flow_attr(flow)]);
    }

    /// One conflict decided; `winner` is `source` or `target`.
    pub fn conflict(&self, flow: &str, winner: &'static str) {
        self.conflicts
            .add(1, &[flow_attr(flow), KeyValue::new("winner", winner)]);
    }

    /// Replaces the backlog snapshot the gauges report.
    pub fn set_backlog(&self, rows: Vec<BacklogRow>) {
        *self.backlog.lock().unwrap_or_else(PoisonError::into_inner) = rows;
    }

    /// Replaces the load snapshot the gauges report.
    pub fn set_loads(&self, rows: Vec<LoadRow>) {
        *self.loads.lock().unwrap_or_else(PoisonError::into_inner) = rows;
    }
}

fn flow_attr(flow: &str) -> KeyValue {
    KeyValue::new("flow", flow.to_owned())
}

fn register_backlog_gauges(meter: &Meter, backlog: &Arc<Mutex<Vec<BacklogRow>>>) {
    let rows = backlog.clone();
    meter
        .i64_observable_gauge("batisync.backlog.events")
        .with_description("Events per flow and status (pending, in_flight, dead)")
        .with_callback(move |observer| {
            let rows = rows.lock().unwrap_or_else(PoisonError::into_inner);
            for row in rows.iter() {
                let attrs = [
                    flow_attr(&row.flow),
                    KeyValue::new("status", row.status.clone()),
                ];
                observer.observe(row.events, &attrs);
            }
        })
        .build();
    let rows = backlog.clone();
    meter
        .f64_observable_gauge("batisync.backlog.oldest_pending_age")
        .with_description("Age of the oldest pending event per flow")
        .with_unit("s")
        .with_callback(move |observer| {
            let rows = rows.lock().unwrap_or_else(PoisonError::into_inner);
            for row in rows.iter().filter(|r| r.status == "pending") {
                observer.observe(row.oldest_age_seconds, &[flow_attr(&row.flow)]);
            }
        })
        .build();
}

/// A whole-number load gauge: name, description, and the value it reads from a row.
type LoadCount = (&'static str, &'static str, fn(&LoadRow) -> i64);

fn register_load_gauges(meter: &Meter, loads: &Arc<Mutex<Vec<LoadRow>>>) {
    let counts: [LoadCount; 4] = [
        (
            "batisync.load.total",
            "Events of the latest full load (initial load or resync) per flow",
            |r| r.total,
        ),
        (
            "batisync.load.done",
            "Events of the latest full load delivered or superseded",
            |r| r.done,
        ),
        (
            "batisync.load.dead",
            "Events of the latest full load quarantined as dead letters",
            |r| r.dead,
        ),
        (
            "batisync.load.running",
            "1 while the latest full load of the flow is being delivered",
            |r| i64::from(r.running),
        ),
    ];
    for (name, description, value) in counts {
        let rows = loads.clone();
        meter
            .i64_observable_gauge(name)
            .with_description(description)
            .with_callback(move |observer| {
                let rows = rows.lock().unwrap_or_else(PoisonError::into_inner);
                for row in rows.iter() {
                    observer.observe(value(row), &[flow_attr(&row.flow)]);
                }
            })
            .build();
    }
    let rows = loads.clone();
    meter
        .f64_observable_gauge("batisync.load.rate")
        .with_description("Events of the latest full load finished per second")
        .with_callback(move |observer| {
            let rows = rows.lock().unwrap_or_else(PoisonError::into_inner);
            for row in rows.iter() {
                observer.observe(row.rate_per_s, &[flow_attr(&row.flow)]);
            }
        })
        .build();
    let rows = loads.clone();
    meter
        .f64_observable_gauge("batisync.load.eta")
        .with_description("Estimated time left of the running full load")
        .with_unit("s")
        .with_callback(move |observer| {
            let rows = rows.lock().unwrap_or_else(PoisonError::into_inner);
            for row in rows.iter().filter(|r| r.running) {
                if let Some(eta) = row.eta_seconds {
                    observer.observe(eta, &[flow_attr(&row.flow)]);
                }
            }
        })
        .build();
}
