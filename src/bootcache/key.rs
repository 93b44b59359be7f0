//! What determines a booted state, written out as a descriptor (one line
//! per fact) whose hash names the cache entry: the QEMU binary and what
//! its `--version` prints, the command line without what differs per
//! instance (socket paths, descriptors), and the contents of the files
//! the command line names (kernel, initrd, disks). A command line that
//! names a file the descriptor cannot vouch for is refused, with why.
//!
//! File contents are hashed once per path, size and modification time;
//! the hashes are kept in `hashes.json` in the cache dir.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hasher;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::machine::Machine;

/// Options whose value is a file QEMU reads once at start: its contents
/// are part of the state.
const FILE_OPTIONS: &[&str] = &["-kernel", "-initrd", "-bios", "-dtb"];

/// Keys inside an option value (`-chardev socket,path=…`) that name a
/// per-instance resource, not part of the state; so do keys ending in
/// `.path`, `.port` or `.fd` (`-netdev stream,addr.path=…`).
const INSTANCE_KEYS: &[&str] = &["path", "fd", "socket", "logfile", "connect", "listen"];

/// Options that bring state a saved boot cannot stand for.
const UNCACHEABLE: &[(&str, &str)] = &[
    ("-incoming", "the machine waits for a migration stream"),
    ("-loadvm", "the machine loads a snapshot of its own"),
    ("-daemonize", "QEMU would leave its supervisor"),
];

/// Network backends joined to the host's side, whose state lives outside
/// QEMU.
const HOST_NETDEVS: &[&str] = &[
    "tap",
    "bridge",
    "vhost-user",
    "vhost-vdpa",
    "l2tpv3",
    "vde",
    "af-xdp",
    "vmnet-host",
    "vmnet-shared",
    "vmnet-bridged",
];

/// A disk the command line attaches: the machine boots from a per-test
/// overlay over it, never from the file itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Disk {
    /// The index of the `-drive` value in the machine's arguments.
    pub arg: usize,
    /// The image, absolute.
    pub file: PathBuf,
    /// `raw` or `qcow2`.
    pub format: String,
}

/// The key of one boot.
#[derive(Debug, Clone)]
pub struct Key {
    /// The facts, one per line; an entry holds them and must match.
    pub descriptor: Vec<String>,
    /// The disks, in command line order.
    pub disks: Vec<Disk>,
}

impl Key {
    /// The entry's name: a hash of the descriptor, in hex.
    pub fn id(&self) -> String {
        let mut h = Fnv::default();
        for line in &self.descriptor {
            h.write(line.as_bytes());
            h.write(b"\n");
        }
        format!("{:016x}", h.finish())
    }
}

/// Describes the boot `m` would do; `Err` says why it cannot be cached.
pub fn describe(m: &Machine, hashes: &Path) -> Result<Key, String> {
    let opts = m.options();
    if !opts.wrapper.is_empty() {
        return Err("the machine runs under a wrapper".into());
    }
    if m.has_outside_state() {
        return Err("the machine is passed descriptors (add_fd) or runs qtest".into());
    }
    let binary = resolve_binary(&opts.binary)
        .ok_or_else(|| format!("QEMU binary {} not found", opts.binary.display()))?;
    let mut index = HashIndex::load(hashes);
    let mut d = vec![
        "vmscript boot cache 1".to_string(),
        format!("binary {}", binary.display()),
        format!("version {}", version(&binary)?),
    ];
    match m.console_config() {
        Some((device, index)) => d.push(format!("console {device:?} {index}")),
        None => d.push("console none".into()),
    }
    // The agent's port is a device: a state saved without it cannot be
    // loaded with it, nor the other way round.
    d.push(format!("agent {}", m.has_guest_agent()));
    let mut disks = Vec::new();
    let args = m.args();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if let Some((_, why)) = UNCACHEABLE.iter().find(|(o, _)| o == a) {
            return Err(format!("{a}: {why}"));
        }
        if matches!(a.as_str(), "-netdev" | "-nic" | "-net") {
            let kind = args
                .get(i + 1)
                .map_or("", |v| v.split(',').next().unwrap_or(""));
            if HOST_NETDEVS.contains(&kind) {
                return Err(format!("{a} {kind}: a network backend on the host's side"));
            }
        }
        d.push(format!("arg {a}"));
        if FILE_OPTIONS.contains(&a.as_str()) || a == "-append" {
            let Some(v) = args.get(i + 1) else { break };
            if a == "-append" {
                d.push(format!("arg {v}"));
            } else {
                let file = absolute(Path::new(v));
                d.push(format!("file {}", index.hash(&file)?));
            }
            i += 2;
            continue;
        }
        if a == "-drive" {
            let Some(v) = args.get(i + 1) else { break };
            let (line, disk) = drive(v, i + 1, &mut index)?;
            d.push(line);
            disks.extend(disk);
            i += 2;
            continue;
        }
        if i > 0 && args[i - 1].starts_with('-') && !a.starts_with('-') {
            // An option's value: `arg` was already pushed; normalise it.
            d.pop();
            d.push(format!("arg {}", instance_free(a)?));
        } else if names_a_file(a) {
            return Err(format!(
                "argument {a:?} names a file the cache cannot vouch for"
            ));
        }
        i += 1;
    }
    index.save(hashes);
    Ok(Key {
        descriptor: d,
        disks,
    })
}

/// A `-drive` value: its line in the descriptor and the disk it attaches.
fn drive(v: &str, arg: usize, index: &mut HashIndex) -> Result<(String, Option<Disk>), String> {
    let mut parts = Vec::new();
    let mut file = None;
    let mut format = None;
    for p in v.split(',') {
        match p.split_once('=') {
            Some(("file", f)) => file = Some(absolute(Path::new(f))),
            Some(("format", f)) => format = Some(f.to_string()),
            Some(("snapshot", _)) | Some(("readonly", _)) | None => {
                return Err(format!(
                    "-drive {v}: only file=, format= and plain options are cacheable"
                ))
            }
            _ => parts.push(p.to_string()),
        }
    }
    let Some(file) = file else {
        return Ok((format!("drive {v}"), None));
    };
    let format = format.unwrap_or_default();
    if format != "raw" && format != "qcow2" {
        return Err(format!(
            "-drive {v}: a disk needs format=raw or format=qcow2"
        ));
    }
    if format == "qcow2" && qcow2_has_backing(&file)? {
        return Err(format!(
            "{}: a qcow2 image with a backing file",
            file.display()
        ));
    }
    let line = format!(
        "drive {} {} {format} {}",
        parts.join(","),
        file.display(),
        index.hash(&file)?
    );
    Ok((line, Some(Disk { arg, file, format })))
}

/// `a` with per-instance values (`path=`, `fd=`) blanked; an error when
/// another part names an existing file.
fn instance_free(a: &str) -> Result<String, String> {
    if names_a_file(a) {
        return Err(format!(
            "argument {a:?} names a file the cache cannot vouch for"
        ));
    }
    let parts: Vec<String> = a
        .split(',')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if per_instance(k) => format!("{k}=*"),
            Some((_, v)) if names_a_file(v) => String::from("\u{0}"),
            _ => p.to_string(),
        })
        .collect();
    if parts.iter().any(|p| p == "\u{0}") {
        return Err(format!(
            "argument {a:?} names a file the cache cannot vouch for"
        ));
    }
    Ok(parts.join(","))
}

/// Whether the key `k` of an option value names a per-instance resource.
fn per_instance(k: &str) -> bool {
    INSTANCE_KEYS.contains(&k) || [".path", ".port", ".fd"].iter().any(|end| k.ends_with(end))
}

/// Whether `v` looks like a path to an existing regular file.
fn names_a_file(v: &str) -> bool {
    v.contains('/') && Path::new(v).is_file()
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The qcow2 header's backing file offset (bytes 8..16) is non-zero.
fn qcow2_has_backing(file: &Path) -> Result<bool, String> {
    let mut header = [0u8; 16];
    std::fs::File::open(file)
        .and_then(|mut f| f.read_exact(&mut header))
        .map_err(|e| format!("reading {}: {e}", file.display()))?;
    Ok(header[8..16].iter().any(|b| *b != 0))
}

/// The binary as a path: as given when it has a `/`, else found in PATH.
fn resolve_binary(binary: &Path) -> Option<PathBuf> {
    if binary.components().count() > 1 {
        return binary.is_file().then(|| absolute(binary));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(binary))
            .find(|p| p.is_file())
    })
}

/// What `binary --version` prints, once per binary, size and mtime.
fn version(binary: &Path) -> Result<String, String> {
    static SEEN: Mutex<BTreeMap<(PathBuf, u64, i64, i64), String>> = Mutex::new(BTreeMap::new());
    let meta = std::fs::metadata(binary).map_err(|e| format!("{}: {e}", binary.display()))?;
    let id = (
        binary.to_path_buf(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
    );
    if let Some(v) = crate::sync::lock(&SEEN).get(&id) {
        return Ok(v.clone());
    }
    let out = std::process::Command::new(binary)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("running {} --version: {e}", binary.display()))?;
    if !out.status.success() {
        return Err(format!("{} --version failed", binary.display()));
    }
    let v = String::from_utf8_lossy(&out.stdout)
        .trim()
        .replace('\n', " | ");
    crate::sync::lock(&SEEN).insert(id, v.clone());
    Ok(v)
}

/// FNV-1a, 64 bits: stable across builds, unlike std's hasher.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A file's contents as a hash: four FNV lanes over interleaved 8-byte
/// words, fast enough for disk images, plus the length.
pub fn content_hash(file: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(file)?;
    let mut lanes = [
        0xcbf2_9ce4_8422_2325u64,
        0x8422_2325_cbf2_9ce4,
        0x9ce4_8422_2325_cbf2,
        0x2325_cbf2_9ce4_8422,
    ];
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        let (words, rest) = buf[..n].split_at(n - n % 8);
        for (i, w) in words.chunks_exact(8).enumerate() {
            let lane = &mut lanes[i % 4];
            *lane ^= u64::from_le_bytes(w.try_into().expect("chunks of 8"));
            *lane = lane.wrapping_mul(0x0100_0000_01b3).rotate_left(29);
        }
        for b in rest {
            lanes[0] ^= u64::from(*b);
            lanes[0] = lanes[0].wrapping_mul(0x0100_0000_01b3);
        }
    }
    Ok(format!(
        "{:016x}{:016x}{:016x}{:016x}-{total}",
        lanes[0], lanes[1], lanes[2], lanes[3]
    ))
}

/// Content hashes by path, size and mtime, in `hashes.json`.
struct HashIndex {
    known: HashMap<String, (u64, i64, i64, String)>,
    changed: bool,
}

impl HashIndex {
    fn load(path: &Path) -> HashIndex {
        let known = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        HashIndex {
            known,
            changed: false,
        }
    }

    fn hash(&mut self, file: &Path) -> Result<String, String> {
        let meta = std::fs::metadata(file).map_err(|e| format!("{}: {e}", file.display()))?;
        if !meta.is_file() {
            return Err(format!("{} is not a regular file", file.display()));
        }
        let name = file.display().to_string();
        let stamp = (meta.size(), meta.mtime(), meta.mtime_nsec());
        if let Some((s, t, n, h)) = self.known.get(&name) {
            if (*s, *t, *n) == stamp {
                return Ok(h.clone());
            }
        }
        let h = content_hash(file).map_err(|e| format!("reading {name}: {e}"))?;
        self.known
            .insert(name, (stamp.0, stamp.1, stamp.2, h.clone()));
        self.changed = true;
        Ok(h)
    }

    /// Written atomically; a lost race only costs a hash next time.
    fn save(&self, path: &Path) {
        if !self.changed {
            return;
        }
        let Some(dir) = path.parent() else { return };
        let Ok(mut tmp) = tempfile::NamedTempFile::new_in(dir) else {
            return;
        };
        let Ok(text) = serde_json::to_vec(&self.known) else {
            return;
        };
        use std::io::Write;
        if tmp.write_all(&text).is_ok() {
            let _ = tmp.persist(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_paths_are_blanked() {
        assert_eq!(
            instance_free("socket,id=ch,path=/tmp/x/ch.sock,server=on").unwrap(),
            "socket,id=ch,path=*,server=on"
        );
        assert_eq!(instance_free("virtio-serial").unwrap(), "virtio-serial");
        assert_eq!(
            instance_free("stream,server=off,addr.type=unix,addr.path=/tmp/a/l-port0.sock,id=net0")
                .unwrap(),
            "stream,server=off,addr.type=unix,addr.path=*,id=net0"
        );
        assert_eq!(
            instance_free(
                "dgram,local.type=unix,local.path=/t/m,remote.type=unix,remote.path=/t/h"
            )
            .unwrap(),
            "dgram,local.type=unix,local.path=*,remote.type=unix,remote.path=*"
        );
        assert_eq!(
            instance_free("socket,connect=127.0.0.1:20417,id=net0").unwrap(),
            "socket,connect=*,id=net0"
        );
        assert_eq!(
            instance_free("stream,addr.type=inet,addr.host=127.0.0.1,addr.port=4444").unwrap(),
            "stream,addr.type=inet,addr.host=127.0.0.1,addr.port=*"
        );
    }

    /// `describe` of a machine with `args`, in a cache dir of its own.
    fn describe_args(args: &[&str]) -> Result<Key, String> {
        let dir = tempfile::tempdir().unwrap();
        let mut m =
            Machine::new(crate::machine::MachineOptions::new("qemu-system-x86_64")).unwrap();
        m.add_args(args).unwrap();
        describe(&m, &dir.path().join("hashes.json"))
    }

    #[test]
    fn host_state_and_incoming_are_refused_and_a_link_is_not() {
        let why = describe_args(&["-M", "q35", "-incoming", "defer"]).unwrap_err();
        assert!(why.contains("-incoming"), "{why}");
        let why = describe_args(&["-netdev", "tap,id=n,ifname=tap0"]).unwrap_err();
        assert!(why.contains("-netdev tap"), "{why}");
        let why = describe_args(&["-nic", "bridge,br=br0"]).unwrap_err();
        assert!(why.contains("-nic bridge"), "{why}");
        // Two members of a link differ in their socket paths only: one key.
        let a = describe_args(&[
            "-netdev",
            "stream,server=off,addr.type=unix,addr.path=/t/a.sock,id=n",
        ])
        .unwrap();
        let b = describe_args(&[
            "-netdev",
            "stream,server=off,addr.type=unix,addr.path=/u/b.sock,id=n",
        ])
        .unwrap();
        assert_eq!(a.id(), b.id());
        // ... and a different MAC is a different guest.
        let c =
            describe_args(&["-device", "virtio-net-pci,netdev=n,mac=52:54:00:12:34:01"]).unwrap();
        let d =
            describe_args(&["-device", "virtio-net-pci,netdev=n,mac=52:54:00:12:34:02"]).unwrap();
        assert_ne!(c.id(), d.id());
    }

    #[test]
    fn a_value_naming_a_file_is_refused() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let arg = format!("driver=file,filename={}", f.path().display());
        assert!(instance_free(&arg).is_err());
    }

    #[test]
    fn content_hash_sees_every_byte_and_the_length() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, vec![7u8; 3 << 20]).unwrap();
        let h1 = content_hash(&a).unwrap();
        let mut data = vec![7u8; 3 << 20];
        data[(2 << 20) + 5] = 8;
        std::fs::write(&a, &data).unwrap();
        assert_ne!(content_hash(&a).unwrap(), h1);
        std::fs::write(&a, vec![7u8; (3 << 20) + 1]).unwrap();
        assert_ne!(content_hash(&a).unwrap(), h1);
    }

    #[test]
    fn hashes_are_remembered_by_size_and_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k");
        let idx = dir.path().join("hashes.json");
        std::fs::write(&f, b"kernel").unwrap();
        let mut i = HashIndex::load(&idx);
        let h = i.hash(&f).unwrap();
        i.save(&idx);
        let mut again = HashIndex::load(&idx);
        assert_eq!(again.hash(&f).unwrap(), h);
        assert!(!again.changed);
    }
}
