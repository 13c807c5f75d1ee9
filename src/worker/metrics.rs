//! A worker's side of `/metrics`: counts every request by route template,
//! method and status class, times it into a histogram, counts WebSocket
//! messages and closes, and turns it all into the [`Report`] each heartbeat
//! carries to the supervisor.
//!
//! Off the hot path's allocations: counts are atomics in tables made once
//! per route (the first request of a route allocates its table, no request
//! after it does), and the route a request matched comes back from inside
//! the router through a task-local cell set by a layer around every route,
//! not through the request's or response's extensions.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::MatchedPath;
use hyper::{Method, Request, StatusCode};

use crate::metrics::{
    close_slot, Report, RouteReport, BUCKETS, BUCKETS_US, CLASSES, CLOSE_SLOTS, MAX_ROUTES,
    METHODS, OTHER_ROUTES, UNMATCHED,
};

/// A request's route, as an index into [`Recorder::routes`]; the two past
/// the table are [`UNMATCHED`] and [`OTHER_ROUTES`].
type RouteId = u8;
const UNMATCHED_ID: RouteId = MAX_ROUTES as RouteId;
const OTHER_ID: RouteId = MAX_ROUTES as RouteId + 1;

tokio::task_local! {
    /// Set by [`Tag`] when the router hands a request to a route; read by
    /// the connection's service once the response is out of the router.
    static ROUTE: Cell<RouteId>;
}

/// One route's counters.
struct RouteCounts {
    template: Box<str>,
    requests: [[AtomicU64; CLASSES.len()]; METHODS.len()],
    buckets: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
}

impl RouteCounts {
    fn new(template: &str) -> RouteCounts {
        RouteCounts {
            template: template.into(),
            requests: Default::default(),
            buckets: Default::default(),
            sum_us: AtomicU64::new(0),
        }
    }

    fn report(&self) -> RouteReport {
        let mut requests = Vec::new();
        for (m, by_class) in self.requests.iter().enumerate() {
            for (c, count) in by_class.iter().enumerate() {
                match count.load(Relaxed) {
                    0 => {}
                    n => requests.push((m as u8, c as u8, n)),
                }
            }
        }
        RouteReport {
            route: self.template.to_string(),
            requests,
            buckets: self.buckets.iter().map(|b| b.load(Relaxed)).collect(),
            sum_us: self.sum_us.load(Relaxed),
        }
    }
}

/// A worker's counters for `/metrics`. Recording does nothing when the
/// service has no metrics listener.
pub(crate) struct Recorder {
    enabled: bool,
    /// Filled in the order routes are first requested, never emptied.
    routes: [OnceLock<Box<RouteCounts>>; MAX_ROUTES],
    unmatched: RouteCounts,
    other: RouteCounts,
    ws_received: AtomicU64,
    ws_sent: AtomicU64,
    ws_closes: [AtomicU64; CLOSE_SLOTS],
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

fn method_index(method: &Method) -> u8 {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::PATCH => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

fn bucket(elapsed: Duration) -> usize {
    let us = elapsed.as_micros() as u64;
    BUCKETS_US.partition_point(|&bound| bound < us)
}

impl Recorder {
    pub fn new(enabled: bool) -> Recorder {
        Recorder {
            enabled,
            routes: [const { OnceLock::new() }; MAX_ROUTES],
            unmatched: RouteCounts::new(UNMATCHED),
            other: RouteCounts::new(OTHER_ROUTES),
            ws_received: AtomicU64::new(0),
            ws_sent: AtomicU64::new(0),
            ws_closes: Default::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The id of a route the server answers itself (not through the
    /// router, so no [`Tag`] sees it); None when nothing is counted.
    pub(crate) fn route(&self, template: &str) -> Option<RouteId> {
        self.enabled.then(|| self.route_id(template))
    }

    /// The id of route `template`, given one the first time it is seen.
    fn route_id(&self, template: &str) -> RouteId {
        for (id, slot) in self.routes.iter().enumerate() {
            // get_or_init: two threads meeting a new route at once agree
            // on one slot for it; a slot another route took is passed over.
            let counts = slot.get_or_init(|| Box::new(RouteCounts::new(template)));
            if &*counts.template == template {
                return id as RouteId;
            }
        }
        OTHER_ID
    }

    fn counts(&self, id: RouteId) -> &RouteCounts {
        match id {
            UNMATCHED_ID => &self.unmatched,
            OTHER_ID => &self.other,
            id => self.routes[usize::from(id)]
                .get()
                .map_or(&self.other, |counts| counts),
        }
    }

    /// Counts one answered request.
    fn record(&self, route: RouteId, method: u8, status: StatusCode, elapsed: Duration) {
        let counts = self.counts(route);
        let class = usize::from((status.as_u16() / 100).clamp(1, 5) - 1);
        counts.requests[usize::from(method)][class].fetch_add(1, Relaxed);
        counts.buckets[bucket(elapsed)].fetch_add(1, Relaxed);
        counts.sum_us.fetch_add(elapsed.as_micros() as u64, Relaxed);
    }

    /// Counts WebSocket data messages (text or binary) received.
    pub fn ws_received(&self, n: u64) {
        if self.enabled {
            self.ws_received.fetch_add(n, Relaxed);
        }
    }

    /// Counts WebSocket data messages sent.
    pub fn ws_sent(&self, n: u64) {
        if self.enabled {
            self.ws_sent.fetch_add(n, Relaxed);
        }
    }

    /// Counts a WebSocket's end by its close code (1006 when the
    /// connection ended without a Close frame).
    pub fn ws_closed(&self, code: u16) {
        if self.enabled {
            self.ws_closes[close_slot(code)].fetch_add(1, Relaxed);
        }
    }

    /// This worker's counts, with the figures kept elsewhere filled in by
    /// the caller.
    pub fn report(&self) -> Report {
        let routes = self
            .routes
            .iter()
            .map_while(OnceLock::get)
            .map(|c| c.as_ref())
            .chain([&self.unmatched, &self.other])
            .map(RouteCounts::report)
            .filter(|r| !r.requests.is_empty())
            .collect();
        Report {
            routes,
            ws_received: self.ws_received.load(Relaxed),
            ws_sent: self.ws_sent.load(Relaxed),
            ws_closes: self.ws_closes.iter().map(|c| c.load(Relaxed)).collect(),
            ..Report::default()
        }
    }
}

/// A request being timed: what is known of it before the app runs.
pub(crate) struct Timing {
    method: u8,
    started: Option<std::time::Instant>,
}

impl Timing {
    /// Starts timing `request`; with `timed` false (nothing counts or logs
    /// the time) the clock is not read and [`Timing::finish`] says zero.
    pub fn start<B>(request: &Request<B>, timed: bool) -> Timing {
        Timing {
            method: method_index(request.method()),
            started: timed.then(std::time::Instant::now),
        }
    }

    /// Counts the request, answered with `status` by `route` (as
    /// [`routed`] returned it; `None`: refused before routing); returns how
    /// long it took, read once for the metrics and the access log.
    pub fn finish(
        self,
        recorder: &Recorder,
        route: Option<RouteId>,
        status: StatusCode,
    ) -> Duration {
        let elapsed = self.started.map_or(Duration::ZERO, |t| t.elapsed());
        if recorder.enabled {
            let route = route.unwrap_or(UNMATCHED_ID);
            recorder.record(route, self.method, status, elapsed);
        }
        elapsed
    }
}

/// Runs `future` (the router answering one request) and says which route
/// answered it: what [`Tag`] recorded meanwhile, [`UNMATCHED`] if none did.
pub(crate) async fn routed<F: std::future::Future>(future: F) -> (F::Output, Option<RouteId>) {
    ROUTE
        .scope(Cell::new(UNMATCHED_ID), async move {
            let output = future.await;
            (output, Some(ROUTE.with(Cell::get)))
        })
        .await
}

/// The layer put around every route of the app: tells [`routed`] which
/// route template matched (axum's [`MatchedPath`]).
#[derive(Clone)]
pub(crate) struct TagLayer(pub super::WorkerContext);

impl<S> tower::Layer<S> for TagLayer {
    type Service = Tag<S>;
    fn layer(&self, inner: S) -> Tag<S> {
        Tag {
            inner,
            ctx: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Tag<S> {
    inner: S,
    ctx: super::WorkerContext,
}

impl<S, B> tower::Service<Request<B>> for Tag<S>
where
    S: tower::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> S::Future {
        if let Some(path) = request.extensions().get::<MatchedPath>() {
            let id = self.ctx.metrics.route_id(path.as_str());
            let _ = ROUTE.try_with(|cell| cell.set(id));
        }
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_fall_in_the_bucket_whose_bound_holds_them() {
        assert_eq!(bucket(Duration::from_micros(0)), 0);
        assert_eq!(bucket(Duration::from_micros(100)), 0);
        assert_eq!(bucket(Duration::from_micros(101)), 1);
        assert_eq!(bucket(Duration::from_secs(10)), BUCKETS - 2);
        assert_eq!(bucket(Duration::from_secs(11)), BUCKETS - 1);
    }

    #[test]
    fn routes_past_the_table_count_as_other() {
        let recorder = Recorder::new(true);
        for n in 0..MAX_ROUTES {
            assert_eq!(usize::from(recorder.route_id(&format!("/r{n}"))), n);
        }
        assert_eq!(recorder.route_id("/r3"), 3);
        assert_eq!(recorder.route_id("/one-too-many"), OTHER_ID);
        let t = Timing {
            method: 0,
            started: Some(std::time::Instant::now()),
        };
        let _ = t.finish(&recorder, Some(OTHER_ID), StatusCode::OK);
        let report = recorder.report();
        let other = report.routes.iter().find(|r| r.route == OTHER_ROUTES);
        assert_eq!(other.map(|r| r.requests.clone()), Some(vec![(0, 1, 1)]));
    }
}
