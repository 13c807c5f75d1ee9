//! A [`Snapshot`] in Prometheus's text format (0.0.4): every metric the
//! README lists, named after the crate (`ferricorn_…`; a renamed copy's
//! carry its own name), encoded by the `prometheus` crate.

use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};

use super::{ExitCause, Snapshot};
use crate::metrics::{close_label, BUCKETS_US, CLASSES, CLOSE_SLOTS, METHODS};

/// The `Content-Type` of [`render`]'s text.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The metric-name prefix: the crate's name, in its underscore form.
const PREFIX: &str = env!("CARGO_CRATE_NAME");

/// A family under construction.
struct Family(MetricFamily);

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(name, value)| {
            let mut pair = LabelPair::default();
            pair.set_name((*name).to_owned());
            pair.set_value((*value).to_owned());
            pair
        })
        .collect()
}

impl Family {
    fn new(name: &str, help: &str, kind: MetricType) -> Family {
        let mut family = MetricFamily::default();
        family.set_name(format!("{PREFIX}_{name}"));
        family.set_help(help.to_owned());
        family.set_field_type(kind);
        Family(family)
    }

    fn counter(name: &str, help: &str) -> Family {
        Family::new(name, help, MetricType::COUNTER)
    }

    fn gauge(name: &str, help: &str) -> Family {
        Family::new(name, help, MetricType::GAUGE)
    }

    fn push(&mut self, pairs: &[(&str, &str)], value: f64) -> &mut Family {
        let mut metric = Metric::default();
        metric.set_label(labels(pairs));
        match self.0.get_field_type() {
            MetricType::COUNTER => {
                let mut counter = Counter::default();
                counter.set_value(value);
                metric.set_counter(counter);
            }
            _ => {
                let mut gauge = Gauge::default();
                gauge.set_value(value);
                metric.set_gauge(gauge);
            }
        }
        self.0.mut_metric().push(metric);
        self
    }

    fn histogram(&mut self, pairs: &[(&str, &str)], per_bucket: &[u64], sum_us: u64) {
        let mut histogram = Histogram::default();
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(BUCKETS_US.len());
        for (bound, count) in BUCKETS_US.iter().zip(per_bucket) {
            cumulative += count;
            let mut bucket = Bucket::default();
            bucket.set_upper_bound(*bound as f64 / 1e6);
            bucket.set_cumulative_count(cumulative);
            buckets.push(bucket);
        }
        histogram.set_bucket(buckets);
        histogram.set_sample_count(per_bucket.iter().sum());
        histogram.set_sample_sum(sum_us as f64 / 1e6);
        let mut metric = Metric::default();
        metric.set_label(labels(pairs));
        metric.set_histogram(histogram);
        self.0.mut_metric().push(metric);
    }
}

/// The snapshot as Prometheus text; `memory` gives each live worker's
/// bytes in use (by pid), where they can be read.
pub(crate) fn render(snapshot: &Snapshot, memory: &dyn Fn(&super::Live) -> Option<u64>) -> String {
    let t = &snapshot.totals;
    let f = &snapshot.figures;
    let mut out: Vec<Family> = Vec::new();

    let mut requests = Family::counter(
        "http_requests_total",
        "HTTP requests answered, by method, route template and status class.",
    );
    let mut durations = Family::new(
        "http_request_duration_seconds",
        "Time from a request's head to its response, by route template.",
        MetricType::HISTOGRAM,
    );
    for route in &t.routes {
        for &(method, class, count) in &route.requests {
            let method = METHODS.get(usize::from(method)).copied().unwrap_or("other");
            let class = CLASSES.get(usize::from(class)).copied().unwrap_or("5xx");
            requests.push(
                &[
                    ("method", method),
                    ("route", &route.route),
                    ("status", class),
                ],
                count as f64,
            );
        }
        durations.histogram(&[("route", &route.route)], &route.buckets, route.sum_us);
    }
    out.extend([requests, durations]);

    let mut by_slot = Family::counter(
        "worker_requests_total",
        "HTTP requests answered, by worker slot (every worker that held the slot).",
    );
    for (slot, count) in &snapshot.requests_by_slot {
        by_slot.push(&[("worker", &slot.to_string())], *count as f64);
    }
    out.push(by_slot);

    let mut connections = Family::gauge(
        "http_connections",
        "Open HTTP connections (upgraded ones included), by worker slot.",
    );
    let mut websockets = Family::gauge("websockets", "Open WebSockets, by worker slot.");
    let mut memory_bytes = Family::gauge(
        "worker_memory_bytes",
        "Memory in use by worker slot: its cgroup's when delegated, else its resident set.",
    );
    // During a reload a slot has two workers: gauges add them up.
    let mut per_slot: std::collections::BTreeMap<usize, (u64, u64, Option<u64>)> =
        std::collections::BTreeMap::new();
    for live in &snapshot.live {
        let entry = per_slot.entry(live.slot).or_default();
        entry.0 += live.report.connections;
        entry.1 += live.report.websockets;
        if let Some(bytes) = memory(live) {
            entry.2 = Some(entry.2.unwrap_or(0) + bytes);
        }
    }
    for (slot, (conns, ws, mem)) in per_slot {
        let slot = slot.to_string();
        connections.push(&[("worker", &slot)], conns as f64);
        websockets.push(&[("worker", &slot)], ws as f64);
        if let Some(mem) = mem {
            memory_bytes.push(&[("worker", &slot)], mem as f64);
        }
    }
    out.extend([connections, websockets, memory_bytes]);

    let mut messages = Family::counter(
        "websocket_messages_total",
        "WebSocket text and binary messages, by direction.",
    );
    messages
        .push(&[("direction", "received")], t.ws_received as f64)
        .push(&[("direction", "sent")], t.ws_sent as f64);
    let mut closes = Family::counter(
        "websocket_closes_total",
        "WebSockets closed, by close code (1006: ended without a Close frame).",
    );
    for slot in 0..CLOSE_SLOTS {
        let count = t.ws_closes.get(slot).copied().unwrap_or(0);
        if count > 0 {
            closes.push(&[("code", &close_label(slot))], count as f64);
        }
    }
    out.extend([messages, closes]);

    for (name, help, value) in [
        ("pubsub_published_total", "Pub/sub messages published.", t.published),
        ("pubsub_delivered_total", "Pub/sub messages handed to subscribers.", t.delivered),
        ("pubsub_dropped_total", "Pub/sub messages a slow subscriber skipped or a full queue refused.", t.dropped),
        ("pubsub_lost_total", "Pub/sub messages published while the backend was unreachable (delivered in their worker only).", t.lost),
    ] {
        let mut family = Family::counter(name, help);
        family.push(&[], value as f64);
        out.push(family);
    }

    let mut exits = Family::counter("worker_exits_total", "Worker exits, by cause.");
    for cause in ExitCause::ALL {
        exits.push(&[("cause", cause.label())], f.exits.get(cause) as f64);
    }
    let mut reloads = Family::counter("reloads_total", "Reloads, by outcome.");
    reloads
        .push(&[("outcome", "ok")], f.reloads_ok as f64)
        .push(&[("outcome", "failed")], f.reloads_failed as f64);
    out.extend([exits, reloads]);

    let mut generation = Family::gauge("generation", "The serving generation (1 + reloads).");
    generation.push(&[], f.generation as f64);
    let mut workers = Family::gauge("workers", "Live worker processes, by state.");
    for (state, count) in f.states {
        workers.push(&[("state", state)], count as f64);
    }
    let mut target = Family::gauge("workers_target", "Workers wanted.");
    target.push(&[], f.target as f64);
    out.extend([generation, workers, target]);

    let mut queued = Family::gauge(
        "listen_queue",
        "Connections waiting in a listening socket's accept queue (TCP only).",
    );
    let mut limit = Family::gauge(
        "listen_queue_limit",
        "The accept queue's size (the backlog, capped by net.core.somaxconn).",
    );
    for q in &f.queues {
        queued.push(&[("listener", &q.listener)], f64::from(q.queued));
        limit.push(&[("listener", &q.listener)], f64::from(q.limit));
    }
    out.extend([queued, limit]);

    let mut build = Family::gauge(
        "build_info",
        "Always 1: the version and the build id (hash of the executable) serving.",
    );
    build.push(
        &[("version", env!("CARGO_PKG_VERSION")), ("build", &f.build)],
        1.0,
    );
    let mut started = Family::gauge(
        "start_time_seconds",
        "When the supervisor started, seconds since the epoch: counters reset only then.",
    );
    started.push(&[], snapshot.started);
    out.extend([build, started]);

    let families: Vec<MetricFamily> = out
        .into_iter()
        .map(|f| f.0)
        .filter(|f| !f.get_metric().is_empty())
        .collect();
    let mut text = String::new();
    // Only an empty family fails to encode, and those are left out above.
    let _ = prometheus::TextEncoder::new().encode_utf8(&families, &mut text);
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Report, RouteReport};

    #[test]
    fn a_snapshot_reads_as_prometheus_text() {
        let mut buckets = vec![0; crate::metrics::BUCKETS];
        buckets[0] = 2;
        buckets[crate::metrics::BUCKETS - 1] = 1;
        let snapshot = Snapshot {
            totals: Report {
                requests: 3,
                routes: vec![RouteReport {
                    route: "/health".into(),
                    requests: vec![(0, 1, 3)],
                    buckets,
                    sum_us: 11_000_200,
                }],
                ws_closes: vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2],
                ..Report::default()
            },
            requests_by_slot: [(1, 3)].into(),
            live: vec![super::super::Live {
                slot: 1,
                pid: 7,
                cgroup: None,
                report: Report {
                    connections: 2,
                    ..Report::default()
                },
            }],
            figures: super::super::Figures {
                generation: 4,
                build: "abc".into(),
                ..Default::default()
            },
            started: 1.5,
        };
        let text = render(&snapshot, &|_| Some(4096));
        for line in [
            "ferricorn_http_requests_total{method=\"GET\",route=\"/health\",status=\"2xx\"} 3",
            "ferricorn_http_request_duration_seconds_bucket{route=\"/health\",le=\"0.0001\"} 2",
            "ferricorn_http_request_duration_seconds_bucket{route=\"/health\",le=\"10\"} 2",
            "ferricorn_http_request_duration_seconds_bucket{route=\"/health\",le=\"+Inf\"} 3",
            "ferricorn_http_request_duration_seconds_count{route=\"/health\"} 3",
            "ferricorn_http_request_duration_seconds_sum{route=\"/health\"} 11.0002",
            "ferricorn_worker_requests_total{worker=\"1\"} 3",
            "ferricorn_http_connections{worker=\"1\"} 2",
            "ferricorn_worker_memory_bytes{worker=\"1\"} 4096",
            "ferricorn_websocket_closes_total{code=\"1012\"} 1",
            "ferricorn_websocket_closes_total{code=\"other\"} 2",
            "ferricorn_worker_exits_total{cause=\"heartbeat_timeout\"} 0",
            "ferricorn_generation 4",
            "ferricorn_build_info{version=\"0.1.0\",build=\"abc\"} 1",
            "# TYPE ferricorn_http_requests_total counter",
        ] {
            let line = line.replace("ferricorn_", &format!("{PREFIX}_"));
            let line = line.replace("0.1.0", env!("CARGO_PKG_VERSION"));
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
