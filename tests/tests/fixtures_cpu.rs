//! Tests against ../shared/fixtures (NOT RUN when ../shared is absent).
use std::process::ExitCode;

fn main() -> ExitCode {
    styleforge_tests::run("fixtures_cpu", &[])
}
