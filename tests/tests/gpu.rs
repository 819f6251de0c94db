//! GPU checks: the same GPU-vs-CPU comparisons as `styleforge self-check`. Without a GPU every check is
//! reported NOT RUN (never as passed).
use std::process::ExitCode;

use styleforge::selfcheck;
use styleforge_tests::{Case, Outcome};

fn self_check() -> Outcome {
    let gpu = match styleforge::Gpu::new() {
        Ok(g) => g,
        Err(e) => return Outcome::NotRun(format!("needs a GPU: {e}")),
    };
    // Fresh inputs on every run; the seed is printed so a failure can be repeated
    // (`styleforge self-check --seed N`).
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    println!("self-check seed {seed}");
    let results = selfcheck::run(&gpu, None, seed);
    let table = selfcheck::table(&results);
    if results.iter().all(|r| r.passed) {
        println!("{table}");
        Outcome::Pass(format!("{} comparisons", results.len()))
    } else {
        Outcome::Fail(table)
    }
}

fn main() -> ExitCode {
    styleforge_tests::run(
        "gpu",
        &[Case {
            name: "self_check",
            run: self_check,
        }],
    )
}
