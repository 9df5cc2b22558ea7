//! Per-tenant directories under the data dir. Embedded stores (vector and
//! text indexes, uploaded files) keep each tenant's state in its own directory,
//! whose path comes from [`TenantDirectories::path`] alone (tenancy rule 1).

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use karen_domain::ports::TenantNamespace;
use karen_domain::{Error, Result, TenantId};

/// The root of all tenant directories.
#[derive(Debug, Clone)]
pub struct TenantDirectories {
    root: PathBuf,
}

fn unavailable(path: &Path, error: std::io::Error) -> Error {
    Error::Unavailable {
        component: "data directory",
        detail: format!("{}: {error}", path.display()),
    }
}

impl TenantDirectories {
    /// Tenant directories under `data_dir/tenants`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            root: data_dir.join("tenants"),
        }
    }

    /// The directory of one tenant: `<data_dir>/tenants/<tenant uuid>`.
    pub fn path(&self, tenant: TenantId) -> PathBuf {
        self.root.join(tenant.to_string())
    }
}

#[async_trait]
impl TenantNamespace for TenantDirectories {
    fn name(&self) -> &'static str {
        "tenant directory"
    }

    async fn provision(&self, tenant: TenantId) -> Result<()> {
        let path = self.path(tenant);
        tokio::fs::create_dir_all(&path)
            .await
            .map_err(|e| unavailable(&path, e))
    }

    async fn destroy(&self, tenant: TenantId) -> Result<()> {
        let path = self.path(tenant);
        match tokio::fs::remove_dir_all(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(unavailable(&path, e)),
        }
    }

    async fn holds_data(&self, tenant: TenantId) -> Result<bool> {
        let path = self.path(tenant);
        tokio::fs::try_exists(&path)
            .await
            .map_err(|e| unavailable(&path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn provision_and_destroy_are_idempotent() {
        let root = std::env::temp_dir().join(format!("karen-files-{}", TenantId::generate()));
        let dirs = TenantDirectories::new(&root);
        let tenant = TenantId::generate();
        assert!(!dirs.holds_data(tenant).await.unwrap());
        dirs.provision(tenant).await.unwrap();
        dirs.provision(tenant).await.unwrap();
        tokio::fs::write(dirs.path(tenant).join("index.bin"), b"x")
            .await
            .unwrap();
        assert!(dirs.holds_data(tenant).await.unwrap());
        dirs.destroy(tenant).await.unwrap();
        dirs.destroy(tenant).await.unwrap();
        assert!(!dirs.holds_data(tenant).await.unwrap());
        let _ = std::fs::remove_dir_all(root);
    }
}
