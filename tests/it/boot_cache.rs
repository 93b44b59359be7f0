//! Boot once: `guest::boot` saves a booted guest in the boot cache (here
//! the world's own `XDG_CACHE_HOME`) and restores it for later tests.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::guest_dir;
use crate::common::world::{stderr, stdout, World};

/// Runs `paths` with the test guest, logs shown, one test at a time.
fn run(w: &World, paths: &[&Path], env: &[(&str, &str)]) -> Output {
    let mut args = vec!["run", "--no-capture", "-j", "1", "--timeout", "300"];
    let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    args.extend(paths.iter().map(String::as_str));
    let mut c = w.command(&args);
    c.env("VMSCRIPT_GUEST", guest_dir());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn passed(o: &Output, n: usize) -> String {
    let out = stdout(o);
    assert!(
        o.status.success() && out.contains(&format!("{n} passed")),
        "{out}{}",
        stderr(o)
    );
    out
}

fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

/// The entries in the world's cache.
fn entries(w: &World) -> Vec<PathBuf> {
    let dir = w.path().join("cache/vmscript/boot");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.is_dir() && !p.file_name().unwrap().to_string_lossy().starts_with('.')
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

const BOOT: &str = r#"
import "guest" as guest;
let vm = guest::boot();
assert_eq(guest::run_ok(vm, "echo $((6*7))"), "42\n");
vm.shutdown();
"#;

#[test]
fn restored_guests_are_fresh_have_the_clock_set_and_never_see_disk_writes() {
    let w = World::new();
    let disk = w.path().join("disk.raw");
    std::fs::write(&disk, vec![b'.'; 1 << 20]).unwrap();
    let script = format!(
        r#"
import "guest" as guest;
let g = guest::test_guest();
let vm = guest::boot(#{{ kernel: g.kernel, initrd: g.initrd, disk: "{disk}", timeout: 200 }});
// Nothing an earlier test did is there: no marker, the disk's first
// bytes as the host wrote them.
assert_eq(guest::run(vm, "cat /tmp/marker").status, 1);
assert_eq(guest::run_ok(vm, "dd if=/dev/vda bs=6 count=1 2>/dev/null"), "......");
guest::run_ok(vm, "echo dirty > /tmp/marker; printf SECRET | dd of=/dev/vda conv=notrunc 2>/dev/null; sync");
assert_eq(guest::run_ok(vm, "dd if=/dev/vda bs=6 count=1 2>/dev/null"), "SECRET");
// The wall clock is now, not the moment the boot was saved.
let t = guest::run_ok(vm, "date +%s");
t.trim();
let skew = parse_int(t) - now().to_int();
assert(skew >= -2 && skew <= 2, `guest clock off by ${{skew}} s`);
vm.shutdown();
"#,
        disk = disk.display()
    );
    let a = w.script("suite/a.rhai", &script);
    // b starts a few seconds after a saved the boot: a clock left as
    // saved would be behind.
    let b = w.script("suite/b.rhai", &format!("sleep(4);\n{script}"));
    let first = passed(&run(&w, &[&a, &b], &[]), 2);
    assert_eq!(count(&first, "boot cache: saved"), 1, "{first}");
    assert_eq!(count(&first, "boot cache: restored"), 1, "{first}");
    let again = passed(&run(&w, &[&b], &[]), 1);
    assert_eq!(count(&again, "boot cache: restored"), 1, "{again}");
    assert_eq!(
        std::fs::read(&disk).unwrap(),
        vec![b'.'; 1 << 20],
        "the disk itself was written"
    );
    w.assert_clean();
}

#[test]
fn two_runs_missing_the_same_boot_at_once_save_it_once() {
    let w = World::new();
    let a = w.script("a.rhai", BOOT);
    let both = || {
        let mut c = w.command(&[
            "run",
            "--no-capture",
            "--timeout",
            "300",
            a.to_str().unwrap(),
        ]);
        c.env("VMSCRIPT_GUEST", guest_dir());
        c.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (one, two) = (both(), both());
    let outs = [
        one.wait_with_output().unwrap(),
        two.wait_with_output().unwrap(),
    ];
    let text: String = outs.iter().map(|o| passed(o, 1)).collect();
    assert_eq!(count(&text, "boot cache: restored"), 0, "{text}");
    assert!(count(&text, "boot cache: saved") >= 1, "{text}");
    assert_eq!(entries(&w).len(), 1, "{text}");
    let later = passed(&run(&w, &[&a], &[]), 1);
    assert_eq!(count(&later, "boot cache: restored"), 1, "{later}");
    w.assert_clean();
}

#[test]
fn a_truncated_or_corrupt_entry_is_detected_and_rebuilt() {
    let w = World::new();
    let a = w.script("a.rhai", BOOT);
    passed(&run(&w, &[&a], &[]), 1);
    let entry = entries(&w).pop().expect("an entry was saved");
    let state = entry.join("state");
    let len = std::fs::metadata(&state).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&state)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let rebuilt = passed(&run(&w, &[&a], &[]), 1);
    assert!(rebuilt.contains("truncated"), "{rebuilt}");
    assert_eq!(count(&rebuilt, "boot cache: saved"), 1, "{rebuilt}");
    // Same size, garbage inside: QEMU refuses it, and the test still
    // gets a booted guest.
    let mut bytes = std::fs::read(&state).unwrap();
    bytes[..4096].fill(0x5a);
    std::fs::write(&state, &bytes).unwrap();
    let refused = passed(&run(&w, &[&a], &[]), 1);
    assert!(
        refused.contains("failed, removing it and booting"),
        "{refused}"
    );
    assert_eq!(count(&refused, "boot cache: saved"), 1, "{refused}");
    let restored = passed(&run(&w, &[&a], &[]), 1);
    assert_eq!(count(&restored, "boot cache: restored"), 1, "{restored}");
    w.assert_clean();
}

#[test]
fn the_size_cap_evicts_the_least_recently_used_boot() {
    let w = World::new();
    let a = w.script(
        "a.rhai",
        r#"
import "guest" as guest;
for mem in [200, 256] {
    let vm = guest::boot(#{ memory: mem });
    assert_eq(guest::run_ok(vm, "echo up"), "up\n");
    vm.shutdown();
}
"#,
    );
    let o = passed(&run(&w, &[&a], &[("VMSCRIPT_BOOT_CACHE_MAX_MB", "100")]), 1);
    assert_eq!(count(&o, "boot cache: saved"), 2, "{o}");
    assert_eq!(count(&o, "boot cache: evicted"), 1, "{o}");
    assert_eq!(entries(&w).len(), 1);
    let list = w.run(&["cache", "list"]);
    assert_eq!(count(&stdout(&list), "MiB"), 1, "{}", stdout(&list));
    let clear = w.run(&["cache", "clear"]);
    assert!(
        stdout(&clear).contains("removed 1 saved boot"),
        "{}",
        stdout(&clear)
    );
    assert!(entries(&w).is_empty());
    w.assert_clean();
}

#[test]
fn off_and_snapshot_false_bypass_the_cache() {
    let w = World::new();
    let a = w.script("a.rhai", BOOT);
    let b = w.script(
        "b.rhai",
        &BOOT.replace("guest::boot()", "guest::boot(#{ snapshot: false })"),
    );
    let off = passed(&run(&w, &[&a], &[("VMSCRIPT_BOOT_CACHE", "off")]), 1);
    assert!(off.contains("not used: VMSCRIPT_BOOT_CACHE=off"), "{off}");
    let no = passed(&run(&w, &[&b], &[]), 1);
    assert!(no.contains("not used: snapshot: false"), "{no}");
    assert!(entries(&w).is_empty());
    w.assert_clean();
}

#[test]
fn another_qemu_version_misses() {
    let w = World::new();
    let wrapper = w.path().join("qemu");
    let write = |version: &str| {
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'QEMU emulator version {version}'; exit 0; fi\nexec qemu-system-x86_64 \"$@\"\n"
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    let a = w.script(
        "a.rhai",
        &BOOT.replace(
            "guest::boot()",
            &format!("guest::boot(#{{ binary: \"{}\" }})", wrapper.display()),
        ),
    );
    write("7.2.0");
    let first = passed(&run(&w, &[&a], &[]), 1);
    assert_eq!(count(&first, "boot cache: saved"), 1, "{first}");
    write("9.9.9");
    let upgraded = passed(&run(&w, &[&a], &[]), 1);
    assert_eq!(count(&upgraded, "boot cache: restored"), 0, "{upgraded}");
    assert_eq!(count(&upgraded, "boot cache: saved"), 1, "{upgraded}");
    assert_eq!(entries(&w).len(), 2);
    w.assert_clean();
}

#[test]
fn snapshot_load_rolls_the_guest_and_its_disk_back() {
    let w = World::new();
    let disk = w.path().join("disk.raw");
    std::fs::write(&disk, vec![b'.'; 1 << 20]).unwrap();
    let a = w.script(
        "a.rhai",
        &format!(
            r#"
import "guest" as guest;
let g = guest::test_guest();
let opts = #{{ kernel: g.kernel, initrd: g.initrd, disk: "{disk}", timeout: 200 }};
let vm = guest::boot(opts);
let pid = vm.get_pid();
guest::run_ok(vm, "echo one > /tmp/a; printf BEFORE | dd of=/dev/vda conv=notrunc 2>/dev/null; sync");
vm.snapshot_save("start");
guest::run_ok(vm, "rm /tmp/a; echo two > /tmp/b; printf AFTER! | dd of=/dev/vda conv=notrunc 2>/dev/null; sync");
vm.snapshot_save("later");
vm.snapshot_load("start");
assert_eq(guest::run_ok(vm, "cat /tmp/a; test -e /tmp/b || echo no-b"), "one\nno-b\n");
assert_eq(guest::run_ok(vm, "echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/vda bs=6 count=1 iflag=direct 2>/dev/null"), "BEFORE");
vm.snapshot_load("later");
assert_eq(guest::run_ok(vm, "cat /tmp/b"), "two\n");
assert_eq(vm.get_pid(), pid, "the same QEMU goes on");
try {{
    vm.snapshot_load("never-saved");
    fail("an unknown snapshot loaded");
}} catch (e) {{
    assert_eq(e.kind, "QEMUMachineError");
    assert(e.message.contains("never-saved"), e.message);
}}
assert_eq(guest::run_ok(vm, "echo alive"), "alive\n");
vm.shutdown();
// A raw disk written in place cannot roll back: refused, not half done.
opts.snapshot = false;
let raw = guest::boot(opts);
try {{
    raw.snapshot_save("x");
    fail("a snapshot of a raw disk was taken");
}} catch (e) {{
    assert(e.message.contains("qcow2"), e.message);
}}
raw.shutdown();
"#,
            disk = disk.display()
        ),
    );
    passed(&run(&w, &[&a], &[]), 1);
    w.assert_clean();
}

#[test]
fn a_restored_guest_answers_on_its_agent_channel() {
    let w = World::new();
    // stdout and stderr come back apart only on the agent's channel; the
    // console method would give one output.
    let script = w.script(
        "agent.rhai",
        "import \"guest\" as guest;\n\
         let vm = guest::boot();\n\
         let r = guest::run(vm, \"echo out; echo err >&2; exit 3\");\n\
         assert_eq(r, #{ status: 3, stdout: \"out\\n\", stderr: \"err\\n\", output: \"out\\nerr\\n\" });\n",
    );
    let first = passed(&run(&w, &[&script], &[]), 1);
    assert_eq!(count(&first, "boot cache: saved"), 1, "{first}");
    let again = passed(&run(&w, &[&script], &[]), 1);
    assert_eq!(count(&again, "boot cache: restored"), 1, "{again}");
    assert_eq!(count(&again, "go through the serial console"), 0, "{again}");
}

#[test]
fn guests_on_a_link_are_restored_and_still_reach_each_other() {
    let w = World::new();
    // net::boot passes the NIC in `args`; the members differ in their MAC
    // (two entries) and their socket paths (left out of the key).
    let script = w.script(
        "suite/lan.rhai",
        r#"
import "net" as net;
import "guest" as guest;
let lan = net::boot(2);
net::check(lan.vms, lan.link);
assert_eq(guest::run_ok(lan.vms[1], "cat /sys/class/net/eth0/address"), "52:54:00:12:34:02\n");
"#,
    );
    let first = passed(&run(&w, &[&script], &[]), 1);
    assert_eq!(count(&first, "boot cache: saved"), 2, "{first}");
    assert_eq!(entries(&w).len(), 2, "{first}");
    let again = passed(&run(&w, &[&script], &[]), 1);
    assert_eq!(count(&again, "boot cache: restored"), 2, "{again}");
    assert_eq!(count(&again, "boot cache: saved"), 0, "{again}");
    w.assert_clean();
}

#[test]
fn args_naming_a_file_boot_without_the_cache_and_say_why() {
    let w = World::new();
    let blob = w.path().join("blob.bin");
    std::fs::write(&blob, b"from the host").unwrap();
    let script = w.script(
        "suite/fw.rhai",
        &format!(
            r#"
import "guest" as guest;
let vm = guest::boot(#{{ args: ["-fw_cfg", "name=opt/vmscript/blob,file={}"] }});
assert_eq(guest::run_ok(vm, "echo $((6*7))"), "42\n");
"#,
            blob.display()
        ),
    );
    let out = passed(&run(&w, &[&script], &[]), 1);
    assert_eq!(count(&out, "boot cache: not used: argument"), 1, "{out}");
    assert!(
        out.contains("names a file the cache cannot vouch for"),
        "{out}"
    );
    assert!(entries(&w).is_empty(), "{out}");
    w.assert_clean();
}
