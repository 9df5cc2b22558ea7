//! Personas: named system prompts with model settings. Tenant-wide ones are
//! managed with `tenant:manage`; anyone who chats may keep personal ones.

use crate::audit::Record;
use std::sync::Arc;

use karen_domain::chat::{Persona, parse_model_name, validate_persona};
use karen_domain::permission::Permission;
use karen_domain::values::Label;
use karen_domain::{Error, PersonaId, Result, TenantContext};

use crate::Deps;

/// A persona to create or change (absent fields stay as they are on change).
#[derive(Default)]
pub struct PersonaInput {
    pub name: Option<String>,
    pub system_prompt: Option<String>,
    /// `Some(None)` clears it.
    pub model: Option<Option<String>>,
    pub temperature: Option<Option<f64>>,
    pub max_tokens: Option<Option<u32>>,
    /// Tenant-wide (needs `tenant:manage`) rather than the caller's own.
    pub shared: bool,
}

/// The persona service.
#[derive(Clone)]
pub struct PersonaService {
    deps: Arc<Deps>,
}

fn apply(persona: &mut Persona, input: PersonaInput) -> Result<()> {
    if let Some(name) = input.name {
        persona.name = Label::parse(&name)?;
    }
    if let Some(prompt) = input.system_prompt {
        persona.system_prompt = prompt;
    }
    if let Some(model) = input.model {
        persona.model = model.as_deref().map(parse_model_name).transpose()?;
    }
    if let Some(temperature) = input.temperature {
        persona.temperature = temperature;
    }
    if let Some(max_tokens) = input.max_tokens {
        persona.max_tokens = max_tokens;
    }
    validate_persona(
        &persona.system_prompt,
        persona.temperature,
        persona.max_tokens,
    )
}

impl PersonaService {
    pub(crate) fn new(deps: Arc<Deps>) -> Self {
        Self { deps }
    }

    fn require_write(ctx: &TenantContext, persona: &Persona) -> Result<()> {
        match persona.owner {
            None => ctx.require(Permission::TenantManage),
            Some(owner) if owner == ctx.principal().user_id => ctx.require(Permission::ChatWrite),
            Some(_) => Err(Error::NotFound("persona")),
        }
    }

    /// Tenant-wide personas and the caller's own.
    pub async fn list(&self, ctx: &TenantContext) -> Result<Vec<Persona>> {
        ctx.require(Permission::ChatRead)?;
        let mut tx = self.deps.store.tenant_read(ctx.scope()).await?;
        let personas = tx.personas().list_personas(ctx.principal().user_id).await?;
        tx.commit().await?;
        Ok(personas)
    }

    /// One persona visible to the caller.
    pub async fn get(&self, ctx: &TenantContext, id: PersonaId) -> Result<Persona> {
        ctx.require(Permission::ChatRead)?;
        let mut tx = self.deps.store.tenant_read(ctx.scope()).await?;
        let persona = tx.personas().persona(id).await?;
        tx.commit().await?;
        persona
            .filter(|p| p.owner.is_none() || p.owner == Some(ctx.principal().user_id))
            .ok_or(Error::NotFound("persona"))
    }

    /// Creates a persona.
    pub async fn create(&self, ctx: &TenantContext, input: PersonaInput) -> Result<Persona> {
        let now = self.deps.clock.now();
        let name = input
            .name
            .as_deref()
            .ok_or_else(|| Error::invalid(Some("name"), "name is required"))?;
        let mut persona = Persona {
            id: PersonaId::generate(),
            tenant_id: ctx.tenant_id(),
            owner: (!input.shared).then_some(ctx.principal().user_id),
            name: Label::parse(name)?,
            system_prompt: String::new(),
            model: None,
            temperature: None,
            max_tokens: None,
            created_at: now,
            updated_at: now,
        };
        Self::require_write(ctx, &persona)?;
        apply(&mut persona, input)?;
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        tx.personas().insert_persona(&persona).await?;
        let audit = Record::new("persona.create")
            .target("persona", persona.id)
            .after(&persona_json(&persona));
        self.deps
            .audit(&mut *tx, ctx.scope().actor(), audit)
            .await?;
        tx.commit().await?;
        Ok(persona)
    }

    /// Changes a persona.
    pub async fn update(
        &self,
        ctx: &TenantContext,
        id: PersonaId,
        input: PersonaInput,
    ) -> Result<Persona> {
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        let mut persona = tx
            .personas()
            .persona(id)
            .await?
            .ok_or(Error::NotFound("persona"))?;
        Self::require_write(ctx, &persona)?;
        let before = persona_json(&persona);
        apply(&mut persona, input)?;
        persona.updated_at = self.deps.clock.now();
        tx.personas().update_persona(&persona).await?;
        let audit = Record::new("persona.update")
            .target("persona", id)
            .before(&before)
            .after(&persona_json(&persona));
        self.deps
            .audit(&mut *tx, ctx.scope().actor(), audit)
            .await?;
        tx.commit().await?;
        Ok(persona)
    }

    /// Deletes a persona (conversations that used it continue without one).
    pub async fn delete(&self, ctx: &TenantContext, id: PersonaId) -> Result<()> {
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        let persona = tx
            .personas()
            .persona(id)
            .await?
            .ok_or(Error::NotFound("persona"))?;
        Self::require_write(ctx, &persona)?;
        tx.personas().delete_persona(id).await?;
        let audit = Record::new("persona.delete")
            .target("persona", id)
            .before(&persona_json(&persona));
        self.deps
            .audit(&mut *tx, ctx.scope().actor(), audit)
            .await?;
        tx.commit().await
    }
}

/// A persona as recorded in audit diffs.
fn persona_json(persona: &Persona) -> serde_json::Value {
    serde_json::json!({
        "name": persona.name.as_str(),
        "owner": persona.owner,
        "system_prompt": persona.system_prompt,
        "model": persona.model,
        "temperature": persona.temperature,
        "max_tokens": persona.max_tokens,
    })
}
