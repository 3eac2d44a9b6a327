//! The warm pool's prestarted default contexts: a claimed sandbox's default
//! python context already runs (with the preload's state), the sandbox env set
//! at claim reaches code in it, the pool refills, and a failing preload only
//! logs.

use std::collections::BTreeMap;
use std::time::Duration;

use codebox_runtime::linux::prestart::default_context_id;
use codebox_runtime::{CodeOutput, CodeRequest, Language, LinuxRuntime, Runtime};
use codebox_types::SandboxId;

use crate::support::{config, harness_with, spec, Harness};

const POOL: usize = 2;

async fn pool_harness(preload: Option<&str>, prestart: Vec<Language>) -> Harness {
    let (mut config, root) = config(POOL);
    config.python_preload = preload.map(str::to_owned);
    config.pool_prestart_contexts = prestart;
    let h = harness_with(config, root).await;
    // `recover` starts the pool; wait until it is full.
    wait_for_pool(&h.runtime).await;
    h
}

async fn wait_for_pool(runtime: &LinuxRuntime) {
    // Waiting, not timing: the bound only stops a broken pool from hanging CI
    // (IPython starts in well under a second; the bound is generous for load).
    for _ in 0..12_000 {
        if runtime.pool_ready() >= POOL {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the pool never reached {POOL}");
}

async fn claim(h: &Harness, env: &[(&str, &str)]) -> SandboxId {
    let mut spec = spec();
    spec.env = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    // Whether the pool served it shows in its contexts: a cold sandbox has none.
    h.sandbox_with(spec).await
}

async fn run(h: &Harness, id: &SandboxId, code: &str, env: &[(&str, &str)]) -> CodeOutput {
    let request = CodeRequest {
        context: default_context_id(Language::Python),
        code: code.into(),
        timeout: Duration::from_secs(30),
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        output_limit: 1 << 20,
    };
    let stream = h.runtime.execute_code(id, request).await.expect("execute");
    stream.collect().await.expect("collect")
}

/// Milliseconds since boot, as `/proc/self/stat` start times count them.
fn host_uptime() -> u64 {
    let uptime = std::fs::read_to_string("/proc/uptime").expect("procfs");
    let seconds: f64 = uptime
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .expect("uptime seconds");
    (seconds * 1000.0) as u64
}

fn count(output: &CodeOutput) -> u64 {
    output.summary.as_ref().expect("summary").execution_count
}

#[tokio::test]
async fn a_claimed_sandbox_has_its_default_python_context_running_with_the_preload() {
    let h = pool_harness(
        Some("import json as preloaded_json\npreloaded = \"pre\" + 'loaded'"),
        vec![Language::Python],
    )
    .await;
    let before_claim = host_uptime();
    let id = claim(&h, &[]).await;
    let contexts = h.runtime.list_contexts(&id).await.expect("list");
    assert_eq!(contexts.len(), 1, "{contexts:?}");
    assert_eq!(contexts[0].context, "default-python");
    assert_eq!(contexts[0].language, Language::Python);
    let pid = contexts[0].pid;
    // The preload ran before the claim (only the pool passes it), and this is
    // the context's first execution: no interpreter was started for it.
    let output = run(&h, &id, "preloaded + preloaded_json.dumps(1)", &[]).await;
    assert_eq!(output.text(), Some("'preloaded1'"), "{output:?}");
    assert_eq!(count(&output), 1);
    let output = run(&h, &id, "x = 41\nx + 1", &[]).await;
    assert_eq!(output.text(), Some("42"), "{output:?}");
    assert_eq!(count(&output), 2);
    let after = h.runtime.list_contexts(&id).await.expect("list");
    assert_eq!(after[0].pid, pid, "the runner was not replaced");
    // The runner process started before the claim (boot-relative clock ticks;
    // /proc/uptime has the same 10 ms resolution, hence `<=`).
    let started = run(
        &h,
        &id,
        "import os\nint(open('/proc/self/stat').read().rsplit(')', 1)[1].split()[19]) \
         * 1000 // os.sysconf('SC_CLK_TCK')",
        &[],
    )
    .await;
    let started_ms: u64 = started
        .text()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| panic!("start time: {started:?}"));
    assert!(
        started_ms <= before_claim,
        "runner started at {started_ms} ms, claim at {before_claim} ms"
    );
    h.finish().await;
}

#[tokio::test]
async fn the_sandbox_env_reaches_code_in_a_prestarted_context() {
    let h = pool_harness(None, vec![Language::Python]).await;
    let id = claim(&h, &[("CODEBOX_CLAIM_ENV", "from-claim"), ("OTHER", "o")]).await;
    let read = "import os, subprocess\n\
        child = subprocess.run(['sh', '-c', 'echo $CODEBOX_CLAIM_ENV'], capture_output=True, text=True)\n\
        (os.environ.get('CODEBOX_CLAIM_ENV'), child.stdout.strip(), os.environ.get('OTHER'))";
    let output = run(&h, &id, read, &[]).await;
    assert_eq!(
        output.text(),
        Some("('from-claim', 'from-claim', 'o')"),
        "{output:?}"
    );
    // An execution's own env goes over the sandbox env.
    let output = run(&h, &id, read, &[("CODEBOX_CLAIM_ENV", "per-exec")]).await;
    assert_eq!(
        output.text(),
        Some("('per-exec', 'per-exec', 'o')"),
        "{output:?}"
    );
    // It still holds after the runner is replaced.
    h.runtime
        .restart_context(&id, "default-python")
        .await
        .expect("restart");
    let output = run(&h, &id, read, &[]).await;
    assert_eq!(
        output.text(),
        Some("('from-claim', 'from-claim', 'o')"),
        "{output:?}"
    );
    h.finish().await;
}

#[tokio::test]
async fn the_pool_refills_with_prestarted_contexts_after_claims() {
    let h = pool_harness(Some("marker = 7"), vec![Language::Python, Language::Bash]).await;
    for round in 0..2 {
        let first = claim(&h, &[]).await;
        let second = claim(&h, &[]).await;
        wait_for_pool(&h.runtime).await;
        let third = claim(&h, &[]).await;
        for id in [&first, &second, &third] {
            let mut names: Vec<String> = h
                .runtime
                .list_contexts(id)
                .await
                .expect("list")
                .into_iter()
                .map(|c| c.context)
                .collect();
            names.sort();
            assert_eq!(names, ["default-bash", "default-python"], "round {round}");
            let output = run(&h, id, "marker * 6", &[]).await;
            assert_eq!(output.text(), Some("42"), "round {round}: {output:?}");
            assert_eq!(count(&output), 1);
            h.runtime.destroy(id).await.expect("destroy");
        }
        wait_for_pool(&h.runtime).await;
    }
    h.finish().await;
}

#[tokio::test]
async fn a_failing_preload_only_logs_and_the_context_still_starts() {
    let h = pool_harness(
        Some("half = 1\nraise RuntimeError('preload boom')"),
        vec![Language::Python],
    )
    .await;
    let id = claim(&h, &[("SANDBOX_VAR", "s")]).await;
    let contexts = h.runtime.list_contexts(&id).await.expect("list");
    assert_eq!(contexts.len(), 1, "{contexts:?}");
    let output = run(
        &h,
        &id,
        "import os\n('half' in globals(), 1 + 1, os.environ['SANDBOX_VAR'])",
        &[],
    )
    .await;
    assert_eq!(output.text(), Some("(False, 2, 's')"), "{output:?}");
    assert_eq!(count(&output), 1);
    h.finish().await;
}

#[tokio::test]
async fn prestarting_can_be_turned_off_and_cold_sandboxes_have_no_context() {
    let h = pool_harness(None, Vec::new()).await;
    let pooled = claim(&h, &[]).await;
    assert!(h
        .runtime
        .list_contexts(&pooled)
        .await
        .expect("list")
        .is_empty());
    h.finish().await;
    let (config, root) = config(0);
    let h = harness_with(config, root).await;
    let cold = h.sandbox().await;
    assert!(h
        .runtime
        .list_contexts(&cold)
        .await
        .expect("list")
        .is_empty());
    h.finish().await;
}
