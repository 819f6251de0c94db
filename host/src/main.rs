//! The `styleforge` command line.
fn main() -> std::process::ExitCode {
    match styleforge::Gpu::new() {
        Ok(g) => println!("GPU: {} (sm_{}{}), {} SMs", g.name, g.compute_capability.0, g.compute_capability.1, g.sm_count),
        Err(e) => println!("{e}"),
    }
    std::process::ExitCode::SUCCESS
}
