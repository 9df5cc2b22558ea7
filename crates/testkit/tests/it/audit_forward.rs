//! Forwarding the audit trail to external collectors: a webhook receives
//! every tenant's events in order, each batch signed with HMAC-SHA256 and
//! labelled with its own tenant; a failing collector loses nothing and gets
//! no gaps; the cursor survives a restart; the background task retries
//! without holding up requests; syslog over TLS receives RFC 5424 frames.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::hmac;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use karen::audit_forward::{SyslogConfig, WebhookConfig};
use karen::config::Config;
use karen_testkit::{Backend, PASSWORD, TestApp, TestTenant, spawn_with};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use uuid::Uuid;

on_both_backends!(
    the_webhook_gets_every_tenants_trail_signed_in_order,
    a_failing_collector_loses_nothing_and_restarts_resume
);

const SECRET: &str = "0123456789abcdef0123456789abcdef-test-only";

/// A webhook collector: records (signature header, raw body) of each
/// accepted post; answers 503 to the next `fail` posts.
#[derive(Clone, Default)]
struct Collector {
    received: Arc<Mutex<Vec<(String, Bytes)>>>,
    fail: Arc<AtomicUsize>,
}

impl Collector {
    async fn start() -> (Collector, SocketAddr) {
        let collector = Collector::default();
        let state = collector.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move {
                    if state
                        .fail
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok()
                    {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let signature = headers
                        .get("karen-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    state.received.lock().unwrap().push((signature, body));
                    StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (collector, address)
    }

    /// The events received so far, by tenant id, in arrival order; checks
    /// every batch's signature on the way.
    fn events(&self) -> BTreeMap<String, Vec<Value>> {
        let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes());
        let mut by_tenant: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for (signature, body) in self.received.lock().unwrap().iter() {
            let (t, v1) = signature
                .strip_prefix("t=")
                .and_then(|rest| rest.split_once(",v1="))
                .unwrap_or_else(|| panic!("malformed signature {signature:?}"));
            let mut message = format!("{t}.").into_bytes();
            message.extend_from_slice(body);
            hmac::verify(&key, &message, &hex_decode(v1))
                .unwrap_or_else(|_| panic!("bad signature {signature}"));
            let batch: Value = serde_json::from_slice(body).unwrap();
            by_tenant
                .entry(batch["tenant_id"].as_str().unwrap().to_owned())
                .or_default()
                .extend(batch["events"].as_array().unwrap().iter().cloned());
        }
        by_tenant
    }
}

fn hex_decode(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn secret_file() -> PathBuf {
    let path = std::env::temp_dir().join(format!("karen-hook-{}.secret", Uuid::now_v7().simple()));
    std::fs::write(&path, format!("{SECRET}\n")).unwrap();
    path
}

/// Forwards to the collector at `address`; the background task waits
/// `interval_secs` before its first round.
fn forward_to(config: &mut Config, address: SocketAddr, interval_secs: u64) {
    config.audit.forward.interval_secs = interval_secs;
    config.audit.forward.max_backoff_secs = interval_secs.max(2);
    config.audit.forward.batch = 3;
    config.audit.forward.webhook = Some(WebhookConfig {
        url: format!("http://{address}/hook"),
        secret_file: Some(secret_file()),
        timeout_secs: 5,
    });
}

/// The tenant's own trail as `GET /v1/audit` shows it, up to `through` (the
/// listing itself adds events after).
async fn own_trail(app: &TestApp, tenant: &TestTenant, through: usize) -> Vec<Value> {
    let page = app.get("/v1/audit?limit=200", &tenant.owner_token).await;
    let items = page.expect(200).body["items"].as_array().unwrap().clone();
    items.into_iter().take(through).collect()
}

fn seqs(events: &[Value]) -> Vec<i64> {
    events.iter().map(|e| e["seq"].as_i64().unwrap()).collect()
}

async fn forward(app: &TestApp) -> karen_app::audit_forward::ForwardRound {
    app.karen
        .audit_forwarder
        .as_ref()
        .expect("forwarding is configured")
        .forward_all()
        .await
        .unwrap()
}

async fn the_webhook_gets_every_tenants_trail_signed_in_order(backend: Backend) {
    let (collector, address) = Collector::start().await;
    let Some(app) = spawn_with(backend, |c| forward_to(c, address, 3600)).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let globex = app.create_tenant("globex").await;
    let (ann, _) = app.create_user(&acme, "ann@acme.test", &["member"]).await;

    let round = forward(&app).await;
    assert!(round.failures.is_empty(), "{:?}", round.failures);
    assert_eq!(round.lag, 0);
    let received = collector.events();
    assert_eq!(received.len(), 2, "one stream per tenant: {received:?}");
    for tenant in [&acme, &globex] {
        let events = &received[&tenant.id.to_string()];
        // Every event, in order, exactly as the tenant's own API shows it
        // (which also proves no event of the other tenant is among them).
        let own = own_trail(&app, tenant, events.len()).await;
        assert_eq!(seqs(events), (1..=events.len() as i64).collect::<Vec<_>>());
        assert_eq!(events, &own);
    }
    assert!(
        received[&acme.id.to_string()]
            .iter()
            .any(|e| e["action"] == "user.create"),
        "acme's user creation was forwarded"
    );
    assert!(
        !received[&globex.id.to_string()]
            .iter()
            .any(|e| e["target_id"] == ann.to_string() || e["actor"]["id"] == ann.to_string()),
        "globex never gets acme's events"
    );
    // Batches of at most `batch` events each.
    let batches = collector.received.lock().unwrap().len();
    let total: usize = received.values().map(Vec::len).sum();
    assert!(
        batches >= total.div_ceil(3),
        "{batches} batches for {total} events"
    );
    app.stop().await;
}

async fn a_failing_collector_loses_nothing_and_restarts_resume(backend: Backend) {
    let (collector, address) = Collector::start().await;
    let Some(app) = spawn_with(backend, |c| forward_to(c, address, 3600)).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;

    // The collector refuses: nothing counts as delivered, all of it waits.
    collector.fail.store(1, Ordering::SeqCst);
    let round = forward(&app).await;
    assert_eq!(round.failures.len(), 1, "{round:?}");
    assert_eq!(round.failures[0].0.as_uuid(), acme.id);
    assert!(round.lag > 0);
    assert!(collector.events().is_empty());

    // Next round: everything from the first event, no gap.
    let round = forward(&app).await;
    assert!(round.failures.is_empty(), "{round:?}");
    let first = collector.events()[&acme.id.to_string()].clone();
    assert_eq!(seqs(&first), (1..=first.len() as i64).collect::<Vec<_>>());
    // Nothing new, nothing sent again.
    let before = collector.received.lock().unwrap().len();
    assert_eq!(forward(&app).await.delivered, 0);
    assert_eq!(collector.received.lock().unwrap().len(), before);

    // A restart resumes after the last accepted event.
    let app = app.restart().await;
    let owner = app.token("acme", &acme.owner_email, PASSWORD).await;
    app.post(
        "/v1/users",
        &owner,
        json!({"email": "bob@acme.test", "password": PASSWORD, "roles": ["member"]}),
    )
    .await
    .expect(201);
    forward(&app).await;
    let all = collector.events()[&acme.id.to_string()].clone();
    assert_eq!(seqs(&all), (1..=all.len() as i64).collect::<Vec<_>>());
    assert!(all.len() > first.len());
    assert!(
        all[first.len()..]
            .iter()
            .any(|e| e["action"] == "user.create")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_task_retries_without_holding_up_requests() {
    let (collector, address) = Collector::start().await;
    let Some(app) = spawn_with(Backend::Sqlite, |c| forward_to(c, address, 1)).await else {
        return;
    };
    collector.fail.store(2, Ordering::SeqCst);
    let acme = app.create_tenant("acme").await;
    // Requests answer while the collector refuses.
    app.create_user(&acme, "ann@acme.test", &["member"]).await;
    let mut waited = Duration::ZERO;
    loop {
        let events = collector.events();
        if let Some(events) = events.get(&acme.id.to_string())
            && events.iter().any(|e| e["action"] == "user.create")
        {
            assert_eq!(seqs(events), (1..=events.len() as i64).collect::<Vec<_>>());
            break;
        }
        assert!(
            waited < Duration::from_secs(30),
            "never forwarded: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        waited += Duration::from_millis(200);
    }
    assert_eq!(
        collector.fail.load(Ordering::SeqCst),
        0,
        "it retried after failures"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_over_tls_receives_rfc5424_frames() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let ca_file =
        std::env::temp_dir().join(format!("karen-syslog-{}.pem", Uuid::now_v7().simple()));
    std::fs::write(&ca_file, cert.pem()).unwrap();
    let server_config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(signing_key.serialize_der()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let frames = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = frames.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let Ok(tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(tls);
                loop {
                    // Octet counting: "<length> <message>".
                    let mut length = Vec::new();
                    if reader.read_until(b' ', &mut length).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let length: usize = std::str::from_utf8(&length[..length.len() - 1])
                        .unwrap()
                        .parse()
                        .unwrap();
                    let mut message = vec![0; length];
                    reader.read_exact(&mut message).await.unwrap();
                    sink.lock()
                        .unwrap()
                        .push(String::from_utf8(message).unwrap());
                }
            });
        }
    });
    let Some(app) = spawn_with(Backend::Sqlite, |c| {
        c.audit.forward.interval_secs = 3600;
        c.audit.forward.max_backoff_secs = 3600;
        c.audit.forward.syslog = Some(SyslogConfig {
            address: address.to_string(),
            tls: true,
            ca_file: Some(ca_file),
            hostname: Some("karen-test".into()),
            timeout_secs: 5,
        });
    })
    .await
    else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let round = forward(&app).await;
    assert!(round.failures.is_empty(), "{round:?}");
    assert!(round.delivered > 0);
    let mut waited = Duration::ZERO;
    while frames.lock().unwrap().len() < round.delivered as usize {
        assert!(waited < Duration::from_secs(10), "frames never arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += Duration::from_millis(100);
    }
    let frames = frames.lock().unwrap().clone();
    for (i, frame) in frames.iter().enumerate() {
        let prefix = format!(
            " karen-test karen - audit [karen@32473 tenant=\"{}\" seq=\"{}\" ",
            acme.id,
            i + 1
        );
        assert!(
            frame.starts_with("<109>1 ") || frame.starts_with("<108>1 "),
            "{frame}"
        );
        assert!(frame.contains(&prefix), "{frame}");
        let json = frame.split_once("] \u{feff}").unwrap().1;
        let event: Value = serde_json::from_str(json).unwrap();
        assert_eq!(event["seq"], json!(i + 1));
    }
    app.stop().await;
}

#[test]
fn forwarding_configuration_is_checked() {
    let mut config = Config::default();
    config.audit.forward.webhook = Some(WebhookConfig {
        url: "http://siem.example.com/hook".into(),
        secret_file: None,
        timeout_secs: 0,
    });
    config.audit.forward.syslog = Some(SyslogConfig {
        address: "siem.example.com".into(),
        tls: false,
        ca_file: Some("ca.pem".into()),
        hostname: None,
        timeout_secs: 10,
    });
    config.audit.forward.batch = 0;
    let problems = config.validate().unwrap_err().0.join("\n");
    for expected in [
        "audit.forward.webhook.url: must be https://",
        "audit.forward.webhook.timeout_secs",
        "audit.forward.syslog.address: 'siem.example.com' must be host:port",
        "audit.forward.syslog.ca_file: only used with tls = true",
        "audit.forward.batch",
    ] {
        assert!(
            problems.contains(expected),
            "{expected} missing from:\n{problems}"
        );
    }
}
