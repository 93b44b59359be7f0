//! scripts/setup.sh, the set-up that scripts/examples.sh, scripts/test-all.sh
//! and .ci/run share, against a faked Debian: `dpkg-query`, `apt-get`,
//! `apt-cache`, `id` and `cargo` are stubs on PATH that read and write a
//! package list in a temp folder, so that missing, mismatched and present
//! packages, root and not root, can all be tried without touching the
//! machine's packages.
//! Two tests use the real `id` instead, run by a real non-root user
//! (`nobody` through setpriv when the tests run as root), one of them on a
//! PATH with neither dpkg nor QEMU.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The version the fake archive installs qemu-system-x86 and qemu-utils at.
const CANDIDATE: &str = "1:7.2+dfsg-7+deb12u18";

/// Everything the real script needs, installed at matching versions.
const ALL_PRESENT: &str = "qemu-system-x86 1:7.2+dfsg-7+deb12u18
qemu-utils 1:7.2+dfsg-7+deb12u18
busybox-static 1:1.35.0-4
cpio 2.13
ca-certificates 20230311
tmux 3.3a-3
";

const DPKG_QUERY: &str = r#"#!/bin/bash
# dpkg-query -W -f=FORMAT PACKAGE: the format is ignored, the fields are
# those setup.sh asks for (status, a tab, version).
pkg=${@: -1}
line=$(grep "^$pkg " "$FAKE_DIR/dpkg" 2>/dev/null | head -n 1)
if [ -z "$line" ]; then
  echo "dpkg-query: no packages found matching $pkg" >&2
  exit 1
fi
printf 'install ok installed\t%s\n' "${line#* }"
"#;

const APT_GET: &str = r#"#!/bin/bash
echo "apt-get $*" >>"$FAKE_DIR/log"
[ "$1" = install ] || exit 0
shift
skip=0
for a in "$@"; do
  if [ "$skip" = 1 ]; then skip=0; continue; fi
  case $a in
    -o) skip=1; continue ;;
    -*) continue ;;
  esac
  pkg=${a%%=*}
  ver=$FAKE_CANDIDATE
  [ "$pkg" != "$a" ] && ver=${a#*=}
  grep -v "^$pkg " "$FAKE_DIR/dpkg" >"$FAKE_DIR/dpkg.new"
  # Debian's qemu-system-x86 removes a qemu-utils of another version.
  if [ "$pkg" = qemu-system-x86 ]; then
    grep -v "^qemu-utils " "$FAKE_DIR/dpkg.new" >"$FAKE_DIR/dpkg.tmp"
    grep "^qemu-utils $ver\$" "$FAKE_DIR/dpkg.new" >>"$FAKE_DIR/dpkg.tmp"
    mv "$FAKE_DIR/dpkg.tmp" "$FAKE_DIR/dpkg.new"
  fi
  echo "$pkg $ver" >>"$FAKE_DIR/dpkg.new"
  mv "$FAKE_DIR/dpkg.new" "$FAKE_DIR/dpkg"
done
"#;

const APT_CACHE: &str = r#"#!/bin/bash
echo "apt-cache $*" >>"$FAKE_DIR/log"
echo "$2:"
echo "  Installed: (none)"
echo "  Candidate: $FAKE_CANDIDATE"
"#;

const ID: &str = r#"#!/bin/bash
echo "$FAKE_UID"
"#;

const CARGO: &str = r#"#!/bin/bash
echo "cargo $*" >>"$FAKE_DIR/log"
"#;

/// A fake machine: its package list, its stubs and what they were asked.
struct Fake {
    dir: tempfile::TempDir,
}

impl Fake {
    /// A machine with the packages of `dpkg` (lines `name version`);
    /// `cargo` says whether a cargo is on PATH.
    fn new(dpkg: &str, cargo: bool) -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        let mut stubs = vec![
            ("dpkg-query", DPKG_QUERY),
            ("apt-get", APT_GET),
            ("apt-cache", APT_CACHE),
            ("id", ID),
        ];
        if cargo {
            stubs.push(("cargo", CARGO));
        }
        for (name, text) in stubs {
            let p = bin.join(name);
            fs::write(&p, text).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        fs::write(dir.path().join("dpkg"), dpkg).unwrap();
        fs::write(dir.path().join("log"), "").unwrap();
        fs::create_dir(dir.path().join("home")).unwrap();
        Fake { dir }
    }

    /// Runs `bash SCRIPT` of the project as user `uid` of the fake machine.
    fn run(&self, script: &str, uid: u32) -> Output {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        // No real cargo (it lives in ~/.cargo/bin), no real apt.
        let path = format!("{}:/usr/bin:/bin", self.dir.path().join("bin").display());
        Command::new("bash")
            .arg(root.join(script))
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", path)
            .env("HOME", self.dir.path().join("home"))
            .env("FAKE_DIR", self.dir.path())
            .env("FAKE_UID", uid.to_string())
            .env("FAKE_CANDIDATE", CANDIDATE)
            .env("CARGO_TARGET_DIR", self.dir.path().join("target"))
            .env("VMSCRIPT_GUEST", self.dir.path().join("guest"))
            .output()
            .unwrap()
    }

    /// The apt-get, apt-cache and cargo commands run, one per line.
    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("log")).unwrap()
    }

    /// The installed version of `pkg`.
    fn version(&self, pkg: &str) -> Option<String> {
        installed(&self.dir.path().join("dpkg"), pkg)
    }
}

fn installed(list: &Path, pkg: &str) -> Option<String> {
    fs::read_to_string(list)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{pkg} ")).map(str::to_string))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn without(pkg: &str) -> String {
    ALL_PRESENT
        .lines()
        .filter(|l| !l.starts_with(&format!("{pkg} ")))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn a_user_without_qemu_gets_one_sudo_line_and_nothing_is_built() {
    let fake = Fake::new(&without("qemu-system-x86"), true);
    let out = fake.run("scripts/examples.sh", 1000);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with("sudo apt-get install --no-install-recommends qemu-system-x86 "),
        "{err}"
    );
    // qemu-utils is of the version qemu-system-x86 will be installed at.
    assert!(!lines[0].contains("qemu-utils"), "{err}");
    assert!(!lines[0].contains("tmux"), "{err}");
    // No apt-get, no cargo build, no guest build.
    assert!(!fake.log().contains("apt-get"), "{}", fake.log());
    assert!(!fake.log().contains("cargo"), "{}", fake.log());
    assert!(out.stdout.is_empty());
}

#[test]
fn test_all_and_ci_stop_before_building_too() {
    for script in ["scripts/test-all.sh", ".ci/run"] {
        let fake = Fake::new(&without("cpio"), true);
        let out = fake.run(script, 1000);
        let err = stderr(&out);
        assert!(!out.status.success(), "{script}: {err}");
        assert!(
            err.contains("sudo apt-get install --no-install-recommends cpio "),
            "{script}: {err}"
        );
        assert!(!fake.log().contains("cargo"), "{script}: {}", fake.log());
    }
}

#[test]
fn a_user_with_a_mismatched_qemu_utils_is_told_its_version() {
    let dpkg = without("qemu-utils") + "qemu-utils 1:8.2+dfsg-1~bpo12+1\n";
    let fake = Fake::new(&dpkg, true);
    let out = fake.run("scripts/setup.sh", 1000);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert_eq!(
        err.lines().next().unwrap().split("    #").next().unwrap(),
        format!("sudo apt-get install --no-install-recommends qemu-utils={CANDIDATE}")
    );
}

#[test]
fn root_with_everything_installed_runs_no_apt_command() {
    let fake = Fake::new(ALL_PRESENT, true);
    let out = fake.run("scripts/setup.sh", 0);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fake.log(), "");
    assert_eq!(stderr(&out), "");
}

#[test]
fn root_installs_what_is_missing_and_qemu_utils_again_at_qemus_version() {
    // A newer qemu-utils, which installing qemu-system-x86 removes.
    let dpkg = without("qemu-system-x86")
        .replace(CANDIDATE, "1:8.2+dfsg-1~bpo12+1")
        .replace("tmux 3.3a-3\n", "");
    let fake = Fake::new(&dpkg, true);
    let out = fake.run("scripts/setup.sh", 0);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = fake.log();
    let apt: Vec<&str> = log.lines().filter(|l| l.starts_with("apt-get")).collect();
    assert_eq!(apt.len(), 3, "{log}");
    assert!(apt[0].starts_with("apt-get update"), "{log}");
    assert!(
        apt[1].starts_with("apt-get install ") && apt[1].ends_with(" qemu-system-x86 tmux"),
        "{log}"
    );
    assert!(
        apt[2].ends_with(&format!(" qemu-utils={CANDIDATE}")),
        "{log}"
    );
    assert_eq!(fake.version("qemu-system-x86").as_deref(), Some(CANDIDATE));
    assert_eq!(fake.version("qemu-utils").as_deref(), Some(CANDIDATE));
    assert!(fake.version("tmux").is_some());
    // Installed: a second run has nothing to do.
    fs::write(fake.dir.path().join("log"), "").unwrap();
    let again = fake.run("scripts/setup.sh", 0);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(fake.log(), "");
}

#[test]
fn packages_named_in_vmscript_setup_extra_are_required() {
    let fake = Fake::new(ALL_PRESENT, true);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("scripts/setup.sh"))
        .env(
            "PATH",
            format!("{}:/usr/bin:/bin", fake.dir.path().join("bin").display()),
        )
        .env("HOME", fake.dir.path().join("home"))
        .env("FAKE_DIR", fake.dir.path())
        .env("FAKE_UID", "1000")
        .env("FAKE_CANDIDATE", CANDIDATE)
        .env("VMSCRIPT_SETUP_EXTRA", "chromium")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.starts_with("sudo apt-get install --no-install-recommends chromium "),
        "{err}"
    );
}

#[test]
fn a_machine_without_cargo_is_told_how_to_get_it() {
    let fake = Fake::new(ALL_PRESENT, false);
    let out = fake.run("scripts/examples.sh", 0);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("cargo not found: install Rust with rustup"),
        "{err}"
    );
    assert_eq!(fake.log(), "");
}

/// Runs `bash SCRIPT` of the project on the fake machine with `path` as
/// PATH, as the user this test runs as, or as `nobody` when that is root.
fn run_as_a_real_user(fake: &Fake, script: &str, path: &str) -> Output {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = if nix::unistd::geteuid().is_root() {
        // nobody must reach the fake machine's files.
        for p in [fake.dir.path(), &fake.dir.path().join("bin")] {
            fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        fs::set_permissions(
            fake.dir.path().join("log"),
            fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        // Found on this PATH, not on the fake machine's.
        let mut c = Command::new(which("setpriv"));
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
        c.arg(which("bash"));
        c
    } else {
        Command::new(which("bash"))
    };
    cmd.arg(root.join(script))
        .current_dir(fake.dir.path())
        .env_clear()
        .env("PATH", path)
        .env("HOME", fake.dir.path().join("home"))
        .env("FAKE_DIR", fake.dir.path())
        .env("FAKE_CANDIDATE", CANDIDATE)
        .env("CARGO_TARGET_DIR", fake.dir.path().join("target"))
        .output()
        .unwrap()
}

#[test]
fn a_real_non_root_user_without_qemu_is_stopped_before_building() {
    // The real `id`: no stub says who runs the script.
    let fake = Fake::new(&without("qemu-system-x86"), true);
    fs::remove_file(fake.dir.path().join("bin/id")).unwrap();
    let path = format!("{}:/usr/bin:/bin", fake.dir.path().join("bin").display());
    for script in ["scripts/examples.sh", "scripts/test-all.sh"] {
        let out = run_as_a_real_user(&fake, script, &path);
        let err = stderr(&out);
        assert!(!out.status.success(), "{script}: {err}");
        assert!(
            err.starts_with("sudo apt-get install --no-install-recommends qemu-system-x86 "),
            "{script}: {err}"
        );
        // Looked up with apt-cache at most: no apt-get, no cargo build.
        assert!(!fake.log().contains("apt-get"), "{script}: {}", fake.log());
        assert!(!fake.log().contains("cargo"), "{script}: {}", fake.log());
        assert!(!fake.dir.path().join("target").exists(), "{script}");
    }
}

#[test]
fn a_machine_without_dpkg_or_qemu_is_told_what_to_install() {
    // A PATH with bash and the few tools the scripts use before the check,
    // and neither dpkg-query nor any QEMU, cpio or tmux.
    let fake = Fake::new(ALL_PRESENT, true);
    let bin = fake.dir.path().join("bin");
    for stub in ["dpkg-query", "apt-get", "apt-cache", "id"] {
        fs::remove_file(bin.join(stub)).unwrap();
    }
    for tool in ["bash", "dirname", "id"] {
        std::os::unix::fs::symlink(which(tool), bin.join(tool)).unwrap();
    }
    let path = bin.display().to_string();
    let out = run_as_a_real_user(&fake, "scripts/examples.sh", &path);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("not a Debian system (no dpkg-query) and these commands are missing: qemu-system-x86_64 qemu-img cpio tmux;"),
        "{err}"
    );
    assert_eq!(fake.log(), "");
    assert!(!fake.dir.path().join("target").exists());
}

/// Where `tool` is in /usr/bin or /bin.
fn which(tool: &str) -> PathBuf {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no {tool}"))
}
