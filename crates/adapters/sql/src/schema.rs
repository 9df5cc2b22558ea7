//! What the schema looks like: the list of tenant tables (in the order a purge
//! deletes them), a normalised dump for `migrate verify`, and the tenancy checks
//! that `verify` and the tests run against a real database.

use karen_domain::Error;
use sqlx::{Executor, Row as _};

use crate::conn::{Pool, map_sqlx};

/// Every table holding tenant data, children before parents. A test and
/// `migrate verify` check that this equals the set of tables with a
/// `tenant_id` column, so a new table cannot be forgotten by purge or RLS.
pub const TENANT_TABLES: &[&str] = &[
    "legal_holds",
    "retention_runs",
    "retention_policies",
    "audit_checkpoints",
    "audit_events",
    "audit_forwarded",
    "audit_heads",
    "embedding_jobs",
    "embeddings",
    "document_chunks",
    "documents",
    "memories",
    "scim_role_grants",
    "scim_group_members",
    "scim_groups",
    "scim_users",
    "sso_consumed_assertions",
    "sso_identities",
    "sso_login_states",
    "sso_connections",
    "password_tokens",
    "mfa_challenges",
    "mfa_recovery_codes",
    "mfa_totp",
    "refresh_tokens",
    "sessions",
    "api_keys",
    "messages",
    "conversations",
    "personas",
    "usage_records",
    "usage_reservations",
    "usage_aggregates",
    "budgets",
    "tenant_providers",
    "model_aliases",
    "user_roles",
    "users",
    "custom_roles",
    "tenant_keys",
];

/// Tenant tables that exist on PostgreSQL only: derived data of a scale-out
/// adapter (the full-text index), purged by that adapter, not by the store.
pub const POSTGRES_DERIVED_TENANT_TABLES: &[&str] = &["text_entries"];

/// Platform tables (no tenant's data): the registry and platform credentials.
pub const PLATFORM_TABLES: &[&str] = &[
    "tenants",
    "operator_keys",
    "signing_keys",
    "platform_audit_events",
    "platform_audit_head",
    "platform_audit_checkpoints",
];

const SQLITE_DUMP: &str = "SELECT type || ' ' || name || ': ' || COALESCE(sql, '') FROM sqlite_master \
     WHERE name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations' ORDER BY type, name";

const POSTGRES_DUMP: &str = "
    SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type || ' null=' || is_nullable
           || ' default=' || COALESCE(column_default, '') FROM information_schema.columns
     WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations'
    UNION ALL
    SELECT 'constraint ' || conrelid::regclass::text || '.' || conname || ' ' || pg_get_constraintdef(oid)
      FROM pg_constraint WHERE connamespace = 'public'::regnamespace
       AND conrelid::regclass::text <> '_sqlx_migrations'
    UNION ALL
    SELECT 'index ' || indexdef FROM pg_indexes
     WHERE schemaname = 'public' AND tablename <> '_sqlx_migrations'
    UNION ALL
    SELECT 'policy ' || tablename || '.' || policyname || ' ' || cmd || ' using=' || COALESCE(qual, '')
           || ' check=' || COALESCE(with_check, '') FROM pg_policies WHERE schemaname = 'public'
    UNION ALL
    SELECT 'rls ' || relname || ' enabled=' || relrowsecurity::text || ' forced=' || relforcerowsecurity::text
      FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'
       AND relname <> '_sqlx_migrations'
    UNION ALL
    SELECT 'function ' || proname || ' ' || pg_get_function_identity_arguments(oid)
      FROM pg_proc WHERE pronamespace = 'public'::regnamespace
    UNION ALL
    SELECT 'trigger ' || tgrelid::regclass::text || '.' || tgname FROM pg_trigger
     WHERE NOT tgisinternal AND tgrelid::regclass::text NOT LIKE 'pg_%'
    ORDER BY 1";

/// Every schema object as one line, sorted (empty for an empty database).
pub(crate) async fn dump(pool: &Pool) -> Result<Vec<String>, Error> {
    let lines = match pool {
        Pool::Sqlite(p) => p.writer.fetch_all(SQLITE_DUMP).await.map(|rows| {
            rows.iter()
                .map(|r| r.try_get::<String, _>(0).unwrap_or_default())
                .collect()
        }),
        Pool::Postgres(p) => p.fetch_all(POSTGRES_DUMP).await.map(|rows| {
            rows.iter()
                .map(|r| r.try_get::<String, _>(0).unwrap_or_default())
                .collect()
        }),
    };
    lines.map_err(map_sqlx)
}

/// Tables that have a `tenant_id` column.
pub(crate) async fn tables_with_tenant_id(pool: &Pool) -> Result<Vec<String>, Error> {
    let mut tables: Vec<String> = match pool {
        Pool::Sqlite(p) => {
            let names: Vec<String> = sqlx::query_scalar(
                "SELECT m.name FROM sqlite_master m JOIN pragma_table_info(m.name) c \
                 WHERE m.type = 'table' AND c.name = 'tenant_id'",
            )
            .fetch_all(&p.writer)
            .await
            .map_err(map_sqlx)?;
            names
        }
        Pool::Postgres(p) => sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND column_name = 'tenant_id'",
        )
        .fetch_all(p)
        .await
        .map_err(map_sqlx)?,
    };
    tables.sort();
    Ok(tables)
}

/// Differences between the schema and the tenancy rules: tenant tables missing
/// from [`TENANT_TABLES`] (or listed but absent), and on PostgreSQL any table
/// without row-level security enabled and forced and a policy.
pub(crate) async fn tenancy_problems(pool: &Pool) -> Result<Vec<String>, Error> {
    let mut problems = Vec::new();
    let actual = tables_with_tenant_id(pool).await?;
    for table in &actual {
        let derived = matches!(pool, Pool::Postgres(_))
            && POSTGRES_DERIVED_TENANT_TABLES.contains(&table.as_str());
        if !TENANT_TABLES.contains(&table.as_str()) && !derived {
            problems.push(format!("table {table} has tenant_id but is not in TENANT_TABLES (purge and tests would miss it)"));
        }
    }
    for table in TENANT_TABLES {
        if !actual.iter().any(|t| t == table) {
            problems.push(format!(
                "TENANT_TABLES lists {table}, which has no tenant_id column"
            ));
        }
    }
    if let Pool::Postgres(p) = pool {
        let rows = sqlx::query(
            "SELECT c.relname::text, c.relrowsecurity, c.relforcerowsecurity, \
                    (SELECT count(*) FROM pg_policies p WHERE p.schemaname = 'public' AND p.tablename = c.relname) \
               FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' \
                AND c.relname <> '_sqlx_migrations'",
        )
        .fetch_all(p)
        .await
        .map_err(map_sqlx)?;
        for row in rows {
            let name: String = row.try_get(0).map_err(map_sqlx)?;
            let enabled: bool = row.try_get(1).map_err(map_sqlx)?;
            let forced: bool = row.try_get(2).map_err(map_sqlx)?;
            let policies: i64 = row.try_get(3).map_err(map_sqlx)?;
            if !enabled || !forced || policies == 0 {
                problems.push(format!(
                    "table {name}: row-level security enabled={enabled} forced={forced} policies={policies}; all three are required"
                ));
            }
        }
    }
    Ok(problems)
}
