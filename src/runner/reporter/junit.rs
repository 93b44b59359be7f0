//! `--junit FILE`: a JUnit XML report, as GitLab, GitHub's test-report
//! actions and Jenkins read it, written with `quick-junit` (the crate
//! cargo-nextest uses). One `<testsuite>` named `vmscript`; each test a
//! `<testcase>` named after its path, its folder as `classname` and the
//! path again as `file`; a test case of a file is named after its function,
//! with the file as `classname`. A failure or timeout is a `<failure>` whose
//! `message` is the error's first line and whose text is the whole report
//! (error, output and log tails, artifacts); an interruption is an
//! `<error>`; earlier failed tries are `<rerunFailure>`, or
//! `<flakyFailure>` when the test passed in the end; captured output goes
//! to `<system-out>`; each `step()` is a `step` property (status, start,
//! duration, name, error) of its test case, in order.

use std::path::Path;

use quick_junit::{
    NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestRerun, TestSuite,
};

use super::super::discover::Test;
use super::super::results::{Attempt, TestResult, Verdict};
use super::super::{StopReason, Summary};
use super::{details, failure_text, step_line, waiting_for};

/// The suite and report name.
const SUITE: &str = "vmscript";

fn kind(a: &Attempt) -> NonSuccessKind {
    if a.verdict == Verdict::Interrupted {
        NonSuccessKind::Error
    } else {
        NonSuccessKind::Failure
    }
}

/// The first line of the error, with what a timeout was waiting for.
fn message(a: &Attempt) -> String {
    let Some(f) = a.failure() else {
        return String::new();
    };
    let mut m = f.message.lines().next().unwrap_or("").to_string();
    if let (Verdict::TimedOut, Some(w)) = (a.verdict, waiting_for(f)) {
        m.push_str(&format!(", waiting for {w}"));
    }
    m
}

fn description(a: &Attempt) -> String {
    let mut d = failure_text(a);
    let more = details(a, false);
    if !more.is_empty() {
        d.push('\n');
        d.push_str(&more);
    }
    d
}

fn rerun(a: &Attempt) -> TestRerun {
    let mut r = TestRerun::new(kind(a));
    r.set_time(a.outcome.duration)
        .set_message(message(a))
        .set_description(description(a));
    if let Some(f) = a.failure() {
        r.set_type(f.kind.as_str());
    }
    if !a.outcome.report.output.is_empty() {
        r.set_system_out(a.outcome.report.output.join("\n"));
    }
    r
}

fn test_case(r: &TestResult) -> TestCase {
    let last = r.last();
    let earlier = &r.attempts()[..r.attempts().len() - 1];
    let mut status = match last.verdict {
        Verdict::Passed => TestCaseStatus::success(),
        Verdict::Skipped => {
            let mut s = TestCaseStatus::skipped();
            if let crate::script::Status::Skipped(reason) = &last.outcome.status {
                s.set_message(reason.as_str());
            }
            s
        }
        _ => {
            let mut s = TestCaseStatus::non_success(kind(last));
            s.set_message(message(last))
                .set_description(description(last));
            if let Some(f) = last.failure() {
                s.set_type(f.kind.as_str());
            }
            s
        }
    };
    status.add_reruns(earlier.iter().map(rerun));
    let mut tc = named_case(&r.test, status);
    tc.set_time(r.duration());
    let start: chrono::DateTime<chrono::Utc> = r.attempts()[0].started_at.into();
    tc.set_timestamp(start);
    if !last.outcome.report.output.is_empty() {
        tc.set_system_out(last.outcome.report.output.join("\n"));
    }
    // Steps as properties `step` = `passed +0.012s 1.250s boot`, in order.
    for st in &last.outcome.report.steps {
        tc.add_property(Property::new("step", step_line(st)));
    }
    tc
}

/// The test case of `test`: a case is named after its function, in the
/// class of its file; a file after its path, in the class of its folder.
fn named_case(test: &Test, status: TestCaseStatus) -> TestCase {
    let (name, class) = match &test.case {
        Some(case) => (case.as_str(), test.file_name().to_string()),
        None => (
            test.name.as_str(),
            Path::new(&test.name)
                .parent()
                .map(|p| p.display().to_string())
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| SUITE.to_string()),
        ),
    };
    let mut tc = TestCase::new(name, status);
    tc.set_classname(class);
    tc.extra
        .insert("file".into(), test.path.display().to_string().into());
    tc
}

/// A selected test the run never started, as a skipped test case that
/// says why: a report that leaves it out looks like a smaller suite.
fn never_run(test: &Test, stopped: Option<StopReason>) -> TestCase {
    let why = match stopped {
        Some(StopReason::Signal(sig)) => format!(
            "not run: the run was stopped by {}",
            crate::script::cancel::signal_name(sig)
        ),
        Some(StopReason::FailFast) => "not run: --fail-fast stopped the run after a failure".into(),
        None => "not run".into(),
    };
    let mut status = TestCaseStatus::skipped();
    status.set_message(why);
    named_case(test, status)
}

/// The report as XML.
pub fn render(summary: &Summary, results: &[TestResult]) -> Result<String, String> {
    let mut suite = TestSuite::new(SUITE);
    suite.set_time(summary.elapsed);
    suite.add_test_cases(results.iter().map(test_case));
    suite.add_test_cases(
        summary
            .never_run
            .iter()
            .map(|t| never_run(t, summary.stopped)),
    );
    let mut report = Report::new(SUITE);
    report.set_time(summary.elapsed).add_test_suite(suite);
    report.to_string().map_err(|e| e.to_string())
}

/// Writes the report to `path`.
/// Whether the report can be written to `path`, asked before the run so
/// that a typo is not found after an hour of tests: its folder exists and
/// takes a new file, and the file, if it exists, can be written.
pub fn check_writable(path: &Path) -> Result<(), String> {
    if path.is_dir() {
        return Err("is a folder".into());
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if path.exists() {
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| e.to_string())?;
    } else {
        tempfile::tempfile_in(dir)
            .map_err(|e| format!("cannot create a file in {}: {e}", dir.display()))?;
    }
    Ok(())
}

pub fn write(path: &Path, summary: &Summary, results: &[TestResult]) -> Result<(), String> {
    let xml = render(summary, results)?;
    std::fs::write(path, xml).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::tests::result;
    use super::*;

    #[test]
    fn tests_never_run_are_skipped_with_the_reason() {
        let results = vec![result("a.rhai", &[Verdict::Interrupted])];
        let never = |name: &str| Test {
            path: name.into(),
            name: name.to_string(),
            ..Test::default()
        };
        let summary = Summary {
            never_run: vec![never("t/b.rhai"), never("c.rhai")],
            stopped: Some(StopReason::Signal(2)),
            ..Summary::default()
        };
        let xml = render(&summary, &results).unwrap();
        let report = Report::deserialize_from_str(&xml).unwrap();
        assert_eq!(report.tests, 3);
        let suite = &report.test_suites[0];
        assert_eq!(suite.skipped, 2);
        let b = &suite.test_cases[1];
        assert_eq!(b.name.as_str(), "t/b.rhai");
        assert_eq!(b.classname.as_ref().unwrap().as_str(), "t");
        match &b.status {
            TestCaseStatus::Skipped { message, .. } => assert_eq!(
                message.as_ref().unwrap().as_str(),
                "not run: the run was stopped by SIGINT (Ctrl-C)"
            ),
            s => panic!("{s:?}"),
        }
    }

    #[test]
    fn reads_back_with_counts_messages_and_output() {
        let results = vec![
            result("a.rhai", &[Verdict::Passed]),
            result("t/b.rhai", &[Verdict::Failed]),
            result("c.rhai", &[Verdict::TimedOut]),
            result("d.rhai", &[Verdict::Failed, Verdict::Passed]),
            result("e.rhai", &[Verdict::Skipped]),
        ];
        let xml = render(&Summary::default(), &results).unwrap();
        let report = Report::deserialize_from_str(&xml).unwrap();
        assert_eq!(report.tests, 5);
        assert_eq!(report.failures, 2);
        let suite = &report.test_suites[0];
        assert_eq!(suite.skipped, 1);
        let b = &suite.test_cases[1];
        assert_eq!(b.name.as_str(), "t/b.rhai");
        assert_eq!(b.classname.as_ref().unwrap().as_str(), "t");
        match &b.status {
            TestCaseStatus::NonSuccess {
                message,
                description,
                ..
            } => {
                assert_eq!(message.as_ref().unwrap().as_str(), "a < b & c");
                assert!(description
                    .as_ref()
                    .unwrap()
                    .as_str()
                    .contains("artifacts: /tmp/art"));
            }
            s => panic!("{s:?}"),
        }
        assert_eq!(b.system_out.as_ref().unwrap().as_str(), "hello");
        match &suite.test_cases[2].status {
            TestCaseStatus::NonSuccess { message, .. } => assert_eq!(
                message.as_ref().unwrap().as_str(),
                "the test timed out after 2s, waiting for event STOP"
            ),
            s => panic!("{s:?}"),
        }
        match &suite.test_cases[3].status {
            TestCaseStatus::Success { flaky_runs } => assert_eq!(flaky_runs.len(), 1),
            s => panic!("{s:?}"),
        }
        assert!(xml.contains("a &lt; b &amp; c"), "{xml}");
    }
}
