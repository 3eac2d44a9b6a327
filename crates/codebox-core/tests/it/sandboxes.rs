use std::collections::BTreeMap;

use codebox_core::{
    CoreError, CreateSandboxRequest, ListSandboxesQuery, PageQuery, RunCommandRequest,
    SetTimeoutRequest,
};
use codebox_types::{Resources, SandboxStatus, TerminationReason};

use crate::support::{create, Fixture};

fn field_of(error: CoreError) -> String {
    match error {
        CoreError::Validation { field, .. } => field,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[tokio::test]
async fn create_get_list_delete() {
    let fixture = Fixture::new().await;
    let alice = fixture.user("alice").await;
    let request = CreateSandboxRequest {
        runtime: "python3.11".into(),
        resources: Some(Resources {
            cpu: 2.0,
            memory: 1024,
        }),
        timeout: Some(600),
        metadata: Some(BTreeMap::from([("team".into(), "a".into())])),
        env_vars: Some(BTreeMap::from([("GREETING".into(), "hi".into())])),
    };
    let created = fixture
        .core
        .create_sandbox(&alice, request)
        .await
        .expect("creates");
    assert_eq!(created.status, SandboxStatus::Running);
    assert_eq!(
        created.runtime, "python3",
        "aliases resolve to the canonical name"
    );
    assert_eq!(created.isolation, "fake");
    assert_eq!(
        (created.expires_at - created.created_at).whole_seconds(),
        600
    );
    let spec = fixture
        .runtime
        .spec(&created.id)
        .expect("runtime got the spec");
    assert_eq!(spec.env.get("GREETING").map(String::as_str), Some("hi"));
    assert_eq!(
        spec.resources,
        Resources {
            cpu: 2.0,
            memory: 1024
        }
    );

    let id = created.id.to_string();
    let fetched = fixture.core.get_sandbox(&alice, &id).await.expect("gets");
    assert_eq!(fetched.id, created.id);
    assert_eq!(fetched.status, SandboxStatus::Running);

    let page = fixture
        .core
        .list_sandboxes(&alice, ListSandboxesQuery::default())
        .await
        .expect("lists");
    assert_eq!(page.items.len(), 1);
    let filtered = fixture
        .core
        .list_sandboxes(
            &alice,
            ListSandboxesQuery {
                metadata: vec![("team".into(), "b".into())],
                ..ListSandboxesQuery::default()
            },
        )
        .await
        .expect("lists");
    assert!(filtered.items.is_empty());

    let ended = fixture
        .core
        .delete_sandbox(&alice, &id)
        .await
        .expect("deletes");
    assert_eq!(ended.status, SandboxStatus::Terminated);
    assert_eq!(ended.termination_reason, Some(TerminationReason::Killed));
    assert!(!fixture.holds(&created.id), "runtime side destroyed");
    let gone = fixture
        .core
        .get_sandbox(&alice, &id)
        .await
        .expect_err("ended");
    assert!(
        matches!(
            gone,
            CoreError::Gone {
                reason: TerminationReason::Killed
            }
        ),
        "{gone:?}"
    );
    let again = fixture
        .core
        .delete_sandbox(&alice, &id)
        .await
        .expect_err("ended");
    assert!(matches!(again, CoreError::Gone { .. }));
    assert_eq!(fixture.core.metrics().sandboxes_active.get(), 0);
}

#[tokio::test]
async fn another_users_sandbox_is_not_found() {
    let fixture = Fixture::new().await;
    let alice = fixture.user("alice").await;
    let mallory = fixture.user("mallory").await;
    let sandbox = fixture
        .core
        .create_sandbox(&alice, create("bash"))
        .await
        .expect("creates");
    let id = sandbox.id.to_string();
    let command = RunCommandRequest {
        cmd: "echo hi".into(),
        ..RunCommandRequest::default()
    };
    let attempts = [
        fixture.core.get_sandbox(&mallory, &id).await.map(|_| ()),
        fixture.core.delete_sandbox(&mallory, &id).await.map(|_| ()),
        fixture
            .core
            .set_timeout(&mallory, &id, SetTimeoutRequest { timeout: 60 })
            .await
            .map(|_| ()),
        fixture
            .core
            .run_command(&mallory, &id, command)
            .await
            .map(|_| ()),
        fixture
            .core
            .list_executions(&mallory, &id, PageQuery::default())
            .await
            .map(|_| ()),
        fixture.core.sandbox_stats(&mallory, &id).await.map(|_| ()),
    ];
    for attempt in attempts {
        assert!(matches!(attempt, Err(CoreError::NotFound)), "{attempt:?}");
    }
    for bad_id in ["", "../../etc", "not-an-id", &"a".repeat(26)] {
        let result = fixture.core.get_sandbox(&alice, bad_id).await;
        assert!(matches!(result, Err(CoreError::NotFound)), "{bad_id:?}");
    }
    let listed = fixture
        .core
        .list_sandboxes(&mallory, ListSandboxesQuery::default())
        .await
        .expect("lists");
    assert!(listed.items.is_empty());
    assert!(
        fixture.holds(&sandbox.id),
        "still alive after mallory's attempts"
    );
}

#[tokio::test]
async fn validation_names_the_field() {
    let fixture = Fixture::new().await;
    let alice = fixture.user("alice").await;
    let cases: Vec<(CreateSandboxRequest, &str)> = vec![
        (create("cobol"), "runtime"),
        (
            CreateSandboxRequest {
                resources: Some(Resources {
                    cpu: 0.05,
                    memory: 512,
                }),
                ..create("bash")
            },
            "resources.cpu",
        ),
        (
            CreateSandboxRequest {
                resources: Some(Resources {
                    cpu: 17.0,
                    memory: 512,
                }),
                ..create("bash")
            },
            "resources.cpu",
        ),
        (
            CreateSandboxRequest {
                resources: Some(Resources {
                    cpu: f64::NAN,
                    memory: 512,
                }),
                ..create("bash")
            },
            "resources.cpu",
        ),
        (
            CreateSandboxRequest {
                resources: Some(Resources {
                    cpu: 1.0,
                    memory: 64,
                }),
                ..create("bash")
            },
            "resources.memory",
        ),
        (
            CreateSandboxRequest {
                resources: Some(Resources {
                    cpu: 1.0,
                    memory: 40_000,
                }),
                ..create("bash")
            },
            "resources.memory",
        ),
        (
            CreateSandboxRequest {
                timeout: Some(0),
                ..create("bash")
            },
            "timeout",
        ),
        (
            CreateSandboxRequest {
                timeout: Some(86_401),
                ..create("bash")
            },
            "timeout",
        ),
        (
            CreateSandboxRequest {
                env_vars: Some(BTreeMap::from([("1BAD".into(), "x".into())])),
                ..create("bash")
            },
            "env_vars.1BAD",
        ),
        (
            CreateSandboxRequest {
                env_vars: Some(BTreeMap::from([("OK".into(), "a\0b".into())])),
                ..create("bash")
            },
            "env_vars.OK",
        ),
        (
            CreateSandboxRequest {
                metadata: Some((0..33).map(|i| (format!("k{i}"), "v".into())).collect()),
                ..create("bash")
            },
            "metadata",
        ),
        (
            CreateSandboxRequest {
                metadata: Some(BTreeMap::from([("k".repeat(65), "v".into())])),
                ..create("bash")
            },
            "metadata.KEY64",
        ),
    ];
    for (request, field) in cases {
        let field = field.replace("KEY64", &"k".repeat(64));
        let error = fixture
            .core
            .create_sandbox(&alice, request.clone())
            .await
            .expect_err("invalid");
        assert_eq!(field_of(error), field, "{request:?}");
    }
    let error = fixture
        .core
        .create_sandbox(&alice, create("cobol"))
        .await
        .expect_err("unknown");
    assert!(
        error
            .to_string()
            .contains("available: bash, node, node20, nodejs, python, python3, python3.11, sh"),
        "{error}"
    );
    assert_eq!(fixture.held_count().await, 0, "nothing created");
    let page = fixture
        .core
        .list_sandboxes(&alice, ListSandboxesQuery::default())
        .await
        .expect("lists");
    assert!(page.items.is_empty(), "no rows for rejected requests");

    let bad_listing = ListSandboxesQuery {
        status: Some("zombie".into()),
        ..ListSandboxesQuery::default()
    };
    assert_eq!(
        field_of(
            fixture
                .core
                .list_sandboxes(&alice, bad_listing)
                .await
                .expect_err("bad")
        ),
        "status"
    );
    let bad_cursor = ListSandboxesQuery {
        cursor: Some("garbage".into()),
        ..ListSandboxesQuery::default()
    };
    let error = fixture
        .core
        .list_sandboxes(&alice, bad_cursor)
        .await
        .expect_err("bad cursor");
    assert!(matches!(error, CoreError::InvalidCursor), "{error:?}");
}

#[tokio::test]
async fn run_command_records_an_execution() {
    let fixture = Fixture::new().await;
    let alice = fixture.user("alice").await;
    let sandbox = fixture
        .core
        .create_sandbox(&alice, create("bash"))
        .await
        .expect("creates");
    let id = sandbox.id.to_string();
    let result = fixture
        .core
        .run_command(
            &alice,
            &id,
            RunCommandRequest {
                cmd: "echo hello".into(),
                ..Default::default()
            },
        )
        .await
        .expect("runs");
    assert_eq!(result.stdout, "hello\n");
    assert_eq!(result.exit_code, 0);
    assert!(!result.timed_out && !result.truncated);
    let failed = fixture
        .core
        .run_command(
            &alice,
            &id,
            RunCommandRequest {
                cmd: "exit 3".into(),
                ..Default::default()
            },
        )
        .await
        .expect("runs");
    assert_eq!(failed.exit_code, 3);
    let slept = fixture
        .core
        .run_command(
            &alice,
            &id,
            RunCommandRequest {
                cmd: "sleep 5".into(),
                timeout: Some(1),
                ..Default::default()
            },
        )
        .await
        .expect("runs");
    assert!(slept.timed_out);
    assert_eq!(slept.exit_code, 137, "128 + SIGKILL");
    let executions = fixture
        .core
        .list_executions(&alice, &id, PageQuery::default())
        .await
        .expect("lists");
    let mut statuses: Vec<&str> = executions
        .items
        .iter()
        .map(|record| record.status.as_str())
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, ["failed", "succeeded", "timed_out"]);
    assert!(executions
        .items
        .iter()
        .all(|record| record.language == "command"));
}

#[tokio::test]
async fn command_limits() {
    let mut settings = codebox_core::CoreSettings::with_defaults(crate::support::secrets());
    settings.limits.max_output_bytes = 100;
    let fixture = Fixture::with_settings(settings).await;
    let alice = fixture.user("alice").await;
    let sandbox = fixture
        .core
        .create_sandbox(&alice, create("bash"))
        .await
        .expect("creates");
    let id = sandbox.id.to_string();
    let limit = fixture.core.settings().limits.max_code_size;
    let huge = RunCommandRequest {
        cmd: "x".repeat(limit as usize + 1),
        ..Default::default()
    };
    let error = fixture
        .core
        .run_command(&alice, &id, huge)
        .await
        .expect_err("too large");
    assert!(
        matches!(error, CoreError::PayloadTooLarge { limit: found } if found == limit),
        "{error:?}"
    );
    let cases = [
        (
            RunCommandRequest {
                cmd: "  ".into(),
                ..Default::default()
            },
            "cmd",
        ),
        (
            RunCommandRequest {
                cmd: "ls".into(),
                timeout: Some(301),
                ..Default::default()
            },
            "timeout",
        ),
        (
            RunCommandRequest {
                cmd: "ls".into(),
                cwd: Some("relative".into()),
                ..Default::default()
            },
            "cwd",
        ),
        (
            RunCommandRequest {
                cmd: "ls".into(),
                env: Some(BTreeMap::from([("A=B".into(), "x".into())])),
                ..Default::default()
            },
            "env.A=B",
        ),
    ];
    for (request, field) in cases {
        let error = fixture
            .core
            .run_command(&alice, &id, request)
            .await
            .expect_err("invalid");
        assert_eq!(field_of(error), field);
    }
    let capped = fixture.core.settings().limits.max_output_bytes as usize;
    let flood = RunCommandRequest {
        cmd: "yes".into(),
        ..Default::default()
    };
    let result = fixture
        .core
        .run_command(&alice, &id, flood)
        .await
        .expect("runs");
    assert!(result.truncated);
    assert_eq!(result.stdout.len(), capped);
}

#[tokio::test]
async fn set_timeout_extends_within_the_hard_cap() {
    let fixture = Fixture::new().await;
    let alice = fixture.user("alice").await;
    let sandbox = fixture
        .core
        .create_sandbox(&alice, create("bash"))
        .await
        .expect("creates");
    let id = sandbox.id.to_string();
    let extended = fixture
        .core
        .set_timeout(&alice, &id, SetTimeoutRequest { timeout: 3600 })
        .await
        .expect("extends");
    assert!(extended.expires_at > sandbox.expires_at);
    let stored = fixture.core.get_sandbox(&alice, &id).await.expect("gets");
    assert_eq!(
        stored.expires_at.unix_timestamp(),
        extended.expires_at.unix_timestamp()
    );
    let error = fixture
        .core
        .set_timeout(&alice, &id, SetTimeoutRequest { timeout: 86_401 })
        .await
        .expect_err("beyond max");
    assert_eq!(field_of(error), "timeout");
}

#[tokio::test]
async fn runtime_losing_a_sandbox_during_exec_is_gone() {
    let fixture = Fixture::new().await;
    let alice = fixture.user("alice").await;
    let sandbox = fixture
        .core
        .create_sandbox(&alice, create("bash"))
        .await
        .expect("creates");
    fixture
        .runtime
        .end_sandbox(&sandbox.id, TerminationReason::AgentLost);
    let error = fixture
        .core
        .run_command(
            &alice,
            sandbox.id.as_str(),
            RunCommandRequest {
                cmd: "ls".into(),
                ..Default::default()
            },
        )
        .await
        .expect_err("lost");
    assert!(
        matches!(
            error,
            CoreError::Gone {
                reason: TerminationReason::AgentLost
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn ready_report_lists_every_dependency() {
    let fixture = Fixture::new().await;
    let report = fixture.core.check_ready().await;
    assert!(report.ready);
    let names: Vec<&str> = report.checks.iter().map(|check| check.name).collect();
    assert_eq!(names, ["database", "runtime"]);
}

#[tokio::test]
async fn env_stdin_cwd_and_limits_reach_the_runtime() {
    let fixture = Fixture::new().await;
    let alice = fixture.user("alice").await;
    let request = CreateSandboxRequest {
        env_vars: Some(BTreeMap::from([("LEVEL".into(), "sandbox".into())])),
        ..create("bash")
    };
    let sandbox = fixture
        .core
        .create_sandbox(&alice, request)
        .await
        .expect("creates");
    let id = sandbox.id.to_string();
    let run = |request: RunCommandRequest| {
        let core = std::sync::Arc::clone(&fixture.core);
        let alice = alice.clone();
        let id = id.clone();
        async move { core.run_command(&alice, &id, request).await.expect("runs") }
    };
    let from_sandbox = run(RunCommandRequest {
        cmd: "env LEVEL".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(from_sandbox.stdout, "sandbox\n");
    let overridden = run(RunCommandRequest {
        cmd: "env LEVEL".into(),
        env: Some(BTreeMap::from([("LEVEL".into(), "exec".into())])),
        ..Default::default()
    })
    .await;
    assert_eq!(overridden.stdout, "exec\n");
    let piped = run(RunCommandRequest {
        cmd: "cat".into(),
        stdin: Some("from stdin".into()),
        cwd: Some("/tmp".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(piped.stdout, "from stdin");
    let (_, last) = fixture.runtime.execs().pop().expect("recorded");
    assert_eq!(last.cwd.as_deref(), Some("/tmp"));
    let limits = &fixture.core.settings().limits;
    assert_eq!(last.timeout, limits.default_exec_timeout);
    assert_eq!(last.output_limit as u64, limits.max_output_bytes);
    let missing = run(RunCommandRequest {
        cmd: "no-such-tool".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(missing.exit_code, 127);
}
