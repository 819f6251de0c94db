//! The `styleforge` command line (see `cli` for the subcommands).
mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
