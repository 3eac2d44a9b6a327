//! The sandbox lifecycle of codebox: create under an atomic per-user quota,
//! ownership checks, commands, expiry, reconcile after a restart, shutdown; and
//! accounts (users, API keys, JWTs); stateful code execution in contexts.
//!
//! Written only against the [`Store`] and [`Runtime`] traits: this crate knows
//! nothing of HTTP, SQL or Linux. The HTTP layer calls [`Core`]'s methods with
//! an authenticated [`User`] and maps [`CoreError`] to responses. Every sandbox
//! operation is scoped to that user: another user's sandbox is `NotFound`,
//! exactly like an unknown id.

use std::sync::Arc;

use async_trait::async_trait;
use codebox_runtime::Runtime;
use codebox_store::Store;

mod auth;
mod code;
mod code_views;
mod e2b;
mod envd;
mod error;
mod files;
mod jobs;
mod metrics;
mod processes;
mod pty;
mod requests;
mod sandboxes;
mod settings;
mod views;

pub use auth::{sign_jwt, verify_jwt, Accounts, Claims, API_KEY_PREFIX};
pub use code::{
    default_context_id, parse_language, CreateContextRequest, ExecuteRequest, Execution, Idle,
    DEFAULT_CONTEXT_PREFIX, MAX_KEPT_OUTPUT_BYTES,
};
pub use code_views::{
    outcome_name, ContextView, EndView, ErrorView, ExecuteView, ExecutionEvent, LogsView,
    ResultView, Utf8Chunks,
};
pub use codebox_store::{ApiKeyRecord, ExecutionRecord, Page, SandboxRecord, User};
pub use error::{BoxError, CoreError, DEFAULT_RETRY_AFTER};
pub use files::{
    validate_path, FileEntryView, ListingView, MakeDirRequest, MoveRequest, UploadView,
    MAX_LIST_DEPTH, MAX_PATH_BYTES,
};
pub use metrics::{CoreMetrics, FailureLabels, FAILURE_REASONS};
pub use processes::{
    parse_pid, ProcessEvent, ProcessOutput, ProcessView, SignalRequest, StartProcessRequest,
    MAX_TAG_BYTES,
};
pub use pty::{
    Pty, PtyEvent, PtyExit, PtyInput, PtyOutput, PtyRequest, DEFAULT_PTY_COLS, DEFAULT_PTY_ROWS,
};
pub use requests::{
    is_env_name, CreateSandboxRequest, ListSandboxesQuery, PageQuery, RunCommandRequest,
    SetTimeoutRequest, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE,
};
pub use settings::{CoreLimits, CoreSettings, RetentionSettings, Secrets};
pub use views::{
    CheckResult, CommandResult, ExecutionView, ReadyReport, ReconcileReport, SandboxMetricsView,
    SandboxView,
};

/// A dependency probed by `/ready` besides the store and the runtime (Redis).
#[async_trait]
pub trait HealthCheck: Send + Sync + 'static {
    /// Short name shown in the readiness report, e.g. `redis`.
    fn name(&self) -> &'static str;
    async fn check(&self) -> Result<(), BoxError>;
}

/// The lifecycle core. Cheap to share behind an `Arc`.
pub struct Core {
    store: Arc<dyn Store>,
    runtime: Arc<dyn Runtime>,
    settings: CoreSettings,
    accounts: Accounts,
    metrics: CoreMetrics,
    health_checks: Vec<Arc<dyn HealthCheck>>,
    context_gates: code::ContextGates,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("isolation", &self.runtime.isolation())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Core {
    pub fn new(store: Arc<dyn Store>, runtime: Arc<dyn Runtime>, settings: CoreSettings) -> Core {
        let accounts = Accounts::new(
            Arc::clone(&store),
            settings.secrets.clone(),
            settings.jwt_leeway,
        );
        Core {
            store,
            runtime,
            settings,
            accounts,
            metrics: CoreMetrics::new(),
            health_checks: Vec::new(),
            context_gates: code::ContextGates::default(),
        }
    }

    /// Adds a dependency to the readiness report (e.g. Redis when configured).
    pub fn with_health_check(mut self, check: Arc<dyn HealthCheck>) -> Core {
        self.health_checks.push(check);
        self
    }

    pub fn metrics(&self) -> &CoreMetrics {
        &self.metrics
    }

    pub fn settings(&self) -> &CoreSettings {
        &self.settings
    }

    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    /// The user of a live API key (`X-API-Key`).
    pub async fn authenticate_api_key(&self, key: &str) -> Result<User, CoreError> {
        self.accounts.authenticate_api_key(key).await
    }

    /// The user of a valid HS256 JWT (`Authorization: Bearer`).
    pub async fn authenticate_jwt(&self, token: &str) -> Result<User, CoreError> {
        self.accounts.authenticate_jwt(token).await
    }

    /// A new API key for `user`: the plaintext (show it once) and its record.
    pub async fn create_api_key(
        &self,
        user: &User,
        name: Option<String>,
    ) -> Result<(String, ApiKeyRecord), CoreError> {
        self.accounts.create_api_key(user, name).await
    }

    pub async fn create_user(&self, name: &str, is_admin: bool) -> Result<User, CoreError> {
        self.accounts.create_user(name, is_admin).await
    }
}
