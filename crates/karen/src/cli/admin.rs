//! Administration commands that run on the server's machine with direct
//! access to the store: tenants, users, API keys, operator keys.

use std::io::BufRead as _;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;
use karen::Karen;
use karen::config::Config;
use karen_app::Authority;
use karen_app::api_keys::NewApiKey;
use karen_app::tenants::NewTenant;
use karen_app::users::NewUser;
use karen_domain::clock::SystemClock;
use karen_domain::page::{MAX_LIMIT, PageRequest};
use karen_domain::user::Password;
use karen_domain::{ApiKeyId, OperatorKeyId, SystemReason, TenantId, TenantScope};
use secrecy::ExposeSecret;

#[derive(Subcommand, Debug)]
pub(super) enum TenantCommand {
    /// Create a tenant and its owner account.
    Create {
        #[arg(long)]
        slug: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        plan: Option<String>,
        #[arg(long)]
        owner_email: String,
        #[arg(long)]
        owner_name: Option<String>,
        /// Read the owner's password from the first line of stdin (otherwise
        /// the owner gets a single-use password setup token, printed once).
        #[arg(long)]
        password_stdin: bool,
    },
    /// List tenants.
    List,
    /// Show one tenant (by id or slug).
    Show { tenant: String },
    /// Suspend a tenant: its users and keys are refused.
    Suspend { tenant: String },
    /// Resume a suspended tenant.
    Resume { tenant: String },
    /// Delete a tenant and all its data from every store (irreversible).
    Delete {
        tenant: String,
        /// Confirm the irreversible deletion.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand, Debug)]
pub(super) enum UserCommand {
    /// Create a user in a tenant.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: Option<String>,
        /// A role to grant (repeatable); the tenant's default role if none.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Read the password from the first line of stdin (otherwise the user
        /// gets a single-use password setup token, printed once).
        #[arg(long)]
        password_stdin: bool,
    },
    /// List the users of a tenant.
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Disable a user (by id or email) and end all their sessions.
    Disable {
        #[arg(long)]
        tenant: String,
        user: String,
    },
    /// Enable a disabled user.
    Enable {
        #[arg(long)]
        tenant: String,
        user: String,
    },
    /// Issue a single-use password reset token for a user (printed once);
    /// their current password works until the token is used.
    ResetPassword {
        #[arg(long)]
        tenant: String,
        user: String,
    },
    /// Remove a user's MFA authenticator and recovery codes (a lost device,
    /// when no administrator of the tenant can sign in to do it).
    ResetMfa {
        #[arg(long)]
        tenant: String,
        user: String,
    },
    /// Write everything Karen holds about a user (a data subject access
    /// request) as one JSON document.
    Export {
        #[arg(long)]
        tenant: String,
        /// The user's id or email.
        user: String,
        /// Write to this file (created with mode 0600) instead of standard output.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Erase a user (GDPR article 17): their content goes from every store,
    /// the audit trail keeps its events with the user pseudonymised. Cannot
    /// be undone.
    Erase {
        #[arg(long)]
        tenant: String,
        /// The user's id or email.
        user: String,
        /// Keep the documents the user uploaded (for the organisation)
        /// instead of deleting them.
        #[arg(long)]
        keep_documents: bool,
        /// Confirms the erasure (required: it cannot be undone).
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand, Debug)]
pub(super) enum ApiKeyCommand {
    /// Create an API key for a user; the key is printed once.
    Create {
        #[arg(long)]
        tenant: String,
        /// The owner (id or email); the key carries at most their permissions.
        #[arg(long)]
        user: String,
        #[arg(long)]
        name: String,
        /// A permission to grant (repeatable); all of the owner's if none.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Days until the key expires.
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List the API keys of a tenant.
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Revoke an API key at once.
    Revoke {
        #[arg(long)]
        tenant: String,
        key: String,
    },
}

#[derive(Subcommand, Debug)]
pub(super) enum OperatorKeyCommand {
    /// Create an operator key; it is printed once.
    Create {
        #[arg(long)]
        name: String,
    },
    /// List operator keys.
    List,
    /// Revoke an operator key.
    Revoke { id: String },
}

async fn open(config: &Config) -> anyhow::Result<Karen> {
    Karen::open(config.clone(), Arc::new(SystemClock)).await
}

fn read_password() -> anyhow::Result<Password> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(Password::parse(line.trim_end_matches(['\r', '\n']))?)
}

fn all_rows() -> PageRequest {
    PageRequest {
        after: None,
        limit: MAX_LIMIT,
    }
}

pub(super) async fn tenant(config: &Config, command: TenantCommand) -> anyhow::Result<ExitCode> {
    let karen = open(config).await?;
    let tenants = &karen.services.tenants;
    match command {
        TenantCommand::Create {
            slug,
            name,
            plan,
            owner_email,
            owner_name,
            password_stdin,
        } => {
            let owner_password = if password_stdin {
                Some(read_password()?)
            } else {
                None
            };
            let created = tenants
                .create(
                    karen_domain::Actor::System(SystemReason::Cli),
                    NewTenant {
                        slug,
                        name,
                        plan,
                        owner_email,
                        owner_name,
                        owner_password,
                    },
                )
                .await?;
            println!(
                "tenant {} ({}) created; owner {} ({})",
                created.tenant.slug, created.tenant.id, created.owner.email, created.owner.id
            );
            if let Some(setup) = created.password_setup {
                print_password_setup(&setup);
            }
        }
        TenantCommand::List => {
            let mut page = all_rows();
            loop {
                let result = tenants.list(&page).await?;
                for t in &result.items {
                    println!(
                        "{}  {:<24} {:<10} {:<8} {}",
                        t.id,
                        t.slug,
                        t.status.as_str(),
                        t.plan,
                        t.name
                    );
                }
                match result.next_cursor.and_then(|c| c.parse().ok()) {
                    Some(after) => page.after = Some(after),
                    None => break,
                }
            }
        }
        TenantCommand::Show { tenant } => {
            let t = tenants.find(&tenant).await?;
            println!(
                "id:       {}\nslug:     {}\nname:     {}\nplan:     {}\nstatus:   {}\ncreated:  {}\nsettings: {}",
                t.id,
                t.slug,
                t.name,
                t.plan,
                t.status.as_str(),
                t.created_at,
                serde_json::to_string(&t.settings)?
            );
        }
        TenantCommand::Suspend { tenant } => {
            let t = tenants
                .suspend(
                    karen_domain::Actor::System(SystemReason::Cli),
                    tenants.find(&tenant).await?.id,
                )
                .await?;
            println!("tenant {} suspended", t.slug);
        }
        TenantCommand::Resume { tenant } => {
            let t = tenants
                .resume(
                    karen_domain::Actor::System(SystemReason::Cli),
                    tenants.find(&tenant).await?.id,
                )
                .await?;
            println!("tenant {} resumed", t.slug);
        }
        TenantCommand::Delete { tenant, yes } => {
            let found = tenants.find(&tenant).await?;
            if !yes {
                eprintln!(
                    "refusing to delete tenant {} ({}) without --yes: deletion is irreversible",
                    found.slug, found.id
                );
                return Ok(ExitCode::from(2));
            }
            let report = tenants
                .delete(karen_domain::Actor::System(SystemReason::Cli), found.id)
                .await?;
            let rows: u64 = report.rows.rows_by_table.iter().map(|(_, n)| n).sum();
            println!(
                "tenant {} deleted: {rows} rows removed; also removed from: {}",
                found.slug,
                report.namespaces.join(", ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a password token once, with how to use it.
fn print_password_setup(setup: &karen_app::auth::PasswordSetup) {
    let expires_at = setup
        .expires_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| setup.expires_at.to_string());
    println!(
        "password token (shown once, single use, expires {expires_at}): {}",
        setup.token.expose_secret()
    );
    println!(
        "set the password with POST /v1/auth/password {{\"token\": \"…\", \"new_password\": \"…\"}}"
    );
}

async fn tenant_scope(karen: &Karen, tenant: &str) -> anyhow::Result<TenantScope> {
    let id: TenantId = karen.services.tenants.find(tenant).await?.id;
    Ok(TenantScope::system(id, SystemReason::Cli))
}

pub(super) async fn user(config: &Config, command: UserCommand) -> anyhow::Result<ExitCode> {
    let karen = open(config).await?;
    let users = &karen.services.users;
    match command {
        UserCommand::Create {
            tenant,
            email,
            name,
            roles,
            password_stdin,
        } => {
            let scope = tenant_scope(&karen, &tenant).await?;
            let password = if password_stdin {
                Some(read_password()?)
            } else {
                None
            };
            let roles = if roles.is_empty() { None } else { Some(roles) };
            let (user, setup) = users
                .create(
                    Authority::platform(scope),
                    NewUser {
                        email,
                        display_name: name,
                        password,
                        roles,
                    },
                )
                .await?;
            println!(
                "user {} ({}) created with roles {:?}",
                user.email,
                user.id,
                user.roles
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            );
            if let Some(setup) = setup {
                print_password_setup(&setup);
            }
        }
        UserCommand::List { tenant } => {
            let scope = tenant_scope(&karen, &tenant).await?;
            let mut page = all_rows();
            loop {
                let result = users.list(Authority::platform(scope), &page).await?;
                for u in &result.items {
                    let roles: Vec<String> = u.roles.iter().map(ToString::to_string).collect();
                    println!(
                        "{}  {:<32} {:<9} {}",
                        u.id,
                        u.email,
                        u.status.as_str(),
                        roles.join(",")
                    );
                }
                match result.next_cursor.and_then(|c| c.parse().ok()) {
                    Some(after) => page.after = Some(after),
                    None => break,
                }
            }
        }
        UserCommand::Disable { tenant, user } => {
            let scope = tenant_scope(&karen, &tenant).await?;
            let found = users.find(Authority::platform(scope), &user).await?;
            let disabled = users.disable(Authority::platform(scope), found.id).await?;
            println!("user {} disabled; all sessions ended", disabled.email);
        }
        UserCommand::Enable { tenant, user } => {
            let scope = tenant_scope(&karen, &tenant).await?;
            let found = users.find(Authority::platform(scope), &user).await?;
            let enabled = users.enable(Authority::platform(scope), found.id).await?;
            println!("user {} enabled", enabled.email);
        }
        UserCommand::ResetPassword { tenant, user } => {
            let scope = tenant_scope(&karen, &tenant).await?;
            let found = users.find(Authority::platform(scope), &user).await?;
            let setup = users
                .reset_password(Authority::platform(scope), found.id)
                .await?;
            println!("user {}: password reset token issued", found.email);
            print_password_setup(&setup);
        }
        UserCommand::ResetMfa { tenant, user } => {
            let scope = tenant_scope(&karen, &tenant).await?;
            let found = users.find(Authority::platform(scope), &user).await?;
            users
                .reset_mfa(Authority::platform(scope), found.id)
                .await?;
            println!(
                "user {}: authenticator and recovery codes removed",
                found.email
            );
        }
        UserCommand::Erase {
            tenant,
            user,
            keep_documents,
            yes,
        } => {
            if !yes {
                anyhow::bail!("an erasure cannot be undone: add --yes to confirm");
            }
            let scope = tenant_scope(&karen, &tenant).await?;
            let found = users.find(Authority::platform(scope), &user).await?;
            let documents = if keep_documents {
                karen_app::privacy::UploadedDocuments::Keep
            } else {
                karen_app::privacy::UploadedDocuments::Delete
            };
            let report = karen
                .services
                .privacy
                .erase(Authority::platform(scope), found.id, None, documents)
                .await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            eprintln!(
                "user {} erased; the audit trail now calls them {}",
                found.email, report.pseudonym
            );
        }
        UserCommand::Export { tenant, user, out } => {
            let scope = tenant_scope(&karen, &tenant).await?;
            let found = users.find(Authority::platform(scope), &user).await?;
            let export = karen.services.privacy.export(scope, found.id).await?;
            let now = karen.services.clock().now();
            let text = serde_json::to_string_pretty(&karen_http::user_export_json(export, now))?;
            match out {
                Some(path) => {
                    write_private(&path, text.as_bytes())?;
                    eprintln!("wrote {} (user {})", path.display(), found.email);
                }
                None => println!("{text}"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn api_key(config: &Config, command: ApiKeyCommand) -> anyhow::Result<ExitCode> {
    let karen = open(config).await?;
    let keys = &karen.services.api_keys;
    match command {
        ApiKeyCommand::Create {
            tenant,
            user,
            name,
            scopes,
            expires_in_days,
        } => {
            let scope = tenant_scope(&karen, &tenant).await?;
            let owner = karen
                .services
                .users
                .find(Authority::platform(scope), &user)
                .await?;
            let expires_at = expires_in_days.map(|days| {
                karen_domain::Clock::now(&SystemClock) + time::Duration::days(i64::from(days))
            });
            let scopes = if scopes.is_empty() {
                None
            } else {
                Some(scopes)
            };
            let (record, secret) = keys
                .create(
                    Authority::platform(scope),
                    NewApiKey {
                        name,
                        scopes,
                        expires_at,
                        owner: Some(owner.id),
                    },
                )
                .await?;
            println!(
                "API key {} created for {} with scopes {}",
                record.id,
                owner.email,
                record.scopes.names().join(",")
            );
            println!("key (shown once): {}", secret.expose_secret());
        }
        ApiKeyCommand::List { tenant } => {
            let scope = tenant_scope(&karen, &tenant).await?;
            let mut page = all_rows();
            loop {
                let result = keys.list(Authority::platform(scope), true, &page).await?;
                for k in &result.items {
                    let state = if k.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    };
                    println!(
                        "{}  {:<16} {:<8} user={} {}",
                        k.id, k.display_prefix, state, k.user_id, k.name
                    );
                }
                match result.next_cursor.and_then(|c| c.parse().ok()) {
                    Some(after) => page.after = Some(after),
                    None => break,
                }
            }
        }
        ApiKeyCommand::Revoke { tenant, key } => {
            let scope = tenant_scope(&karen, &tenant).await?;
            let id = ApiKeyId::parse(&key)?;
            keys.revoke(Authority::platform(scope), id).await?;
            println!("API key {id} revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn operator_key(
    config: &Config,
    command: OperatorKeyCommand,
) -> anyhow::Result<ExitCode> {
    let karen = open(config).await?;
    let auth = &karen.services.auth;
    match command {
        OperatorKeyCommand::Create { name } => {
            let (record, secret) = auth
                .create_operator_key(karen_domain::Actor::System(SystemReason::Cli), &name)
                .await?;
            println!("operator key {} created", record.id);
            println!("key (shown once): {}", secret.expose_secret());
        }
        OperatorKeyCommand::List => {
            for key in auth.list_operator_keys().await? {
                let state = if key.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                println!("{}  {:<8} {}", key.id, state, key.name);
            }
        }
        OperatorKeyCommand::Revoke { id } => {
            let id = OperatorKeyId::parse(&id)?;
            auth.revoke_operator_key(karen_domain::Actor::System(SystemReason::Cli), id)
                .await?;
            println!("operator key {id} revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `bytes` to a new file readable by its owner only (personal data).
fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {} (it must not exist)", path.display()))?;
    file.write_all(bytes)?;
    Ok(())
}
