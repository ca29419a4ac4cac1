use clap::{Parser, Subcommand};

/// Resets Microsoft Entra B2B guest redemptions declaratively, once per generation.
#[derive(Parser)]
#[command(name = "guestreset", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinition YAML (identical to the file under crds/).
    Crd,
}

fn main() {
    match Cli::parse().command {
        Command::Crd => print!("{}", guestreset::resource::crd_yaml()),
    }
}
