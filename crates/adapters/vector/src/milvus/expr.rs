//! Milvus filter expressions. They are built here alone, and only from typed
//! values formatted by this code (UUIDs, entry kinds, validated role names),
//! never from text a user wrote. Every expression over tenant data starts
//! with the tenant condition.

use karen_domain::ports::{EntryKey, EntryKind, SearchFilter};
use karen_domain::{Error, Result, RoleName, TenantId};

/// Field names of a space collection.
pub(super) const PK: &str = "pk";
pub(super) const TENANT: &str = "tenant_id";
pub(super) const KIND: &str = "kind";
pub(super) const ENTRY: &str = "entry_id";
pub(super) const OWNER: &str = "owner";
pub(super) const RESTRICTED: &str = "restricted";
pub(super) const ROLES: &str = "roles";
pub(super) const DOCUMENT: &str = "document";
pub(super) const VECTOR: &str = "vector";

/// The primary key of an entry: unique across tenants, since two tenants may
/// hold the same entry key.
pub(super) fn primary_key(tenant: TenantId, key: &EntryKey) -> String {
    format!("{}:{}:{}", tenant, key.kind.as_str(), key.id.hyphenated())
}

/// Selects the tenant's rows (and, through the partition key, its partition).
pub(super) fn tenant(tenant: TenantId) -> String {
    format!("{TENANT} == \"{}\"", tenant.as_uuid().hyphenated())
}

/// Selects the tenant's rows with the given keys.
pub(super) fn tenant_keys(tenant_id: TenantId, keys: &[EntryKey]) -> String {
    let pks: Vec<String> = keys
        .iter()
        .map(|key| format!("\"{}\"", primary_key(tenant_id, key)))
        .collect();
    format!("{} and {PK} in [{}]", tenant(tenant_id), pks.join(", "))
}

/// The tenant's rows whose primary key starts with `prefix` (itself built by
/// [`narrower`] from the tenant's own prefix, so it holds no wildcard).
pub(super) fn tenant_pk_prefix(tenant_id: TenantId, prefix: &str) -> String {
    format!("{} and {PK} like \"{prefix}%\"", tenant(tenant_id))
}

/// The first key prefix of a tenant: all its rows.
pub(super) fn root_prefix(tenant: TenantId) -> String {
    format!("{tenant}:")
}

/// Splits a key prefix into prefixes one character longer that together
/// cover it: Milvus answers at most 16384 rows per query, so a tenant with more
/// is listed range by range. `None` once the prefix is a whole key.
pub(super) fn narrower(tenant: TenantId, prefix: &str) -> Option<Vec<String>> {
    let root = root_prefix(tenant);
    let rest = prefix.strip_prefix(&root)?;
    if rest.is_empty() {
        return Some(
            [EntryKind::Memory, EntryKind::Chunk]
                .iter()
                .map(|k| format!("{root}{}:", k.as_str()))
                .collect(),
        );
    }
    let (_, id) = rest.split_once(':')?;
    match id.len() {
        8 | 13 | 18 | 23 => Some(vec![format!("{prefix}-")]),
        36.. => None,
        _ => Some(
            "0123456789abcdef"
                .chars()
                .map(|c| format!("{prefix}{c}"))
                .collect(),
        ),
    }
}

/// A role name as a string literal. `RoleName` admits only `a-z0-9_-`; checked
/// again here because this text goes into an expression.
fn role_literal(role: &RoleName) -> Result<String> {
    let text = role.as_str();
    if text.is_empty()
        || !text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        return Err(Error::internal("role name unsafe for a Milvus expression"));
    }
    Ok(format!("\"{text}\""))
}

/// The tenant's rows that `filter` admits (the same rule as
/// `SearchFilter::admits`, pushed down into the search).
pub(super) fn search(tenant_id: TenantId, filter: &SearchFilter) -> Result<String> {
    let mut parts = vec![tenant(tenant_id)];
    if !filter.kinds.is_empty() {
        let kinds: Vec<String> = filter
            .kinds
            .iter()
            .map(|k| format!("\"{}\"", k.as_str()))
            .collect();
        parts.push(format!("{KIND} in [{}]", kinds.join(", ")));
    }
    parts.push(format!(
        "({OWNER} == \"\" or {OWNER} == \"{}\")",
        filter.user.as_uuid().hyphenated()
    ));
    if filter.roles.is_empty() {
        parts.push(format!("{RESTRICTED} == false"));
    } else {
        let roles = filter
            .roles
            .iter()
            .map(role_literal)
            .collect::<Result<Vec<_>>>()?;
        parts.push(format!(
            "({RESTRICTED} == false or array_contains_any({ROLES}, [{}]))",
            roles.join(", ")
        ));
    }
    Ok(parts.join(" and "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use karen_domain::UserId;
    use uuid::Uuid;

    #[test]
    fn search_expression_names_the_tenant_first_and_only_typed_values() {
        let tenant_id = TenantId::from_uuid(Uuid::nil());
        let filter = SearchFilter {
            kinds: vec![EntryKind::Chunk],
            user: UserId::from_uuid(Uuid::max()),
            roles: vec![RoleName::parse("admin").unwrap()],
        };
        assert_eq!(
            search(tenant_id, &filter).unwrap(),
            "tenant_id == \"00000000-0000-0000-0000-000000000000\" and kind in [\"chunk\"] \
             and (owner == \"\" or owner == \"ffffffff-ffff-ffff-ffff-ffffffffffff\") \
             and (restricted == false or array_contains_any(roles, [\"admin\"]))"
        );
        let no_roles = SearchFilter {
            kinds: vec![],
            roles: vec![],
            ..filter
        };
        assert!(
            search(tenant_id, &no_roles)
                .unwrap()
                .ends_with("and restricted == false")
        );
    }

    #[test]
    fn key_expression_is_scoped_to_the_tenant() {
        let tenant_id = TenantId::from_uuid(Uuid::nil());
        let key = EntryKey::new(EntryKind::Memory, Uuid::nil());
        assert_eq!(
            tenant_keys(tenant_id, &[key]),
            "tenant_id == \"00000000-0000-0000-0000-000000000000\" and pk in \
             [\"00000000-0000-0000-0000-000000000000:memory:00000000-0000-0000-0000-000000000000\"]"
        );
    }

    #[test]
    fn narrowing_covers_every_key_and_ends_at_whole_keys() {
        let tenant_id = TenantId::from_uuid(Uuid::nil());
        let key = EntryKey::new(EntryKind::Chunk, Uuid::new_v4());
        let pk = primary_key(tenant_id, &key);
        let mut prefix = root_prefix(tenant_id);
        while let Some(children) = narrower(tenant_id, &prefix) {
            let matching: Vec<_> = children
                .into_iter()
                .filter(|c| pk.starts_with(c.as_str()))
                .collect();
            assert_eq!(matching.len(), 1, "{prefix}");
            prefix = matching[0].clone();
        }
        assert_eq!(prefix, pk);
    }
}
