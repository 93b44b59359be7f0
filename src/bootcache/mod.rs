//! Boot once: a guest's booted state is saved the first time a boot is
//! done and restored, in a fraction of a second, every later time the
//! same boot is asked for. [`boot`] is the whole of it; `guest::boot`
//! calls it.
//!
//! A hit starts QEMU with the same command line plus `-incoming defer`
//! and loads the saved state ([`crate::machine`]'s `launch_from_state`),
//! then sets the guest's wall clock to now through the console, which
//! also shows that the shell answers. A miss boots, waits for the ready
//! text, saves (the guest is stopped for that, about a second for
//! 256 MiB) and resumes. Disks are never written: the machine runs on a
//! fresh qcow2 overlay per boot, whose backing file is the disk (a miss)
//! or the overlay saved with the state (a hit), so no boot sees another's
//! writes and the saved state always matches its disks.
//!
//! What a boot depends on is [`key`]'s; the directory, its locking and
//! eviction are [`store`]'s. A boot that cannot be cached, and a saved
//! entry that turns out bad (truncated, or refused by QEMU, or a shell
//! that does not answer), fall back to an ordinary boot; the reason goes
//! to the caller's log.

pub mod key;
pub mod store;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::machine::{Error, Machine, Result};
pub use store::Store;

/// How a boot went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Restored from the cache.
    Restored,
    /// Booted, and saved for next time.
    Saved,
    /// Booted without the cache.
    Booted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Restored => "restored",
            Outcome::Saved => "saved",
            Outcome::Booted => "booted",
        }
    }
}

/// What `guest::boot` asks for.
pub struct Request<'a> {
    /// The console text that says the shell is up.
    pub ready: &'a str,
    /// How long a boot may take.
    pub timeout: Duration,
    /// Use the cache (`snapshot: false` turns it off).
    pub snapshot: bool,
    /// Why the caller knows the boot cannot be cached, if it does.
    pub refuse: Option<String>,
    /// Where per-boot overlays go (removed with the test).
    pub scratch: &'a Path,
    /// Where the reasons go.
    pub log: &'a dyn Fn(&str),
}

/// One line of `vmscript cache list`: id, size, last use, and the
/// binary and files the boot depends on.
pub fn describe_entry(e: &store::Listed) -> String {
    let age = SystemTime::now()
        .duration_since(e.last_used)
        .map_or(0, |d| d.as_secs());
    let what = match &e.meta {
        Some(m) => m
            .descriptor
            .iter()
            .filter_map(|l| {
                l.strip_prefix("binary ")
                    .or_else(|| l.strip_prefix("arg /"))
                    .map(|v| v.rsplit('/').next().unwrap_or(v).to_string())
            })
            .collect::<Vec<_>>()
            .join(" "),
        None => "(incomplete)".to_string(),
    };
    format!(
        "{}  {:>6.1} MiB  used {age}s ago  {what}",
        e.id,
        e.bytes as f64 / f64::from(1 << 20)
    )
}

/// Whether `VMSCRIPT_BOOT_CACHE` turns the cache off.
pub fn disabled_by_env() -> bool {
    matches!(
        std::env::var("VMSCRIPT_BOOT_CACHE")
            .as_deref()
            .map(str::trim),
        Ok("off" | "0" | "false" | "no")
    )
}

/// Launches `m` (configured, not launched) and waits until its guest's
/// shell is up, restoring a saved boot when there is one.
pub fn boot(m: &mut Machine, req: &Request) -> Result<Outcome> {
    let why_not = if !req.snapshot {
        Some("snapshot: false".to_string())
    } else if disabled_by_env() {
        Some("VMSCRIPT_BOOT_CACHE=off".to_string())
    } else {
        req.refuse.clone()
    };
    if let Some(why) = why_not {
        (req.log)(&format!("boot cache: not used: {why}"));
        return plain_boot(m, req);
    }
    let Some(store) = Store::from_env() else {
        (req.log)("boot cache: not used: neither XDG_CACHE_HOME nor HOME is set");
        return plain_boot(m, req);
    };
    if let Err(e) = store.create() {
        (req.log)(&format!(
            "boot cache: not used: creating {}: {e}",
            store.root().display()
        ));
        return plain_boot(m, req);
    }
    let key = match key::describe(m, &store.hashes()) {
        Ok(k) => k,
        Err(why) => {
            (req.log)(&format!("boot cache: not used: {why}"));
            return plain_boot(m, req);
        }
    };
    cached_boot(m, req, &store, &key)
}

fn plain_boot(m: &mut Machine, req: &Request) -> Result<Outcome> {
    m.launch()?;
    wait_ready(m, req)?;
    Ok(Outcome::Booted)
}

fn wait_ready(m: &Machine, req: &Request) -> Result<()> {
    m.wait_for_console_pattern(req.ready, None, req.timeout)
        .map(drop)
}

fn cached_boot(m: &mut Machine, req: &Request, store: &Store, key: &key::Key) -> Result<Outcome> {
    let id = key.id();
    let original = m.args().to_vec();
    match store.lookup(&id, &key.descriptor) {
        Ok(Some(entry)) => match restore(m, req, key, &entry) {
            Ok(()) => return Ok(Outcome::Restored),
            // Stopped from outside (Ctrl-C, a timeout): the entry is fine.
            Err(e @ Error::Interrupted { .. }) => return Err(e),
            Err(e) => {
                (req.log)(&format!(
                    "boot cache: restoring {id} failed, removing it and booting: {e}"
                ));
                m.kill();
                store.remove(&id);
                m.set_args(original.clone())?;
            }
        },
        Ok(None) => {}
        Err(why) => (req.log)(&format!("boot cache: entry {id} removed: {why}")),
    }
    let writer = match store.begin(&id) {
        Ok(w) => w,
        Err(e) => {
            (req.log)(&format!("boot cache: cannot write entry {id}: {e}"));
            None
        }
    };
    if writer.is_none() {
        (req.log)(&format!(
            "boot cache: entry {id} is being saved by another run; booting without saving"
        ));
    }
    let overlays = overlays(m, req, key, |d| (d.file.clone(), d.format.clone()))?;
    m.launch()?;
    wait_ready(m, req)?;
    let Some(writer) = writer else {
        return Ok(Outcome::Booted);
    };
    let started = Instant::now();
    match save(m, key, &overlays, &writer) {
        Ok(()) => {
            let resumed = m.resume();
            let committed = writer.commit(key.descriptor.clone(), overlays.len());
            resumed?;
            match committed {
                Ok(()) => {
                    (req.log)(&format!(
                        "boot cache: saved {id} in {:.2}s",
                        started.elapsed().as_secs_f64()
                    ));
                    let evicted = store.evict(store::max_bytes(), &id);
                    if !evicted.is_empty() {
                        (req.log)(&format!("boot cache: evicted {}", evicted.join(", ")));
                    }
                    Ok(Outcome::Saved)
                }
                Err(e) => {
                    (req.log)(&format!("boot cache: saving {id} failed: {e}"));
                    Ok(Outcome::Booted)
                }
            }
        }
        Err(e) => {
            (req.log)(&format!("boot cache: saving {id} failed: {e}"));
            // A failed migration leaves the guest stopped.
            let status = m.command("query-status", None, false)?;
            if status["running"] != serde_json::Value::Bool(true) {
                m.resume()?;
            }
            Ok(Outcome::Booted)
        }
    }
}

/// Writes the state and copies the overlays (the guest is stopped and
/// its disks flushed in between) into the entry being written.
fn save(m: &mut Machine, key: &key::Key, overlays: &[PathBuf], w: &store::Writer) -> Result<()> {
    let file = File::create(w.state()).map_err(|e| Error::host("creating the state file", e))?;
    m.save_state(&file, Duration::from_secs(120))?;
    drop(file);
    for (i, o) in overlays.iter().enumerate() {
        std::fs::copy(o, w.disk(i)).map_err(|e| Error::host("copying a disk overlay", e))?;
    }
    debug_assert_eq!(overlays.len(), key.disks.len());
    Ok(())
}

fn restore(m: &mut Machine, req: &Request, key: &key::Key, entry: &store::Entry) -> Result<()> {
    let started = Instant::now();
    overlays(m, req, key, |d| {
        let i = key.disks.iter().position(|x| x == d).unwrap_or(0);
        (entry.disk(i), "qcow2".to_string())
    })?;
    let file = File::open(entry.state()).map_err(|e| Error::host("opening the state file", e))?;
    m.launch_from_state(&file, req.timeout)?;
    entry.touch();
    set_clock(m, req.timeout.min(Duration::from_secs(60)))?;
    (req.log)(&format!(
        "boot cache: restored {} in {:.2}s",
        entry.id,
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Sets the guest's wall clock to the host's, through the shell; seeing
/// its answer also shows the console works.
fn set_clock(m: &Machine, timeout: Duration) -> Result<()> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let nonce = now.as_nanos() % 1_000_000_007;
    let con = m.console_socket()?;
    // `date -s` takes whole seconds: the nearest one is at most half a
    // second off, and sleeping until the next one would double a restore.
    let secs = (now.as_millis() + 500) / 1000;
    // `$M` keeps the command line's echo from matching the answer.
    con.send_line(&format!(
        "M=vmsclock; date -s @{secs} >/dev/null; echo \"$M-{nonce}\""
    ))?;
    m.wait_for_console_pattern(&format!("vmsclock-{nonce}"), None, timeout)
        .map(drop)
}

/// Points each disk's `-drive` at a new qcow2 overlay in `req.scratch`
/// over `backing(disk)`; returns the overlays.
fn overlays(
    m: &mut Machine,
    req: &Request,
    key: &key::Key,
    backing: impl Fn(&key::Disk) -> (PathBuf, String),
) -> Result<Vec<PathBuf>> {
    if key.disks.is_empty() {
        return Ok(Vec::new());
    }
    let mut args = m.args().to_vec();
    let dir = tempfile::Builder::new()
        .prefix("boot-overlays-")
        .tempdir_in(req.scratch)
        .map_err(|e| Error::host("making a dir for disk overlays", e))?
        .keep();
    let mut made = Vec::new();
    for (i, d) in key.disks.iter().enumerate() {
        let (file, format) = backing(d);
        let overlay = dir.join(format!("disk{i}.qcow2"));
        qemu_img_create(&m.options().binary, &file, &format, &overlay)?;
        let value = args[d.arg]
            .split(',')
            .map(|p| match p.split_once('=') {
                Some(("file", _)) => format!("file={}", overlay.display()),
                Some(("format", _)) => "format=qcow2".to_string(),
                _ => p.to_string(),
            })
            .collect::<Vec<_>>()
            .join(",");
        args[d.arg] = value;
        made.push(overlay);
    }
    m.set_args(args)?;
    Ok(made)
}

/// `qemu-img create -f qcow2 -b BACKING -F FORMAT OVERLAY`, with the
/// `qemu-img` beside the QEMU binary when there is one.
fn qemu_img_create(binary: &Path, backing: &Path, format: &str, overlay: &Path) -> Result<()> {
    let beside = binary
        .parent()
        .map(|d| d.join("qemu-img"))
        .filter(|p| p.is_file());
    let img = beside.unwrap_or_else(|| PathBuf::from("qemu-img"));
    let out = std::process::Command::new(&img)
        .args(["create", "-q", "-f", "qcow2", "-F", format, "-b"])
        .arg(backing)
        .arg(overlay)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Error::host(format!("running {}", img.display()), e))?;
    if !out.status.success() {
        return Err(Error::host(
            "creating a disk overlay",
            String::from_utf8_lossy(&out.stderr).trim(),
        ));
    }
    Ok(())
}
