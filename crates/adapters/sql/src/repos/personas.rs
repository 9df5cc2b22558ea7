//! Personas.

use async_trait::async_trait;
use karen_domain::chat::Persona;
use karen_domain::clock::to_millis;
use karen_domain::ports::PersonaRepo;
use karen_domain::values::Label;
use karen_domain::{PersonaId, Result, TenantId, UserId};
use uuid::Uuid;

use crate::conn::Row;
use crate::rows;
use crate::tenant::SqlTenantTx;

fn persona(row: &Row) -> Result<Persona> {
    Ok(Persona {
        id: PersonaId::from_uuid(row.get("id")?),
        tenant_id: TenantId::from_uuid(row.get("tenant_id")?),
        owner: row
            .get::<Option<Uuid>>("owner_user_id")?
            .map(UserId::from_uuid),
        name: Label::parse(&row.get::<String>("name")?)?,
        system_prompt: row.get("system_prompt")?,
        model: row.get("model")?,
        temperature: row.get("temperature")?,
        max_tokens: row
            .get::<Option<i32>>("max_tokens")?
            .and_then(|m| u32::try_from(m).ok()),
        created_at: rows::time(row, "created_at")?,
        updated_at: rows::time(row, "updated_at")?,
    })
}

fn max_tokens(p: &Persona) -> Option<i32> {
    p.max_tokens.map(|m| i32::try_from(m).unwrap_or(i32::MAX))
}

#[async_trait]
impl PersonaRepo for SqlTenantTx {
    async fn insert_persona(&mut self, p: &Persona) -> Result<()> {
        let q = self
            .q("INSERT INTO personas (tenant_id, id, owner_user_id, name, system_prompt, model, temperature, \
                max_tokens, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
            .bind(p.id.as_uuid())
            .bind(p.owner.map(|u| u.as_uuid()))
            .bind(p.name.as_str())
            .bind(p.system_prompt.as_str())
            .bind(p.model.clone())
            .bind(p.temperature)
            .bind(max_tokens(p))
            .bind(to_millis(p.created_at))
            .bind(to_millis(p.updated_at));
        self.tx.execute(q).await.map(drop)
    }

    async fn persona(&mut self, id: PersonaId) -> Result<Option<Persona>> {
        let q = self
            .q("SELECT * FROM personas WHERE tenant_id = $1 AND id = $2")
            .bind(id.as_uuid());
        self.tx
            .fetch_optional(q)
            .await?
            .as_ref()
            .map(persona)
            .transpose()
    }

    async fn list_personas(&mut self, user: UserId) -> Result<Vec<Persona>> {
        let q = self
            .q("SELECT * FROM personas WHERE tenant_id = $1 AND (owner_user_id IS NULL OR owner_user_id = $2) \
                ORDER BY name, id")
            .bind(user.as_uuid());
        self.tx.fetch_all(q).await?.iter().map(persona).collect()
    }

    async fn update_persona(&mut self, p: &Persona) -> Result<()> {
        let q = self
            .q("UPDATE personas SET name = $3, system_prompt = $4, model = $5, temperature = $6, max_tokens = $7, \
                updated_at = $8 WHERE tenant_id = $1 AND id = $2")
            .bind(p.id.as_uuid())
            .bind(p.name.as_str())
            .bind(p.system_prompt.as_str())
            .bind(p.model.clone())
            .bind(p.temperature)
            .bind(max_tokens(p))
            .bind(to_millis(p.updated_at));
        self.tx.execute(q).await.map(drop)
    }

    async fn delete_persona(&mut self, id: PersonaId) -> Result<bool> {
        let q = self
            .q("DELETE FROM personas WHERE tenant_id = $1 AND id = $2")
            .bind(id.as_uuid());
        Ok(self.tx.execute(q).await? > 0)
    }
}
