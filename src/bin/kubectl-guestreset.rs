//! `kubectl-guestreset`, the kubectl plugin: `kubectl guestreset ...` once it is on PATH
//! (docs/plugin.md). Parses, runs, and exits with the outcome's code; the work is in
//! `guestreset::plugin`.

use std::process::ExitCode;

use clap::Parser;

use guestreset::plugin::{self, Cli};

fn main() -> ExitCode {
    // Installed a second time as kubectl_complete-guestreset, it answers kubectl's completion.
    if invoked_as(plugin::completion::KUBECTL_COMPLETE) {
        let words: Vec<String> = std::env::args().skip(1).collect();
        return plugin::finish(plugin::completion::answer_kubectl(&words));
    }
    // clap exits by itself on --help, --version (0) and usage errors (2).
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("starting the Tokio runtime");
    plugin::finish(runtime.block_on(plugin::run(cli)))
}

fn invoked_as(name: &str) -> bool {
    let first = std::env::args_os().next().unwrap_or_default();
    std::path::Path::new(&first).file_name() == Some(std::ffi::OsStr::new(name))
}
