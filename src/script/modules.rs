//! `import "name" as m;`: where a module is found, and compiling it once.
//!
//! A plain name is looked up, in order, in the importing module's own
//! folder (the script's folder for the script itself), each `--lib`
//! folder, each `$VMSCRIPT_PATH` entry, and the stdlib bundled in the
//! binary ([`super::stdlib`]). In a folder, the name `a/b` is the file
//! `a/b.rhai` or the folder module `a/b/mod.rhai`; both at once is an
//! error. A missing module's error lists every place searched.
//!
//! Names cannot escape the listed folders: a name is a relative path of
//! plain components, so absolute names and `.`/`..` inside a name are
//! refused. A name may only *start* with `./` or `../` components; such a
//! name is relative to the importing module's own folder, like a relative
//! path in its source, and is looked up there only. (Symbolic links inside
//! a listed folder are followed: they are that folder owner's choice.)
//!
//! Start with [`Resolver`], the engine's resolver for one run: it
//! evaluates each module once per run, so every import of a module in one
//! test shares it, and it refuses import cycles. [`locate`] finds a module
//! without loading it. Compiled modules are kept for the process's
//! lifetime ([`compile_cached`]), so a module imported by every test of a
//! `vmscript run`, on however many threads, is compiled once (and again
//! only when its file changes).

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex};
use std::thread::ThreadId;
use std::time::SystemTime;

use rhai::module_resolvers::ModuleResolver;
use rhai::{Dynamic, Engine, EvalAltResult, Module, Position, Scope, AST};

use super::run::lock;
use super::{errors, stdlib};

/// A module shared by its importers.
type SharedModule = rhai::Shared<Module>;

/// The folders searched after the importing module's own: `--lib` folders,
/// then `$VMSCRIPT_PATH` entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchPath {
    pub lib_dirs: Vec<PathBuf>,
    pub env_dirs: Vec<PathBuf>,
}

impl SearchPath {
    /// `lib_dirs` and the entries of `$VMSCRIPT_PATH` (colon-separated;
    /// empty entries are skipped).
    pub fn from_env(lib_dirs: &[PathBuf]) -> SearchPath {
        let env_dirs = std::env::var_os("VMSCRIPT_PATH")
            .map(|p| {
                std::env::split_paths(&p)
                    .filter(|d| !d.as_os_str().is_empty())
                    .collect()
            })
            .unwrap_or_default();
        SearchPath {
            lib_dirs: lib_dirs.to_vec(),
            env_dirs,
        }
    }
}

/// A folder modules are looked up in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Folder {
    Dir(PathBuf),
    Stdlib,
}

impl Folder {
    /// The folder of the module whose source is `source`: the stdlib for
    /// a stdlib module, else the file's folder (the current one for a
    /// script without a source).
    pub fn of_source(source: Option<&str>) -> Folder {
        match source {
            Some(s) if s.starts_with(stdlib::PREFIX) => Folder::Stdlib,
            Some(s) => Folder::Dir(
                Path::new(s)
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default(),
            ),
            None => Folder::Dir(PathBuf::new()),
        }
    }
}

/// Where a module was found.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// A file, by its canonical path.
    File(PathBuf),
    /// A bundled module.
    Stdlib(&'static str),
}

/// A module found by [`locate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub key: Key,
    /// How it is shown (and its source, for errors and nested imports):
    /// the path as found, or `<stdlib>/NAME.rhai`.
    pub shown: String,
}

/// Why a module could not be found.
#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    #[error("invalid module name {name:?}: {reason}")]
    Invalid { name: String, reason: &'static str },
    #[error("module {name:?} not found; searched, in order:{}", list(searched))]
    NotFound { name: String, searched: Vec<String> },
    #[error("module {name:?} is ambiguous: both {first} and {second} exist")]
    Ambiguous {
        name: String,
        first: String,
        second: String,
    },
}

fn list(items: &[String]) -> String {
    items.iter().map(|i| format!("\n  {i}")).collect()
}

/// A checked module name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Name {
    /// `./` or `../` at the start: relative to the importer's folder only.
    explicit: bool,
    /// The leading `..` count.
    up: usize,
    /// The plain components.
    parts: Vec<String>,
}

fn parse_name(name: &str) -> Result<Name, LocateError> {
    let invalid = |reason| LocateError::Invalid {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.starts_with('/') {
        return Err(invalid(
            "absolute names are refused; add the folder with --lib or $VMSCRIPT_PATH",
        ));
    }
    if name.contains('\\') || name.contains('\0') {
        return Err(invalid("it contains a backslash or NUL"));
    }
    let name = name.strip_suffix(".rhai").unwrap_or(name);
    let mut n = Name {
        explicit: false,
        up: 0,
        parts: Vec::new(),
    };
    for c in name.split('/') {
        match c {
            "." | ".." if !n.parts.is_empty() => {
                return Err(invalid(
                    "`.` and `..` may only start a name (relative to the importing module)",
                ))
            }
            "." => n.explicit = true,
            ".." => {
                n.explicit = true;
                n.up += 1;
            }
            "" => return Err(invalid("it has an empty component")),
            c => n.parts.push(c.to_string()),
        }
    }
    if n.parts.is_empty() {
        return Err(invalid("it names a folder, not a module"));
    }
    Ok(n)
}

/// Finds module `name` imported from `importer`; see the module
/// documentation for the order.
pub fn locate(name: &str, importer: &Folder, search: &SearchPath) -> Result<Located, LocateError> {
    let n = parse_name(name)?;
    let mut folders: Vec<Folder> = Vec::new();
    if n.explicit {
        match importer {
            Folder::Stdlib if n.up > 0 => {
                return Err(LocateError::Invalid {
                    name: name.to_string(),
                    reason: "a stdlib module has no parent folder",
                })
            }
            Folder::Stdlib => folders.push(Folder::Stdlib),
            Folder::Dir(d) => {
                let mut d = d.clone();
                for _ in 0..n.up {
                    d.push("..");
                }
                folders.push(Folder::Dir(d));
            }
        }
    } else {
        folders.push(importer.clone());
        folders.extend(search.lib_dirs.iter().cloned().map(Folder::Dir));
        folders.extend(search.env_dirs.iter().cloned().map(Folder::Dir));
        folders.push(Folder::Stdlib);
    }
    let mut searched = Vec::new();
    let mut seen: Vec<&Folder> = Vec::new();
    for f in &folders {
        if seen.contains(&f) {
            continue;
        }
        seen.push(f);
        let found = match f {
            Folder::Stdlib => {
                let hit = match n.parts.as_slice() {
                    [one] => stdlib::MODULES.iter().find(|(m, _)| m == one),
                    _ => None,
                };
                if let Some((m, _)) = hit {
                    return Ok(Located {
                        key: Key::Stdlib(m),
                        shown: stdlib::shown(m),
                    });
                }
                searched.push(format!(
                    "the bundled stdlib ({})",
                    stdlib::names().collect::<Vec<_>>().join(", ")
                ));
                continue;
            }
            Folder::Dir(d) => in_folder(name, d, &n.parts, &mut searched)?,
        };
        if let Some(l) = found {
            return Ok(l);
        }
    }
    Err(LocateError::NotFound {
        name: name.to_string(),
        searched,
    })
}

/// `DIR/a/b.rhai` or `DIR/a/b/mod.rhai`.
fn in_folder(
    name: &str,
    dir: &Path,
    parts: &[String],
    searched: &mut Vec<String>,
) -> Result<Option<Located>, LocateError> {
    let mut base = dir.to_path_buf();
    base.extend(parts);
    let file = base.with_extension("rhai");
    let folder = base.join("mod.rhai");
    let shown = |p: &Path| {
        if dir.as_os_str().is_empty() {
            format!("./{}", p.display())
        } else {
            p.display().to_string()
        }
    };
    let hits: Vec<&PathBuf> = [&file, &folder]
        .into_iter()
        .filter(|p| p.is_file())
        .collect();
    match hits.as_slice() {
        [] => {
            searched.push(shown(&file));
            searched.push(shown(&folder));
            Ok(None)
        }
        [one] => Ok(Some(Located {
            key: Key::File(one.canonicalize().unwrap_or_else(|_| lexical(one))),
            shown: one.display().to_string(),
        })),
        _ => Err(LocateError::Ambiguous {
            name: name.to_string(),
            first: shown(&file),
            second: shown(&folder),
        }),
    }
}

/// `p` with `.` and `a/..` taken out, for a key when canonicalizing fails.
fn lexical(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if out.file_name().is_some() => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// A compiled module and what it was compiled from.
struct Compiled {
    stamp: Option<(u64, SystemTime)>,
    ast: AST,
    /// How many times this key was compiled (again after each change).
    times: usize,
}

/// Every module compiled in this process, shared by all runs and threads.
static COMPILED: LazyLock<Mutex<HashMap<Key, Compiled>>> = LazyLock::new(Default::default);
static COMPILATIONS: AtomicUsize = AtomicUsize::new(0);

/// How many modules this process has compiled (the cache's misses).
pub fn compilations() -> usize {
    COMPILATIONS.load(Ordering::Relaxed)
}

/// How many times the module `at` has been compiled in this process.
pub fn compilations_of(at: &Located) -> usize {
    lock(&COMPILED).get(&at.key).map_or(0, |c| c.times)
}

/// Why a located module could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Parse(#[from] rhai::ParseError),
}

/// The text of a script or module file. Only a regular file is read: a
/// FIFO or a device named `*.rhai` is refused at once instead of blocking
/// (it is opened without waiting for a writer). A UTF-8 byte order mark
/// at the start, which some editors write, is dropped.
pub fn read_source(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let ty = f.metadata()?.file_type();
    if !ty.is_file() {
        use std::os::unix::fs::FileTypeExt;
        let what = if ty.is_fifo() {
            "a FIFO"
        } else if ty.is_dir() {
            "a folder"
        } else if ty.is_socket() {
            "a socket"
        } else {
            "a device"
        };
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("not a regular file ({what})"),
        ));
    }
    let mut text = String::new();
    f.read_to_string(&mut text)?;
    match text.strip_prefix('\u{feff}') {
        Some(rest) => Ok(rest.to_string()),
        None => Ok(text),
    }
}

/// The module `at`, compiled with `engine`, from the process's cache when
/// its file is unchanged. Its source is `at.shown`.
///
/// The cache stays locked while a module compiles, so that tests starting
/// together on several threads compile a shared module once, not once
/// each: compiling takes about a millisecond, and a second thread would
/// only have done the same work.
pub fn compile_cached(engine: &Engine, at: &Located) -> Result<AST, LoadError> {
    let stamp = match &at.key {
        Key::File(p) => {
            let m = std::fs::metadata(p).map_err(|e| LoadError::Read {
                path: at.shown.clone(),
                source: e,
            })?;
            Some((m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)))
        }
        Key::Stdlib(_) => None,
    };
    let mut cache = lock(&COMPILED);
    let times = match cache.get(&at.key) {
        Some(c) if c.stamp == stamp => return Ok(c.ast.clone()),
        Some(c) => c.times,
        None => 0,
    };
    let text: std::borrow::Cow<'static, str> = match &at.key {
        Key::File(p) => read_source(p)
            .map_err(|e| LoadError::Read {
                path: at.shown.clone(),
                source: e,
            })?
            .into(),
        Key::Stdlib(n) => stdlib::get(n)
            .expect("a stdlib key names a bundled module")
            .into(),
    };
    let mut ast = errors::compile_catching(engine, text.as_ref(), &at.shown)?;
    ast.set_source(at.shown.as_str());
    COMPILATIONS.fetch_add(1, Ordering::Relaxed);
    cache.insert(
        at.key.clone(),
        Compiled {
            stamp,
            ast: ast.clone(),
            times: times + 1,
        },
    );
    Ok(ast)
}

/// The module resolver of one run: see the module documentation.
pub struct Resolver {
    search: SearchPath,
    loaded: Mutex<HashMap<Key, SharedModule>>,
    /// The modules each thread is evaluating, outermost first, to refuse
    /// cycles (a script's `parallel` branches import on their own threads).
    loading: Mutex<HashMap<ThreadId, Vec<(Key, String)>>>,
}

impl Resolver {
    pub fn new(search: SearchPath) -> Resolver {
        Resolver {
            search,
            loaded: Mutex::default(),
            loading: Mutex::default(),
        }
    }

    fn load(
        &self,
        engine: &Engine,
        source: Option<&str>,
        name: &str,
        pos: Position,
    ) -> Result<SharedModule, Box<EvalAltResult>> {
        let importer = Folder::of_source(source);
        let at = locate(name, &importer, &self.search).map_err(|e| located_error(&e, pos))?;
        if let Some(m) = lock(&self.loaded).get(&at.key) {
            return Ok(m.clone());
        }
        let me = std::thread::current().id();
        let cycle = lock(&self.loading).get(&me).and_then(|stack| {
            let i = stack.iter().position(|(k, _)| *k == at.key)?;
            let chain: Vec<String> = stack[i..]
                .iter()
                .map(|(_, s)| s.clone())
                .chain([at.shown.clone()])
                .collect();
            Some(chain.join(" -> "))
        });
        if let Some(chain) = cycle {
            return Err(at_pos(
                errors::error_map("HostError", format!("import cycle: {chain}"), Vec::new()),
                pos,
            ));
        }
        let in_module = |e: Box<EvalAltResult>| -> Box<EvalAltResult> {
            if e.is_system_exception() && !matches!(*e, EvalAltResult::ErrorParsing(..)) {
                e
            } else {
                EvalAltResult::ErrorInModule(at.shown.clone(), e, pos).into()
            }
        };
        let ast = compile_cached(engine, &at).map_err(|e| match e {
            LoadError::Parse(p) => in_module(p.into()),
            e => at_pos(
                errors::error_map("HostError", e.to_string(), Vec::new()),
                pos,
            ),
        })?;
        lock(&self.loading)
            .entry(me)
            .or_default()
            .push((at.key.clone(), at.shown.clone()));
        let module = Module::eval_ast_as_new(Scope::new(), &ast, engine);
        {
            let mut loading = lock(&self.loading);
            if let Some(stack) = loading.get_mut(&me) {
                stack.pop();
                if stack.is_empty() {
                    loading.remove(&me);
                }
            }
        }
        let mut module = module.map_err(in_module)?;
        module.set_id(at.shown.as_str());
        module.build_index();
        let module: SharedModule = module.into();
        lock(&self.loaded).insert(at.key, module.clone());
        Ok(module)
    }
}

fn at_pos(map: rhai::Map, pos: Position) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(map.into(), pos).into()
}

/// A [`LocateError`] as a thrown `HostError` map; a missing module's map
/// also holds `name` and `searched`.
fn located_error(e: &LocateError, pos: Position) -> Box<EvalAltResult> {
    let fields = match e {
        LocateError::NotFound { name, searched } => vec![
            ("name", Dynamic::from(name.clone())),
            (
                "searched",
                Dynamic::from_array(searched.iter().map(|s| s.clone().into()).collect()),
            ),
        ],
        _ => Vec::new(),
    };
    at_pos(errors::error_map("HostError", e.to_string(), fields), pos)
}

impl ModuleResolver for Resolver {
    /// `source` is the importing module's (Rhai passes it from its runtime
    /// state); a module is evaluated in a fresh scope, seeing nothing of
    /// its importer's variables.
    fn resolve(
        &self,
        engine: &Engine,
        source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<SharedModule, Box<EvalAltResult>> {
        self.load(engine, source, path, pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world(files: &[&str]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for f in files {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "fn f() { 1 }").unwrap();
        }
        d
    }

    fn shown_of(r: Result<Located, LocateError>) -> String {
        r.map(|l| l.shown).unwrap_or_else(|e| format!("error: {e}"))
    }

    #[test]
    fn names_are_relative_paths_of_plain_components() {
        assert!(parse_name("a/b").is_ok());
        assert!(parse_name("util.rhai").is_ok());
        let n = parse_name("../../x/y").unwrap();
        assert_eq!((n.explicit, n.up, n.parts.len()), (true, 2, 2));
        for bad in ["", "/etc/x", "a/../b", "a/./b", "a//b", "..", "./", "a\\b"] {
            assert!(parse_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_importers_folder_comes_first_then_lib_then_env_then_stdlib() {
        let w = world(&[
            "s/guest.rhai",
            "lib/guest.rhai",
            "env/guest.rhai",
            "lib/x.rhai",
            "env/x.rhai",
            "env/y.rhai",
        ]);
        let p = |s: &str| w.path().join(s);
        let search = SearchPath {
            lib_dirs: vec![p("lib")],
            env_dirs: vec![p("env")],
        };
        let s = Folder::Dir(p("s"));
        assert_eq!(
            shown_of(locate("guest", &s, &search)),
            p("s/guest.rhai").display().to_string()
        );
        assert_eq!(
            shown_of(locate("x", &s, &search)),
            p("lib/x.rhai").display().to_string()
        );
        assert_eq!(
            shown_of(locate("y", &s, &search)),
            p("env/y.rhai").display().to_string()
        );
        assert_eq!(shown_of(locate("net", &s, &search)), "<stdlib>/net.rhai");
        // A stdlib module's own imports find the stdlib first.
        assert_eq!(
            shown_of(locate("guest", &Folder::Stdlib, &search)),
            "<stdlib>/guest.rhai"
        );
    }

    #[test]
    fn folder_modules_and_ambiguity() {
        let w = world(&["m/mod.rhai", "both.rhai", "both/mod.rhai"]);
        let here = Folder::Dir(w.path().to_path_buf());
        let search = SearchPath::default();
        assert!(shown_of(locate("m", &here, &search)).ends_with("m/mod.rhai"));
        let e = shown_of(locate("both", &here, &search));
        assert!(e.contains("ambiguous"), "{e}");
    }

    #[test]
    fn explicit_relative_names_look_in_the_importers_folder_only() {
        let w = world(&["a/b/c.rhai", "a/d.rhai", "lib/d.rhai"]);
        let search = SearchPath {
            lib_dirs: vec![w.path().join("lib")],
            env_dirs: Vec::new(),
        };
        let from = Folder::Dir(w.path().join("a/b"));
        assert!(shown_of(locate("../d", &from, &search)).ends_with("a/b/../d.rhai"));
        assert!(shown_of(locate("./c", &from, &search)).ends_with("a/b/c.rhai"));
        let e = shown_of(locate("./d", &from, &search));
        assert!(e.contains("not found") && !e.contains("lib"), "{e}");
        let e = shown_of(locate("../x", &Folder::Stdlib, &search));
        assert!(e.contains("no parent folder"), "{e}");
    }

    #[test]
    fn a_missing_module_lists_every_place_searched() {
        let w = world(&[]);
        let search = SearchPath {
            lib_dirs: vec![w.path().join("lib")],
            env_dirs: vec![w.path().join("env")],
        };
        let e = locate("nope", &Folder::Dir(w.path().join("s")), &search).unwrap_err();
        let text = e.to_string();
        for want in [
            "s/nope.rhai",
            "s/nope/mod.rhai",
            "lib/nope.rhai",
            "env/nope/mod.rhai",
            "bundled stdlib (guest,",
        ] {
            assert!(text.contains(want), "{want} missing from {text}");
        }
    }

    #[test]
    fn the_source_names_the_importers_folder() {
        assert_eq!(
            Folder::of_source(Some("<stdlib>/guest.rhai")),
            Folder::Stdlib
        );
        assert_eq!(
            Folder::of_source(Some("t.rhai")),
            Folder::Dir(PathBuf::new())
        );
        assert_eq!(
            Folder::of_source(Some("x/t.rhai")),
            Folder::Dir(PathBuf::from("x"))
        );
    }

    #[test]
    fn a_module_is_compiled_once_until_it_changes() {
        let w = world(&["m.rhai"]);
        let engine = Engine::new();
        let at = locate(
            "m",
            &Folder::Dir(w.path().to_path_buf()),
            &SearchPath::default(),
        )
        .unwrap();
        compile_cached(&engine, &at).unwrap();
        compile_cached(&engine, &at).unwrap();
        assert_eq!(compilations_of(&at), 1);
        std::fs::write(w.path().join("m.rhai"), "fn f() { 22 }").unwrap();
        compile_cached(&engine, &at).unwrap();
        assert_eq!(compilations_of(&at), 2);
    }
}
