//! `parallel(…)`: run script functions at the same time, one thread each.
//!
//! A script is one thread, and most of what it waits for is some QEMU:
//! a launch, a command's reply, a guest's boot. `parallel` lets one test
//! overlap those waits across machines (boot four guests at once, command
//! sixteen machines at once) the way a Python test would use threads or
//! asyncio. Every branch runs on its own thread with the same engine,
//! functions and imports as the caller, under the same run: its machines
//! are the run's, its waits end on the run's timeout and on Ctrl-C.
//!
//! `parallel` returns when every branch has returned, with their results
//! in order. When some branches throw, the others still run to their end
//! (their machines are the script's to clean up, as always), then the
//! error of the first failed branch in order is thrown, its map given a
//! `branch` key with the branch's index.
//!
//! Branches share values as closures always do: a captured variable is the
//! same variable in every branch. Rhai locks such a variable for as long
//! as a method called on it runs, so two branches calling methods on one
//! captured variable at once wait on each other (and Rhai gives up with a
//! "data race" error after a few tens of milliseconds). Give each branch
//! its own values: `parallel(items, f)` hands each call its own copy of
//! its item, and copies of a `Machine` still name the same QEMU. A machine
//! serves one call at a time (its calls lock it), so a call waits while
//! another branch's call on the same machine is under way; `vm.kill()`
//! alone does not wait: it kills QEMU at once, which ends that call.

use rhai::{Array, Dynamic, Engine, EvalAltResult, FnPtr, NativeCallContext, INT};

use super::docs::func;
use super::errors::{self, ScriptResult};
use super::run::Run;
use super::SCRIPT_STACK;

/// At most this many branches in one call: each is a thread.
pub const MAX_BRANCHES: usize = 1024;

/// Registers `parallel(fns)` and `parallel(items, f)`.
pub fn register(e: &mut Engine) {
    func(
        "parallel(fns: Array) -> Array",
        "Calls every function of `fns` (no arguments) at the same time, each on its own \
         thread; returns their results in order once all have returned. If some throw, \
         the first one's error (in order) is thrown after all have ended, with a `branch` key.",
    )
    .register_into_engine(e, |ctx: NativeCallContext, fns: Array| {
        let calls = fns
            .iter()
            .map(|f| Ok((fn_ptr(f, "parallel(fns): every item")?, Vec::new())))
            .collect::<ScriptResult<Vec<_>>>()?;
        parallel(&ctx, calls)
    });
    func(
        "parallel(items: Array, f: FnPtr) -> Array",
        "Calls `f(item)` for every item at the same time, each on its own thread; returns \
         the results in order once all have returned (like `items.map(f)`, but at once). \
         Errors as for `parallel(fns)`.",
    )
    .register_into_engine(e, |ctx: NativeCallContext, items: Array, f: FnPtr| {
        let calls = items
            .into_iter()
            .map(|item| (f.clone(), vec![item.flatten_clone()]))
            .collect();
        parallel(&ctx, calls)
    });
    func(
        "parallel(range: Range, f: FnPtr) -> Array",
        "`parallel(items, f)` over the integers of `range` (`0..n`).",
    )
    .register_into_engine(
        e,
        |ctx: NativeCallContext, range: std::ops::Range<INT>, f: FnPtr| {
            parallel(&ctx, each_int(range, &f))
        },
    );
    func(
        "parallel(range: RangeInclusive, f: FnPtr) -> Array",
        "`parallel(items, f)` over the integers of `range` (`0..=n`).",
    )
    .register_into_engine(
        e,
        |ctx: NativeCallContext, range: std::ops::RangeInclusive<INT>, f: FnPtr| {
            parallel(&ctx, each_int(range, &f))
        },
    );
}

/// Each `i` of `range` as a call of `f(i)`.
/// More than [`MAX_BRANCHES`] are not made: they would be refused.
fn each_int(range: impl Iterator<Item = INT>, f: &FnPtr) -> Vec<(FnPtr, Vec<Dynamic>)> {
    range
        .take(MAX_BRANCHES + 1)
        .map(|i| (f.clone(), vec![Dynamic::from_int(i)]))
        .collect()
}

fn fn_ptr(v: &Dynamic, what: &str) -> ScriptResult<FnPtr> {
    v.read_lock::<FnPtr>()
        .map(|f| f.clone())
        .ok_or_else(|| errors::bad_type(what, "a function (Fn or closure)", v))
}

fn parallel(ctx: &NativeCallContext, calls: Vec<(FnPtr, Vec<Dynamic>)>) -> ScriptResult<Array> {
    Run::of(ctx)?.check_cancelled()?;
    if calls.len() > MAX_BRANCHES {
        return Err(errors::misuse(format!(
            "parallel: {} branches; at most {MAX_BRANCHES} (each is a thread)",
            calls.len()
        )));
    }
    let results: Vec<Result<Dynamic, Box<EvalAltResult>>> = std::thread::scope(|s| {
        let threads: Vec<_> = calls
            .into_iter()
            .enumerate()
            .map(|(i, (f, args))| {
                std::thread::Builder::new()
                    .name(format!("parallel-{i}"))
                    .stack_size(SCRIPT_STACK)
                    .spawn_scoped(s, move || f.call_raw(ctx, None, args))
            })
            .collect();
        // Every thread that started is joined, also when a later one could
        // not start: a branch's machines must not outlive the call.
        threads
            .into_iter()
            .map(|t| match t {
                Ok(t) => t.join().unwrap_or_else(|_| {
                    Err(errors::host(
                        "parallel: a branch panicked (a bug in vmscript)",
                    ))
                }),
                Err(e) => Err(errors::host(format!("parallel: starting a thread: {e}"))),
            })
            .collect()
    });
    let mut out = Array::with_capacity(results.len());
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(v) => out.push(v),
            Err(e) => return Err(with_branch(e, i)),
        }
    }
    Ok(out)
}

/// Adds `branch: i` to a thrown map; other errors (a cancelled run, a
/// limit) pass as they are.
fn with_branch(mut e: Box<EvalAltResult>, i: usize) -> Box<EvalAltResult> {
    let mut inner = &mut *e;
    // The thrown value sits below the calls it passed through.
    while let EvalAltResult::ErrorInFunctionCall(_, _, next, _)
    | EvalAltResult::ErrorInModule(_, next, _) = inner
    {
        inner = &mut **next;
    }
    if let EvalAltResult::ErrorRuntime(v, _) = inner {
        if let Some(mut m) = v.write_lock::<rhai::Map>() {
            m.insert("branch".into(), Dynamic::from_int(i as INT));
        }
    }
    e
}
