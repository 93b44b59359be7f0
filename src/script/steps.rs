//! `step(name, fn)` and `test_name()`: the bindings that let a test say
//! where it is. A step runs its closure and returns its value; the [`Run`]
//! records its start, duration and outcome ([`super::run::StepRecord`]),
//! which every report shows, and remembers the step an error happened in
//! so that the failure says "in step NAME".

use rhai::{Dynamic, Engine, FnPtr, NativeCallContext};

use super::docs::func;
use super::errors::{Failure, ScriptResult};
use super::run::Run;

/// Registers `step` and `test_name`.
pub fn register(e: &mut Engine) {
    func(
        "step(name: String, f: FnPtr) -> any",
        "Runs `f` as a named step of the test and returns its value; its start, duration and outcome are in every report, and an error inside it is reported as \"in step NAME\".",
    )
    .register_into_engine(e, step);
    func(
        "test_name() -> String",
        "The running test's name: the script's path, or `FILE::test_case` inside a case.",
    )
    .register_into_engine(e, |ctx: NativeCallContext| {
        Run::of(&ctx).map(|r| r.test_name())
    });
}

fn step(ctx: NativeCallContext, name: &str, f: FnPtr) -> ScriptResult<Dynamic> {
    let run = Run::of(&ctx)?;
    let token = run.step_begin(name);
    let _doing = run.cancel().doing(format!("in step {name}"));
    let result: ScriptResult<Dynamic> = f.call_within_context(&ctx, ());
    let failure = result
        .as_ref()
        .err()
        .map(|e| Failure::from_eval(e, &run.config().script.display().to_string()));
    run.step_end(token, failure.as_ref());
    result
}
