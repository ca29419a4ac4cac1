//! `kubectl-guestreset`, the kubectl plugin: `kubectl guestreset ...` once it is on PATH
//! (docs/plugin.md). Parses, runs, and exits with the outcome's code; the work is in
//! `guestreset::plugin`.

use std::process::ExitCode;

use clap::Parser;

use guestreset::plugin::{self, Cli};

fn main() -> ExitCode {
    // clap exits by itself on --help, --version (0) and usage errors (2).
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("starting the Tokio runtime");
    plugin::finish(runtime.block_on(plugin::run(cli)))
}
