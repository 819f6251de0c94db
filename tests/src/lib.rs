//! A small test harness for the integration tests that may not be able to run here: they need
//! `../shared` (fixtures, images) or a GPU. libtest can only pass or fail, so a test that could not run
//! would pass silently; this harness prints `NOT RUN (reason)` for it and counts it as skipped, and ends
//! with the line `<suite>: N passed, N failed, N skipped`.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

pub enum Outcome {
    Pass(String),
    Fail(String),
    NotRun(String),
}

pub struct Case {
    pub name: &'static str,
    pub run: fn() -> Outcome,
}

/// Runs the cases (filtered by the first non-flag argument, as `cargo test NAME` passes it) and exits
/// non-zero if any failed. A panic inside a case is a failure.
pub fn run(suite: &str, cases: &[Case]) -> ExitCode {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let (mut pass, mut fail, mut skip) = (0, 0, 0);
    for c in cases {
        if filter
            .as_ref()
            .is_some_and(|f| !c.name.contains(f.as_str()))
        {
            continue;
        }
        let t = Instant::now();
        let outcome = std::panic::catch_unwind(c.run).unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            Outcome::Fail(format!("panicked: {msg}"))
        });
        let secs = t.elapsed().as_secs_f32();
        match outcome {
            Outcome::Pass(info) => {
                pass += 1;
                println!(
                    "test {suite}::{} ... ok ({secs:.1}s){}",
                    c.name,
                    suffix(&info)
                );
            }
            Outcome::Fail(info) => {
                fail += 1;
                println!(
                    "test {suite}::{} ... FAILED ({secs:.1}s)\n    {}",
                    c.name,
                    info.replace('\n', "\n    ")
                );
            }
            Outcome::NotRun(why) => {
                skip += 1;
                println!("test {suite}::{} ... NOT RUN: {why}", c.name);
            }
        }
    }
    println!("{suite}: {pass} passed, {fail} failed, {skip} skipped");
    if fail > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn suffix(info: &str) -> String {
    if info.is_empty() {
        String::new()
    } else {
        format!(" -- {info}")
    }
}

/// `../shared` beside the workspace (CI always has it; a user's clone may not).
pub fn shared_dir() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared");
    p.join("fixtures")
        .is_dir()
        .then(|| p.canonicalize().unwrap_or(p))
}

/// A file under `../shared`, or `Err(Outcome::NotRun)` saying that `../shared` is absent.
pub fn shared_file(rel: &str) -> Result<PathBuf, Outcome> {
    match shared_dir() {
        Some(d) if d.join(rel).is_file() => Ok(d.join(rel)),
        Some(d) => Err(Outcome::Fail(format!(
            "{} is missing from ../shared",
            d.join(rel).display()
        ))),
        None => Err(Outcome::NotRun(
            "../shared (fixtures, images) is not beside this checkout".into(),
        )),
    }
}

/// Evaluates to the value or returns the outcome from the case.
#[macro_export]
macro_rules! try_outcome {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(o) => return o,
        }
    };
}

/// Turns any error into a failed outcome: `check!(expr, "what")`.
#[macro_export]
macro_rules! check {
    ($e:expr, $what:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return $crate::Outcome::Fail(format!("{}: {}", $what, e)),
        }
    };
}
