//! The source lines under a failure, with a caret under the place it
//! happened, laid out as rustc does (by `annotate-snippets`):
//!
//! ```text
//!   |
//! 2 | vm.launch();
//! 3 | assert_eq(vm.query_status(), "paused");
//!   | ^^^^^^^^^ AssertionFailed
//! ```
//!
//! The text carries ANSI styles, which the human reporter keeps on a
//! terminal and drops elsewhere.

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};

use crate::script::Failure;

use super::plain;

/// Lines shown above the failing one, for context.
const LINES_BEFORE: usize = 2;
/// A script larger than this is not read for a snippet.
const MAX_SOURCE_BYTES: u64 = 4 << 20;
/// Longest source line shown whole; longer ones are cut.
const MAX_LINE_CHARS: usize = 200;

/// The snippet of `f`'s file at its line, or `None` when the failure has
/// no line or the file cannot be read (a module path, a deleted file).
pub fn render(f: &Failure) -> Option<String> {
    let n = f.line?;
    let file = std::fs::File::open(&f.file).ok()?;
    if file.metadata().ok()?.len() > MAX_SOURCE_BYTES {
        return None;
    }
    let text = std::io::read_to_string(file).ok()?;
    let first = n.saturating_sub(LINES_BEFORE).max(1);
    // A script's bytes can hold control sequences too: shown plain.
    let lines: Vec<String> = text
        .lines()
        .skip(first - 1)
        .take(n + 1 - first)
        .map(|l| cut(&plain(l)))
        .collect();
    if lines.len() != n + 1 - first || lines.last()?.trim().is_empty() {
        return None;
    }
    let source = lines.join("\n");
    let line_start = source.len() - lines.last()?.len();
    let word = mark(lines.last()?, f.column);
    let span = line_start + word.start..line_start + word.end;
    let kind = plain(&f.kind);
    let report = [Group::with_level(Level::ERROR).element(
        Snippet::source(&source)
            .line_start(first)
            .fold(false)
            .annotation(AnnotationKind::Primary.span(span).label(&kind)),
    )];
    Some(Renderer::styled().render(&report))
}

/// The bytes of `line` to underline: the word at `column` (1-based, in
/// characters), or the line's text from its first non-blank when the
/// column is unknown or past the end.
fn mark(line: &str, column: Option<usize>) -> std::ops::Range<usize> {
    let text_start = line.len() - line.trim_start().len();
    let start = column
        .and_then(|c| line.char_indices().nth(c.checked_sub(1)?))
        .map(|(i, _)| i)
        .filter(|&i| !line[i..].trim().is_empty())
        .unwrap_or(text_start);
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == ':';
    let len = line[start..]
        .char_indices()
        .find(|&(_, c)| !word(c))
        .map_or(line.len() - start, |(i, _)| i);
    let len = if len == 0 {
        line[start..].chars().next().map_or(0, char::len_utf8)
    } else {
        len
    };
    start..start + len
}

fn cut(line: &str) -> String {
    match line.char_indices().nth(MAX_LINE_CHARS) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(file: &std::path::Path, line: usize, column: Option<usize>) -> Failure {
        let mut f = Failure::plain(&file.display().to_string(), "AssertionFailed", "no");
        f.line = Some(line);
        f.column = column;
        f
    }

    fn unstyled(s: &str) -> String {
        plain(s)
    }

    #[test]
    fn the_caret_is_under_the_word_at_the_column_with_lines_above() {
        let d = tempfile::tempdir().unwrap();
        let script = d.path().join("t.rhai");
        std::fs::write(
            &script,
            "let a = 1;\nlet vm = machine();\nvm.launch();\n  assert_eq(a, 2);\nlet after = 3;\n",
        )
        .unwrap();
        let text = unstyled(&render(&failure(&script, 4, Some(3))).unwrap());
        assert_eq!(
            text,
            "  |\n2 | let vm = machine();\n3 | vm.launch();\n4 |   assert_eq(a, 2);\n  |   ^^^^^^^^^ AssertionFailed"
        );
    }

    #[test]
    fn the_first_line_has_no_lines_above_and_an_unknown_column_marks_the_text() {
        let d = tempfile::tempdir().unwrap();
        let script = d.path().join("t.rhai");
        std::fs::write(&script, "   throw \"x\";\n").unwrap();
        let text = unstyled(&render(&failure(&script, 1, None)).unwrap());
        assert_eq!(
            text,
            "  |\n1 |    throw \"x\";\n  |    ^^^^^ AssertionFailed"
        );
    }

    #[test]
    fn it_is_styled_for_a_terminal() {
        let d = tempfile::tempdir().unwrap();
        let script = d.path().join("t.rhai");
        std::fs::write(&script, "oops();\n").unwrap();
        let text = render(&failure(&script, 1, Some(1))).unwrap();
        assert!(text.contains("\x1b["), "{text:?}");
    }

    #[test]
    fn no_snippet_without_a_line_a_file_or_text_on_the_line() {
        let d = tempfile::tempdir().unwrap();
        let script = d.path().join("t.rhai");
        std::fs::write(&script, "a();\n\n").unwrap();
        assert_eq!(render(&failure(&script, 2, Some(1))), None, "a blank line");
        assert_eq!(render(&failure(&script, 9, Some(1))), None, "past the end");
        assert_eq!(render(&failure(&d.path().join("gone.rhai"), 1, None)), None);
        let mut f = failure(&script, 1, None);
        f.line = None;
        assert_eq!(render(&f), None);
    }

    #[test]
    fn control_sequences_in_the_source_are_not_passed_on() {
        let d = tempfile::tempdir().unwrap();
        let script = d.path().join("t.rhai");
        std::fs::write(&script, "print(\"\x1b]0;title\x07\"); fail();\n").unwrap();
        let text = render(&failure(&script, 1, Some(1))).unwrap();
        assert!(!text.contains("\x1b]0;"), "{text:?}");
    }

    #[test]
    fn long_lines_are_cut() {
        let d = tempfile::tempdir().unwrap();
        let script = d.path().join("t.rhai");
        std::fs::write(&script, format!("f(\"{}\");\n", "x".repeat(5000))).unwrap();
        let text = unstyled(&render(&failure(&script, 1, Some(1))).unwrap());
        assert!(text.len() < 600, "{}", text.len());
        assert!(text.contains('…') || text.contains("..."), "{text}");
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        assert_eq!(mark("é = fail();", Some(5)), 5..9);
        assert_eq!(mark("  x", Some(40)), 2..3);
        assert_eq!(mark("  (x)", Some(3)), 2..3);
    }
}
