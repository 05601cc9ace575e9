//! The `clampnet` command line: one file per command under `src/cli/`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
