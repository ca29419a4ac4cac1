//! `kubectl guestreset`: the kubectl plugin (docs/plugin.md). The binary
//! (`src/bin/kubectl-guestreset.rs`) parses the command line and turns the outcome into an exit
//! code; everything else is here, the pure parts apart from the calls to the API server.
//!
//! - [`cli`]: the flags, checked by [`validate`] as they are parsed.
//! - [`session`]: kubeconfig, context, namespace, and who the caller is.
//! - [`new`], [`plan`], [`decide`] (approve and deny), [`retry`], [`status`]: the subcommands;
//!   [`migration`] (`migration status`); [`completion`] the shell scripts.
//! - [`mod@write`]: the merge patches that apply only to the version that was read.
//! - [`output`] and [`error`]: printing, and the exit codes.

pub mod cli;
pub mod completion;
pub mod decide;
pub mod error;
pub mod migration;
pub mod new;
pub mod output;
pub mod plan;
pub mod retry;
pub mod session;
pub mod status;
pub mod validate;
pub mod write;

#[cfg(test)]
mod fixtures;

use std::process::ExitCode;

pub use cli::{Cli, Command};
pub use error::{Error, Exit};

use crate::resource::Decision;
use session::Session;

pub async fn run(cli: Cli) -> Result<(), Error> {
    let connection = &cli.connection;
    let connect = || Session::connect(connection);
    match &cli.command {
        // A printed manifest needs no cluster: `new` connects only to apply.
        Command::New(args) => new::run(connection, args).await,
        Command::Approve(args) => decide::run(&connect().await?, args, Decision::Approved).await,
        Command::Deny(args) => decide::run(&connect().await?, args, Decision::Denied).await,
        Command::Retry(args) => retry::run(&connect().await?, args).await,
        Command::Status(args) => status::run(&connect().await?, args).await,
        Command::Plan(args) => plan::run(&connect().await?, &args.name, args.output).await,
        Command::Completion(args) => completion::print(args.shell),
        Command::Migration(cli::MigrationCommand::Status(args)) => {
            migration::status(&connect().await?, args).await
        }
    }
}

/// Reports the outcome on stderr, kubectl's way, and gives its exit code.
pub fn finish(outcome: Result<(), Error>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            match err {
                Error::Refused { .. } | Error::NotFound(_) | Error::Conflict(_) => {
                    eprintln!("{err}")
                }
                _ => eprintln!("error: {err}"),
            }
            ExitCode::from(err.exit().code())
        }
    }
}
