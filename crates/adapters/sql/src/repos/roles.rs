//! Custom roles.

use async_trait::async_trait;
use karen_domain::Result;
use karen_domain::clock::to_millis;
use karen_domain::ports::RoleRepo;
use karen_domain::user::CustomRole;
use karen_domain::values::RoleName;
use sqlx::types::Json;

use crate::rows;
use crate::tenant::SqlTenantTx;

#[async_trait]
impl RoleRepo for SqlTenantTx {
    async fn list_custom_roles(&mut self) -> Result<Vec<CustomRole>> {
        let q = self.q("SELECT * FROM custom_roles WHERE tenant_id = $1 ORDER BY name");
        self.tx
            .fetch_all(q)
            .await?
            .iter()
            .map(rows::custom_role)
            .collect()
    }

    async fn custom_role(&mut self, name: &RoleName) -> Result<Option<CustomRole>> {
        let q = self
            .q("SELECT * FROM custom_roles WHERE tenant_id = $1 AND name = $2")
            .bind(name.as_str());
        self.tx
            .fetch_optional(q)
            .await?
            .as_ref()
            .map(rows::custom_role)
            .transpose()
    }

    async fn insert_custom_role(&mut self, role: &CustomRole) -> Result<()> {
        let q = self
            .q("INSERT INTO custom_roles (tenant_id, name, description, permissions, created_at, updated_at) \
                VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(role.name.as_str())
            .bind(role.description.as_ref().map(|d| d.as_str().to_owned()))
            .bind(Json(role.permissions))
            .bind(to_millis(role.created_at))
            .bind(to_millis(role.updated_at));
        let conflict = format!("a role named '{}' already exists", role.name);
        self.tx.execute_unique(q, &conflict).await.map(drop)
    }

    async fn update_custom_role(&mut self, role: &CustomRole) -> Result<bool> {
        let q = self
            .q(
                "UPDATE custom_roles SET description = $3, permissions = $4, updated_at = $5 \
                WHERE tenant_id = $1 AND name = $2",
            )
            .bind(role.name.as_str())
            .bind(role.description.as_ref().map(|d| d.as_str().to_owned()))
            .bind(Json(role.permissions))
            .bind(to_millis(role.updated_at));
        Ok(self.tx.execute(q).await? > 0)
    }

    async fn delete_custom_role(&mut self, name: &RoleName) -> Result<bool> {
        let q = self
            .q("DELETE FROM custom_roles WHERE tenant_id = $1 AND name = $2")
            .bind(name.as_str());
        Ok(self.tx.execute(q).await? > 0)
    }

    async fn role_assignment_count(&mut self, name: &RoleName) -> Result<i64> {
        let q = self
            .q("SELECT count(*) AS n FROM user_roles WHERE tenant_id = $1 AND role = $2")
            .bind(name.as_str());
        self.tx.fetch_one(q).await?.get("n")
    }
}
