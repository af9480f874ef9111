//! The `mlbox` binary: parse the command line, set up logging, run, map the outcome to an exit code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = mlbox::cli::Cli::parse();
    mlbox::cli::init_tracing(&cli);
    match mlbox::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
