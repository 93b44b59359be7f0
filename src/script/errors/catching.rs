//! Compiling so that every caught error has a `kind`
//! ([`compile_catching`]), and what that compilation must remember to
//! report true positions: the columns its added code shifted, and the file
//! each closure was written in.

use super::SCRIPT_ERROR;
use crate::sync::lock;

/// Compiles a script or module so that every error it catches has a
/// `kind`. Rhai hands a `catch` block its own errors (a type mismatch, a
/// missing function, an index out of bounds) as a map without one, so
/// each catch block that names its error starts by giving it `kind:
/// "ScriptError"` when it has none (the kind an uncaught one is reported
/// with). The code is put right after the block's `{`, on the same line:
/// line numbers stay as they are.
pub fn compile_catching(
    engine: &rhai::Engine,
    text: &str,
    source: &str,
) -> Result<rhai::AST, rhai::ParseError> {
    let ast = with_kinds_in_catch_blocks(engine, text, source)?;
    let mut closures = lock_closures();
    for f in ast.iter_functions() {
        if f.name.starts_with("anon$") {
            closures
                .entry(f.name.to_string())
                .or_insert_with(|| source.to_string());
        }
    }
    Ok(ast)
}

fn with_kinds_in_catch_blocks(
    engine: &rhai::Engine,
    text: &str,
    source: &str,
) -> Result<rhai::AST, rhai::ParseError> {
    let ast = engine.compile(text)?;
    let mut at: Vec<(usize, usize, String)> = Vec::new();
    ast.walk(&mut |path: &[rhai::ASTNode]| {
        if let Some(rhai::ASTNode::Stmt(rhai::Stmt::TryCatch(flow, _))) = path.last() {
            let brace = flow.branch.position();
            if let (rhai::Expr::Variable(v, ..), Some(line), Some(col)) =
                (&flow.expr, brace.line(), brace.position())
            {
                at.push((line, col, v.1.to_string()));
            }
        }
        true
    });
    if at.is_empty() {
        return Ok(ast);
    }
    // From the end, so that each insertion leaves the places before it.
    at.sort();
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    let mut shifts = Vec::new();
    for (line, col, var) in at.iter().rev() {
        let Some(l) = line.checked_sub(1).and_then(|i| lines.get_mut(i)) else {
            continue;
        };
        let Some((i, '{')) = col.checked_sub(1).and_then(|c| l.char_indices().nth(c)) else {
            continue;
        };
        let code = format!(
            " if type_of({var}) == \"map\" && !{var}.contains(\"kind\") {{ {var}.kind = \"{SCRIPT_ERROR}\"; }}"
        );
        l.insert_str(i + 1, &code);
        shifts.push((*line, *col, code.chars().count()));
    }
    lock_shifts().insert(source.to_string(), shifts);
    engine.compile(lines.join("\n"))
}

/// Per source name, where [`compile_catching`] put code: (line, column of
/// the `{`, characters put after it), for reporting true columns.
type Shifts = std::collections::HashMap<String, Vec<(usize, usize, usize)>>;

fn lock_shifts() -> std::sync::MutexGuard<'static, Shifts> {
    static SHIFTS: std::sync::LazyLock<std::sync::Mutex<Shifts>> =
        std::sync::LazyLock::new(Default::default);
    lock(&SHIFTS)
}

/// Per closure (`anon$…`, named by a hash of its body), the source it was
/// written in: Rhai reports a closure called from inside a module as if
/// it were the module's.
type Closures = std::collections::HashMap<String, String>;

pub(super) fn lock_closures() -> std::sync::MutexGuard<'static, Closures> {
    static CLOSURES: std::sync::LazyLock<std::sync::Mutex<Closures>> =
        std::sync::LazyLock::new(Default::default);
    lock(&CLOSURES)
}

/// The column `col` of `line` in `file` as the author wrote it, before
/// [`compile_catching`] added code to the line.
pub(super) fn true_column(file: &str, line: usize, col: usize) -> usize {
    lock_shifts().get(file).map_or(col, |shifts| {
        shifts
            .iter()
            .filter(|(l, c, _)| *l == line && col > *c)
            .fold(col, |col, (_, _, n)| col.saturating_sub(*n))
    })
}
