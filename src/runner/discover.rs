//! Finding the tests: files as given, folders searched for `*.rhai` in
//! sorted order, skipping anything under a folder named `lib` (modules for
//! `import`, not tests) and hidden folders. A file that defines `test_*`
//! functions is expanded into one test per case by [`super::select`],
//! which then applies `--filter`, tags and [`super::partition`].

use std::path::{Path, PathBuf};

use super::config::Settings;

/// One test, a file or one case of a file, and the name it is reported
/// under: the file's path, or `FILE::test_case`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Test {
    pub path: PathBuf,
    pub name: String,
    /// The case's function name, for a case.
    pub case: Option<String>,
    /// Its timeout, retries, weight and tags (`vmscript.toml` and the
    /// command line), set by [`super::select`].
    pub settings: Settings,
}

impl Test {
    /// Case `case` of the file `file`.
    pub fn case_of(file: &Test, case: &str) -> Test {
        Test {
            path: file.path.clone(),
            name: format!("{}::{case}", file.name),
            case: Some(case.to_string()),
            settings: file.settings.clone(),
        }
    }

    /// The name of the file the test is in (its name without the case).
    pub fn file_name(&self) -> &str {
        match &self.case {
            Some(c) => self
                .name
                .strip_suffix(c.as_str())
                .and_then(|n| n.strip_suffix("::"))
                .unwrap_or(&self.name),
            None => &self.name,
        }
    }
}

/// The tests under `paths` (`.` when empty), in order, without duplicates.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<Test>, String> {
    let default = [PathBuf::from(".")];
    let paths = if paths.is_empty() {
        &default[..]
    } else {
        paths
    };
    let mut tests = Vec::new();
    for p in paths {
        let meta = p.metadata().map_err(|e| format!("{}: {e}", p.display()))?;
        if meta.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found).map_err(|e| format!("{}: {e}", p.display()))?;
            found.sort();
            tests.extend(found);
        } else {
            tests.push(p.clone());
        }
    }
    let mut seen = std::collections::HashSet::new();
    Ok(tests
        .into_iter()
        .filter(|p| seen.insert(p.clone()))
        .map(|path| {
            let path = path
                .strip_prefix("./")
                .map_or(path.clone(), Path::to_path_buf);
            Test {
                name: path.display().to_string(),
                path,
                ..Test::default()
            }
        })
        .collect())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let ty = entry.file_type()?;
        let name = entry.file_name();
        if ty.is_dir() {
            if name != "lib" && !name.to_string_lossy().starts_with('.') {
                walk(&path, out)?;
            }
        } else if path.extension().is_some_and(|e| e == "rhai") {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_give_sorted_rhai_files_outside_lib() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        for f in [
            "b.rhai",
            "a.rhai",
            "notes.txt",
            "sub/c.rhai",
            "lib/m.rhai",
            "sub/lib/n.rhai",
        ] {
            let f = p.join(f);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, "").unwrap();
        }
        let t = discover(&[p.to_path_buf()]).unwrap();
        let names: Vec<_> = t
            .iter()
            .map(|t| t.path.strip_prefix(p).unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["a.rhai", "b.rhai", "sub/c.rhai"]);
    }

    #[test]
    fn cases_are_named_after_their_file() {
        let file = Test {
            path: "t/a.rhai".into(),
            name: "t/a.rhai".into(),
            ..Test::default()
        };
        let case = Test::case_of(&file, "test_one");
        assert_eq!(case.name, "t/a.rhai::test_one");
        assert_eq!(case.file_name(), "t/a.rhai");
        assert_eq!(file.file_name(), "t/a.rhai");
    }

    #[test]
    fn missing_paths_are_errors() {
        assert!(discover(&["/nonexistent/x.rhai".into()]).is_err());
    }
}
