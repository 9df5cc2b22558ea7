//! Encryption at rest: content written over HTTP is not in the database in
//! the clear (raw SQLite file and WAL; PostgreSQL rows read as the owner),
//! reads still work after master and tenant key rotation, a wrong master key
//! is a clear error, ciphertext moved to another row or tenant does not
//! decrypt, and deleting a tenant destroys its keys.

use std::path::PathBuf;
use std::sync::Arc;

use karen_app::encryption::KeyManagement;
use karen_crypto::LocalKeyProvider;
use karen_domain::ports::{KeyProvider, Store};
use karen_domain::{SystemReason, TenantId, TenantScope};
use karen_testkit::{Backend, TestApp, TestTenant, spawn};
use serde_json::json;
use sqlx::Connection as _;
use uuid::Uuid;

/// A secret of this test run, written in every encrypted column.
struct Secrets {
    message: String,
    memory: String,
    document: String,
    heading: String,
    provider_key: String,
}

impl Secrets {
    fn new() -> Self {
        let run = Uuid::now_v7().simple().to_string();
        Self {
            message: format!("zebra-message-{run}"),
            memory: format!("zebra-memory-{run}"),
            document: format!("zebra-document-{run}"),
            heading: format!("zebra-heading-{run}"),
            provider_key: format!("sk-zebra-{run}"),
        }
    }

    fn all(&self) -> [&str; 5] {
        [
            &self.message,
            &self.memory,
            &self.document,
            &self.heading,
            &self.provider_key,
        ]
    }
}

/// Writes every kind of sealed content for `tenant`; answers the conversation id.
async fn write_content(app: &TestApp, tenant: &TestTenant, secrets: &Secrets) -> String {
    let token = tenant.owner_token.as_str();
    let chat = app
        .post("/v1/conversations", token, json!({"title": "encrypted"}))
        .await;
    let chat = chat.expect(201).str("id").to_owned();
    app.post(
        &format!("/v1/conversations/{chat}/messages"),
        token,
        json!({"content": secrets.message}),
    )
    .await
    .expect(200);
    app.post("/v1/memories", token, json!({"content": secrets.memory}))
        .await
        .expect(201);
    // The document's title (its first heading) is metadata stored in the clear.
    let document = format!(
        "# Handbook\n\nIntroduction.\n\n## {}\n\n{}\n",
        secrets.heading, secrets.document
    );
    app.upload(
        token,
        "?file_name=secret.md",
        "text/markdown",
        document.into_bytes(),
    )
    .await
    .expect(201);
    let name = format!(
        "own-{}",
        &secrets.provider_key[secrets.provider_key.len() - 8..]
    );
    let provider = json!({"name": name, "base_url": "https://llm.example.com/v1",
        "api_key": secrets.provider_key, "models": ["own-model"]});
    app.post("/v1/providers", token, provider).await.expect(201);
    chat
}

/// Reads everything back through the service (HTTP, and the store for the
/// write-only provider credential).
async fn read_content(app: &TestApp, tenant: &TestTenant, chat: &str, secrets: &Secrets) {
    let token = tenant.owner_token.as_str();
    let messages = app
        .get(&format!("/v1/conversations/{chat}/messages"), token)
        .await;
    assert!(messages.expect(200).text.contains(&secrets.message));
    let memories = app.get("/v1/memories", token).await;
    assert!(memories.expect(200).text.contains(&secrets.memory));
    let mut tx = app.karen.store.tenant_read(scope(tenant)).await.unwrap();
    let chunks = tx.documents().list_chunks(None, 100).await.unwrap();
    assert!(chunks.iter().any(|c| c.text.contains(&secrets.document)));
    assert!(chunks.iter().any(|c| {
        c.heading
            .as_deref()
            .is_some_and(|h| h.contains(&secrets.heading))
    }));
    let providers = tx.providers().list_providers().await.unwrap();
    assert!(providers.iter().any(|p| {
        p.api_key
            .as_ref()
            .is_some_and(|key| secrecy::ExposeSecret::expose_secret(key) == secrets.provider_key)
    }));
    tx.commit().await.unwrap();
}

fn scope(tenant: &TestTenant) -> TenantScope {
    TenantScope::system(TenantId::from_uuid(tenant.id), SystemReason::Cli)
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Which of `needles` occur in the raw database: the SQLite file and its WAL,
/// or every PostgreSQL table (as the owner, past row-level security) except
/// the full-text index, which is derived search data and not encrypted.
async fn found_in_raw_database(app: &TestApp, needles: &[&str]) -> Vec<String> {
    let haystack = crate::raw_store::raw_database(app, false).await;
    let haystack = String::from_utf8_lossy(&haystack).to_lowercase();
    needles
        .iter()
        .filter(|n| haystack.contains(&n.to_lowercase()) || haystack.contains(&hex(n)))
        .map(|n| (*n).to_owned())
        .collect()
}

/// The first column of the rows `sql` returns for `id` (bound as `$1`),
/// read past row-level security (the owner on PostgreSQL).
async fn raw_column<T>(app: &TestApp, sql: &'static str, id: Uuid) -> Vec<T>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres>
        + sqlx::Type<sqlx::Postgres>
        + for<'r> sqlx::Decode<'r, sqlx::Sqlite>
        + sqlx::Type<sqlx::Sqlite>
        + Send
        + Unpin,
{
    match &app.postgres {
        Some(database) => {
            let mut owner = sqlx::PgConnection::connect(&database.owner_url)
                .await
                .unwrap();
            sqlx::query_scalar(sql)
                .bind(id)
                .fetch_all(&mut owner)
                .await
                .unwrap()
        }
        None => sqlx::query_scalar(sql)
            .bind(id)
            .fetch_all(app.karen.store.sqlite_pool().unwrap())
            .await
            .unwrap(),
    }
}

/// The data key version each sealed value of `tenant` carries (format byte 1
/// then the version), from the raw rows; 0 for plain values.
async fn stored_versions(app: &TestApp, tenant: Uuid) -> Vec<u32> {
    let sql = "SELECT content FROM messages WHERE tenant_id = $1 \
               UNION ALL SELECT content FROM memories WHERE tenant_id = $1 \
               UNION ALL SELECT content FROM document_chunks WHERE tenant_id = $1 \
               UNION ALL SELECT api_key FROM tenant_providers WHERE tenant_id = $1";
    raw_column::<Vec<u8>>(app, sql, tenant)
        .await
        .iter()
        .map(|v| match v.as_slice() {
            [1, a, b, c, d, ..] => u32::from_be_bytes([*a, *b, *c, *d]),
            _ => 0,
        })
        .collect()
}

/// Runs `sql` (binding `values` in order) past row-level security.
async fn raw_execute(app: &TestApp, sql: &str, values: (Vec<u8>, Uuid, Uuid)) {
    match &app.postgres {
        Some(database) => {
            let mut owner = sqlx::PgConnection::connect(&database.owner_url)
                .await
                .unwrap();
            sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                .bind(values.0)
                .bind(values.1)
                .bind(values.2)
                .execute(&mut owner)
                .await
                .unwrap();
        }
        None => {
            sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                .bind(values.0)
                .bind(values.1)
                .bind(values.2)
                .execute(app.karen.store.sqlite_pool().unwrap())
                .await
                .unwrap();
        }
    }
}

fn key_management(app: &TestApp) -> KeyManagement {
    let store: Arc<dyn Store> = app.karen.store.clone();
    KeyManagement::new(store, app.clock.clone(), app.karen.services.audit.clone())
}

/// A new master key in the test's data directory (removed with it).
fn new_key_file(app: &TestApp, name: &str) -> (PathBuf, LocalKeyProvider) {
    let path = app.data_dir.join(name);
    let provider = LocalKeyProvider::generate_file(&path).unwrap();
    (path, provider)
}

async fn content_is_not_stored_in_the_clear(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    if backend == Backend::Sqlite {
        // Embedded mode made its master key in the data dir, owner-only.
        let path = app.data_dir.join("master.key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
    let alpha = app.create_tenant("alpha").await;
    let secrets = Secrets::new();
    let chat = write_content(&app, &alpha, &secrets).await;
    read_content(&app, &alpha, &chat, &secrets).await;
    // The owner's TOTP seed is sealed too.
    let enrollment = app
        .post(
            "/v1/auth/mfa/totp",
            &alpha.owner_token,
            serde_json::json!({}),
        )
        .await;
    let seed = enrollment.expect(200).str("secret").to_owned();
    let mut all = secrets.all().to_vec();
    all.push(&seed);
    let found = found_in_raw_database(&app, &all).await;
    assert!(found.is_empty(), "found in the clear: {found:?}");
    // The scan does find what is stored in the clear (metadata such as titles).
    let title = found_in_raw_database(&app, &["secret.md"]).await;
    assert_eq!(title, ["secret.md"], "the scan sees plain columns");
    assert!(
        stored_versions(&app, alpha.id)
            .await
            .iter()
            .all(|v| *v == 1)
    );
    app.stop().await;
}

async fn keys_rotate_and_reads_still_work(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let alpha = app.create_tenant("alpha").await;
    let bravo = app.create_tenant("bravo").await;
    let secrets = Secrets::new();
    let chat = write_content(&app, &alpha, &secrets).await;
    let bravo_secrets = Secrets::new();
    let bravo_chat = write_content(&app, &bravo, &bravo_secrets).await;

    // Master key rotation: every data key re-wrapped, idempotently.
    let (new_path, new_master) = new_key_file(&app, "new-master.key");
    let keys = key_management(&app);
    let rewrapped = keys
        .rotate_master(&new_master, &mut |_, _| {})
        .await
        .unwrap();
    assert_eq!(rewrapped, 2);
    assert_eq!(
        keys.rotate_master(&new_master, &mut |_, _| {})
            .await
            .unwrap(),
        0
    );
    let status = keys.status().await.unwrap();
    assert!(
        status
            .iter()
            .flat_map(|t| &t.versions)
            .all(|k| k.master_key_id == new_master.key_id())
    );
    let mut app = app;
    app.config.encryption.master_key_file = Some(new_path);
    let app = app.restart().await;
    read_content(&app, &alpha, &chat, &secrets).await;
    read_content(&app, &bravo, &bravo_chat, &bravo_secrets).await;

    // Tenant key rotation: alpha's rows move to version 2, bravo's stay on 1.
    let keys = key_management(&app);
    let mut batches = 0;
    let report = keys
        .rotate_tenant(TenantId::from_uuid(alpha.id), 1, &mut |_| batches += 1)
        .await
        .unwrap();
    assert_eq!(report.version, 2);
    assert_eq!(report.retired, 1);
    assert!(report.resealed >= 5, "{report:?}");
    assert!(batches > 5, "one row per batch");
    assert!(
        stored_versions(&app, alpha.id)
            .await
            .iter()
            .all(|v| *v == 2)
    );
    assert!(
        stored_versions(&app, bravo.id)
            .await
            .iter()
            .all(|v| *v == 1)
    );
    read_content(&app, &alpha, &chat, &secrets).await;
    read_content(&app, &bravo, &bravo_chat, &bravo_secrets).await;
    let status = keys.status().await.unwrap();
    let alpha_keys = &status
        .iter()
        .find(|t| t.tenant.slug.as_str() == "alpha")
        .unwrap()
        .versions;
    assert_eq!(alpha_keys.len(), 2);
    assert!(alpha_keys[0].retired_at.is_some() && alpha_keys[1].retired_at.is_none());
    // New writes use the new version; the rotation is in the audit trail.
    write_content(&app, &alpha, &Secrets::new()).await;
    assert!(
        stored_versions(&app, alpha.id)
            .await
            .iter()
            .all(|v| *v == 2)
    );
    let audit = app
        .get("/v1/audit?action=encryption.key.rotate", &alpha.owner_token)
        .await;
    assert!(audit.expect(200).text.contains("encryption.key.rotate"));

    // A rotation interrupted after its first batch (bravo: version 2 made
    // current, one row re-encrypted, version 1 not retired) is resumed by
    // the next run under version 2, not restarted under a version 3.
    let bravo_scope = karen_domain::TenantScope::system(
        TenantId::from_uuid(bravo.id),
        karen_domain::SystemReason::Cli,
    );
    let mut tx = app.karen.store.tenant(bravo_scope).await.unwrap();
    let now = karen_domain::clock::Clock::now(app.clock.as_ref());
    assert_eq!(tx.tenant_keys().add_key_version(now).await.unwrap(), 2);
    let first = tx
        .tenant_keys()
        .reseal_batch(Default::default(), 1)
        .await
        .unwrap();
    assert_eq!(first.resealed, 1);
    tx.commit().await.unwrap();
    let resumed = keys
        .rotate_tenant(TenantId::from_uuid(bravo.id), 2, &mut |_| {})
        .await
        .unwrap();
    assert!(resumed.resumed, "{resumed:?}");
    assert_eq!((resumed.version, resumed.retired), (2, 1));
    assert!(
        stored_versions(&app, bravo.id)
            .await
            .iter()
            .all(|v| *v == 2)
    );
    read_content(&app, &bravo, &bravo_chat, &bravo_secrets).await;
    // Finished, a rotation is not resumed again: the next one makes version 3.
    let next = keys
        .rotate_tenant(TenantId::from_uuid(bravo.id), 100, &mut |_| {})
        .await
        .unwrap();
    assert_eq!((next.version, next.resumed), (3, false));

    // Rotation without downtime: replicas take the newest master with the
    // current one as previous (reads go on), then the keys are re-wrapped.
    let (newest_path, newest) = new_key_file(&app, "newest-master.key");
    let mut app = app;
    let current = app.config.encryption.master_key_file.clone().unwrap();
    app.config.encryption.master_key_file = Some(newest_path);
    app.config.encryption.previous_master_key_files = vec![current];
    let mut app = app.restart().await;
    read_content(&app, &alpha, &chat, &secrets).await;
    let keys = key_management(&app);
    // alpha's two versions and bravo's three.
    assert_eq!(
        keys.rotate_master(&newest, &mut |_, _| {}).await.unwrap(),
        5
    );
    app.config.encryption.previous_master_key_files.clear();
    let app = app.restart().await;
    read_content(&app, &alpha, &chat, &secrets).await;
    read_content(&app, &bravo, &bravo_chat, &bravo_secrets).await;
    app.stop().await;
}

async fn a_wrong_master_key_is_a_clear_error(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let alpha = app.create_tenant("alpha").await;
    let secrets = Secrets::new();
    let chat = write_content(&app, &alpha, &secrets).await;
    let (wrong, wrong_master) = new_key_file(&app, "wrong-master.key");
    let mut app = app;
    app.config.encryption.master_key_file = Some(wrong);
    let app = app.restart().await;
    let mut tx = app.karen.store.tenant_read(scope(&alpha)).await.unwrap();
    let error = tx
        .memories()
        .list_memories(karen_domain::ports::MemoryScope::All, None, 10)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("master key"), "{error}");
    assert!(error.contains(wrong_master.key_id()), "{error}");
    drop(tx);
    // Over HTTP: a 503 problem, never garbage content.
    let reply = app
        .get(
            &format!("/v1/conversations/{chat}/messages"),
            &alpha.owner_token,
        )
        .await;
    assert_eq!(reply.status, 503, "{}", reply.text);
    assert!(!reply.text.contains(&secrets.message));
    app.stop().await;
}

async fn ciphertext_moved_to_another_row_or_tenant_does_not_decrypt(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let alpha = app.create_tenant("alpha").await;
    let bravo = app.create_tenant("bravo").await;
    let mut ids = Vec::new();
    for (tenant, text) in [
        (&alpha, "alpha one"),
        (&alpha, "alpha two"),
        (&bravo, "bravo one"),
    ] {
        let created = app
            .post(
                "/v1/memories",
                &tenant.owner_token,
                json!({"content": text}),
            )
            .await;
        ids.push(Uuid::parse_str(created.expect(201).str("id")).unwrap());
    }
    let read = |tenant: &TestTenant, id: Uuid| {
        let path = format!("/v1/memories/{id}");
        let token = tenant.owner_token.clone();
        let app = &app;
        async move { app.get(&path, &token).await }
    };
    read(&alpha, ids[1]).await.expect(200);
    let sealed: Vec<u8> = raw_column(&app, "SELECT content FROM memories WHERE id = $1", ids[0])
        .await
        .remove(0);
    let update = "UPDATE memories SET content = $1 WHERE tenant_id = $2 AND id = $3";
    // Into another row of the same tenant, and into another tenant's row.
    raw_execute(&app, update, (sealed.clone(), alpha.id, ids[1])).await;
    raw_execute(&app, update, (sealed, bravo.id, ids[2])).await;
    for (tenant, id) in [(&alpha, ids[1]), (&bravo, ids[2])] {
        let reply = read(tenant, id).await;
        assert_eq!(reply.status, 500, "{}", reply.text);
        assert!(!reply.text.contains("alpha one"));
    }
    read(&alpha, ids[0]).await.expect(200);
    app.stop().await;
}

async fn deleting_a_tenant_destroys_its_keys(backend: Backend) {
    let Some(app) = spawn(backend).await else {
        return;
    };
    let doomed = app.create_tenant("doomed").await;
    let kept = app.create_tenant("kept").await;
    for tenant in [&doomed, &kept] {
        app.post(
            "/v1/memories",
            &tenant.owner_token,
            json!({"content": "kept secret"}),
        )
        .await
        .expect(201);
    }
    let keys = key_management(&app);
    let count = |slug: &'static str| {
        let keys = &keys;
        async move {
            keys.status()
                .await
                .unwrap()
                .into_iter()
                .find(|t| t.tenant.slug.as_str() == slug)
                .map_or(0, |t| t.versions.len())
        }
    };
    assert_eq!(count("doomed").await, 1);
    app.delete(
        &format!("/v1/platform/tenants/{}", doomed.id),
        &app.operator_key,
    )
    .await
    .expect(200);
    assert_eq!(count("doomed").await, 0);
    assert_eq!(count("kept").await, 1);
    let left: Vec<i64> = raw_column(
        &app,
        "SELECT count(*) FROM tenant_keys WHERE tenant_id = $1",
        doomed.id,
    )
    .await;
    assert_eq!(left, [0]);
    app.stop().await;
}

on_both_backends!(
    content_is_not_stored_in_the_clear,
    keys_rotate_and_reads_still_work,
    a_wrong_master_key_is_a_clear_error,
    ciphertext_moved_to_another_row_or_tenant_does_not_decrypt,
    deleting_a_tenant_destroys_its_keys,
);
