//! Stateful code execution through the core, over the fake runtime's streaming
//! contexts (see `codebox_runtime::fake` for the language it interprets).

use codebox_core::{
    CoreError, CreateContextRequest, ExecuteRequest, ExecuteView, ExecutionEvent, PageQuery, User,
};

use crate::support::{create, Fixture};

fn code(text: &str) -> ExecuteRequest {
    ExecuteRequest {
        code: text.to_owned(),
        ..ExecuteRequest::default()
    }
}

async fn sandbox(fixture: &Fixture, user: &User) -> String {
    let record = fixture
        .core
        .create_sandbox(user, create("python3"))
        .await
        .expect("creates");
    record.id.to_string()
}

async fn run(fixture: &Fixture, user: &User, id: &str, request: ExecuteRequest) -> ExecuteView {
    let execution = fixture
        .core
        .execute_code(user, id, request)
        .await
        .expect("starts");
    execution.collect().await.expect("collects")
}

async fn executions(
    fixture: &Fixture,
    user: &User,
    id: &str,
) -> Vec<codebox_core::ExecutionRecord> {
    fixture
        .core
        .list_executions(user, id, PageQuery::default())
        .await
        .expect("lists")
        .items
}

#[tokio::test]
async fn state_persists_in_the_default_context_and_is_recorded() {
    let fixture = Fixture::new().await;
    let alice = fixture.user("alice").await;
    let id = sandbox(&fixture, &alice).await;
    let first = run(&fixture, &alice, &id, code("x = 1")).await;
    assert_eq!(first.text, None);
    assert_eq!(first.context_id, "default-python");
    let second = run(&fixture, &alice, &id, code("print('hi')\nx + 1")).await;
    assert_eq!(second.text.as_deref(), Some("2"));
    assert_eq!(second.execution_count, 2);
    assert_eq!(second.outcome, "ok");
    assert_eq!(second.logs.stdout, vec!["hi\n".to_owned()]);
    assert!(second.results[0].is_main_result);
    assert!(second.error.is_none());
    let records = executions(&fixture, &alice, &id).await;
    assert_eq!(records.len(), 2);
    let newest = records
        .iter()
        .find(|r| r.id.to_string() == second.execution_id)
        .expect("recorded");
    assert_eq!(newest.language, "python");
    assert_eq!(newest.status, "succeeded");
    assert_eq!(newest.context_id.as_deref(), Some("default-python"));
    assert_eq!(newest.execution_count, Some(2));
    assert_eq!(newest.code_size, "print('hi')\nx + 1".len() as u64);
}

#[tokio::test]
async fn code_and_output_are_kept_only_when_configured() {
    // Off by default: only the size.
    let fixture = Fixture::new().await;
    let alice = fixture.user("alice").await;
    let id = sandbox(&fixture, &alice).await;
    run(&fixture, &alice, &id, code("print('hi')\n1 + 1")).await;
    let records = executions(&fixture, &alice, &id).await;
    assert_eq!(records[0].code, None);
    assert_eq!(records[0].output, None);

    let mut settings = codebox_core::CoreSettings::with_defaults(crate::support::secrets());
    settings.retention.store_code = true;
    let fixture = Fixture::with_settings(settings).await;
    let alice = fixture.user("alice").await;
    let id = sandbox(&fixture, &alice).await;
    run(&fixture, &alice, &id, code("print('hi')\n1 + 1")).await;
    run(&fixture, &alice, &id, code("1/0")).await;
    let flood = format!("print('{}')", "y".repeat(100_000));
    run(&fixture, &alice, &id, code(&flood)).await;
    let records = executions(&fixture, &alice, &id).await;
    let output = |index: usize| -> serde_json::Value {
        serde_json::from_str(records[index].output.as_deref().expect("kept")).expect("JSON")
    };
    // Newest first: the flood, the error, the first.
    assert_eq!(records[2].code.as_deref(), Some("print('hi')\n1 + 1"));
    assert_eq!(output(2)["stdout"], "hi\n");
    assert_eq!(output(2)["text"], "2");
    assert_eq!(output(2)["truncated"], false);
    assert_eq!(output(1)["error"]["name"], "ZeroDivisionError");
    let flooded = output(0);
    assert_eq!(flooded["truncated"], true);
    assert_eq!(
        flooded["stdout"].as_str().expect("text").len(),
        codebox_core::MAX_KEPT_OUTPUT_BYTES
    );
    let view = codebox_core::ExecutionView::from(records[2].clone());
    let json = serde_json::to_value(&view).expect("serialises");
    assert_eq!(json["code"], "print('hi')\n1 + 1");
    assert_eq!(json["output"]["stdout"], "hi\n");
}

#[tokio::test]
async fn errors_carry_name_value_and_traceback() {
    let fixture = Fixture::new().await;
    let alice = fixture.user("alice").await;
    let id = sandbox(&fixture, &alice).await;
    let view = run(&fixture, &alice, &id, code("1/0")).await;
    let error = view.error.expect("an error");
    assert_eq!(error.name, "ZeroDivisionError");
    assert!(error.traceback.contains("Traceback"), "{}", error.traceback);
    assert_eq!(view.outcome, "error");
    assert_eq!(executions(&fixture, &alice, &id).await[0].status, "failed");
}

#[tokio::test]
async fn requests_are_validated() {
    let fixture = Fixture::new().await;
    let alice = fixture.user("alice").await;
    let id = sandbox(&fixture, &alice).await;
    let limit = fixture.core.settings().limits.max_code_size as usize;
    let big = code(&"x".repeat(limit + 1));
    let error = fixture
        .core
        .execute_code(&alice, &id, big)
        .await
        .expect_err("too big");
    assert!(
        matches!(error, CoreError::PayloadTooLarge { .. }),
        "{error:?}"
    );
    let cases = [
        (
            "language",
            ExecuteRequest {
                language: Some("ruby".into()),
                ..code("1")
            },
        ),
        (
            "timeout",
            ExecuteRequest {
                timeout: Some(0),
                ..code("1")
            },
        ),
        ("code", code("a\0b")),
        (
            "env_vars",
            ExecuteRequest {
                env_vars: Some([("1BAD".to_owned(), "v".to_owned())].into()),
                ..code("1")
            },
        ),
    ];
    for (field, request) in cases {
        match fixture.core.execute_code(&alice, &id, request).await {
            Err(CoreError::Validation { field: got, .. }) => {
                assert!(got.starts_with(field), "{got}")
            }
            other => panic!("{field}: expected a validation error, got {other:?}"),
        }
    }
    let unknown = ExecuteRequest {
        context_id: Some("ctx-nope".into()),
        ..code("1")
    };
    let error = fixture
        .core
        .execute_code(&alice, &id, unknown)
        .await
        .expect_err("unknown");
    assert!(matches!(error, CoreError::ContextNotFound), "{error:?}");
    assert!(executions(&fixture, &alice, &id).await.is_empty());
}

#[tokio::test]
async fn other_users_sandbox_is_not_found() {
    let fixture = Fixture::new().await;
    let alice = fixture.user("alice").await;
    let bob = fixture.user("bob").await;
    let id = sandbox(&fixture, &alice).await;
    let error = fixture
        .core
        .execute_code(&bob, &id, code("1"))
        .await
        .expect_err("foreign");
    assert!(matches!(error, CoreError::NotFound), "{error:?}");
    let error = fixture
        .core
        .create_context(&bob, &id, CreateContextRequest::default())
        .await
        .expect_err("foreign");
    assert!(matches!(error, CoreError::NotFound), "{error:?}");
    for result in [
        fixture
            .core
            .destroy_context(&bob, &id, "default-python")
            .await,
        fixture
            .core
            .interrupt_context(&bob, &id, "default-python")
            .await,
    ] {
        assert!(matches!(result, Err(CoreError::NotFound)), "{result:?}");
    }
    assert!(matches!(
        fixture.core.list_contexts(&bob, &id).await,
        Err(CoreError::NotFound)
    ));
}

#[tokio::test]
async fn contexts_are_isolated_restartable_and_deletable() {
    let fixture = Fixture::new().await;
    let alice = fixture.user("alice").await;
    let id = sandbox(&fixture, &alice).await;
    let make = || CreateContextRequest {
        language: Some("python".into()),
        ..CreateContextRequest::default()
    };
    let a = fixture
        .core
        .create_context(&alice, &id, make())
        .await
        .expect("a");
    let b = fixture
        .core
        .create_context(&alice, &id, make())
        .await
        .expect("b");
    assert_ne!(a.id, b.id);
    assert!(!a.is_default);
    let in_context = |context: &str, text: &str| ExecuteRequest {
        context_id: Some(context.to_owned()),
        ..code(text)
    };
    run(&fixture, &alice, &id, in_context(&a.id, "x = 1")).await;
    let other = run(&fixture, &alice, &id, in_context(&b.id, "x")).await;
    assert_eq!(other.error.expect("b has no x").name, "NameError");
    let listed = fixture
        .core
        .list_contexts(&alice, &id)
        .await
        .expect("lists");
    assert_eq!(listed.len(), 2);
    fixture
        .core
        .restart_context(&alice, &id, &a.id)
        .await
        .expect("restarts");
    let after = run(&fixture, &alice, &id, in_context(&a.id, "x")).await;
    assert_eq!(after.error.expect("state is gone").name, "NameError");
    assert_eq!(after.execution_count, 1);
    fixture
        .core
        .destroy_context(&alice, &id, &a.id)
        .await
        .expect("deletes");
    let error = fixture
        .core
        .execute_code(&alice, &id, in_context(&a.id, "1"))
        .await
        .expect_err("gone");
    assert!(matches!(error, CoreError::ContextNotFound), "{error:?}");
    let mismatch = ExecuteRequest {
        language: Some("bash".into()),
        ..in_context(&b.id, "1")
    };
    let error = fixture
        .core
        .execute_code(&alice, &id, mismatch)
        .await
        .expect_err("mismatch");
    assert!(matches!(error, CoreError::Validation { .. }), "{error:?}");
}

#[tokio::test]
async fn a_timeout_interrupts_and_keeps_state() {
    let fixture = Fixture::new().await;
    let alice = fixture.user("alice").await;
    let id = sandbox(&fixture, &alice).await;
    run(&fixture, &alice, &id, code("x = 5")).await;
    let slow = ExecuteRequest {
        timeout: Some(1),
        ..code("while True: pass")
    };
    let view = run(&fixture, &alice, &id, slow).await;
    assert_eq!(view.outcome, "timeout");
    assert_eq!(view.error.expect("interrupted").name, "KeyboardInterrupt");
    let after = run(&fixture, &alice, &id, code("x")).await;
    assert_eq!(after.text.as_deref(), Some("5"));
    let records = executions(&fixture, &alice, &id).await;
    assert!(records.iter().any(|r| r.status == "timed_out"));
}

#[tokio::test]
async fn executions_of_one_context_run_in_order() {
    let fixture = Fixture::new().await;
    let alice = fixture.user("alice").await;
    let id = sandbox(&fixture, &alice).await;
    let first = fixture
        .core
        .execute_code(&alice, &id, code("sleep(0.2)\nx = 1\nx"))
        .await
        .expect("queued");
    let second = fixture
        .core
        .execute_code(&alice, &id, code("x + 1"))
        .await
        .expect("queued");
    // Collect the second first: it can only see x once the first has run.
    let second = second.collect().await.expect("runs");
    let first = first.collect().await.expect("runs");
    assert_eq!(first.execution_count, 1);
    assert_eq!(second.execution_count, 2);
    assert_eq!(second.text.as_deref(), Some("2"));
}

#[tokio::test]
async fn dropping_an_execution_interrupts_it_and_records_it_cancelled() {
    let fixture = Fixture::new().await;
    let alice = fixture.user("alice").await;
    let id = sandbox(&fixture, &alice).await;
    run(&fixture, &alice, &id, code("x = 7")).await;
    let mut execution = fixture
        .core
        .execute_code(&alice, &id, code("print('started')\nwhile True: pass"))
        .await
        .expect("starts");
    let first = execution.next_event().await.expect("an event");
    assert_eq!(
        first,
        ExecutionEvent::Stdout {
            text: "started\n".into()
        }
    );
    drop(execution);
    // The context is free again (the endless cell was interrupted) and kept x.
    let after = run(&fixture, &alice, &id, code("x")).await;
    assert_eq!(after.text.as_deref(), Some("7"));
    let mut statuses = Vec::new();
    for _ in 0..1000 {
        statuses = executions(&fixture, &alice, &id)
            .await
            .into_iter()
            .map(|r| r.status)
            .collect();
        if statuses.len() == 3 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(statuses.contains(&"cancelled".to_owned()), "{statuses:?}");
}

#[tokio::test]
async fn bash_and_the_runtime_language() {
    let fixture = Fixture::new().await;
    let alice = fixture.user("alice").await;
    let record = fixture
        .core
        .create_sandbox(&alice, create("bash"))
        .await
        .expect("creates");
    let id = record.id.to_string();
    run(&fixture, &alice, &id, code("cd /tmp")).await;
    let view = run(&fixture, &alice, &id, code("pwd")).await;
    assert_eq!(
        view.context_id, "default-bash",
        "the runtime's language is the default"
    );
    assert_eq!(view.logs.stdout.concat(), "/tmp\n");
    let failed = run(&fixture, &alice, &id, code("false")).await;
    assert_eq!(failed.error.expect("exit status").name, "ExitCode");
}
