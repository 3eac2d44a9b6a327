//! Catalog behaviour with a fake recipe: staleness, atomicity, locking, cleanup.

use std::sync::atomic::AtomicUsize;
use std::sync::{mpsc, Mutex};

use super::*;
use crate::recipe::BuildOutput;

/// Writes a file per build; can fail at a chosen step, and can block until told.
#[derive(Debug, Default)]
struct FakeRecipe {
    requirements: Mutex<String>,
    fail_at: Mutex<Option<BuildStep>>,
    builds: AtomicUsize,
    running: AtomicUsize,
    max_running: AtomicUsize,
    /// When set, the build reports that it started and waits for a go.
    gate: Mutex<Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>>,
}

impl FakeRecipe {
    fn new(requirements: &str) -> Arc<Self> {
        let recipe = Self::default();
        *recipe.requirements.lock().expect("not poisoned") = requirements.to_owned();
        Arc::new(recipe)
    }

    fn builds(&self) -> usize {
        self.builds.load(Ordering::SeqCst)
    }

    fn wait_at_gate(&self) {
        let gate = self.gate.lock().expect("not poisoned").take();
        if let Some((started, go)) = gate {
            started.send(()).expect("test listens");
            go.recv().expect("test releases the build");
        }
    }
}

impl Recipe for FakeRecipe {
    fn name(&self) -> &'static str {
        "fake"
    }
    fn mount_point(&self) -> &'static str {
        "/opt/codebox/fake"
    }
    fn inputs(&self, _runner: &mut CommandRunner<'_>) -> Result<RecipeInputs, BuildError> {
        Ok(RecipeInputs {
            interpreter_path: "/usr/bin/fake".into(),
            interpreter_version: "1.0".into(),
            files: BTreeMap::from([(
                "req".into(),
                self.requirements.lock().expect("not poisoned").clone(),
            )]),
            recipe_revision: 1,
        })
    }
    fn build(&self, context: &mut BuildContext<'_, '_>) -> Result<BuildOutput, BuildError> {
        let running = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(running, Ordering::SeqCst);
        let number = self.builds.fetch_add(1, Ordering::SeqCst) + 1;
        self.wait_at_gate();
        let result = self.write(context, number);
        self.running.fetch_sub(1, Ordering::SeqCst);
        result
    }
    fn environment(&self) -> TemplateEnvironment {
        TemplateEnvironment {
            path_prefix: vec!["/opt/codebox/fake/bin".into()],
            variables: vec![("FAKE".into(), "1".into())],
        }
    }
}

impl FakeRecipe {
    fn write(
        &self,
        context: &mut BuildContext<'_, '_>,
        number: usize,
    ) -> Result<BuildOutput, BuildError> {
        context.step(BuildStep::PipInstall);
        let path = context.dir.join("payload");
        fs::write(&path, format!("build {number}"))
            .map_err(|e| context.io_error(BuildStep::PipInstall, &path, e))?;
        if *self.fail_at.lock().expect("not poisoned") == Some(BuildStep::NpmInstall) {
            // Runs until cancelled or out of time.
            let mut endless = std::process::Command::new("/bin/sh");
            endless.arg("-c").arg("echo installing; exec sleep 600");
            context.runner.run(BuildStep::NpmInstall, &mut endless)?;
        }
        if *self.fail_at.lock().expect("not poisoned") == Some(BuildStep::PipInstall) {
            let mut failing = std::process::Command::new("/bin/sh");
            failing
                .arg("-c")
                .arg("echo 'ERROR: No matching distribution' >&2; exit 1");
            context.runner.run(BuildStep::PipInstall, &mut failing)?;
        }
        Ok(BuildOutput {
            versions: BTreeMap::from([("fake".into(), number.to_string())]),
            packages: BTreeMap::new(),
        })
    }
}

fn catalog(data_dir: &Path, recipe: &Arc<FakeRecipe>) -> TemplateCatalog {
    let recipes: Vec<Arc<dyn Recipe>> = vec![recipe.clone()];
    TemplateCatalog::with_recipes(data_dir, recipes, Duration::from_secs(60))
}

fn payload(catalog: &TemplateCatalog) -> String {
    fs::read_to_string(catalog.root().join("fake").join("payload")).expect("payload present")
}

fn root_entries(catalog: &TemplateCatalog) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(catalog.root())
        .expect("root exists")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

#[test]
fn missing_template_is_built_then_reused_while_inputs_are_unchanged() {
    let data = tempfile::tempdir().expect("temp dir");
    let recipe = FakeRecipe::new("a==1");
    let catalog = catalog(data.path(), &recipe);
    assert_eq!(catalog.list()[0].state, TemplateState::Missing);
    assert!(catalog.locate("fake").is_none());

    let built = catalog
        .ensure_built("fake", &mut NoProgress)
        .expect("built");
    assert_eq!(built.host_path, data.path().join("templates/fake"));
    assert_eq!(built.mount_point, Path::new("/opt/codebox/fake"));
    assert_eq!(built.manifest.versions["fake"], "1");
    assert!(built.manifest.size_bytes > 0);
    assert_eq!(
        catalog
            .ensure_built("fake", &mut NoProgress)
            .expect("current")
            .manifest,
        built.manifest
    );
    assert_eq!(recipe.builds(), 1);

    let status = &catalog.list()[0];
    assert_eq!(status.state, TemplateState::Ready);
    assert_eq!(status.versions["fake"], "1");
    assert_eq!(
        catalog.locate("fake").expect("located").manifest,
        built.manifest
    );
    assert_eq!(root_entries(&catalog), ["fake", "fake.lock"]);
}

#[test]
fn changed_requirements_make_it_stale_and_ensure_built_rebuilds() {
    let data = tempfile::tempdir().expect("temp dir");
    let recipe = FakeRecipe::new("a==1");
    let catalog = catalog(data.path(), &recipe);
    catalog
        .ensure_built("fake", &mut NoProgress)
        .expect("built");
    *recipe.requirements.lock().expect("not poisoned") = "a==2".into();

    assert_eq!(catalog.list()[0].state, TemplateState::Stale);
    // A stale template is still mountable until it is rebuilt.
    assert!(catalog.locate("fake").is_some());
    let rebuilt = catalog
        .ensure_built("fake", &mut NoProgress)
        .expect("rebuilt");
    assert_eq!(rebuilt.manifest.versions["fake"], "2");
    assert_eq!(payload(&catalog), "build 2");
    assert_eq!(catalog.list()[0].state, TemplateState::Ready);
    assert_eq!(recipe.builds(), 2);
}

#[test]
fn build_forces_a_rebuild_and_keeps_the_previous_one_until_the_next_build() {
    let data = tempfile::tempdir().expect("temp dir");
    let recipe = FakeRecipe::new("a==1");
    let catalog = catalog(data.path(), &recipe);
    catalog.build("fake", &mut NoProgress).expect("built");
    catalog.build("fake", &mut NoProgress).expect("rebuilt");
    assert_eq!(payload(&catalog), "build 2");
    let entries = root_entries(&catalog);
    assert_eq!(entries.len(), 3, "{entries:?}");
    assert!(entries[2].starts_with("fake.old-"), "{entries:?}");
    catalog
        .build("fake", &mut NoProgress)
        .expect("rebuilt again");
    let entries = root_entries(&catalog);
    assert_eq!(
        entries.len(),
        3,
        "the older leftover is removed: {entries:?}"
    );
    assert_eq!(recipe.builds(), 3);
}

#[test]
fn failed_build_leaves_nothing_and_keeps_the_previous_template() {
    let data = tempfile::tempdir().expect("temp dir");
    let recipe = FakeRecipe::new("a==1");
    let catalog = catalog(data.path(), &recipe);
    *recipe.fail_at.lock().expect("not poisoned") = Some(BuildStep::PipInstall);
    let error = catalog
        .ensure_built("fake", &mut NoProgress)
        .expect_err("fails");
    assert_eq!(error.step, BuildStep::PipInstall);
    assert_eq!(error.template, "fake");
    assert!(error.to_string().contains("pip install"), "{error}");
    assert_eq!(
        root_entries(&catalog),
        ["fake.lock"],
        "a half build was left behind"
    );
    assert!(catalog.locate("fake").is_none());

    *recipe.fail_at.lock().expect("not poisoned") = None;
    catalog
        .ensure_built("fake", &mut NoProgress)
        .expect("built");
    *recipe.fail_at.lock().expect("not poisoned") = Some(BuildStep::PipInstall);
    catalog
        .build("fake", &mut NoProgress)
        .expect_err("rebuild fails");
    assert_eq!(
        payload(&catalog),
        "build 2",
        "the good template was replaced"
    );
    assert_eq!(root_entries(&catalog), ["fake", "fake.lock"]);
}

#[test]
fn leftovers_of_a_crashed_build_are_removed_and_never_listed() {
    let data = tempfile::tempdir().expect("temp dir");
    let recipe = FakeRecipe::new("a==1");
    let catalog = catalog(data.path(), &recipe);
    let crashed = catalog.root().join("fake.build-999-0-0");
    fs::create_dir_all(crashed.join("lib")).expect("mkdir");
    assert_eq!(catalog.list()[0].state, TemplateState::Missing);
    catalog
        .ensure_built("fake", &mut NoProgress)
        .expect("built");
    assert!(!crashed.exists());
    assert_eq!(root_entries(&catalog), ["fake", "fake.lock"]);
}

#[test]
fn unknown_template_is_an_error() {
    let data = tempfile::tempdir().expect("temp dir");
    let catalog = catalog(data.path(), &FakeRecipe::new(""));
    let error = catalog
        .ensure_built("ruby", &mut NoProgress)
        .expect_err("unknown");
    assert!(matches!(error.cause, BuildFailure::UnknownTemplate));
    assert!(catalog.locate("ruby").is_none());
    assert!(
        !data.path().join("templates").exists(),
        "nothing created for an unknown name"
    );
}

#[test]
fn sandbox_environment_covers_built_templates_only() {
    let data = tempfile::tempdir().expect("temp dir");
    let recipe = FakeRecipe::new("a==1");
    let catalog = catalog(data.path(), &recipe);
    assert_eq!(catalog.sandbox_environment(), SandboxEnvironment::default());
    catalog
        .ensure_built("fake", &mut NoProgress)
        .expect("built");
    let environment = catalog.sandbox_environment();
    assert_eq!(
        environment.mounts,
        [TemplateMount {
            host_path: data.path().join("templates/fake"),
            sandbox_path: "/opt/codebox/fake".into(),
        }]
    );
    assert_eq!(
        environment.path("/usr/bin"),
        "/opt/codebox/fake/bin:/usr/bin"
    );
    assert_eq!(environment.variables, [("FAKE".to_owned(), "1".to_owned())]);
}

/// Records notes; tells the test when this caller starts waiting for the lock.
struct WaitSignal(Option<mpsc::Sender<()>>);

impl Progress for WaitSignal {
    fn step(&mut self, _: &str, _: BuildStep) {}
    fn output(&mut self, _: &str, _: BuildStep, _: &str) {}
    fn note(&mut self, _: &str, message: &str) {
        if message.starts_with("waiting") {
            if let Some(sender) = self.0.take() {
                let _ = sender.send(());
            }
        }
    }
}

#[test]
fn concurrent_ensure_built_builds_once_while_the_other_waits_for_the_lock() {
    let data = tempfile::tempdir().expect("temp dir");
    let recipe = FakeRecipe::new("a==1");
    let (started_sender, started) = mpsc::channel();
    let (go, go_receiver) = mpsc::channel();
    *recipe.gate.lock().expect("not poisoned") = Some((started_sender, go_receiver));
    let first_catalog = catalog(data.path(), &recipe);
    let second_catalog = catalog(data.path(), &recipe);

    let first = thread::spawn(move || first_catalog.ensure_built("fake", &mut NoProgress));
    started
        .recv()
        .expect("the first build starts and holds the lock");
    let (waiting_sender, waiting) = mpsc::channel();
    let second = thread::spawn(move || {
        second_catalog.ensure_built("fake", &mut WaitSignal(Some(waiting_sender)))
    });
    // Only once the second caller is blocked on the lock may the first finish.
    waiting
        .recv()
        .expect("the second caller waits for the lock");
    go.send(()).expect("first build listens");

    let first = first.join().expect("no panic").expect("first builds");
    let second = second
        .join()
        .expect("no panic")
        .expect("second finds it built");
    assert_eq!(first.manifest, second.manifest);
    assert_eq!(recipe.builds(), 1);
    assert_eq!(recipe.max_running.load(Ordering::SeqCst), 1);
}

#[test]
fn lock_wait_is_bounded_by_the_build_timeout() {
    let data = tempfile::tempdir().expect("temp dir");
    let recipe = FakeRecipe::new("a==1");
    let recipes: Vec<Arc<dyn Recipe>> = vec![recipe.clone()];
    let catalog = TemplateCatalog::with_recipes(data.path(), recipes, Duration::from_millis(200));
    fs::create_dir_all(catalog.root()).expect("mkdir");
    let holder = File::create(catalog.root().join("fake.lock")).expect("lock file");
    holder.lock().expect("held by the test");
    let error = catalog
        .ensure_built("fake", &mut NoProgress)
        .expect_err("times out");
    assert_eq!(error.step, BuildStep::Lock);
    assert!(matches!(error.cause, BuildFailure::TimedOut { .. }));
    assert_eq!(recipe.builds(), 0);
}

/// Cancels as soon as the build prints anything.
struct CancelOnOutput(bool);

impl Progress for CancelOnOutput {
    fn step(&mut self, _: &str, _: BuildStep) {}
    fn output(&mut self, _: &str, _: BuildStep, _: &str) {
        self.0 = true;
    }
    fn note(&mut self, _: &str, _: &str) {}
    fn cancelled(&self) -> bool {
        self.0
    }
}

#[test]
fn cancelled_build_stops_its_program_and_leaves_nothing() {
    let data = tempfile::tempdir().expect("temp dir");
    let recipe = FakeRecipe::new("a==1");
    *recipe.fail_at.lock().expect("not poisoned") = Some(BuildStep::NpmInstall);
    let catalog = catalog(data.path(), &recipe);
    let error = catalog
        .ensure_built("fake", &mut CancelOnOutput(false))
        .expect_err("cancelled");
    assert_eq!(error.step, BuildStep::NpmInstall);
    assert!(
        matches!(error.cause, BuildFailure::Cancelled { .. }),
        "{error:?}"
    );
    assert_eq!(root_entries(&catalog), ["fake.lock"]);
}
