//! SCIM provisioning state of a tenant: what the identity provider set on its
//! users, its groups with their members, and the roles groups granted.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::scim::{ScimGroup, ScimUserRecord};
use crate::values::RoleName;
use crate::{Result, ScimGroupId, UserId};

/// Provisioning state, reached through a tenant transaction.
#[async_trait]
pub trait ScimRepo: Send {
    /// What SCIM keeps of a user (also when it was deleted through SCIM).
    async fn scim_user(&mut self, user: UserId) -> Result<Option<ScimUserRecord>>;
    /// Creates or replaces the user's record.
    async fn put_scim_user(&mut self, record: &ScimUserRecord) -> Result<()>;
    /// Users SCIM shows (every user not deleted through SCIM), oldest first:
    /// how many there are, and the ids of `limit` of them after skipping `offset`.
    async fn list_scim_users(&mut self, offset: i64, limit: i64) -> Result<(i64, Vec<UserId>)>;
    /// Users shown to SCIM with this `externalId`.
    async fn scim_users_by_external_id(&mut self, external_id: &str) -> Result<Vec<UserId>>;

    /// `conflict` if the display name is taken (ignoring case).
    async fn insert_group(&mut self, group: &ScimGroup) -> Result<()>;
    /// Stores display name, external id, version and time if the stored
    /// version is still `expected_version` (`false` otherwise: a concurrent
    /// change won); `conflict` as above.
    async fn update_group(&mut self, group: &ScimGroup, expected_version: i64) -> Result<bool>;
    /// Deletes the group and its memberships.
    async fn delete_group(&mut self, id: ScimGroupId) -> Result<bool>;
    async fn group(&mut self, id: ScimGroupId) -> Result<Option<ScimGroup>>;
    /// Groups oldest first: how many there are, and `limit` of them after `offset`.
    async fn list_groups(&mut self, offset: i64, limit: i64) -> Result<(i64, Vec<ScimGroup>)>;
    /// The group with this display name (ignoring case).
    async fn group_by_display_name(&mut self, display_name: &str) -> Result<Option<ScimGroup>>;
    async fn groups_by_external_id(&mut self, external_id: &str) -> Result<Vec<ScimGroup>>;
    /// Member ids, in the order they joined.
    async fn group_members(&mut self, group: ScimGroupId) -> Result<Vec<UserId>>;
    /// `false` if the user already was a member.
    async fn add_group_member(
        &mut self,
        group: ScimGroupId,
        user: UserId,
        at: OffsetDateTime,
    ) -> Result<bool>;
    /// `false` if the user was not a member.
    async fn remove_group_member(&mut self, group: ScimGroupId, user: UserId) -> Result<bool>;
    /// The groups a user belongs to.
    async fn groups_of_user(&mut self, user: UserId) -> Result<Vec<ScimGroup>>;

    /// Roles a group granted the user (that the user did not hold before).
    async fn role_grants(&mut self, user: UserId) -> Result<Vec<RoleName>>;
    async fn add_role_grant(
        &mut self,
        user: UserId,
        role: &RoleName,
        at: OffsetDateTime,
    ) -> Result<()>;
    async fn remove_role_grant(&mut self, user: UserId, role: &RoleName) -> Result<()>;
}
