//! The `gtc` binary: parses the command line and hands it to
//! [`node::dispatch::run`]; everything else lives in the `node` library.
#![deny(clippy::print_stdout, clippy::print_stderr)]

use clap::Parser;

fn main() {
    let cli = node::cli::Cli::parse();
    std::process::exit(node::dispatch::run(cli));
}
