//! The `returner-host` command: parse the command line, run, and turn any
//! error into one line on stderr and a non-zero exit.

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = returner_host::cli::Cli::parse();
    returner_host::cli::main(cli)
}
