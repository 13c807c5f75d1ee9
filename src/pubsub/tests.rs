//! The worker-local half of pub/sub, without a backend: delivery, order,
//! the slow subscriber's skip-ahead, and interest ending with the last
//! subscription.

use super::*;

fn local() -> PubSub {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _guard = rt.enter();
    PubSub::start(PubSubTarget::Embedded, None)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn subscribers_hear_every_message_in_order_from_the_moment_they_subscribe() {
    let pubsub = local();
    pubsub.publish("t", "before").unwrap();
    let mut a = pubsub.subscribe("t").unwrap();
    let mut b = pubsub.subscribe("t").unwrap();
    let mut other = pubsub.subscribe("u").unwrap();
    for n in 0..10 {
        pubsub.publish("t", format!("m{n}")).unwrap();
    }
    pubsub.publish("u", "elsewhere").unwrap();
    block_on(async {
        for n in 0..10 {
            assert_eq!(a.recv().await, format!("m{n}"));
            assert_eq!(b.recv().await, format!("m{n}"));
        }
        assert_eq!(other.recv().await, "elsewhere");
    });
    let health = pubsub.health();
    assert_eq!(health.backend, Backend::Local);
    // Without a hub, messages reach this worker only: said, not hidden.
    assert_eq!(health.state, "degraded");
    assert_eq!(
        (health.published, health.delivered, health.dropped),
        (12, 21, 0)
    );
}

#[test]
fn a_slow_subscriber_skips_ahead_and_the_skipped_are_counted() {
    let pubsub = local();
    let mut slow = pubsub.subscribe("t").unwrap();
    let extra = 10;
    for n in 0..SUBSCRIBER_BACKLOG + extra {
        pubsub.publish("t", format!("m{n}")).unwrap();
    }
    block_on(async {
        // The oldest kept is the first after the skipped ones.
        assert_eq!(slow.recv().await, format!("m{extra}"));
    });
    assert_eq!(pubsub.health().dropped, extra as u64);
}

#[test]
fn interest_ends_with_the_last_subscription() {
    let pubsub = local();
    let a = pubsub.subscribe("t").unwrap();
    let b = pubsub.subscribe("t").unwrap();
    assert!(pubsub.0.wanted().0.contains("t"));
    drop(a);
    assert!(pubsub.0.wanted().0.contains("t"));
    drop(b);
    assert!(pubsub.0.wanted().0.is_empty());
}

#[test]
fn bounds_are_refused_with_a_reason() {
    let pubsub = local();
    let big = vec![b'x'; MAX_MESSAGE + 1];
    assert_eq!(
        pubsub.publish("t", big),
        Err(PublishError::TooLarge(MAX_MESSAGE + 1))
    );
    assert!(pubsub.publish("t", vec![b'x'; MAX_MESSAGE]).is_ok());
    assert_eq!(pubsub.publish("", "x"), Err(PublishError::BadTopic));
    assert_eq!(
        pubsub.publish(&"t".repeat(MAX_TOPIC + 1), "x"),
        Err(PublishError::BadTopic)
    );
    assert!(pubsub.subscribe("").is_err());
}
