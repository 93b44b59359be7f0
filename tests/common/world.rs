//! A small world for tests of the `vmscript` binary: a temp folder of
//! scripts that is also `$TMPDIR`, a marker in the environment of every
//! process vmscript starts, and the checks that nothing outlived a run.

use std::io::{BufRead, BufReader, Lines};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const VMSCRIPT: &str = env!("CARGO_BIN_EXE_vmscript");

/// Script functions that measure the vmscript process running them
/// (`$PPID` of the shell `run_host` starts), so a script can check that
/// its own process got its descriptors and threads back.
pub const PROBE: &str = r#"
fn vmscript_count(what) {
    // The least of three looks: right after a fork vmscript still holds
    // the child's ends of the pipes for a moment.
    let r = run_host(["sh", "-c", `for i in 1 2 3; do sleep 0.05; ls /proc/$PPID/${what} | wc -l; done | sort -n | head -n 1`]);
    let s = r.stdout;
    s.trim();
    parse_int(s)
}
fn vmscript_fds() { vmscript_count("fd") }
fn vmscript_threads() { vmscript_count("task") }
"#;

pub struct World {
    dir: tempfile::TempDir,
    /// In the environment of vmscript, so of everything it starts.
    mark: String,
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

impl World {
    pub fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let mark = format!(
            "{}-{}",
            std::process::id(),
            dir.path().file_name().unwrap().to_string_lossy()
        );
        World { dir, mark }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The marker in the environment of everything the world's vmscript
    /// starts (for a vmscript started some other way, under tmux say).
    pub fn mark(&self) -> &str {
        &self.mark
    }

    /// Writes a script (folders made as needed).
    pub fn script(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    /// A folder of the world (made as needed).
    pub fn dir(&self, name: &str) -> PathBuf {
        let d = self.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// vmscript's `$TMPDIR`.
    pub fn tmp(&self) -> PathBuf {
        self.dir("tmp")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(VMSCRIPT);
        c.args(args)
            .current_dir(self.path())
            .env("TMPDIR", self.tmp())
            .env("VMSCRIPT_TEST_MARK", &self.mark)
            // The boot cache of the world, never the user's.
            .env("XDG_CACHE_HOME", self.path().join("cache"))
            .env_remove("VMSCRIPT_QEMU")
            .env_remove("VMSCRIPT_MAX_MEMORY_MB")
            // Reports are compared as plain text unless a test asks for colour.
            .env_remove("NO_COLOR")
            .env_remove("CLICOLOR")
            .env_remove("CLICOLOR_FORCE")
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Starts vmscript with its stdout readable line by line.
    pub fn spawn(&self, args: &[&str]) -> Running {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Live processes that vmscript started (found by the marker in
    /// their environment), waiting up to 5 s for them to go.
    pub fn survivors(&self) -> Vec<i32> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let found = marked_processes(&self.mark);
            if found.is_empty() || Instant::now() >= deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything in `$TMPDIR`, sorted, artifacts folders included.
    pub fn tmp_entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.tmp())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// What is left in `$TMPDIR`, artifacts folders aside.
    pub fn leftovers(&self) -> Vec<String> {
        std::fs::read_dir(self.tmp())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("vmscript-artifacts-"))
            .collect()
    }

    /// No process, temp folder or socket survived the run.
    pub fn assert_clean(&self) {
        let alive = self.survivors();
        let described: Vec<String> = alive.iter().map(|&p| describe(p)).collect();
        assert!(
            alive.is_empty(),
            "processes outlived vmscript: {described:?}"
        );
        assert_eq!(self.leftovers(), Vec::<String>::new(), "left in $TMPDIR");
        assert_eq!(sockets_below(self.path()), Vec::<PathBuf>::new());
    }
}

/// A running vmscript.
pub struct Running {
    pub child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// Every line read so far.
    pub seen: Vec<String>,
}

impl Running {
    /// Reads lines until one equals `line`; panics if the output ends first.
    pub fn until(&mut self, line: &str) {
        for l in self.lines.by_ref() {
            let l = l.unwrap();
            let done = l == line;
            self.seen.push(l);
            if done {
                return;
            }
        }
        panic!("vmscript ended before printing {line:?}: {:#?}", self.seen);
    }

    /// The pids printed so far as `pid N`.
    pub fn pids(&self) -> Vec<i32> {
        printed_pids(&self.seen.join("\n"))
    }

    /// Reads the rest and waits for the exit: (status code, all stdout, stderr).
    pub fn finish(mut self) -> (Option<i32>, String, String) {
        for l in self.lines.by_ref() {
            self.seen.push(l.unwrap());
        }
        let out = self.child.wait_with_output().unwrap();
        let mut text = self.seen.join("\n");
        text.push('\n');
        (
            out.status.code(),
            text,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The pids a script printed as `pid N`.
pub fn printed_pids(text: &str) -> Vec<i32> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("pid "))
        .map(|p| p.trim().parse().unwrap())
        .collect()
}

/// Whether `pid` is a live (not zombie) QEMU.
pub fn is_qemu(pid: i32) -> bool {
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true);
    !zombie && is_qemu_process(pid)
}

/// Whether `pid` is a QEMU process, a zombie one included.
pub fn is_qemu_process(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("qemu"))
        .unwrap_or(false)
}

/// Sends `signal` to `pid`.
pub fn signal(pid: i32, signal: i32) {
    // SAFETY: a plain kill(2) on a pid this test was told about.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill {pid}");
}

/// The children of `parent` whose command line contains `needle`.
pub fn children_of(parent: i32, needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r.to_string()) else {
            continue;
        };
        let ppid: i32 = rest
            .split(' ')
            .nth(2)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == parent && String::from_utf8_lossy(&cmd).contains(needle) {
            out.push(pid);
        }
    }
    out
}

/// Live processes whose environment holds `VMSCRIPT_TEST_MARK=mark`.
fn marked_processes(mark: &str) -> Vec<i32> {
    let needle = format!("VMSCRIPT_TEST_MARK={mark}");
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.split(|&b| b == 0).any(|v| v == needle.as_bytes()) {
            out.push(pid);
        }
    }
    out
}

fn describe(pid: i32) -> String {
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    format!(
        "{pid}: {}",
        String::from_utf8_lossy(&cmd).replace('\0', " ")
    )
}

/// Every unix socket file below `dir`.
pub fn sockets_below(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(ty) = e.file_type() else { continue };
            if ty.is_dir() {
                stack.push(e.path());
            } else if ty.is_socket() {
                out.push(e.path());
            }
        }
    }
    out
}

/// The first line of `text` that contains `needle`, trimmed.
pub fn line_with<'a>(text: &'a str, needle: &str) -> &'a str {
    text.lines()
        .find(|l| l.contains(needle))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{text}"))
}

/// A tmpfs mounted for one test (root only), unmounted when dropped.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs with `options` at `path`; `None` when this process
    /// may not mount (not root, or no mount namespace rights).
    pub fn mount(path: &Path, options: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(path)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
