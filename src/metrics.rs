//! What a worker reports for `/metrics` and how reports add up: the
//! vocabulary both sides share (methods, status classes, histogram buckets,
//! close codes) and the [`Report`] a worker sends its supervisor with every
//! heartbeat. Workers count (`worker::metrics`); the supervisor sums every
//! worker that ever served and exposes the whole service
//! (`supervisor::metrics`).
//!
//! A report holds a worker's counts since it started, so a lost or late one
//! costs nothing: the next replaces it. Every label's values are bounded:
//! the app's route templates (at most [`MAX_ROUTES`]), eight methods, five
//! status classes, seventeen close codes.

use serde::{Deserialize, Serialize};

/// Methods counted by name; anything else is `other`.
pub const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other",
];

/// Status classes, by the first digit.
pub const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Upper bounds of the request-duration histogram's buckets, in
/// microseconds (100 µs to 10 s); one more bucket takes the rest (`+Inf`).
pub const BUCKETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Buckets counted, `+Inf` included.
pub const BUCKETS: usize = BUCKETS_US.len() + 1;

/// Distinct route templates a worker counts by name; requests to further
/// ones are counted under [`OTHER_ROUTES`], so an app that builds routes
/// at run time cannot grow the series without bound.
pub const MAX_ROUTES: usize = 64;

/// The route label of requests no route matched: the fallback's 404s and
/// requests refused before routing (a malformed or oversized head).
pub const UNMATCHED: &str = "unmatched";

/// The route label past [`MAX_ROUTES`].
pub const OTHER_ROUTES: &str = "other";

/// WebSocket close codes counted by number (RFC 6455 §7.4.1 and the IANA
/// registry's 1000–1015); a client's private code counts as `other`.
pub const CLOSE_CODES: std::ops::RangeInclusive<u16> = 1000..=1015;

/// Slots in a close-code table: one per [`CLOSE_CODES`] code, then `other`.
pub const CLOSE_SLOTS: usize = 17;

/// The label of close-code slot `slot`.
pub fn close_label(slot: usize) -> String {
    match slot {
        s if s < CLOSE_SLOTS - 1 => (CLOSE_CODES.start() + s as u16).to_string(),
        _ => "other".to_owned(),
    }
}

/// The slot close code `code` is counted in.
pub fn close_slot(code: u16) -> usize {
    match CLOSE_CODES.contains(&code) {
        true => usize::from(code - CLOSE_CODES.start()),
        false => CLOSE_SLOTS - 1,
    }
}

/// One route's counts in a [`Report`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteReport {
    /// The template (`/chat/{room}`), [`UNMATCHED`] or [`OTHER_ROUTES`].
    pub route: String,
    /// Non-zero counts as (method index, class index, count): sparse, since
    /// a route sees few of the 40 pairs.
    pub requests: Vec<(u8, u8, u64)>,
    /// Per-bucket (not cumulative) duration counts, [`BUCKETS`] long.
    pub buckets: Vec<u64>,
    /// Sum of durations, microseconds.
    pub sum_us: u64,
}

/// A worker's figures since it started, sent with every heartbeat as one
/// JSON line (`metrics {…}`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Requests answered, whatever the route: the per-worker counter.
    pub requests: u64,
    pub routes: Vec<RouteReport>,
    /// Open now (gauges; the supervisor does not sum them over exited
    /// workers).
    pub connections: u64,
    pub websockets: u64,
    /// WebSocket text and binary messages received and sent.
    pub ws_received: u64,
    pub ws_sent: u64,
    /// WebSocket closes, [`CLOSE_SLOTS`] long, by [`close_slot`].
    pub ws_closes: Vec<u64>,
    /// Pub/sub messages this worker published, delivered to its
    /// subscribers, dropped (a slow subscriber, a full queue), or published
    /// while its backend was unreachable (delivered in this worker only).
    pub published: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub lost: u64,
}

/// Adds `from` into `into`, growing `into` to fit.
fn add_slice(into: &mut Vec<u64>, from: &[u64]) {
    if into.len() < from.len() {
        into.resize(from.len(), 0);
    }
    for (a, b) in into.iter_mut().zip(from) {
        *a += b;
    }
}

impl Report {
    /// Adds `other`'s counters into this one (gauges are left alone): the
    /// routes by template, the rest figure by figure.
    pub fn add_counts(&mut self, other: &Report) {
        self.requests += other.requests;
        for route in &other.routes {
            let mine = match self.routes.iter_mut().position(|r| r.route == route.route) {
                Some(i) => &mut self.routes[i],
                None => {
                    self.routes.push(RouteReport {
                        route: route.route.clone(),
                        ..RouteReport::default()
                    });
                    self.routes.last_mut().expect("just pushed")
                }
            };
            for &(method, class, count) in &route.requests {
                match mine
                    .requests
                    .iter_mut()
                    .find(|(m, c, _)| (*m, *c) == (method, class))
                {
                    Some(entry) => entry.2 += count,
                    None => mine.requests.push((method, class, count)),
                }
            }
            add_slice(&mut mine.buckets, &route.buckets);
            mine.sum_us += route.sum_us;
        }
        self.ws_received += other.ws_received;
        self.ws_sent += other.ws_sent;
        add_slice(&mut self.ws_closes, &other.ws_closes);
        self.published += other.published;
        self.delivered += other.delivered;
        self.dropped += other.dropped;
        self.lost += other.lost;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, requests: Vec<(u8, u8, u64)>, buckets: Vec<u64>) -> RouteReport {
        RouteReport {
            route: name.into(),
            requests,
            buckets,
            sum_us: 10,
        }
    }

    #[test]
    fn reports_add_by_route_method_and_class() {
        let mut total = Report {
            requests: 3,
            routes: vec![route("/health", vec![(0, 1, 3)], vec![3, 0])],
            connections: 5,
            ws_closes: vec![1],
            ..Report::default()
        };
        let other = Report {
            requests: 4,
            routes: vec![
                route("/health", vec![(0, 1, 2), (1, 1, 1)], vec![1, 2, 0]),
                route("/chat/{room}", vec![(2, 3, 1)], vec![1]),
            ],
            connections: 7,
            ws_closes: vec![0, 2],
            published: 9,
            ..Report::default()
        };
        total.add_counts(&other);
        assert_eq!(total.requests, 7);
        assert_eq!(total.connections, 5, "a gauge is not summed");
        assert_eq!(total.routes[0].requests, vec![(0, 1, 5), (1, 1, 1)]);
        assert_eq!(total.routes[0].buckets, vec![4, 2, 0]);
        assert_eq!(total.routes[0].sum_us, 20);
        assert_eq!(total.routes[1].route, "/chat/{room}");
        assert_eq!(total.ws_closes, vec![1, 2]);
        assert_eq!(total.published, 9);
    }

    #[test]
    fn close_codes_map_to_bounded_slots() {
        assert_eq!(close_slot(1000), 0);
        assert_eq!(close_label(close_slot(1012)), "1012");
        assert_eq!(close_label(close_slot(4000)), "other");
        assert_eq!(close_label(close_slot(999)), "other");
        assert_eq!(close_slot(1015), CLOSE_SLOTS - 2);
    }
}
