//! Transport security: `karen serve` terminating TLS with a certificate made
//! at test time, picking up replaced certificate files without a restart,
//! keeping the old pair when the new files do not load, and sending HSTS when
//! TLS is on; and TLS to PostgreSQL as configured.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use karen::Karen;
use karen_testkit::{Backend, TestClock};
use uuid::Uuid;

/// A self-signed certificate for 127.0.0.1 and localhost, as PEM.
struct TestCert {
    cert_pem: String,
    key_pem: String,
}

fn make_cert() -> TestCert {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    TestCert {
        cert_pem: cert.pem(),
        key_pem: signing_key.serialize_pem(),
    }
}

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("karen-tls-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `cert` over the files (the key first, then the certificate, each
/// replaced by a rename as certificate tools do).
fn install(dir: &Path, cert: &TestCert) {
    for (name, contents) in [("key.pem", &cert.key_pem), ("cert.pem", &cert.cert_pem)] {
        let staging = dir.join(format!("{name}.new"));
        std::fs::write(&staging, contents).unwrap();
        std::fs::rename(&staging, dir.join(name)).unwrap();
    }
}

/// A client that trusts only `cert` (and opens a fresh connection each time).
fn client_trusting(cert: &TestCert) -> reqwest::Client {
    let root = reqwest::Certificate::from_pem(cert.cert_pem.as_bytes()).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([root])
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Whether a client trusting only `cert` can call `/healthz`.
async fn accepted_by(cert: &TestCert, base_url: &str) -> bool {
    client_trusting(cert)
        .get(format!("{base_url}/healthz"))
        .send()
        .await
        .is_ok_and(|response| response.status() == 200)
}

async fn https_is_served_and_renewed_certificates_are_picked_up(backend: Backend) {
    let dir = scratch_dir();
    let first = make_cert();
    install(&dir, &first);
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    let Some(app) = karen_testkit::spawn_with(backend, |config| {
        config.server.tls.cert_file = Some(cert_file);
        config.server.tls.key_file = Some(key_file);
        config.server.tls.reload_interval_secs = 1;
    })
    .await
    else {
        return;
    };
    assert!(app.base_url.starts_with("https://"), "{}", app.base_url);

    // Served over TLS with the first certificate; HSTS follows TLS.
    let client = client_trusting(&first);
    let response = client
        .get(format!("{}/healthz", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let hsts = response
        .headers()
        .get("strict-transport-security")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(hsts.contains("max-age=31536000"), "hsts: {hsts:?}");
    // A whole authenticated round trip works over TLS.
    let tenants = client
        .get(format!("{}/v1/platform/tenants", app.base_url))
        .bearer_auth(&app.operator_key)
        .send()
        .await
        .unwrap();
    assert_eq!(tenants.status(), 200);
    // Plain HTTP on the TLS port gets no answer.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .get(app.base_url.replacen("https://", "http://", 1) + "/healthz")
        .send()
        .await;
    assert!(plain.is_err() || plain.is_ok_and(|r| r.status() != 200));

    // Replace the files: the new certificate is served without a restart.
    let second = make_cert();
    assert!(!accepted_by(&second, &app.base_url).await);
    install(&dir, &second);
    let mut waited = Duration::ZERO;
    while !accepted_by(&second, &app.base_url).await {
        assert!(
            waited < Duration::from_secs(20),
            "the replaced certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        waited += Duration::from_millis(200);
    }
    assert!(
        !accepted_by(&first, &app.base_url).await,
        "the old certificate is no longer served"
    );

    // Files that do not load (a key that does not fit the certificate, then
    // garbage) leave the working pair in service.
    let third = make_cert();
    std::fs::write(dir.join("cert.pem"), &third.cert_pem).unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(accepted_by(&second, &app.base_url).await);
    std::fs::write(dir.join("key.pem"), "not a key").unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(accepted_by(&second, &app.base_url).await);
    assert!(!accepted_by(&third, &app.base_url).await);
    // Once both files are right again, the new pair is served.
    install(&dir, &third);
    let mut waited = Duration::ZERO;
    while !accepted_by(&third, &app.base_url).await {
        assert!(
            waited < Duration::from_secs(20),
            "the repaired pair was never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        waited += Duration::from_millis(200);
    }
    app.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

async fn a_missing_or_mismatched_certificate_stops_the_start(backend: Backend) {
    let Some(app) = karen_testkit::spawn(backend).await else {
        return;
    };
    let dir = scratch_dir();
    let (one, other) = (make_cert(), make_cert());
    std::fs::write(dir.join("cert.pem"), &one.cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &other.key_pem).unwrap();
    let mut config = app.config.clone();
    config.data_dir = dir.join("data");
    config.server.tls.cert_file = Some(dir.join("cert.pem"));
    config.server.tls.key_file = Some(dir.join("key.pem"));
    let karen = Karen::open(config.clone(), Arc::new(TestClock::default()))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = karen
        .serve(listener, async {})
        .await
        .expect_err("a key that does not fit the certificate");
    let message = format!("{error:#}");
    assert!(message.contains("server.tls"), "{message}");

    config.server.tls.cert_file = Some(dir.join("missing.pem"));
    let error = Karen::open(config, Arc::new(TestClock::default()))
        .await
        .err()
        .expect("a missing certificate file");
    let message = format!("{error:#}");
    assert!(message.contains("server.tls.cert_file"), "{message}");
    app.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

on_both_backends!(
    https_is_served_and_renewed_certificates_are_picked_up,
    a_missing_or_mismatched_certificate_stops_the_start,
);

/// Whether the connection `url` opens is encrypted (PostgreSQL's own view).
async fn connection_uses_tls(url: &str) -> bool {
    use sqlx::Connection as _;
    let mut connection = sqlx::PgConnection::connect(url).await.unwrap();
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    connection.close().await.unwrap();
    ssl
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tls_follows_the_configured_mode() {
    karen_crypto::install_crypto_provider();
    let Some(app) = karen_testkit::spawn(Backend::Postgres).await else {
        return;
    };
    let owner_url = app.postgres.as_ref().unwrap().owner_url.clone();
    let mut database = app.config.database.clone();

    database.ssl_mode = Some("disable".into());
    let url = karen::postgres_tls_url(&owner_url, &database).unwrap();
    assert!(url.contains("sslmode=disable"), "{url}");
    assert!(
        !connection_uses_tls(&url).await,
        "disable: plain connection"
    );

    // The test server has TLS on (Debian's default), so `require` encrypts.
    database.ssl_mode = Some("require".into());
    let url = karen::postgres_tls_url(&owner_url, &database).unwrap();
    assert!(
        connection_uses_tls(&url).await,
        "require: encrypted connection"
    );
    // The mode replaces one already in the URL.
    let url = karen::postgres_tls_url(&format!("{owner_url}?sslmode=disable"), &database).unwrap();
    assert!(
        url.contains("sslmode=require") && !url.contains("sslmode=disable"),
        "{url}"
    );

    // Karen serves through the configured mode; `verify-full` against a CA that
    // did not sign the server's certificate refuses to start.
    let dir = scratch_dir();
    let mut config = app.config.clone();
    config.data_dir = dir.join("data");
    config.database.ssl_mode = Some("require".into());
    let karen = Karen::open(config.clone(), Arc::new(TestClock::default()))
        .await
        .expect("karen starts over TLS to PostgreSQL");
    karen.store.close().await;
    let stranger = make_cert();
    std::fs::write(dir.join("ca.pem"), &stranger.cert_pem).unwrap();
    config.database.ssl_mode = Some("verify-full".into());
    config.database.ssl_root_cert = Some(dir.join("ca.pem"));
    let error = Karen::open(config, Arc::new(TestClock::default()))
        .await
        .err()
        .expect("a server certificate from another CA is refused");
    assert!(!format!("{error:#}").is_empty());
    app.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A Redis server speaking only TLS on a free port, stopped when dropped.
struct TlsRedis {
    child: std::process::Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start_tls_redis(cert: &TestCert) -> TlsRedis {
    let dir = scratch_dir();
    std::fs::write(dir.join("cert.pem"), &cert.cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &cert.key_pem).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .arg("--tls-cert-file")
        .arg(dir.join("cert.pem"))
        .arg("--tls-key-file")
        .arg(dir.join("key.pem"))
        .arg("--tls-ca-cert-file")
        .arg(dir.join("cert.pem"))
        .args([
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server (with TLS support) is installed");
    let redis = TlsRedis { child, port, dir };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return redis;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("redis-server did not listen on its TLS port {port}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_trusts_the_configured_ca_only() {
    use karen_cache::{RedisCounters, RedisOptions};
    use karen_domain::ports::{CacheKey, Counters as _};

    karen_crypto::install_crypto_provider();
    let cert = make_cert();
    let redis = start_tls_redis(&cert).await;
    let options = RedisOptions {
        url: format!("rediss://127.0.0.1:{}/0", redis.port),
        key_prefix: format!("karen-tls-{}:", Uuid::now_v7().simple()),
        timeout: Duration::from_secs(5),
        tls_root_cert: Some(cert.cert_pem.clone().into_bytes()),
    };
    let counters = RedisCounters::connect(&options)
        .await
        .expect("rediss:// with the server's CA connects");
    let key = CacheKey::global("tls_probe", "one");
    counters.hit(&key, Duration::from_secs(60)).await.unwrap();
    assert_eq!(counters.count(&key).await.unwrap(), 1);

    // Trusting only the system roots, the self-signed server is refused.
    let untrusted = RedisOptions {
        tls_root_cert: None,
        ..options
    };
    assert!(RedisCounters::connect(&untrusted).await.is_err());
    // Plain redis:// to the TLS port does not talk to it either.
    let plain = RedisOptions {
        url: format!("redis://127.0.0.1:{}/0", redis.port),
        timeout: Duration::from_millis(500),
        ..untrusted
    };
    let talked = match RedisCounters::connect(&plain).await {
        Ok(counters) => counters.count(&key).await.is_ok(),
        Err(_) => false,
    };
    assert!(!talked);
}
