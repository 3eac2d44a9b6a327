use codebox_template::{BuildStep, TemplateState, NODE_PACKAGE_JSON};

use crate::{build, run_mounted};

const CHECK: &str = r#"
set -e
node -e '
const ts = require(process.env.CODEBOX_TS_PATH);
const out = ts.transpileModule("const add = (a: number, b: number): number => a + b; console.log(add(1, 2));",
  { compilerOptions: { module: ts.ModuleKind.CommonJS } });
if (out.outputText.includes(": number")) throw new Error("types survived: " + out.outputText);
eval(out.outputText);
console.log("transpile-ok", ts.version);
'
node -e 'console.log("node-path-ok", require("typescript").version)'
tsc --version | sed 's/^/tsc-ok /'
"#;

#[test]
fn node_template_builds_and_transpiles_from_the_mount_point() {
    let data = tempfile::tempdir().expect("temp dir");
    let (catalog, built, progress, _took) = build(data.path(), "node");

    assert!(progress.steps.contains(&BuildStep::NpmInstall));
    let package: serde_json::Value = serde_json::from_str(NODE_PACKAGE_JSON).expect("valid");
    let pinned = package["dependencies"]["typescript"]
        .as_str()
        .expect("pinned");
    assert_eq!(built.manifest.versions["typescript"], pinned);
    assert!(built
        .host_path
        .join("node_modules/typescript/package.json")
        .is_file());

    let output = run_mounted(&built, data.path(), None, CHECK);
    assert!(
        output.status.success(),
        "the mounted compiler does not work"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("3\ntranspile-ok"), "{stdout}");
    assert!(
        stdout.contains(&format!("node-path-ok {pinned}")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("tsc-ok Version {pinned}")),
        "{stdout}"
    );

    let statuses = catalog.list();
    let node = statuses
        .iter()
        .find(|status| status.name == "node")
        .expect("listed");
    assert_eq!(node.state, TemplateState::Ready);
}
