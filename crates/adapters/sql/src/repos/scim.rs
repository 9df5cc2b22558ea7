//! SCIM provisioning state: provider attributes of users, groups and their
//! members, and the roles groups granted. Filters from SCIM requests arrive
//! here as typed values bound to fixed statements, never as SQL text.

use async_trait::async_trait;
use karen_domain::clock::to_millis;
use karen_domain::ports::ScimRepo;
use karen_domain::scim::{ScimEmail, ScimGroup, ScimUserRecord};
use karen_domain::values::RoleName;
use karen_domain::{Error, Result, ScimGroupId, TenantId, UserId};
use time::OffsetDateTime;

use crate::conn::Row;
use crate::rows;
use crate::tenant::SqlTenantTx;

fn scim_user(row: &Row) -> Result<ScimUserRecord> {
    let emails: Vec<ScimEmail> = serde_json::from_str(&row.get::<String>("emails")?)
        .map_err(|e| Error::internal(format!("stored scim_users.emails is invalid: {e}")))?;
    Ok(ScimUserRecord {
        tenant_id: TenantId::from_uuid(row.get("tenant_id")?),
        user_id: UserId::from_uuid(row.get("user_id")?),
        external_id: row.get("external_id")?,
        given_name: row.get("given_name")?,
        family_name: row.get("family_name")?,
        emails,
        version: row.get("version")?,
        created_at: rows::time(row, "created_at")?,
        updated_at: rows::time(row, "updated_at")?,
        deleted_at: rows::opt_time(row, "deleted_at")?,
    })
}

fn group(row: &Row) -> Result<ScimGroup> {
    Ok(ScimGroup {
        id: ScimGroupId::from_uuid(row.get("id")?),
        tenant_id: TenantId::from_uuid(row.get("tenant_id")?),
        display_name: row.get("display_name")?,
        external_id: row.get("external_id")?,
        version: row.get("version")?,
        created_at: rows::time(row, "created_at")?,
        updated_at: rows::time(row, "updated_at")?,
    })
}

fn name_taken(name: &str) -> String {
    format!(
        "a group named '{}' already exists in this organisation",
        karen_domain::values::printable(name, 80)
    )
}

impl SqlTenantTx {
    async fn groups(&mut self, q: crate::conn::Query) -> Result<Vec<ScimGroup>> {
        self.tx.fetch_all(q).await?.iter().map(group).collect()
    }

    async fn user_ids(&mut self, q: crate::conn::Query, column: &str) -> Result<Vec<UserId>> {
        self.tx
            .fetch_all(q)
            .await?
            .iter()
            .map(|r| r.get(column).map(UserId::from_uuid))
            .collect()
    }
}

#[async_trait]
impl ScimRepo for SqlTenantTx {
    async fn scim_user(&mut self, user: UserId) -> Result<Option<ScimUserRecord>> {
        let q = self
            .q("SELECT * FROM scim_users WHERE tenant_id = $1 AND user_id = $2")
            .bind(user.as_uuid());
        self.tx
            .fetch_optional(q)
            .await?
            .as_ref()
            .map(scim_user)
            .transpose()
    }

    async fn put_scim_user(&mut self, r: &ScimUserRecord) -> Result<()> {
        let emails = serde_json::to_string(&r.emails).map_err(Error::internal)?;
        let q = self
            .q("INSERT INTO scim_users (tenant_id, user_id, external_id, given_name, family_name, emails, \
                version, created_at, updated_at, deleted_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                ON CONFLICT (tenant_id, user_id) DO UPDATE SET external_id = excluded.external_id, \
                given_name = excluded.given_name, family_name = excluded.family_name, emails = excluded.emails, \
                version = excluded.version, updated_at = excluded.updated_at, deleted_at = excluded.deleted_at")
            .bind(r.user_id.as_uuid())
            .bind(r.external_id.clone())
            .bind(r.given_name.clone())
            .bind(r.family_name.clone())
            .bind(emails)
            .bind(r.version)
            .bind(to_millis(r.created_at))
            .bind(to_millis(r.updated_at))
            .bind(r.deleted_at.map(to_millis));
        self.tx.execute(q).await.map(drop)
    }

    async fn list_scim_users(&mut self, offset: i64, limit: i64) -> Result<(i64, Vec<UserId>)> {
        let q = self.q("SELECT count(*) AS n FROM users u LEFT JOIN scim_users s \
             ON s.tenant_id = u.tenant_id AND s.user_id = u.id \
             WHERE u.tenant_id = $1 AND s.deleted_at IS NULL");
        let total: i64 = self.tx.fetch_one(q).await?.get("n")?;
        let q = self
            .q("SELECT u.id AS id FROM users u LEFT JOIN scim_users s \
                ON s.tenant_id = u.tenant_id AND s.user_id = u.id \
                WHERE u.tenant_id = $1 AND s.deleted_at IS NULL \
                ORDER BY u.created_at, u.id LIMIT $2 OFFSET $3")
            .bind(limit)
            .bind(offset);
        let ids = self.user_ids(q, "id").await?;
        Ok((total, ids))
    }

    async fn scim_users_by_external_id(&mut self, external_id: &str) -> Result<Vec<UserId>> {
        let q = self
            .q(
                "SELECT user_id FROM scim_users WHERE tenant_id = $1 AND external_id = $2 \
                AND deleted_at IS NULL ORDER BY created_at, user_id LIMIT 201",
            )
            .bind(external_id.to_owned());
        self.user_ids(q, "user_id").await
    }

    async fn insert_group(&mut self, g: &ScimGroup) -> Result<()> {
        let q = self
            .q("INSERT INTO scim_groups (tenant_id, id, display_name, display_name_key, external_id, version, \
                created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(g.id.as_uuid())
            .bind(g.display_name.clone())
            .bind(g.role_key())
            .bind(g.external_id.clone())
            .bind(g.version)
            .bind(to_millis(g.created_at))
            .bind(to_millis(g.updated_at));
        self.tx
            .execute_unique(q, &name_taken(&g.display_name))
            .await
            .map(drop)
    }

    async fn update_group(&mut self, g: &ScimGroup, expected_version: i64) -> Result<bool> {
        let q = self
            .q("UPDATE scim_groups SET display_name = $3, display_name_key = $4, external_id = $5, \
                version = $6, updated_at = $7 WHERE tenant_id = $1 AND id = $2 AND version = $8")
            .bind(g.id.as_uuid())
            .bind(g.display_name.clone())
            .bind(g.role_key())
            .bind(g.external_id.clone())
            .bind(g.version)
            .bind(to_millis(g.updated_at))
            .bind(expected_version);
        let updated = self
            .tx
            .execute_unique(q, &name_taken(&g.display_name))
            .await?;
        Ok(updated > 0)
    }

    async fn delete_group(&mut self, id: ScimGroupId) -> Result<bool> {
        let q = self
            .q("DELETE FROM scim_group_members WHERE tenant_id = $1 AND group_id = $2")
            .bind(id.as_uuid());
        self.tx.execute(q).await?;
        let q = self
            .q("DELETE FROM scim_groups WHERE tenant_id = $1 AND id = $2")
            .bind(id.as_uuid());
        Ok(self.tx.execute(q).await? > 0)
    }

    async fn group(&mut self, id: ScimGroupId) -> Result<Option<ScimGroup>> {
        let q = self
            .q("SELECT * FROM scim_groups WHERE tenant_id = $1 AND id = $2")
            .bind(id.as_uuid());
        self.tx
            .fetch_optional(q)
            .await?
            .as_ref()
            .map(group)
            .transpose()
    }

    async fn list_groups(&mut self, offset: i64, limit: i64) -> Result<(i64, Vec<ScimGroup>)> {
        let q = self.q("SELECT count(*) AS n FROM scim_groups WHERE tenant_id = $1");
        let total: i64 = self.tx.fetch_one(q).await?.get("n")?;
        let q = self
            .q("SELECT * FROM scim_groups WHERE tenant_id = $1 ORDER BY created_at, id LIMIT $2 OFFSET $3")
            .bind(limit)
            .bind(offset);
        Ok((total, self.groups(q).await?))
    }

    async fn group_by_display_name(&mut self, display_name: &str) -> Result<Option<ScimGroup>> {
        let q = self
            .q("SELECT * FROM scim_groups WHERE tenant_id = $1 AND display_name_key = $2")
            .bind(display_name.to_lowercase());
        Ok(self.groups(q).await?.into_iter().next())
    }

    async fn groups_by_external_id(&mut self, external_id: &str) -> Result<Vec<ScimGroup>> {
        let q = self
            .q(
                "SELECT * FROM scim_groups WHERE tenant_id = $1 AND external_id = $2 \
                ORDER BY created_at, id LIMIT 201",
            )
            .bind(external_id.to_owned());
        self.groups(q).await
    }

    async fn group_members(&mut self, group: ScimGroupId) -> Result<Vec<UserId>> {
        let q = self
            .q(
                "SELECT user_id FROM scim_group_members WHERE tenant_id = $1 AND group_id = $2 \
                ORDER BY added_at, user_id",
            )
            .bind(group.as_uuid());
        self.user_ids(q, "user_id").await
    }

    async fn add_group_member(
        &mut self,
        group: ScimGroupId,
        user: UserId,
        at: OffsetDateTime,
    ) -> Result<bool> {
        let q = self
            .q(
                "INSERT INTO scim_group_members (tenant_id, group_id, user_id, added_at) \
                VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(group.as_uuid())
            .bind(user.as_uuid())
            .bind(to_millis(at));
        Ok(self.tx.execute(q).await? > 0)
    }

    async fn remove_group_member(&mut self, group: ScimGroupId, user: UserId) -> Result<bool> {
        let q = self
            .q("DELETE FROM scim_group_members WHERE tenant_id = $1 AND group_id = $2 AND user_id = $3")
            .bind(group.as_uuid())
            .bind(user.as_uuid());
        Ok(self.tx.execute(q).await? > 0)
    }

    async fn groups_of_user(&mut self, user: UserId) -> Result<Vec<ScimGroup>> {
        let q = self
            .q("SELECT g.* FROM scim_groups g JOIN scim_group_members m \
                ON m.tenant_id = g.tenant_id AND m.group_id = g.id \
                WHERE g.tenant_id = $1 AND m.user_id = $2 ORDER BY g.created_at, g.id")
            .bind(user.as_uuid());
        self.groups(q).await
    }

    async fn role_grants(&mut self, user: UserId) -> Result<Vec<RoleName>> {
        let q = self
            .q("SELECT role FROM scim_role_grants WHERE tenant_id = $1 AND user_id = $2 ORDER BY role")
            .bind(user.as_uuid());
        self.tx
            .fetch_all(q)
            .await?
            .iter()
            .map(|r| rows::role_name(r, "role"))
            .collect()
    }

    async fn add_role_grant(
        &mut self,
        user: UserId,
        role: &RoleName,
        at: OffsetDateTime,
    ) -> Result<()> {
        let q = self
            .q("INSERT INTO scim_role_grants (tenant_id, user_id, role, granted_at) VALUES ($1, $2, $3, $4) \
                ON CONFLICT DO NOTHING")
            .bind(user.as_uuid())
            .bind(role.as_str().to_owned())
            .bind(to_millis(at));
        self.tx.execute(q).await.map(drop)
    }

    async fn remove_role_grant(&mut self, user: UserId, role: &RoleName) -> Result<()> {
        let q = self
            .q("DELETE FROM scim_role_grants WHERE tenant_id = $1 AND user_id = $2 AND role = $3")
            .bind(user.as_uuid())
            .bind(role.as_str().to_owned());
        self.tx.execute(q).await.map(drop)
    }
}
