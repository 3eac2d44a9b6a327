//! Unit tests of the cgroup logic against the in-memory [`FakeCgroupFs`].

use super::*;

const V1_MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

const V2_MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
41 31 0:38 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate
";

const V2_FILES: &[&str] = &[
    "cgroup.procs",
    "cgroup.kill",
    "cgroup.freeze",
    "cgroup.events",
    "cgroup.subtree_control",
    "memory.max",
    "memory.swap.max",
    "memory.oom.group",
    "memory.events",
    "memory.current",
    "memory.peak",
    "cpu.max",
    "cpu.stat",
    "pids.max",
    "pids.current",
];

fn v2_fake() -> Arc<FakeCgroupFs> {
    let fs = Arc::new(FakeCgroupFs::new(V2_FILES));
    let root = Path::new("/sys/fs/cgroup");
    fs.add_dir(root);
    fs.set(
        &root.join("cgroup.controllers"),
        "cpuset cpu io memory pids\n",
    );
    fs.set(&root.join("cgroup.subtree_control"), "");
    fs
}

fn limits() -> CgroupLimits {
    CgroupLimits {
        memory_bytes: 256 << 20,
        cpu_millicores: 500,
        pids: 64,
    }
}

fn v2_manager(fs: &Arc<FakeCgroupFs>) -> CgroupManager {
    let layout = Layout::detect(V2_MOUNTINFO, fs.as_ref()).expect("v2 detected");
    CgroupManager::new(fs.clone(), layout, "codebox")
}

#[test]
fn detects_v1_when_the_unified_mount_has_no_controllers() {
    let fs = FakeCgroupFs::new(&[]);
    fs.set(Path::new("/sys/fs/cgroup/unified/cgroup.controllers"), "\n");
    let layout = Layout::detect(V1_MOUNTINFO, &fs).expect("v1 detected");
    let Layout::V1 { mounts } = layout else {
        panic!("expected v1, got {layout:?}");
    };
    assert!(mounts.contains(&("memory".into(), "/sys/fs/cgroup/memory".into())));
    assert!(mounts.contains(&("freezer".into(), "/sys/fs/cgroup/freezer".into())));
}

#[test]
fn detects_v2_with_controllers() {
    let fs = v2_fake();
    let layout = Layout::detect(V2_MOUNTINFO, fs.as_ref()).expect("v2 detected");
    assert_eq!(
        layout,
        Layout::V2 {
            mount: "/sys/fs/cgroup".into()
        }
    );
}

#[test]
fn no_hierarchy_is_an_error() {
    let fs = FakeCgroupFs::new(&[]);
    let result = Layout::detect("22 27 0:21 / /proc rw - proc proc rw\n", &fs);
    assert!(matches!(result, Err(CgroupError::NoHierarchy { .. })));
}

#[test]
fn v2_parent_enables_controllers_and_sandbox_gets_limits() {
    let fs = v2_fake();
    let manager = v2_manager(&fs);
    manager.ensure_parent().expect("parent");
    manager.create("s1", &limits()).expect("create");
    let dir = PathBuf::from("/sys/fs/cgroup/codebox/s1");
    let writes = fs.writes();
    let expected = [
        (
            "/sys/fs/cgroup/cgroup.subtree_control",
            "+memory +cpu +pids",
        ),
        (
            "/sys/fs/cgroup/codebox/cgroup.subtree_control",
            "+memory +cpu +pids",
        ),
    ];
    for (index, (path, value)) in expected.iter().enumerate() {
        assert_eq!(writes[index], (PathBuf::from(path), (*value).to_owned()));
    }
    let find = |file: &str| {
        writes
            .iter()
            .find(|(path, _)| *path == dir.join(file))
            .map(|(_, value)| value.clone())
    };
    assert_eq!(find("memory.max").as_deref(), Some("268435456"));
    assert_eq!(find("memory.swap.max").as_deref(), Some("0"));
    assert_eq!(find("memory.oom.group").as_deref(), Some("1"));
    assert_eq!(find("cpu.max").as_deref(), Some("50000 100000"));
    assert_eq!(find("pids.max").as_deref(), Some("64"));
}

#[test]
fn creating_an_existing_cgroup_fails() {
    let fs = v2_fake();
    let manager = v2_manager(&fs);
    manager.ensure_parent().expect("parent");
    manager.create("s1", &limits()).expect("first");
    assert!(manager.create("s1", &limits()).is_err());
}

#[test]
fn v2_attach_stats_oom_and_destroy() {
    let fs = v2_fake();
    let manager = v2_manager(&fs);
    manager.ensure_parent().expect("parent");
    let cgroup = manager.create("s1", &limits()).expect("create");
    let dir = PathBuf::from("/sys/fs/cgroup/codebox/s1");
    cgroup.attach(4242).expect("attach");
    assert_eq!(fs.read(&dir.join("cgroup.procs")).expect("procs"), "4242");

    fs.set(
        &dir.join("memory.events"),
        "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n",
    );
    assert_eq!(cgroup.oom_kills().expect("oom"), 2);

    fs.set(&dir.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\n");
    fs.set(&dir.join("memory.current"), "4096\n");
    fs.set(&dir.join("memory.peak"), "8192\n");
    fs.set(&dir.join("pids.current"), "3\n");
    let usage = cgroup.usage().expect("usage");
    assert_eq!(
        usage,
        CgroupUsage {
            cpu_usec: 1500,
            memory_bytes: 4096,
            memory_peak_bytes: 8192,
            pids: 3
        }
    );

    // The fake kernel empties the group as soon as cgroup.kill is written.
    fs.set(&dir.join("cgroup.procs"), "");
    cgroup.destroy().expect("destroy");
    assert!(fs
        .writes()
        .contains(&(dir.join("cgroup.kill"), "1".to_owned())));
    assert!(!fs.has_dir(&dir));
    assert_eq!(manager.list().expect("list"), Vec::<String>::new());
    // Destroying again is a no-op.
    cgroup.destroy().expect("idempotent");
}

#[test]
fn v2_destroy_of_a_group_that_never_empties_reports_it() {
    let fs = v2_fake();
    let manager = v2_manager(&fs);
    manager.ensure_parent().expect("parent");
    let cgroup = manager.create("s1", &limits()).expect("create");
    cgroup.attach(7).expect("attach");
    let error = cgroup
        .wait_empty(Duration::from_millis(5))
        .expect_err("not empty");
    assert!(matches!(error, CgroupError::NotEmpty { .. }));
}

#[test]
fn list_finds_leftovers() {
    let fs = v2_fake();
    let manager = v2_manager(&fs);
    manager.ensure_parent().expect("parent");
    manager.create("s1", &limits()).expect("s1");
    manager.create("s7", &limits()).expect("s7");
    let mut names = manager.list().expect("list");
    names.sort();
    assert_eq!(names, ["s1", "s7"]);
}

fn v1_fake() -> (Arc<FakeCgroupFs>, CgroupManager) {
    let files = [
        "cgroup.procs",
        "memory.limit_in_bytes",
        "memory.memsw.limit_in_bytes",
        "memory.swappiness",
        "memory.oom_control",
        "cpu.cfs_period_us",
        "cpu.cfs_quota_us",
        "pids.max",
        "freezer.state",
    ];
    let fs = Arc::new(FakeCgroupFs::new(&files));
    for controller in ["cpu", "cpuacct", "memory", "freezer", "pids"] {
        fs.add_dir(&Path::new("/sys/fs/cgroup").join(controller));
    }
    let fs_dyn: &FakeCgroupFs = &fs;
    fs_dyn.set(Path::new("/sys/fs/cgroup/unified/cgroup.controllers"), "");
    let layout = Layout::detect(V1_MOUNTINFO, fs_dyn).expect("v1");
    let manager = CgroupManager::new(fs.clone(), layout, "codebox");
    manager.ensure_parent().expect("parent");
    (fs, manager)
}

#[test]
fn v1_memory_limit_order_depends_on_direction() {
    let (fs, manager) = v1_fake();
    let cgroup = manager.create("s1", &limits()).expect("create");
    let memory_writes = |fs: &FakeCgroupFs| -> Vec<String> {
        fs.writes()
            .into_iter()
            .filter(|(path, _)| path.to_string_lossy().contains("limit_in_bytes"))
            .map(|(path, _)| {
                path.file_name()
                    .expect("file")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    };
    // Fresh group, unlimited before: shrinking, the memory limit first.
    assert_eq!(
        memory_writes(&fs),
        ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
    );
    let larger = CgroupLimits {
        memory_bytes: 1 << 30,
        ..limits()
    };
    cgroup.apply(&larger, Some(256 << 20)).expect("grow");
    assert_eq!(
        memory_writes(&fs)[2..],
        ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]
    );
    let quota = fs.read(Path::new("/sys/fs/cgroup/cpu/codebox/s1/cpu.cfs_quota_us"));
    assert_eq!(quota.expect("quota"), "50000");
}

#[test]
fn v1_oom_kills_come_from_oom_control() {
    let (fs, manager) = v1_fake();
    let cgroup = manager.create("s1", &limits()).expect("create");
    fs.set(
        Path::new("/sys/fs/cgroup/memory/codebox/s1/memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
    );
    assert_eq!(cgroup.oom_kills().expect("oom"), 1);
}

#[test]
fn v2_selective_kill_freezes_and_thaws() {
    let fs = v2_fake();
    let manager = v2_manager(&fs);
    manager.ensure_parent().expect("parent");
    let cgroup = manager.create("s1", &limits()).expect("create");
    let dir = PathBuf::from("/sys/fs/cgroup/codebox/s1");
    fs.set(&dir.join("cgroup.events"), "populated 1\nfrozen 1\n");
    // No process listed: nothing is signalled, but the group is frozen and thawed.
    let killed = cgroup.kill_selected(|_| true).expect("kill");
    assert_eq!(killed, 0);
    let freezes: Vec<String> = fs
        .writes()
        .into_iter()
        .filter(|(path, _)| *path == dir.join("cgroup.freeze"))
        .map(|(_, value)| value)
        .collect();
    assert_eq!(freezes, ["1", "0"]);
}
