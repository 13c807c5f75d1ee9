//! `GET /health`: liveness plus who answered (worker slot, generation, pid,
//! version and build of the executable), so a client can tell old code from
//! new across a reload; this worker's counters; its pub/sub backend and
//! whether it is reachable ("degraded" is still a 200: the worker serves,
//! its messages reach this worker only); and the supervisor's live
//! figures (the same as its `STATUS=`), relayed every few seconds. When a
//! stop has a `stop_delay`, it answers 503 with `"status": "stopping"`
//! from the stop on, so a load balancer's health checks take the host out
//! while its workers still serve. It also
//! says who it thinks the client is ([`Client`]: behind a trusted proxy,
//! the address and scheme the proxy named), which shows at once whether
//! `forwarded_allow_ips` fits the proxy in front.
//!
//! It is ferricorn's, not the app's: the worker's server answers it before
//! the app's router sees the request, so it is there whatever router the
//! app builds, and it is the route load balancers and monitors hit most,
//! so it costs as little as it can (`scripts/bench`, per-core suite):
//! - no routing: axum's router, its extensions and boxed futures cost
//!   5,000 instructions a request, more than the rest of the answer;
//! - its body is written, not serialised: what never changes in a worker
//!   (who it is) is rendered once by serde at start, the supervisor's
//!   figures once each time they arrive, and a request adds only its
//!   numbers and client. Serialising the whole struct with serde each time
//!   cost 14,000 instructions a request.
//!
//! `GET` and `HEAD` are answered; another method gets 405 with `Allow`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde::Serialize;

use super::{Identity, Shared};
use crate::control::Counters;
use crate::proxy::Client;

/// The path it answers.
pub const PATH: &str = "/health";

/// The fields fixed for a worker's life, in the order the body gives them.
#[derive(Serialize)]
struct Fixed<'a> {
    status: &'static str,
    /// The machine's hostname: which host of a fleet answered.
    host: &'a str,
    version: &'static str,
    build: &'a str,
    pid: u32,
    worker: usize,
    generation: u64,
}

/// What a request's answer says that changes between requests.
struct Live<'a> {
    client: Client,
    counters: Counters,
    pubsub: crate::pubsub::Health,
    /// The supervisor's figures as JSON; None before the first arrive.
    supervisor: Option<&'a str>,
}

/// The body's fixed head for each status, up to the client's address.
#[derive(Debug)]
pub struct Page {
    healthy: Arc<str>,
    stopping: Arc<str>,
}

impl Page {
    pub fn new(id: &Identity) -> Page {
        let head = |status| {
            let fixed = Fixed {
                status,
                host: &id.host,
                version: env!("CARGO_PKG_VERSION"),
                build: &id.build,
                pid: id.pid,
                worker: id.slot,
                generation: id.generation,
            };
            let mut head = serde_json::to_string(&fixed).expect("a struct of strings and numbers");
            // The object stays open for the fields that follow.
            head.pop();
            head.push_str(",\"client\":\"");
            head.into()
        };
        Page {
            healthy: head("healthy"),
            stopping: head("stopping"),
        }
    }

    /// The answer to a request for [`PATH`] from `client`.
    pub fn respond(&self, ctx: &Shared, method: &Method, client: Client) -> Response {
        if method != Method::GET && method != Method::HEAD {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET,HEAD"));
            return response;
        }
        let leaving = ctx.drain.is_leaving();
        let body = ctx.with_supervisor_json(|supervisor| {
            self.render(
                leaving,
                &Live {
                    client,
                    counters: ctx.counters(),
                    pubsub: ctx.pubsub.health(),
                    supervisor,
                },
            )
        });
        let mut response = Response::new(Body::from(body));
        if leaving {
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        }
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }

    /// The whole body, as JSON.
    fn render(&self, leaving: bool, live: &Live<'_>) -> String {
        let Live {
            client,
            counters,
            pubsub,
            supervisor,
        } = live;
        let head = match leaving {
            true => &self.stopping,
            false => &self.healthy,
        };
        let mut out = String::with_capacity(head.len() + 400);
        out.push_str(head);
        // An address or "unix": nothing to escape.
        client.push_to(&mut out);
        out.push_str("\",\"scheme\":\"");
        out.push_str(client.scheme.as_str());
        // Written out field by field: a loop over (name, value) pairs costs
        // about 200 more instructions a request (callgrind).
        let number = super::push_number;
        out.push_str("\",\"counters\":{\"requests\":");
        number(&mut out, counters.requests);
        out.push_str(",\"connections\":");
        number(&mut out, counters.connections);
        out.push_str(",\"websockets\":");
        number(&mut out, counters.websockets);
        out.push_str("},\"pubsub\":{\"backend\":\"");
        out.push_str(pubsub.backend.as_str());
        out.push_str("\",\"state\":\"");
        out.push_str(pubsub.state);
        out.push_str("\",\"published\":");
        number(&mut out, pubsub.published);
        out.push_str(",\"delivered\":");
        number(&mut out, pubsub.delivered);
        out.push_str(",\"dropped\":");
        number(&mut out, pubsub.dropped);
        out.push_str(",\"lost\":");
        number(&mut out, pubsub.lost);
        out.push_str("},\"supervisor\":");
        out.push_str(supervisor.unwrap_or("null"));
        out.push('}');
        out
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::control::SupervisorStatus;
    use crate::proxy::{Peer, Scheme};
    use crate::pubsub::Backend;

    /// The body written by hand reads as serde would have written the
    /// same values: every field, its value, strings escaped.
    #[test]
    fn the_written_body_is_the_json_of_its_values() {
        let id = Identity {
            slot: 3,
            generation: 7,
            build: "0123456789abcdef".into(),
            pid: 4242,
            // A name needing escapes: only serde writes it, once.
            host: "edge \"1\"\\".into(),
        };
        let page = Page::new(&id);
        let status = SupervisorStatus {
            generation: 7,
            workers_ready: 2,
            workers_target: 2,
            requests_per_second: 12.5,
            last_reload: Some("failed: \"x\"".into()),
            ..SupervisorStatus::default()
        };
        let supervisor = serde_json::to_string(&status).unwrap();
        let pubsub = crate::pubsub::Health {
            backend: Backend::Redis,
            state: "degraded",
            published: 1,
            delivered: 2,
            dropped: 3,
            lost: u64::MAX,
        };
        let counters = Counters {
            requests: 10,
            connections: 0,
            websockets: 99,
        };
        let clients = [
            (Some("203.0.113.7"), "203.0.113.7"),
            (Some("2001:db8::1"), "2001:db8::1"),
            (Some("0.0.0.0"), "0.0.0.0"),
            (None, "unix"),
        ];
        let cases = [false, true].into_iter().flat_map(|leaving| {
            clients
                .into_iter()
                .flat_map(move |client| [true, false].map(|relayed| (leaving, client, relayed)))
        });
        for (leaving, (ip, shown), relayed) in cases {
            {
                let supervisor = relayed.then_some(supervisor.as_str());
                let client = Client {
                    ip: ip.map(|ip| ip.parse().unwrap()),
                    scheme: Scheme::Https,
                    peer: Peer::Unix,
                    forwarded: true,
                };
                let live = Live {
                    client,
                    counters,
                    pubsub: pubsub.clone(),
                    supervisor,
                };
                let body = page.render(leaving, &live);
                let got: Value =
                    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
                let expected = json!({
                    "status": if leaving { "stopping" } else { "healthy" },
                    "host": id.host,
                    "version": env!("CARGO_PKG_VERSION"),
                    "build": id.build,
                    "pid": id.pid,
                    "worker": id.slot,
                    "generation": id.generation,
                    "client": shown,
                    "scheme": "https",
                    "counters": serde_json::to_value(counters).unwrap(),
                    "pubsub": serde_json::to_value(&pubsub).unwrap(),
                    "supervisor": supervisor.map(|_| serde_json::to_value(&status).unwrap()),
                });
                assert_eq!(got, expected, "{body}");
            }
        }
    }
}
