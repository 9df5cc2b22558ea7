//! Rate limits: GCRA quotas per user, API key, tenant and (sign-in routes)
//! client address, from the defaults, the tenant's plan and the operator's
//! overrides; the `RateLimit`/`RateLimit-Policy` headers and `Retry-After`;
//! one shared limit across replicas on Redis; the fail modes when Redis is
//! cut off mid-test; and one tenant's exhaustion never touching another's.
//!
//! Windows are long (60 s) so that a slow machine cannot refill a quota
//! between two requests: nothing here depends on how fast requests run.
//! Redis applies its own clock, so only the embedded backend's limits follow
//! the test clock.

use std::sync::Arc;
use std::time::Duration;

use karen::config::Config;
use karen_domain::rate_limit::{Quota, RateLimits};
use karen_testkit::{Backend, PASSWORD, Reply, TestApp, spawn_with};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

fn quota(requests: u32, window_secs: u32) -> Option<Quota> {
    Some(Quota::new(requests, window_secs).unwrap())
}

/// Defaults: the tenant's quota per minute (large: refills while the test
/// runs), the user's and the key's per 600 s (small: exact counts hold).
fn limits(config: &mut Config, tenant: u32, user: u32, api_key: u32) {
    config.rate_limits.defaults = RateLimits {
        tenant: quota(tenant, 600),
        user: quota(user, 600),
        api_key: quota(api_key, 600),
    };
}

/// `(remaining, reset)` of `scope` in the `RateLimit` header.
#[track_caller]
fn state(reply: &Reply, scope: &str) -> (u64, u64) {
    let header = reply
        .header("ratelimit")
        .unwrap_or_else(|| panic!("no RateLimit header: {reply:?}"));
    let item = header
        .split(", ")
        .find(|item| item.starts_with(&format!("\"{scope}\";")))
        .unwrap_or_else(|| panic!("no {scope} in {header}"));
    let param = |name: &str| -> u64 {
        item.split(';')
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {item}"))
            .parse()
            .unwrap()
    };
    (param("r"), param("t"))
}

#[track_caller]
fn assert_policy(reply: &Reply, policy: &str) {
    assert_eq!(reply.header("ratelimit-policy"), Some(policy), "{reply:?}");
}

/// A 429 `rate_limited` problem naming the scope, with `Retry-After` in
/// `1..=max_retry` seconds (less than the interval when time has passed).
#[track_caller]
fn assert_refused(reply: &Reply, scope_words: &str, max_retry: u64) {
    reply.expect_problem(429, "rate_limited");
    let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (1..=max_retry).contains(&retry),
        "Retry-After {retry}: {reply:?}"
    );
    assert_eq!(reply.body["retry_after"], retry);
    let detail = reply.body["detail"].as_str().unwrap();
    assert!(detail.contains(scope_words), "{detail}");
}

async fn user_and_key_limits_are_enforced_with_headers(backend: Backend) {
    let Some(app) = spawn_with(backend, |c| limits(c, 6000, 3, 4)).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let owner = acme.owner_token.as_str();
    // Two of the owner's three: a key and a member.
    let (_, key) = app.create_api_key(owner, json!({"name": "k"})).await;
    let reply = app
        .post(
            "/v1/users",
            owner,
            json!({"email": "m@acme.test", "password": PASSWORD, "roles": ["member"]}),
        )
        .await;
    reply.expect(201);
    assert_policy(&reply, "\"user\";q=3;w=600, \"tenant\";q=6000;w=600");
    let (remaining, reset) = state(&reply, "user");
    assert_eq!(remaining, 1);
    assert!((390..=400).contains(&reset), "two of three used: {reset}");
    assert!(state(&reply, "tenant").0 >= 5990);
    let member = app.token("acme", "m@acme.test", PASSWORD).await;
    let reply = app.get("/v1/me", owner).await;
    reply.expect(200);
    assert_eq!(state(&reply, "user").0, 0);
    // The fourth within the window: refused, the next one 200 s (600 / 3) on.
    let refused = app.get("/v1/me", owner).await;
    assert_refused(&refused, "your request rate limit", 200);
    // Refused by the user's own limit: the tenant's was not even asked.
    assert_policy(&refused, "\"user\";q=3;w=600");
    assert_eq!(state(&refused, "user").0, 0);
    // The member and the key have limits of their own.
    let reply = app.get("/v1/me", &member).await;
    reply.expect(200);
    assert_eq!(state(&reply, "user").0, 2);
    for left in (0..4).rev() {
        let reply = app.get("/v1/me", &key).await;
        reply.expect(200);
        assert_policy(&reply, "\"api_key\";q=4;w=600, \"tenant\";q=6000;w=600");
        assert_eq!(state(&reply, "api_key").0, left);
    }
    assert_refused(
        &app.get("/v1/me", &key).await,
        "this API key's request rate limit",
        150,
    );
    // Requests without a usable credential are refused before any limit.
    let anonymous = app.call("GET", "/v1/me", None, None).await;
    anonymous.expect_problem(401, "unauthenticated");
    assert!(anonymous.header("ratelimit").is_none());
    if backend == Backend::Sqlite {
        // In process the limits follow the test clock: 200 s give one back.
        app.clock.advance(Duration::from_secs(200));
        let reply = app.get("/v1/me", owner).await;
        reply.expect(200);
        assert_eq!(state(&reply, "user").0, 0);
        assert_refused(&app.get("/v1/me", owner).await, "your request", 200);
    }
}

async fn one_tenants_exhaustion_never_touches_another(backend: Backend) {
    let Some(app) = spawn_with(backend, |c| limits(c, 5, 100, 100)).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let globex = app.create_tenant("globex").await;
    let (_, member) = app.create_user(&acme, "m@acme.test", &["member"]).await;
    // create_user used one of acme's five; the owner and the member share the rest.
    for token in [&acme.owner_token, &member, &acme.owner_token, &member] {
        app.get("/v1/me", token).await.expect(200);
    }
    for token in [&acme.owner_token, &member] {
        assert_refused(
            &app.get("/v1/me", token).await,
            "your organisation's request rate limit",
            120,
        );
    }
    // globex is untouched: its full quota, and its own counts in the headers.
    for left in (0..5).rev() {
        let reply = app.get("/v1/me", &globex.owner_token).await;
        reply.expect(200);
        assert_eq!(state(&reply, "tenant").0, left);
    }
    assert_refused(
        &app.get("/v1/me", &globex.owner_token).await,
        "organisation",
        120,
    );
    // acme is still refused: globex's requests gave it nothing back.
    assert_refused(&app.get("/v1/me", &member).await, "organisation", 120);
    let metrics = app.call("GET", "/metrics", None, None).await;
    metrics.expect(200);
    assert!(
        metrics
            .text
            .contains("karen_rate_limit_rejections_total{scope=\"tenant\"}")
    );
    assert!(
        !metrics
            .text
            .contains("karen_rate_limit_rejections_total{tenant")
    );
}

async fn plans_and_operator_overrides_set_the_limits(backend: Backend) {
    let Some(app) = spawn_with(backend, |c| {
        limits(c, 6000, 100, 100);
        c.rate_limits.plans.insert(
            "gold".into(),
            RateLimits {
                user: quota(50, 600),
                ..RateLimits::default()
            },
        );
    })
    .await
    else {
        return;
    };
    // Scaled out, the override is set on one replica and applies on the other.
    let replica = match backend {
        Backend::Postgres => Some(app.replica().await),
        Backend::Sqlite => None,
    };
    let other = replica.as_ref().unwrap_or(&app);
    let acme = app.create_tenant("acme").await;
    let globex = app.create_tenant("globex").await;
    let operator = app.operator_key.as_str();
    let path = |id: uuid::Uuid| format!("/v1/platform/tenants/{id}/rate-limits");
    let shown = app.get(&path(acme.id), operator).await;
    shown.expect(200);
    assert_eq!(
        shown.body["overrides"],
        json!({"tenant": null, "user": null, "api_key": null})
    );
    assert_eq!(
        shown.body["effective"]["user"],
        json!({"requests": 100, "window_secs": 600})
    );
    // Warm the other replica's cache, then move acme to the plan with its own limits.
    other.get("/v1/me", &acme.owner_token).await.expect(200);
    app.patch(
        &format!("/v1/platform/tenants/{}", acme.id),
        operator,
        json!({"plan": "gold"}),
    )
    .await
    .expect(200);
    let reply = other.get("/v1/me", &acme.owner_token).await;
    reply.expect(200);
    assert!(
        reply
            .header("ratelimit-policy")
            .unwrap()
            .starts_with("\"user\";q=50;w=600"),
        "{reply:?}"
    );
    // The operator's override beats the plan, on every replica at once.
    let set = app
        .put(
            &path(acme.id),
            operator,
            json!({"user": {"requests": 2, "window_secs": 600}}),
        )
        .await;
    set.expect(200);
    assert_eq!(
        set.body["overrides"]["user"],
        json!({"requests": 2, "window_secs": 600})
    );
    assert_eq!(
        set.body["effective"]["tenant"],
        json!({"requests": 6000, "window_secs": 600})
    );
    let (_, fresh) = app.create_user(&acme, "f@acme.test", &["member"]).await;
    for _ in 0..2 {
        other.get("/v1/me", &fresh).await.expect(200);
    }
    assert_refused(&other.get("/v1/me", &fresh).await, "your request", 300);
    // Tenants see their own effective limits, never another's.
    let own = app.get("/v1/tenant/rate-limits", &globex.owner_token).await;
    own.expect(200);
    assert_eq!(
        own.body["user"],
        json!({"requests": 100, "window_secs": 600})
    );
    // (acme's own view is not read here: its override of 2 requests per user
    // already refuses its owner, whose requests above used them up.)
    // Only the operator may read or set overrides, whichever tenant is named.
    for (token, id) in [
        (&acme.owner_token, acme.id),
        (&acme.owner_token, globex.id),
        (&globex.owner_token, acme.id),
    ] {
        let denied = app.get(&path(id), token).await;
        assert_eq!(denied.status, 401, "{denied:?}");
        let body = json!({"tenant": {"requests": 1000, "window_secs": 1}});
        let denied = app.put(&path(id), token, body).await;
        assert_eq!(denied.status, 401, "{denied:?}");
    }
    // Bad quotas are named; unknown tenants are 404.
    let bad = app
        .put(
            &path(acme.id),
            operator,
            json!({"tenant": {"requests": 0, "window_secs": 60}}),
        )
        .await;
    bad.expect_problem(422, "validation_failed");
    assert_eq!(bad.body["field"], "tenant.requests");
    app.put(&path(acme.id), operator, json!({"burst": 3}))
        .await
        .expect(422);
    app.get(&path(uuid::Uuid::now_v7()), operator)
        .await
        .expect_problem(404, "not_found");
    // Removing the override brings the plan back.
    app.delete(&path(acme.id), operator).await.expect(204);
    let shown = other.get(&path(acme.id), operator).await;
    assert_eq!(
        shown.body["effective"]["user"],
        json!({"requests": 50, "window_secs": 600})
    );
}

async fn sign_in_routes_are_limited_per_address(backend: Backend) {
    let Some(app) = spawn_with(backend, |c| {
        c.server.trusted_proxy_hops = 1;
        c.rate_limits.auth_ip = quota(3, 600);
    })
    .await
    else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let client = &app;
    let send = move |path: &str, ip: &str, body: serde_json::Value| {
        let (path, ip) = (path.to_owned(), ip.to_owned());
        async move { client.post_from(&ip, &path, body).await }
    };
    let login = |ip: &str, password: &str| {
        let body = json!({"tenant": "acme", "email": acme.owner_email, "password": password});
        send("/v1/auth/login", ip, body)
    };
    // Failures count like successes: three attempts from one address.
    login("203.0.113.9", "wrong password!!").await.expect(401);
    login("203.0.113.9", "wrong password!!").await.expect(401);
    let last = login("203.0.113.9", PASSWORD).await;
    last.expect(200);
    assert_policy(&last, "\"ip\";q=3;w=600");
    assert_eq!(state(&last, "ip").0, 0);
    let refused = login("203.0.113.9", PASSWORD).await;
    assert_refused(&refused, "your address", 200);
    let refresh = json!({"refresh_token": acme.owner_refresh});
    assert_refused(
        &send("/v1/auth/refresh", "203.0.113.9", refresh.clone()).await,
        "your address",
        200,
    );
    // Another address is untouched.
    login("198.51.100.4", PASSWORD).await.expect(200);
    send("/v1/auth/refresh", "198.51.100.4", refresh)
        .await
        .expect(200);
    // Authenticated routes are not limited per address.
    let me = app.get("/v1/me", &acme.owner_token).await;
    me.expect(200);
    assert!(!me.header("ratelimit-policy").unwrap().contains("\"ip\""));
}

async fn openai_routes_answer_in_openai_shape(backend: Backend) {
    let Some(app) = spawn_with(backend, |c| limits(c, 6000, 1, 1)).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    app.get("/v1/models", &acme.owner_token).await.expect(200);
    let refused = app.get("/v1/models", &acme.owner_token).await;
    refused.expect(429);
    assert_eq!(
        refused.body["error"]["type"], "rate_limit_error",
        "{refused:?}"
    );
    assert_eq!(refused.body["error"]["code"], "rate_limited");
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=600).contains(&retry));
    assert_policy(&refused, "\"user\";q=1;w=600");
    let chat = app
        .post(
            "/v1/chat/completions",
            &acme.owner_token,
            json!({"model": "karen-offline-extractive", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(chat.status, 429, "{chat:?}");
    assert_eq!(chat.body["error"]["type"], "rate_limit_error");
}

on_both_backends!(
    user_and_key_limits_are_enforced_with_headers,
    one_tenants_exhaustion_never_touches_another,
    plans_and_operator_overrides_set_the_limits,
    sign_in_routes_are_limited_per_address,
    openai_routes_answer_in_openai_shape,
);

/// Two replicas on one Redis enforce one limit between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_limit_on_redis() {
    let Some(app) = spawn_with(Backend::Postgres, |c| limits(c, 1000, 100, 6)).await else {
        return;
    };
    let replica = app.replica().await;
    let acme = app.create_tenant("acme").await;
    let (_, key) = app
        .create_api_key(&acme.owner_token, json!({"name": "k"}))
        .await;
    let mut allowed = 0;
    let mut statuses = Vec::new();
    for i in 0..12 {
        let server = if i % 2 == 0 { &app } else { &replica };
        let reply = server.get("/v1/me", &key).await;
        statuses.push(reply.status);
        if reply.status == 200 {
            allowed += 1;
        } else {
            assert_refused(&reply, "API key", 100);
        }
    }
    assert_eq!(allowed, 6, "{statuses:?}");
    assert_eq!(&statuses[..6], &[200; 6]);
}

/// A TCP proxy to Redis that the test can cut (listener closed, every
/// connection dropped), as when Redis becomes unreachable.
struct CuttableProxy {
    address: String,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: JoinHandle<()>,
}

impl CuttableProxy {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let spawned = tasks.clone();
        let acceptor = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let pipe = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect("127.0.0.1:6379").await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                spawned.lock().await.push(pipe);
            }
        });
        Self {
            address,
            tasks,
            acceptor,
        }
    }

    async fn cut(&self) {
        self.acceptor.abort();
        for task in self.tasks.lock().await.drain(..) {
            task.abort();
        }
        // Let the aborted tasks drop their sockets.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A replica that reaches Redis through a proxy, with the given fail mode.
async fn replica_through_proxy(app: &TestApp, proxy: &CuttableProxy, mode: &str) -> TestApp {
    let url = format!("redis://{}", proxy.address);
    let mode = mode.to_owned();
    app.replica_with(move |c| {
        c.redis.url = Some(url);
        c.redis.timeout_ms = 500;
        c.rate_limits.fail_mode = mode;
        c.rate_limits.replicas = 2;
    })
    .await
}

/// Redis cut off mid-test: `local` (the default) limits in process at the
/// quota divided by the replicas; `open` allows; `closed` refuses with 503.
/// Never a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_applies_the_fail_mode_and_never_500s() {
    let Some(app) = spawn_with(Backend::Postgres, |c| limits(c, 1000, 8, 100)).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let mut tokens = Vec::new();
    for name in ["local", "open", "closed"] {
        let (_, token) = app
            .create_user(&acme, &format!("{name}@acme.test"), &["member"])
            .await;
        tokens.push(token);
    }
    let mut proxies = Vec::new();
    let mut replicas = Vec::new();
    for mode in ["local", "open", "closed"] {
        let proxy = CuttableProxy::start().await;
        replicas.push(replica_through_proxy(&app, &proxy, mode).await);
        proxies.push(proxy);
    }
    // Through Redis first: one shared count (the local user used one on app).
    let local = &replicas[0];
    let reply = local.get("/v1/me", &tokens[0]).await;
    reply.expect(200);
    assert!(
        reply
            .header("ratelimit")
            .unwrap()
            .starts_with("\"user\";r=7;")
    );
    for proxy in &proxies {
        proxy.cut().await;
    }
    // local: 8 ÷ 2 replicas = 4 per replica, counted afresh in process.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let reply = local.get("/v1/me", &tokens[0]).await;
        statuses.push(reply.status);
        if reply.status == 200 {
            assert!(
                reply
                    .header("ratelimit-policy")
                    .unwrap()
                    .starts_with("\"user\";q=4;w=600"),
                "{reply:?}"
            );
        } else {
            assert_refused(&reply, "your request", 150);
        }
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);
    // open: everything passes, uncounted.
    for _ in 0..12 {
        replicas[1].get("/v1/me", &tokens[1]).await.expect(200);
    }
    // closed: refused as unavailable, with a Retry-After; not a 500.
    let closed = replicas[2].get("/v1/me", &tokens[2]).await;
    closed.expect_problem(503, "service_unavailable");
    assert!(closed.header("retry-after").is_some());
    // The fallbacks are counted.
    let metrics = local.call("GET", "/metrics", None, None).await;
    metrics.expect(200);
    let counted = |mode: &str| {
        metrics
            .text
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "karen_rate_limit_fallbacks_total{{mode=\"{mode}\"}}"
                ))
            })
            .and_then(|l| l.rsplit_once(' '))
            .map(|(_, v)| v.parse::<f64>().unwrap())
            .unwrap_or(0.0)
    };
    for mode in ["local", "open", "closed"] {
        assert!(counted(mode) >= 1.0, "{mode}: {}", metrics.text);
    }
}
