//! Port contracts, run against the embedded and the scale-out implementation
//! alike: counters (in-process vs Redis) and the relational store (SQLite vs
//! PostgreSQL), including the tenant boundary at the store level.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use karen_cache::{MemoryCounters, MemoryRateLimiter, RedisCounters, RedisOptions};
use karen_domain::clock::{Clock, ManualClock, SystemClock};
use karen_domain::ports::{CacheKey, Counters, RateLimiter, Store as _};
use karen_domain::rate_limit::{Quota, RateLimitSubject};
use karen_domain::values::Email;
use karen_domain::{ChunkId, DocumentId, MemoryId, SystemReason, TenantId, TenantScope, UserId};
use karen_testkit::{Backend, spawn};
use uuid::Uuid;

type Advance<'a> =
    Box<dyn Fn(Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> + Send + Sync + 'a>;

/// The behaviour every `Counters` implementation must have.
async fn counters_contract(counters: &dyn Counters, advance: Advance<'_>) {
    let alpha = TenantId::generate();
    let bravo = TenantId::generate();
    let key = CacheKey::tenant(alpha, "test", "k");
    assert_eq!(counters.count(&key).await.unwrap(), 0);
    for expected in 1..=3 {
        assert_eq!(
            counters
                .hit(&key, Duration::from_millis(400))
                .await
                .unwrap(),
            expected
        );
    }
    assert_eq!(counters.count(&key).await.unwrap(), 3);
    // The window ends and the count starts again.
    advance(Duration::from_millis(700)).await;
    assert_eq!(counters.count(&key).await.unwrap(), 0);
    assert_eq!(
        counters.hit(&key, Duration::from_secs(60)).await.unwrap(),
        1
    );
    let left = counters
        .remaining(&key)
        .await
        .unwrap()
        .expect("a live window has time left");
    assert!(
        left <= Duration::from_secs(60) && left > Duration::from_secs(50),
        "{left:?}"
    );
    counters.clear(&key).await.unwrap();
    assert_eq!(counters.count(&key).await.unwrap(), 0);
    assert_eq!(counters.remaining(&key).await.unwrap(), None);
    // Values live for their time to live, and a new value replaces the old one.
    let value = CacheKey::tenant(alpha, "test", "value");
    assert_eq!(counters.get(&value).await.unwrap(), None);
    counters
        .put(&value, 1_764_000_000_000, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(counters.get(&value).await.unwrap(), Some(1_764_000_000_000));
    counters
        .put(&value, 7, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(counters.get(&value).await.unwrap(), Some(7));
    assert!(
        counters
            .remaining(&value)
            .await
            .unwrap()
            .is_some_and(|d| d <= Duration::from_millis(300))
    );
    advance(Duration::from_millis(600)).await;
    assert_eq!(counters.get(&value).await.unwrap(), None);
    assert_eq!(counters.remaining(&value).await.unwrap(), None);
    // Concurrent hits are all counted.
    let global = CacheKey::global("test", &Uuid::now_v7().to_string());
    let hits =
        futures::future::join_all((0..20).map(|_| counters.hit(&global, Duration::from_secs(60))))
            .await;
    let mut seen: Vec<u64> = hits.into_iter().map(Result::unwrap).collect();
    seen.sort_unstable();
    assert_eq!(seen, (1..=20).collect::<Vec<_>>());
    // Purging a tenant removes its keys only.
    for part in ["a", "b", "c"] {
        counters
            .hit(
                &CacheKey::tenant(alpha, "test", part),
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        counters
            .hit(
                &CacheKey::tenant(bravo, "test", part),
                Duration::from_secs(60),
            )
            .await
            .unwrap();
    }
    assert_eq!(counters.tenant_key_count(alpha).await.unwrap(), 3);
    assert_eq!(counters.purge_tenant(alpha).await.unwrap(), 3);
    assert_eq!(counters.tenant_key_count(alpha).await.unwrap(), 0);
    assert_eq!(counters.tenant_key_count(bravo).await.unwrap(), 3);
    assert_eq!(counters.count(&global).await.unwrap(), 20);
    counters.ping().await.unwrap();
}

#[tokio::test]
async fn memory_counters_meet_the_contract() {
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let counters = MemoryCounters::new(clock.clone());
    let advance: Advance<'_> = Box::new(move |by| {
        let clock = clock.clone();
        Box::pin(async move { clock.advance(by) })
    });
    counters_contract(&counters, advance).await;
}

/// Counters on the test Redis under a prefix of their own (returned, to clean up).
async fn fresh_redis_counters(url: String) -> (String, RedisCounters) {
    let prefix = format!("karen-contract-{}:", Uuid::now_v7().simple());
    let options = RedisOptions {
        url,
        key_prefix: prefix.clone(),
        timeout: Duration::from_secs(2),
        tls_root_cert: None,
    };
    (prefix, RedisCounters::connect(&options).await.unwrap())
}

#[tokio::test]
async fn redis_counters_meet_the_contract() {
    let Some(url) = karen_testkit::redis_url().await else {
        return;
    };
    let (prefix, counters) = fresh_redis_counters(url).await;
    // Redis expires keys on its own clock: wait for real.
    let advance: Advance<'_> = Box::new(|by| Box::pin(tokio::time::sleep(by)));
    counters_contract(&counters, advance).await;
    karen_testkit::delete_redis_prefix(&prefix).await;
}

#[tokio::test]
async fn redis_that_is_down_is_reported_unavailable() {
    let options = RedisOptions {
        url: "redis://127.0.0.1:1".into(),
        key_prefix: "x:".into(),
        timeout: Duration::from_millis(300),
        tls_root_cert: None,
    };
    let error = RedisCounters::connect(&options)
        .await
        .err()
        .expect("nothing listens on port 1");
    assert_eq!(error.code(), "service_unavailable");
}

/// The behaviour every `RateLimiter` must have: a burst of the quota, then
/// refusals that count nothing, one request back per interval, keys apart,
/// and exactly the quota under concurrent requests.
async fn rate_limiter_contract(limiter: Arc<dyn RateLimiter>, advance: Advance<'_>) {
    let alpha = TenantId::generate();
    let bravo = TenantId::generate();
    let key = RateLimitSubject::Tenant(alpha).key();
    let quota = Quota::new(3, 3).unwrap();
    for left in (0..3).rev() {
        let decision = limiter.acquire(&key, quota).await.unwrap();
        assert!(decision.allowed);
        assert_eq!(decision.remaining, left);
        assert_eq!(decision.quota, quota);
    }
    for _ in 0..3 {
        let refused = limiter.acquire(&key, quota).await.unwrap();
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert!(refused.retry_after <= Duration::from_secs(1), "{refused:?}");
        assert!(refused.retry_after > Duration::ZERO, "{refused:?}");
        assert!(refused.reset <= Duration::from_secs(3), "{refused:?}");
    }
    // Another tenant's key is untouched.
    let other = RateLimitSubject::Tenant(bravo).key();
    assert_eq!(limiter.acquire(&other, quota).await.unwrap().remaining, 2);
    // One interval later, one request (the refusals moved nothing).
    advance(Duration::from_millis(1100)).await;
    assert!(limiter.acquire(&key, quota).await.unwrap().allowed);
    assert!(!limiter.acquire(&key, quota).await.unwrap().allowed);
    // Concurrent requests: exactly the quota passes.
    let racing = CacheKey::tenant(alpha, "rl", "race");
    let quota = Quota::new(10, 600).unwrap();
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let limiter = limiter.clone();
            let racing = racing.clone();
            tokio::spawn(async move { limiter.acquire(&racing, quota).await.unwrap().allowed })
        })
        .collect();
    let mut allowed = 0;
    for task in tasks {
        allowed += usize::from(task.await.unwrap());
    }
    assert_eq!(allowed, 10);
}

#[tokio::test]
async fn memory_rate_limiter_meets_the_contract() {
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let limiter = Arc::new(MemoryRateLimiter::new(clock.clone()));
    let advance: Advance<'_> = Box::new(move |by| {
        let clock = clock.clone();
        Box::pin(async move { clock.advance(by) })
    });
    rate_limiter_contract(limiter, advance).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_rate_limiter_meets_the_contract() {
    let Some(url) = karen_testkit::redis_url().await else {
        return;
    };
    let (prefix, counters) = fresh_redis_counters(url).await;
    // The script reads Redis's own clock: wait for real.
    let advance: Advance<'_> = Box::new(|by| Box::pin(tokio::time::sleep(by)));
    rate_limiter_contract(Arc::new(counters.rate_limiter()), advance).await;
    // Rate-limit keys live under the tenant's prefix: purged with it.
    let tenant = TenantId::generate();
    let limiter = counters.rate_limiter();
    let quota = Quota::new(5, 60).unwrap();
    limiter
        .acquire(&RateLimitSubject::Tenant(tenant).key(), quota)
        .await
        .unwrap();
    assert_eq!(counters.tenant_key_count(tenant).await.unwrap(), 1);
    assert_eq!(counters.purge_tenant(tenant).await.unwrap(), 1);
    karen_testkit::delete_redis_prefix(&prefix).await;
}

/// The store's tenant boundary, its atomic updates and its conflicts.
async fn store_contract(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let alpha = app.create_tenant("alpha").await;
    let bravo = app.create_tenant("bravo").await;
    let store = app.karen.store.clone();
    let scope = |t: Uuid| TenantScope::system(TenantId::from_uuid(t), SystemReason::Cli);

    // A transaction of tenant A cannot find B's user by id, email or listing.
    let mut tx = store.tenant_read(scope(alpha.id)).await.unwrap();
    assert!(
        tx.users()
            .user_by_id(UserId::from_uuid(bravo.owner_id))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        tx.users()
            .user_by_email(&Email::parse(&bravo.owner_email).unwrap())
            .await
            .unwrap()
            .is_none()
    );
    let listed = tx.users().list_users(&Default::default()).await.unwrap();
    assert!(listed.iter().all(|u| u.tenant_id.as_uuid() == alpha.id) && listed.len() == 1);
    assert_eq!(tx.tenant().await.unwrap().slug.as_str(), "alpha");
    drop(tx);

    // Failed logins are counted atomically under concurrency, and lock at the threshold.
    let user = UserId::from_uuid(alpha.owner_id);
    let now = app.clock.now();
    let attempts = futures::future::join_all((0..8).map(|_| {
        let store = store.clone();
        async move {
            let mut tx = store.tenant(scope(alpha.id)).await.unwrap();
            let failures = tx
                .users()
                .record_login_failure(
                    user,
                    now,
                    5,
                    now + time::Duration::minutes(15),
                    now - time::Duration::hours(1),
                )
                .await
                .unwrap();
            tx.commit().await.unwrap();
            failures
        }
    }))
    .await;
    let mut counts: Vec<i32> = attempts.iter().map(|f| f.count).collect();
    counts.sort_unstable();
    assert_eq!(counts, (1..=8).collect::<Vec<_>>());
    assert!(
        attempts
            .iter()
            .filter(|f| f.count >= 5)
            .all(|f| f.locked_until.is_some())
    );
    assert!(
        attempts
            .iter()
            .filter(|f| f.count < 5)
            .all(|f| f.locked_until.is_none())
    );

    // A duplicate email is a conflict, and the transaction writes nothing.
    let mut tx = store.tenant(scope(alpha.id)).await.unwrap();
    let mut copy = tx.users().user_by_id(user).await.unwrap().unwrap();
    copy.id = UserId::generate();
    let error = tx.users().insert_user(&copy).await.unwrap_err();
    assert_eq!(error.code(), "conflict");
    drop(tx);
    let mut tx = store.tenant_read(scope(alpha.id)).await.unwrap();
    assert_eq!(
        tx.users()
            .list_users(&Default::default())
            .await
            .unwrap()
            .len(),
        1
    );
    drop(tx);
    app.stop().await;
}

on_both_backends!(store_contract);

/// Lookups by many ids (what a recall loads its candidates with) find every
/// row of the tenant across statement batches, and never another tenant's.
async fn lookups_by_many_ids_stay_in_the_tenant(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let alpha = app.create_tenant("alpha").await;
    let bravo = app.create_tenant("bravo").await;
    let remember = |tenant: &karen_testkit::TestTenant, count: usize| {
        let (app, token) = (&app, tenant.owner_token.clone());
        async move {
            let mut ids = Vec::new();
            for i in 0..count {
                let body = serde_json::json!({"content": format!("fact number {i}")});
                let reply = app.post("/v1/memories", &token, body).await;
                let created = reply.expect(201);
                ids.push(MemoryId::from_uuid(created.str("id").parse().unwrap()));
            }
            ids
        }
    };
    // More than one statement's worth of ids (16), and not a multiple of it.
    let mine = remember(&alpha, 21).await;
    let theirs = remember(&bravo, 3).await;
    let mut asked: Vec<MemoryId> = theirs.clone();
    asked.extend(mine.iter().copied());
    asked.push(MemoryId::generate());
    let scope = TenantScope::system(TenantId::from_uuid(alpha.id), SystemReason::Cli);
    let mut tx = app.karen.store.tenant_read(scope).await.unwrap();
    let mut found: Vec<MemoryId> = tx
        .memories()
        .memories_by_ids(&asked)
        .await
        .unwrap()
        .into_iter()
        .map(|memory| memory.id)
        .collect();
    found.sort_unstable();
    let mut expected = mine.clone();
    expected.sort_unstable();
    assert_eq!(found, expected, "all of alpha's, none of bravo's");
    assert!(
        tx.memories()
            .memories_by_ids(&theirs)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        tx.documents()
            .chunks_by_ids(&[ChunkId::generate()])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        tx.documents()
            .documents_by_ids(&[DocumentId::generate()])
            .await
            .unwrap()
            .is_empty()
    );
    drop(tx);
    app.stop().await;
}

on_both_backends!(lookups_by_many_ids_stay_in_the_tenant);
