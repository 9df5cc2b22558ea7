//! Users and their role assignments.

use async_trait::async_trait;
use karen_domain::clock::to_millis;
use karen_domain::page::PageRequest;
use karen_domain::ports::UserRepo;
use karen_domain::user::{LoginFailures, User};
use karen_domain::values::{Email, RoleName};
use karen_domain::{Result, UserId};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::rows;
use crate::tenant::SqlTenantTx;

impl SqlTenantTx {
    async fn roles_of(&mut self, user: UserId) -> Result<Vec<RoleName>> {
        let q = self
            .q("SELECT role FROM user_roles WHERE tenant_id = $1 AND user_id = $2 ORDER BY role")
            .bind(user.as_uuid());
        self.tx
            .fetch_all(q)
            .await?
            .iter()
            .map(|r| rows::role_name(r, "role"))
            .collect()
    }

    async fn insert_roles(&mut self, user: UserId, roles: &[RoleName]) -> Result<()> {
        for role in roles {
            let q = self
                .q("INSERT INTO user_roles (tenant_id, user_id, role) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .bind(user.as_uuid())
                .bind(role.as_str());
            self.tx.execute(q).await?;
        }
        Ok(())
    }

    async fn with_roles(&mut self, user: Option<User>) -> Result<Option<User>> {
        match user {
            Some(mut user) => {
                user.roles = self.roles_of(user.id).await?;
                Ok(Some(user))
            }
            None => Ok(None),
        }
    }
}

#[async_trait]
impl UserRepo for SqlTenantTx {
    async fn insert_user(&mut self, user: &User) -> Result<()> {
        let q = self
            .q("INSERT INTO users (tenant_id, id, email, display_name, status, password_hash, failed_login_count, \
                 sessions_valid_after, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8, $9)")
            .bind(user.id.as_uuid())
            .bind(user.email.as_str())
            .bind(user.display_name.as_ref().map(|n| n.as_str().to_owned()))
            .bind(user.status.as_str())
            .bind(user.password_hash.as_ref().map(|h| h.as_str().to_owned()))
            .bind(to_millis(user.sessions_valid_after))
            .bind(to_millis(user.created_at))
            .bind(to_millis(user.updated_at));
        let conflict = format!(
            "a user with email {} already exists in this organisation",
            user.email
        );
        self.tx.execute_unique(q, &conflict).await?;
        self.insert_roles(user.id, &user.roles).await
    }

    async fn user_by_id(&mut self, id: UserId) -> Result<Option<User>> {
        let q = self
            .q("SELECT * FROM users WHERE tenant_id = $1 AND id = $2")
            .bind(id.as_uuid());
        let user = self
            .tx
            .fetch_optional(q)
            .await?
            .as_ref()
            .map(rows::user)
            .transpose()?;
        self.with_roles(user).await
    }

    async fn user_by_email(&mut self, email: &Email) -> Result<Option<User>> {
        let q = self
            .q("SELECT * FROM users WHERE tenant_id = $1 AND email = $2")
            .bind(email.as_str());
        let user = self
            .tx
            .fetch_optional(q)
            .await?
            .as_ref()
            .map(rows::user)
            .transpose()?;
        self.with_roles(user).await
    }

    async fn list_users(&mut self, page: &PageRequest) -> Result<Vec<User>> {
        let q = self
            .q("SELECT * FROM users WHERE tenant_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3")
            .bind(page.after)
            .bind(page.fetch_limit());
        let mut users: Vec<User> = self
            .tx
            .fetch_all(q)
            .await?
            .iter()
            .map(rows::user)
            .collect::<Result<_>>()?;
        let (Some(first), Some(last)) = (users.first().map(|u| u.id), users.last().map(|u| u.id))
        else {
            return Ok(users);
        };
        // One query for the roles of the whole page (ids are ordered, so a range covers it).
        let q = self
            .q("SELECT user_id, role FROM user_roles WHERE tenant_id = $1 AND user_id >= $2 AND user_id <= $3 \
                ORDER BY role")
            .bind(first.as_uuid())
            .bind(last.as_uuid());
        for row in self.tx.fetch_all(q).await? {
            let user_id: Uuid = row.get("user_id")?;
            let role = rows::role_name(&row, "role")?;
            if let Some(user) = users.iter_mut().find(|u| u.id.as_uuid() == user_id) {
                user.roles.push(role);
            }
        }
        Ok(users)
    }

    async fn update_user(&mut self, user: &User) -> Result<()> {
        let q = self
            .q(
                "UPDATE users SET email = $3, display_name = $4, status = $5, password_hash = $6, \
                sessions_valid_after = $7, updated_at = $8 WHERE tenant_id = $1 AND id = $2",
            )
            .bind(user.id.as_uuid())
            .bind(user.email.as_str())
            .bind(user.display_name.as_ref().map(|n| n.as_str().to_owned()))
            .bind(user.status.as_str())
            .bind(user.password_hash.as_ref().map(|h| h.as_str().to_owned()))
            .bind(to_millis(user.sessions_valid_after))
            .bind(to_millis(user.updated_at));
        let conflict = format!(
            "a user with email {} already exists in this organisation",
            user.email
        );
        self.tx.execute_unique(q, &conflict).await.map(drop)
    }

    async fn set_roles(&mut self, id: UserId, roles: &[RoleName]) -> Result<()> {
        let q = self
            .q("DELETE FROM user_roles WHERE tenant_id = $1 AND user_id = $2")
            .bind(id.as_uuid());
        self.tx.execute(q).await?;
        self.insert_roles(id, roles).await
    }

    async fn count_active_with_role(&mut self, role: &RoleName) -> Result<i64> {
        let q = self
            .q("SELECT count(*) AS n FROM user_roles r JOIN users u ON u.tenant_id = r.tenant_id AND u.id = r.user_id \
                WHERE r.tenant_id = $1 AND r.role = $2 AND u.status = 'active'")
            .bind(role.as_str());
        self.tx.fetch_one(q).await?.get("n")
    }

    async fn record_login_failure(
        &mut self,
        id: UserId,
        at: OffsetDateTime,
        lock_threshold: i32,
        lock_until: OffsetDateTime,
        stale_before: OffsetDateTime,
    ) -> Result<LoginFailures> {
        let q = self
            // A lock that has run out, or failures older than `stale_before`,
            // start a fresh count (otherwise one more failure would lock the
            // account again at once, and old failures would never fade).
            .q("UPDATE users SET \
                failed_login_count = CASE WHEN (locked_until IS NOT NULL AND locked_until <= $3) \
                    OR (last_failed_login_at IS NOT NULL AND last_failed_login_at < $6) THEN 1 \
                    ELSE failed_login_count + 1 END, \
                locked_until = CASE \
                    WHEN (CASE WHEN (locked_until IS NOT NULL AND locked_until <= $3) \
                          OR (last_failed_login_at IS NOT NULL AND last_failed_login_at < $6) THEN 1 \
                          ELSE failed_login_count + 1 END) >= $4 THEN $5 \
                    WHEN locked_until IS NOT NULL AND locked_until <= $3 THEN NULL \
                    ELSE locked_until END, \
                last_failed_login_at = $3 \
                WHERE tenant_id = $1 AND id = $2 \
                RETURNING failed_login_count, last_failed_login_at, locked_until")
            .bind(id.as_uuid())
            .bind(to_millis(at))
            .bind(lock_threshold)
            .bind(to_millis(lock_until))
            .bind(to_millis(stale_before));
        let row = self.tx.fetch_one(q).await?;
        Ok(LoginFailures {
            count: row.get("failed_login_count")?,
            last_failed_at: rows::opt_time(&row, "last_failed_login_at")?,
            locked_until: rows::opt_time(&row, "locked_until")?,
        })
    }

    async fn reset_login_failures(&mut self, id: UserId) -> Result<()> {
        let q = self
            .q("UPDATE users SET failed_login_count = 0, last_failed_login_at = NULL, locked_until = NULL \
                WHERE tenant_id = $1 AND id = $2")
            .bind(id.as_uuid());
        self.tx.execute(q).await.map(drop)
    }

    async fn record_login_success(&mut self, id: UserId, at: OffsetDateTime) -> Result<()> {
        let q = self
            .q("UPDATE users SET failed_login_count = 0, last_failed_login_at = NULL, locked_until = NULL, \
                last_login_at = $3 WHERE tenant_id = $1 AND id = $2")
            .bind(id.as_uuid())
            .bind(to_millis(at));
        self.tx.execute(q).await.map(drop)
    }
}
