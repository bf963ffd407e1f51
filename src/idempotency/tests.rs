//! The key store in memory, on tokio's paused clock.

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;

use super::*;
use crate::durable::Receipt;

fn keys(window_s: u64, max_keys: usize) -> Idempotency {
    Idempotency::new(
        IdempotencySettings {
            window: Duration::from_secs(window_s),
            max_keys,
            late_bound: Duration::from_secs(5),
        },
        None,
        Arc::new(Metrics::new(false)),
    )
}

fn keyed(index: u32, key: &str, fingerprint: u128) -> Keyed {
    Keyed {
        index,
        hash: key_hash("t1", key),
        fingerprint,
        resend_if_unknown: false,
    }
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(1)
}

async fn claim_one(k: &Idempotency, key: &Keyed) -> Claim {
    k.claim(std::slice::from_ref(key), soon()).await.remove(0)
}

async fn mine(k: &Idempotency, key: &Keyed) -> Token {
    match claim_one(k, key).await {
        Claim::Mine { token, .. } => token,
        other => panic!("expected a new claim, got {other:?}"),
    }
}

fn accepted(id: &str) -> First {
    First::Accepted {
        event_id: id.into(),
        attempts: 1,
    }
}

#[test]
fn keys_are_checked_and_hashed_per_tenant() {
    assert!(check_key("order-42/paid").is_ok());
    assert!(check_key(&"k".repeat(128)).is_ok());
    assert!(check_key(&"k".repeat(129)).unwrap_err().contains("129"));
    assert!(check_key("tab\there").unwrap_err().contains("printable"));
    assert!(check_key("café").unwrap_err().contains("printable"));
    assert_ne!(key_hash("t1", "k"), key_hash("t2", "k"));
    // The tenant's length is hashed: "t1"+"2k" is not "t12"+"k".
    assert_ne!(key_hash("t1", "2k"), key_hash("t12", "k"));
}

#[tokio::test(start_paused = true)]
async fn an_accepted_key_is_answered_until_its_window_ends() {
    let k = keys(300, 100);
    let a = keyed(0, "a", 1);
    let token = mine(&k, &a).await;
    assert_eq!(claim_one(&k, &a).await, Claim::InFlight);
    k.settle(vec![(a.hash, token, Settle::Keep(accepted("e1")))])
        .await;
    assert_eq!(claim_one(&k, &a).await, Claim::Seen(accepted("e1")));
    tokio::time::advance(Duration::from_secs(299)).await;
    assert_eq!(claim_one(&k, &a).await, Claim::Seen(accepted("e1")));
    tokio::time::advance(Duration::from_secs(2)).await;
    mine(&k, &a).await;
}

#[tokio::test(start_paused = true)]
async fn another_body_is_a_reuse_and_a_failure_frees_the_key() {
    let k = keys(300, 100);
    let a = keyed(0, "a", 1);
    let token = mine(&k, &a).await;
    assert_eq!(claim_one(&k, &keyed(0, "a", 2)).await, Claim::Reused);
    k.settle(vec![(a.hash, token, Settle::Release)]).await;
    // Released: the next one is sent, whatever its body.
    mine(&k, &keyed(0, "a", 2)).await;
}

#[tokio::test(start_paused = true)]
async fn unknown_stays_unknown_unless_forced() {
    let k = keys(300, 100);
    let a = keyed(0, "a", 1);
    let token = mine(&k, &a).await;
    let unknown = First::Unknown { attempts: 1 };
    k.settle(vec![(a.hash, token, Settle::Keep(unknown.clone()))])
        .await;
    assert_eq!(claim_one(&k, &a).await, Claim::Seen(unknown));
    let forced = Keyed {
        resend_if_unknown: true,
        ..a.clone()
    };
    let Claim::Mine {
        token,
        forced: true,
    } = claim_one(&k, &forced).await
    else {
        panic!("a forced claim of an unknown key is ours");
    };
    // A forced resend that fails leaves the key unknown: the first may be
    // held.
    k.settle(vec![(a.hash, token, Settle::Release)]).await;
    assert_eq!(
        claim_one(&k, &a).await,
        Claim::Seen(First::Unknown { attempts: 0 })
    );
    let Claim::Mine { token, .. } = claim_one(&k, &forced).await else {
        panic!("forced again");
    };
    k.settle(vec![(a.hash, token, Settle::Keep(accepted("e2")))])
        .await;
    // Forcing an accepted key does nothing.
    assert_eq!(claim_one(&k, &forced).await, Claim::Seen(accepted("e2")));
}

#[tokio::test(start_paused = true)]
async fn an_unsettled_claim_becomes_unknown_after_its_lease() {
    let k = keys(300, 100);
    let a = keyed(0, "a", 1);
    let token = mine(&k, &a).await;
    // Deadline in 1 s, late bound 5 s.
    tokio::time::advance(Duration::from_millis(5_900)).await;
    assert_eq!(claim_one(&k, &a).await, Claim::InFlight);
    tokio::time::advance(Duration::from_millis(200)).await;
    assert_eq!(
        claim_one(&k, &a).await,
        Claim::Seen(First::Unknown { attempts: 0 })
    );
    // Its owner's late outcome still counts.
    k.settle(vec![(a.hash, token, Settle::Keep(accepted("late")))])
        .await;
    assert_eq!(claim_one(&k, &a).await, Claim::Seen(accepted("late")));
}

#[tokio::test(start_paused = true)]
async fn waiters_are_woken_when_a_key_they_wait_on_settles() {
    let k = keys(300, 100);
    let a = keyed(0, "a", 1);
    let token = mine(&k, &a).await;
    let changes = k.changes();
    assert_eq!(claim_one(&k, &a).await, Claim::InFlight);
    k.settle(vec![(a.hash, token, Settle::Keep(accepted("e")))])
        .await;
    assert!(changes.has_changed().unwrap(), "the waiter is told");
}

#[tokio::test(start_paused = true)]
async fn past_max_keys_the_oldest_are_forgotten_and_counted() {
    let k = keys(300, 3);
    for i in 0..5 {
        let key = keyed(0, &format!("k{i}"), 1);
        let token = mine(&k, &key).await;
        k.settle(vec![(key.hash, token, Settle::Keep(accepted("e")))])
            .await;
        tokio::time::advance(Duration::from_millis(1)).await;
    }
    assert_eq!(k.local.len(), 3);
    assert_eq!(
        k.metrics.idempotency.evicted.get(),
        2,
        "two keys forgotten early"
    );
    // The oldest is new again; the newest is still known.
    mine(&k, &keyed(0, "k0", 1)).await;
    assert_eq!(
        claim_one(&k, &keyed(0, "k4", 1)).await,
        Claim::Seen(accepted("e"))
    );
}

#[tokio::test(start_paused = true)]
async fn durable_keys_load_as_queued_with_their_remaining_window() {
    let k = keys(300, 100);
    let now = crate::durable::now_ms();
    let a = keyed(0, "a", 1);
    let b = keyed(1, "b", 1);
    let n = k.load([
        (a.hash, 1, Receipt(7), now + 10_000),
        (b.hash, 1, Receipt(8), now - 1),
    ]);
    assert_eq!(n, 1, "an expired key is not loaded");
    assert_eq!(
        claim_one(&k, &a).await,
        Claim::Seen(First::Queued {
            receipt: Receipt(7)
        })
    );
    tokio::time::advance(Duration::from_secs(11)).await;
    mine(&k, &a).await;
    mine(&k, &b).await;
}

#[tokio::test(start_paused = true)]
async fn one_batch_claims_many_keys_in_order() {
    let k = keys(300, 100);
    let a = keyed(0, "a", 1);
    let b = keyed(1, "b", 1);
    let claims = k.claim(&[a.clone(), b.clone(), a.clone()], soon()).await;
    assert!(matches!(claims[0], Claim::Mine { .. }));
    assert!(matches!(claims[1], Claim::Mine { .. }));
    assert_eq!(claims[2], Claim::InFlight, "the same key twice in a batch");
}

#[tokio::test(start_paused = true)]
async fn keys_redis_did_not_settle_are_kept_here_for_a_window() {
    let local = LocalKeys::new(Duration::from_secs(60), 100);
    let lease = Duration::from_secs(1);
    let kept = keyed(0, "kept", 7);
    local.keep(vec![(kept.hash, 7, accepted("id-1"))], Instant::now());
    let held = |k: &Keyed| local.claim_held(std::slice::from_ref(k), Instant::now(), lease);
    assert_eq!(held(&kept), [Some(Claim::Seen(accepted("id-1")))]);
    assert_eq!(held(&keyed(0, "kept", 8)), [Some(Claim::Reused)]);
    // A key claimed here since is left as it is.
    let here = keyed(1, "here", 9);
    assert!(matches!(
        local.claim(std::slice::from_ref(&here), Instant::now(), lease)[0],
        Claim::Mine { .. }
    ));
    local.keep(vec![(here.hash, 9, accepted("id-2"))], Instant::now());
    assert_eq!(held(&here), [Some(Claim::InFlight)]);
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(held(&kept), [None]);
}
