//! Shared fixtures: an in-memory SQLite store, the runtime crate's
//! `FakeRuntime` (deterministic, with failure injection), and a core over both.

use std::collections::BTreeMap;
use std::sync::Arc;

use codebox_core::{Core, CoreSettings, Secrets, User};
use codebox_runtime::fake::FakeRuntime;
use codebox_runtime::{Runtime, SandboxLimits, SandboxSpec};
use codebox_store::{SqliteStore, Store};
use codebox_types::{Resources, SandboxId};

pub const API_SECRET: &[u8] = b"api-key-secret-for-tests";
pub const JWT_SECRET: &[u8] = b"jwt-secret-for-tests";

/// A core over a fresh in-memory store and a scripted runtime.
pub struct Fixture {
    pub core: Arc<Core>,
    pub store: Arc<dyn Store>,
    pub runtime: FakeRuntime,
}

pub fn secrets() -> Secrets {
    Secrets {
        api_key_secret: API_SECRET.to_vec(),
        jwt_secret: Some(JWT_SECRET.to_vec()),
    }
}

impl Fixture {
    pub async fn new() -> Self {
        Self::with_settings(CoreSettings::with_defaults(secrets())).await
    }

    pub async fn with_settings(settings: CoreSettings) -> Self {
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open_in_memory()
                .await
                .expect("in-memory SQLite opens"),
        );
        let runtime = FakeRuntime::new();
        let shared: Arc<dyn Runtime> = Arc::new(runtime.clone());
        let core = Core::new(Arc::clone(&store), shared, settings);
        Self {
            core: Arc::new(core),
            store,
            runtime,
        }
    }

    /// Whether the runtime holds `id`.
    pub fn holds(&self, id: &SandboxId) -> bool {
        self.runtime.spec(id).is_some()
    }

    pub async fn held_count(&self) -> usize {
        self.runtime.list().await.expect("the fake lists").len()
    }

    /// A sandbox the runtime holds without any row (a leftover of a crash).
    pub async fn leftover(&self) -> SandboxId {
        let id = SandboxId::generate();
        self.hold(id.clone()).await;
        id
    }

    /// Makes the runtime hold a sandbox with this id, bypassing the core.
    pub async fn hold(&self, id: SandboxId) {
        let spec = SandboxSpec {
            id: id.clone(),
            runtime: "bash".into(),
            resources: Resources::default(),
            limits: SandboxLimits::default(),
            env: BTreeMap::new(),
            network: false,
        };
        self.runtime.create(spec).await.expect("the fake creates");
    }

    pub async fn user(&self, name: &str) -> User {
        self.core
            .create_user(name, false)
            .await
            .expect("creates a user")
    }
}

/// `{"runtime": name}`.
pub fn create(runtime: &str) -> codebox_core::CreateSandboxRequest {
    codebox_core::CreateSandboxRequest {
        runtime: runtime.to_owned(),
        ..Default::default()
    }
}
