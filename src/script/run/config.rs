//! What a run is given: [`RunConfig`], and the default QEMU binary
//! ([`QemuBinary`]) with where it came from, so that a missing binary is
//! reported with the way to choose another. Knows nothing of a running
//! script.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::machine;

/// Where the default QEMU binary came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QemuSource {
    /// `--qemu BINARY`.
    Flag,
    /// `$VMSCRIPT_QEMU`.
    Env,
    /// `qemu` in `[run]` of this `vmscript.toml`.
    File(PathBuf),
    /// `qemu-system-<host arch>` in `$PATH`.
    Default,
}

/// The QEMU binary `machine()` uses when given none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuBinary {
    pub path: PathBuf,
    pub source: QemuSource,
}

impl QemuBinary {
    /// `flag` (from `--qemu`), else `$VMSCRIPT_QEMU`, else
    /// `qemu-system-<host arch>`.
    pub fn resolve(flag: Option<PathBuf>) -> QemuBinary {
        if let Some(path) = flag {
            return QemuBinary {
                path,
                source: QemuSource::Flag,
            };
        }
        match std::env::var_os("VMSCRIPT_QEMU").filter(|v| !v.is_empty()) {
            Some(v) => QemuBinary {
                path: v.into(),
                source: QemuSource::Env,
            },
            None => QemuBinary {
                path: format!("qemu-system-{}", std::env::consts::ARCH).into(),
                source: QemuSource::Default,
            },
        }
    }

    /// Whether the binary was chosen by the user (`--qemu` or the
    /// environment) rather than defaulted.
    pub fn is_explicit(&self) -> bool {
        self.source != QemuSource::Default
    }

    /// The binary's full path, or one line saying what was tried and how
    /// to choose another.
    pub fn locate(&self) -> Result<PathBuf, String> {
        let shown = self.path.display();
        let how = "pass --qemu BINARY or set VMSCRIPT_QEMU";
        let from = match &self.source {
            QemuSource::Flag => "given with --qemu".to_string(),
            QemuSource::Env => "from $VMSCRIPT_QEMU".to_string(),
            QemuSource::File(f) => format!("set in {}", f.display()),
            QemuSource::Default => "the default for this host".to_string(),
        };
        if self.path.components().count() > 1 || self.path.is_absolute() {
            use std::os::unix::fs::PermissionsExt;
            return match self.path.metadata() {
                Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {
                    Ok(self.path.clone())
                }
                Ok(_) => Err(format!(
                    "QEMU binary {shown} ({from}) is not an executable file; {how}"
                )),
                Err(_) => Err(format!(
                    "QEMU binary {shown} ({from}) does not exist; {how}"
                )),
            };
        }
        machine::process::which(&self.path.to_string_lossy())
            .ok_or_else(|| format!("QEMU binary {shown} ({from}) not found in $PATH; {how}"))
    }
}

/// What a run is given.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The script file.
    pub script: PathBuf,
    /// The folder for logs; must exist.
    pub artifacts: PathBuf,
    /// How long the script may run.
    pub timeout: Duration,
    /// The default QEMU binary.
    pub qemu: QemuBinary,
    /// `KEY=VALUE` pairs for `param()`.
    pub params: BTreeMap<String, String>,
    /// Keep `print`/`log` output for the report (else: to stdout).
    pub capture: bool,
    /// Extra module folders (`--lib`).
    pub lib_dirs: Vec<PathBuf>,
    /// `--debug-on-fail`: what a failed test is handed to, machines
    /// running, before its cleanup ([`crate::script::debug`]).
    pub debugger: Option<crate::script::debug::Debugger>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_are_one_line_naming_the_path_and_the_fix() {
        let q = QemuBinary {
            path: "/nonexistent/qemu-system-x86_64".into(),
            source: QemuSource::Flag,
        };
        let e = q.locate().unwrap_err();
        assert!(!e.contains('\n'));
        assert!(e.contains("/nonexistent/qemu-system-x86_64"), "{e}");
        assert!(e.contains("--qemu"), "{e}");
        assert!(e.contains("VMSCRIPT_QEMU"), "{e}");
        let q = QemuBinary {
            path: "no-such-qemu-binary".into(),
            source: QemuSource::Default,
        };
        assert!(q.locate().unwrap_err().contains("$PATH"));
    }
}
