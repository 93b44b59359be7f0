//! Many machines in one script: 32 `-M none` QEMUs at once, all
//! commanded and shut down, or all left to the cleanup by an error.

use std::time::{Duration, Instant};

use crate::common::world::*;

const THIRTY_TWO: &str = r#"
let base = vmscript_fds();
let vms = [];
for i in 0..32 {
    let vm = machine();
    vm.add_args("-M", "none", "-nodefaults");
    vm.launch();
    print(`pid ${vm.get_pid()}`);
    vms.push(vm);
}
for vm in vms {
    assert(vm.is_running(), `${vm.name} is not running`);
    assert_eq(vm.command("query-status").status, "running");
    assert_eq(vm.hmp("info name"), "");
}
let names = vms.map(|vm| vm.name);
assert_eq(names.len, 32);
"#;

#[test]
fn thirty_two_machines_in_one_script_are_all_commanded_and_shut_down() {
    let w = World::new();
    w.script(
        "t.rhai",
        &format!(
            "{PROBE}{THIRTY_TWO}{}",
            r#"
for vm in vms {
    vm.shutdown();
}
for vm in vms {
    assert(!vm.is_running());
    assert_eq(vm.exitcode(), 0);
}
assert_eq(vmscript_fds(), base, "vmscript's descriptors");
"#
        ),
    );
    let start = Instant::now();
    let o = w.run(&["run", "--no-capture", "t.rhai"]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    // 32 launches on a loaded machine; far below the 300 s at which a
    // hung step would be stopped.
    assert!(start.elapsed() < Duration::from_secs(150), "{out}");
    let pids = printed_pids(&out);
    assert_eq!(pids.len(), 32);
    for p in pids {
        assert!(!is_qemu(p), "QEMU {p} outlived the script");
    }
    w.assert_clean();
}

#[test]
fn thirty_two_machines_left_running_by_an_error_are_all_cleaned_up() {
    let w = World::new();
    w.script(
        "t.rhai",
        &format!("{PROBE}{THIRTY_TWO}\nthrow \"boom with 32 machines up\";\n"),
    );
    let o = w.run(&["run", "--no-capture", "t.rhai"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{}", stderr(&o));
    assert!(
        out.contains("ScriptError: boom with 32 machines up"),
        "{out}"
    );
    let pids = printed_pids(&out);
    assert_eq!(pids.len(), 32);
    for p in pids {
        assert!(!is_qemu(p), "QEMU {p} outlived the script");
    }
    w.assert_clean();
}
