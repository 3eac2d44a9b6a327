//! Sandbox operations on behalf of one user: create, get, list, delete, extend,
//! run a command, list executions, stats; and `/ready`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use codebox_runtime::{Command, ExecRequest, RuntimeError, SandboxSpec, SandboxStats};
use codebox_store::{
    truncate_to_micros, ExecutionRecord, Page, SandboxFilter, SandboxRecord, User,
};
use codebox_types::{ExecutionId, RuntimeInfo, SandboxId, SandboxStatus, TerminationReason};
use time::OffsetDateTime;

use crate::error::CoreError;
use crate::requests::{
    page_limit, parse_status, resolve_runtime, validate_cwd, validate_map, validate_resources,
    validate_seconds, CreateSandboxRequest, ListSandboxesQuery, MapBounds, PageQuery,
    RunCommandRequest, SetTimeoutRequest,
};
use crate::views::{CheckResult, CommandResult, ReadyReport};
use crate::Core;

/// Most `metadata.KEY=VALUE` filters in one listing.
const MAX_METADATA_FILTERS: usize = 16;
/// Each readiness probe gets this long before it counts as down.
const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A create request that passed validation.
struct ValidatedCreate {
    spec: SandboxSpec,
    lifetime: Duration,
    metadata: BTreeMap<String, String>,
}

impl Core {
    /// The runtimes sandboxes can be created from.
    pub fn runtimes(&self) -> Vec<RuntimeInfo> {
        self.runtime.runtimes()
    }

    /// Creates a sandbox: the row is inserted (`creating`, atomically against the
    /// user's quota) BEFORE the runtime creates, so a crash in between is found
    /// by reconcile; then the row becomes `running`.
    pub async fn create_sandbox(
        &self,
        user: &User,
        request: CreateSandboxRequest,
    ) -> Result<SandboxRecord, CoreError> {
        let started = Instant::now();
        let validated = self.validate_create(request)?;
        let record = self.insert_creating(user, &validated).await?;
        match self.runtime.create(validated.spec).await {
            Ok(()) => self.finish_create(record, started).await,
            Err(error) => Err(self.fail_create(&record, error).await),
        }
    }

    fn validate_create(&self, request: CreateSandboxRequest) -> Result<ValidatedCreate, CoreError> {
        let limits = &self.settings.limits;
        let runtime = resolve_runtime(&request.runtime, &self.runtime.runtimes())?;
        let resources = validate_resources(request.resources, limits)?;
        let lifetime = validate_seconds(
            "timeout",
            request.timeout,
            limits.default_sandbox_lifetime,
            limits.max_sandbox_lifetime,
        )?;
        let metadata = validate_map("metadata", request.metadata, self.metadata_bounds())?;
        let env = validate_map("env_vars", request.env_vars, self.env_bounds())?;
        let spec = SandboxSpec {
            id: SandboxId::generate(),
            runtime: runtime.name,
            resources,
            limits: self.settings.sandbox_limits.clone(),
            env,
            network: self.settings.network,
        };
        Ok(ValidatedCreate {
            spec,
            lifetime,
            metadata,
        })
    }

    pub(crate) fn metadata_bounds(&self) -> MapBounds {
        let limits = &self.settings.limits;
        MapBounds {
            max_entries: limits.max_metadata_entries,
            max_key_len: limits.max_metadata_key_len,
            max_value_len: limits.max_metadata_value_len,
            env_names: false,
        }
    }

    pub(crate) fn env_bounds(&self) -> MapBounds {
        let limits = &self.settings.limits;
        MapBounds {
            max_entries: limits.max_env_vars,
            max_key_len: limits.max_env_key_len,
            max_value_len: limits.max_env_value_len,
            env_names: true,
        }
    }

    async fn insert_creating(
        &self,
        user: &User,
        validated: &ValidatedCreate,
    ) -> Result<SandboxRecord, CoreError> {
        let spec = &validated.spec;
        // Stores keep microseconds: answer with what a later read will show.
        let now = truncate_to_micros(OffsetDateTime::now_utc());
        let record = SandboxRecord {
            id: spec.id.clone(),
            user_id: user.id.clone(),
            runtime: spec.runtime.clone(),
            resources: spec.resources,
            isolation: self.runtime.isolation().to_owned(),
            status: SandboxStatus::Creating,
            termination_reason: None,
            metadata: validated.metadata.clone(),
            created_at: now,
            expires_at: now + validated.lifetime,
            ended_at: None,
            node: None,
        };
        let limit = self.settings.limits.max_sandboxes_per_user;
        if let Err(error) = self.store.insert_sandbox(&record, limit).await {
            let error = CoreError::from(error);
            if let CoreError::QuotaExceeded { limit, .. } = error {
                tracing::warn!(audit = "quota_exceeded", user_id = %user.id, limit, "sandbox quota exhausted");
            } else {
                self.metrics.creation_failed("database");
                tracing::error!(user_id = %user.id, error = %error_chain(&error), "sandbox creation failed");
            }
            return Err(error);
        }
        self.metrics.sandboxes_active.inc();
        Ok(record)
    }

    async fn finish_create(
        &self,
        mut record: SandboxRecord,
        started: Instant,
    ) -> Result<SandboxRecord, CoreError> {
        match self.store.mark_sandbox_running(&record.id).await {
            Ok(true) => {}
            Ok(false) => {
                // Deleted (or expired) while it was being created: undo the
                // runtime side and report the reason the row ended with.
                self.destroy_quietly(&record.id).await;
                return Err(self.gone_error(&record.id).await);
            }
            Err(error) => {
                self.destroy_quietly(&record.id).await;
                self.end_quietly(
                    &record.id,
                    SandboxStatus::Failed,
                    TerminationReason::CreateFailed,
                )
                .await;
                self.metrics.creation_failed("database");
                return Err(error.into());
            }
        }
        record.status = SandboxStatus::Running;
        let elapsed = started.elapsed();
        self.metrics.create_duration.observe(elapsed.as_secs_f64());
        tracing::info!(
            sandbox_id = %record.id,
            user_id = %record.user_id,
            runtime = %record.runtime,
            duration_ms = elapsed.as_millis() as u64,
            "sandbox created"
        );
        Ok(record)
    }

    async fn fail_create(&self, record: &SandboxRecord, error: RuntimeError) -> CoreError {
        let reason = match error {
            RuntimeError::AtCapacity { .. } => "capacity",
            _ => "runtime",
        };
        self.metrics.creation_failed(reason);
        tracing::error!(
            sandbox_id = %record.id,
            user_id = %record.user_id,
            runtime = %record.runtime,
            error = %error_chain(&error),
            "sandbox creation failed"
        );
        self.end_quietly(
            &record.id,
            SandboxStatus::Failed,
            TerminationReason::CreateFailed,
        )
        .await;
        match error {
            RuntimeError::NotFound { .. } | RuntimeError::AgentLost { .. } => {
                CoreError::internal(error)
            }
            other => other.into(),
        }
    }

    /// A live sandbox of `user`. Unknown, malformed or foreign ids are all
    /// `NotFound`; an ended one is `Gone` with its reason.
    pub async fn get_sandbox(&self, user: &User, id: &str) -> Result<SandboxRecord, CoreError> {
        let record = self.owned(user, id).await?;
        if !record.status.is_live() {
            return Err(gone(&record));
        }
        if record.expires_at <= OffsetDateTime::now_utc() {
            // The reaper has not run yet; do its work now so the answer is exact.
            self.expire(&record.id).await;
            return Err(self.gone_error(&record.id).await);
        }
        Ok(record)
    }

    /// The user's sandbox row in any state (`NotFound` otherwise).
    pub(crate) async fn owned(&self, user: &User, id: &str) -> Result<SandboxRecord, CoreError> {
        let id: SandboxId = id.parse().map_err(|_| CoreError::NotFound)?;
        match self.store.get_sandbox(&id).await? {
            Some(record) if record.user_id == user.id => Ok(record),
            _ => Err(CoreError::NotFound),
        }
    }

    /// The user's sandboxes, newest first, filtered and paginated.
    pub async fn list_sandboxes(
        &self,
        user: &User,
        query: ListSandboxesQuery,
    ) -> Result<Page<SandboxRecord>, CoreError> {
        let limit = page_limit(query.limit)?;
        let status = parse_status(query.status.as_deref())?;
        if query.metadata.len() > MAX_METADATA_FILTERS {
            return Err(CoreError::validation(
                "metadata",
                format!("at most {MAX_METADATA_FILTERS} metadata filters"),
            ));
        }
        let filter = SandboxFilter {
            user_id: user.id.clone(),
            status,
            metadata: query.metadata,
        };
        Ok(self
            .store
            .list_sandboxes(&filter, query.cursor.as_deref(), limit)
            .await?)
    }

    /// Kills the sandbox, records it as `killed` and returns the final row.
    pub async fn delete_sandbox(&self, user: &User, id: &str) -> Result<SandboxRecord, CoreError> {
        let record = self.owned(user, id).await?;
        if !record.status.is_live() {
            return Err(gone(&record));
        }
        self.destroy(&record.id).await?;
        let ended = self
            .end(
                &record.id,
                SandboxStatus::Terminated,
                TerminationReason::Killed,
            )
            .await?;
        if !ended {
            return Err(self.gone_error(&record.id).await);
        }
        tracing::info!(audit = "sandbox_killed", sandbox_id = %record.id, user_id = %user.id, "sandbox deleted");
        match self.store.get_sandbox(&record.id).await? {
            Some(ended) => Ok(ended),
            None => Err(CoreError::NotFound),
        }
    }

    /// The sandbox now expires `timeout` seconds from now, never beyond
    /// `created_at + max_sandbox_lifetime`.
    pub async fn set_timeout(
        &self,
        user: &User,
        id: &str,
        request: SetTimeoutRequest,
    ) -> Result<SandboxRecord, CoreError> {
        let limits = &self.settings.limits;
        let lifetime = validate_seconds(
            "timeout",
            Some(request.timeout),
            limits.default_sandbox_lifetime,
            limits.max_sandbox_lifetime,
        )?;
        let mut record = self.get_sandbox(user, id).await?;
        let expires_at = truncate_to_micros(OffsetDateTime::now_utc() + lifetime);
        if expires_at > record.created_at + limits.max_sandbox_lifetime {
            return Err(CoreError::validation(
                "timeout",
                format!(
                    "a sandbox lives at most {} seconds in total",
                    limits.max_sandbox_lifetime.as_secs()
                ),
            ));
        }
        if !self
            .store
            .set_sandbox_expiry(&record.id, expires_at)
            .await?
        {
            return Err(self.gone_error(&record.id).await);
        }
        record.expires_at = expires_at;
        Ok(record)
    }

    /// Runs `bash -c cmd` as `user` in a running sandbox and records the execution.
    pub async fn run_command(
        &self,
        user: &User,
        id: &str,
        request: RunCommandRequest,
    ) -> Result<CommandResult, CoreError> {
        let command_text = request.cmd.clone();
        let (exec, code_size) = self.validate_command(request)?;
        let record = self.get_sandbox(user, id).await?;
        if record.status != SandboxStatus::Running {
            return Err(CoreError::Conflict {
                message: "the sandbox is still being created".to_owned(),
            });
        }
        let output = match self.runtime.exec(&record.id, exec).await {
            Ok(stream) => stream.collect().await,
            Err(error) => Err(error),
        };
        let output = match output {
            Ok(output) => output,
            Err(error) => return Err(self.exec_failed(&record.id, error).await),
        };
        let result = command_result(output);
        let kept_code = self.settings.retention.store_code.then_some(command_text);
        self.record_execution(&record.id, &result, code_size, kept_code)
            .await;
        Ok(result)
    }

    fn validate_command(
        &self,
        request: RunCommandRequest,
    ) -> Result<(ExecRequest, u64), CoreError> {
        let limits = &self.settings.limits;
        let code_size = request.cmd.len() as u64;
        let stdin_size = request.stdin.as_ref().map_or(0, |stdin| stdin.len() as u64);
        if code_size > limits.max_code_size || stdin_size > limits.max_code_size {
            return Err(CoreError::PayloadTooLarge {
                limit: limits.max_code_size,
            });
        }
        if request.cmd.trim().is_empty() || request.cmd.contains('\0') {
            return Err(CoreError::validation(
                "cmd",
                "must be a non-empty command without NUL",
            ));
        }
        let timeout = validate_seconds(
            "timeout",
            request.timeout,
            limits.default_exec_timeout,
            limits.max_exec_timeout,
        )?;
        let env = validate_map("env", request.env, self.env_bounds())?;
        let exec = ExecRequest {
            command: Command::Shell(request.cmd),
            env,
            cwd: validate_cwd(request.cwd)?,
            stdin: request.stdin.map(String::into_bytes),
            timeout,
            output_limit: usize::try_from(limits.max_output_bytes).unwrap_or(usize::MAX),
        };
        Ok((exec, code_size))
    }

    /// An exec that failed because the sandbox went away ends it (the first
    /// reason recorded wins, so a runtime-reported OOM is kept).
    pub(crate) async fn exec_failed(&self, id: &SandboxId, error: RuntimeError) -> CoreError {
        match error {
            RuntimeError::NotFound { .. } | RuntimeError::AgentLost { .. } => {
                tracing::warn!(sandbox_id = %id, error = %error_chain(&error), "sandbox lost during exec");
                self.destroy_quietly(id).await;
                self.end_quietly(id, SandboxStatus::Terminated, TerminationReason::AgentLost)
                    .await;
                self.gone_error(id).await
            }
            other => other.into(),
        }
    }

    /// Records a command; with `code` (kept when `retention.store_code` is on)
    /// also its capped output.
    async fn record_execution(
        &self,
        id: &SandboxId,
        result: &CommandResult,
        code_size: u64,
        code: Option<String>,
    ) {
        let output = code.as_ref().and_then(|_| {
            let mut kept = crate::code::KeptOutput::default();
            kept.stdout(&result.stdout);
            kept.stderr(&result.stderr);
            kept.to_json(result.truncated)
        });
        let status = if result.timed_out {
            "timed_out"
        } else if result.exit_code == 0 {
            "succeeded"
        } else {
            "failed"
        };
        let record = ExecutionRecord {
            id: ExecutionId::generate(),
            sandbox_id: id.clone(),
            context_id: None,
            language: "command".to_owned(),
            status: status.to_owned(),
            exit_code: Some(result.exit_code),
            execution_count: None,
            duration_ms: result.duration_ms,
            code_size,
            created_at: OffsetDateTime::now_utc(),
            code,
            output,
        };
        // The command already ran; losing its history row must not turn its
        // result into an error.
        if let Err(error) = self.store.insert_execution(&record).await {
            tracing::error!(sandbox_id = %id, error = %error_chain(&error), "recording an execution failed");
        }
    }

    /// Executions of one of the user's sandboxes (ended ones included).
    pub async fn list_executions(
        &self,
        user: &User,
        id: &str,
        query: PageQuery,
    ) -> Result<Page<ExecutionRecord>, CoreError> {
        let limit = page_limit(query.limit)?;
        let record = self.owned(user, id).await?;
        Ok(self
            .store
            .list_executions(&record.id, query.cursor.as_deref(), limit)
            .await?)
    }

    /// Resource usage of a running sandbox.
    pub async fn sandbox_stats(&self, user: &User, id: &str) -> Result<SandboxStats, CoreError> {
        let record = self.get_sandbox(user, id).await?;
        match self.runtime.stats(&record.id).await {
            Ok(stats) => Ok(stats),
            Err(error) => Err(self.exec_failed(&record.id, error).await),
        }
    }

    /// Database, extra health checks (Redis) and runtime, each bounded in time.
    pub async fn check_ready(&self) -> ReadyReport {
        let database = async { self.store.ping().await.map_err(|error| error_chain(&error)) };
        let mut checks = vec![probe("database", database).await];
        for check in &self.health_checks {
            let result = async { check.check().await.map_err(|error| error_chain(&*error)) };
            checks.push(probe(check.name(), result).await);
        }
        let runtime = async {
            self.runtime
                .check_ready()
                .await
                .map_err(|error| error_chain(&error))
        };
        checks.push(probe("runtime", runtime).await);
        ReadyReport {
            ready: checks.iter().all(|check| check.ok),
            checks,
        }
    }

    /// Destroys the runtime side; an already-gone sandbox is fine.
    pub(crate) async fn destroy(&self, id: &SandboxId) -> Result<(), CoreError> {
        match self.runtime.destroy(id).await {
            Ok(()) | Err(RuntimeError::NotFound { .. }) => Ok(()),
            Err(error) => Err(CoreError::internal(error)),
        }
    }

    pub(crate) async fn destroy_quietly(&self, id: &SandboxId) {
        if let Err(error) = self.destroy(id).await {
            tracing::error!(sandbox_id = %id, error = %error_chain(&error), "destroying a sandbox failed");
        }
    }

    /// Ends a live row; `Ok(false)` when it had already ended. Keeps the
    /// active gauge in step with the rows.
    pub(crate) async fn end(
        &self,
        id: &SandboxId,
        status: SandboxStatus,
        reason: TerminationReason,
    ) -> Result<bool, CoreError> {
        let ended = self
            .store
            .end_sandbox(id, status, reason, OffsetDateTime::now_utc())
            .await;
        match ended {
            Ok(true) => {
                self.metrics.sandboxes_active.dec();
                tracing::info!(sandbox_id = %id, reason = %reason, "sandbox ended");
                Ok(true)
            }
            Ok(false) => Ok(false),
            Err(error) => {
                tracing::error!(sandbox_id = %id, error = %error_chain(&error), "ending a sandbox failed");
                Err(error.into())
            }
        }
    }

    /// [`Core::end`] where a failure needs no handling beyond its log line (the
    /// row stays live and the reaper or reconcile retries).
    pub(crate) async fn end_quietly(
        &self,
        id: &SandboxId,
        status: SandboxStatus,
        reason: TerminationReason,
    ) {
        let _ = self.end(id, status, reason).await;
    }

    /// Destroys an expired sandbox and ends it with `timeout`.
    pub(crate) async fn expire(&self, id: &SandboxId) {
        self.destroy_quietly(id).await;
        self.end_quietly(id, SandboxStatus::Terminated, TerminationReason::Timeout)
            .await;
    }

    /// `Gone` with the reason stored for `id` (re-read after a lost race).
    async fn gone_error(&self, id: &SandboxId) -> CoreError {
        match self.store.get_sandbox(id).await {
            // Ending it failed (already logged): the row is still live.
            Ok(Some(record)) if record.status.is_live() => CoreError::Unavailable {
                retry_after: crate::error::DEFAULT_RETRY_AFTER,
                source: "the sandbox could not be ended".into(),
            },
            Ok(Some(record)) => gone(&record),
            Ok(None) => CoreError::NotFound,
            Err(error) => error.into(),
        }
    }
}

fn gone(record: &SandboxRecord) -> CoreError {
    CoreError::Gone {
        reason: record
            .termination_reason
            .unwrap_or(TerminationReason::Killed),
    }
}

fn command_result(output: codebox_runtime::ExecOutput) -> CommandResult {
    let exit = output.exit.unwrap_or(codebox_runtime::ExecExit {
        exit_code: None,
        signal: None,
        timed_out: false,
        oom_killed: false,
        stdout_truncated: false,
        stderr_truncated: false,
        duration: Duration::ZERO,
    });
    let exit_code = match (exit.exit_code, exit.signal) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => -1,
    };
    CommandResult {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        exit_code,
        timed_out: exit.timed_out,
        truncated: exit.stdout_truncated || exit.stderr_truncated,
        duration_ms: u64::try_from(exit.duration.as_millis()).unwrap_or(u64::MAX),
    }
}

async fn probe(
    name: &'static str,
    check: impl std::future::Future<Output = Result<(), String>>,
) -> CheckResult {
    let error = match tokio::time::timeout(READY_PROBE_TIMEOUT, check).await {
        Ok(Ok(())) => None,
        Ok(Err(error)) => {
            tracing::warn!(check = name, %error, "readiness check failed");
            Some("unavailable".to_owned())
        }
        Err(_) => {
            tracing::warn!(check = name, "readiness check timed out");
            Some("timed out".to_owned())
        }
    };
    CheckResult {
        name,
        ok: error.is_none(),
        error,
    }
}

/// An error and its sources on one line, for logs only.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
