//! The command line of `kubectl guestreset` (docs/plugin.md). Flag values are checked here,
//! where clap reports a bad one naming its flag and exits with the usage code.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, ArgGroup, Args, Parser, Subcommand};

use super::error::exit_code_help;
use super::output::Format;
use super::validate;
use crate::resource::UserRef;

const EXAMPLES: &str = "\
Examples:
  # A manifest for a pull request; --requested-by names whoever will apply it (GitOps)
  kubectl guestreset new alice-to-newco -n identity --user alice@contoso.com \\
    --email alice@newco.example --change-ref CHG-20931 \\
    --requested-by system:serviceaccount:flux-system:kustomize-controller > alice.yaml

  # Create it directly; you become the requester of its first generation
  kubectl guestreset new alice-to-newco -n identity --apply \\
    --user 3f0a6c1e-8d2b-4c55-9b0e-2f6a1d9c7e41 --email alice@newco.example

  # A second person reviews the plan and approves it
  kubectl guestreset plan alice-to-newco -n identity
  kubectl guestreset approve alice-to-newco -n identity --generation 1 --reason \"CHG-20931 reviewed\"

  # Where everything stands, and one more try after a failure
  kubectl guestreset status -n identity
  kubectl guestreset retry alice-to-newco -n identity";

/// Manage GuestRedemptionReset resources: scaffold them, review and approve their plans,
/// retry them, and see where they stand.
#[derive(Parser, Debug)]
#[command(
    name = "kubectl-guestreset",
    bin_name = "kubectl guestreset",
    version,
    args_override_self = true,
    after_help = format!("{EXAMPLES}\n\n{}\n\nMore: docs/plugin.md", exit_code_help())
)]
pub struct Cli {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub command: Command,
}

/// kubectl's connection flags.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Connection (as kubectl's)")]
pub struct Connection {
    /// The namespace; default: the kubeconfig context's namespace, else `default`.
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// The kubeconfig context to use; default: the current context.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The kubeconfig file; default: the files in $KUBECONFIG, else ~/.kube/config.
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// How long one request to the API server may take (0: no limit).
    #[arg(long, global = true, default_value = "30s", value_parser = request_timeout)]
    pub request_timeout: Duration,
    /// The user to impersonate; replaces the kubeconfig's `as`. The API server checks that
    /// you may impersonate, then authenticates, authorises and records the command as them.
    #[arg(long = "as", global = true, value_name = "USER", value_parser = validate::user_name)]
    pub impersonate: Option<String>,
    /// A group to impersonate, repeatable; replaces the kubeconfig's `as-groups`.
    #[arg(
        long = "as-group",
        global = true,
        value_name = "GROUP",
        action = ArgAction::Append,
        value_parser = validate::user_name
    )]
    pub impersonate_groups: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Scaffold a manifest from flags (YAML for a pull request), or create it with --apply.
    #[command(after_help = NEW_HELP)]
    New(Box<NewArgs>),
    /// Approve the current generation after reviewing its plan (four eyes; docs/plugin.md).
    #[command(after_help = format!("{DECIDE_HELP}\n\nExample:\n  \
kubectl guestreset approve alice-to-newco -n identity --generation 1 --reason \"CHG-20931 reviewed\""))]
    Approve(DecideArgs),
    /// Deny the current generation; final for that generation.
    #[command(after_help = format!("{DECIDE_HELP}\n\nExample:\n  \
kubectl guestreset deny alice-to-newco -n identity --reason \"not the guest's address\""))]
    Deny(DecideArgs),
    /// Ask the controller to try the current generation once more after a failure.
    #[command(
        after_help = "A fresh guestreset.io/retry value each time. After OutcomeUnknown a second \
invitation may follow: a terminal asks for confirmation, a script must pass --yes.\n\n\
Example:\n  kubectl guestreset retry alice-to-newco -n identity"
    )]
    Retry(RetryArgs),
    /// Show where resets stand: reason, age, requester, approval, redemption, next try.
    #[command(after_help = "Examples:\n  kubectl guestreset status -n identity\n  \
kubectl guestreset status alice-to-newco -n identity\n  kubectl guestreset status -A -o json")]
    Status(StatusArgs),
    /// Print the plan of the current generation, with the requester.
    #[command(
        after_help = "Example:\n  kubectl guestreset plan alice-to-newco -n identity -o yaml"
    )]
    Plan(PlanArgs),
    /// Print a shell completion script for bash, zsh or fish.
    #[command(after_help = COMPLETION_HELP)]
    Completion(CompletionArgs),
    /// Domain migrations (GuestDomainMigration).
    #[command(subcommand)]
    Migration(MigrationCommand),
}

#[derive(Subcommand, Debug)]
pub enum MigrationCommand {
    /// Where a migration stands: its reason, plan, decision and a progress bar.
    #[command(
        after_help = "Example:\n  kubectl guestreset migration status contoso-to-fabrikam -n identity"
    )]
    Status(MigrationStatusArgs),
}

#[derive(Args, Debug)]
pub struct MigrationStatusArgs {
    /// Name of the GuestDomainMigration.
    pub name: String,
    /// Print the status as YAML or JSON instead of text.
    #[arg(short, long, value_enum)]
    pub output: Option<Format>,
}

const COMPLETION_HELP: &str = "\
Completes `kubectl guestreset ...` (kubectl 1.26 or newer runs the executable \
kubectl_complete-guestreset for that; docs/plugin.md) and `kubectl-guestreset ...`.

Examples:
  kubectl guestreset completion bash > ~/.local/share/bash-completion/completions/kubectl-guestreset
  kubectl guestreset completion zsh > \"${fpath[1]}/_kubectl-guestreset\"
  kubectl guestreset completion fish > ~/.config/fish/completions/kubectl-guestreset.fish";

const DECIDE_HELP: &str = "\
Prints the plan of the current generation, then writes status.approval (generation, retry, spec \
digest, decision, by: you as the API server knows you, at, reason) through the status \
subresource, and only onto the version it printed. The decision names what you reviewed: \
--generation N or --digest sha256:..., or your confirmation of the plan shown on a terminal; \
nothing is written when that is no longer current. The API server's admission decides whether \
you may decide.";

const NEW_HELP: &str = "\
--user recognises the key by its shape: a GUID is the object id, a value with #EXT# the \
user principal name, any other value with '@' the guest's current mail.

Without --apply the manifest is printed and nothing is sent anywhere; it carries the \
guestreset.io/requested-by annotation only with --requested-by (the user name the API server \
will see when it is applied, e.g. the GitOps controller's). With --apply it is created \
through the API server with your own user name as the requester.

Examples:
  kubectl guestreset new alice-to-newco -n identity --user alice@contoso.com \\
    --email alice@newco.example --change-ref CHG-20931 > alice.yaml
  kubectl guestreset new bob -n identity --apply --dry-run \\
    --user 'bob_partner.example#EXT#@fabrikam.onmicrosoft.com' --email bob@partner.example";

#[derive(Args, Debug)]
#[command(group(
    ArgGroup::new("target")
        .required(true)
        .args(["user", "user_id", "user_principal_name", "user_mail"])
))]
pub struct NewArgs {
    /// Name of the resource.
    #[arg(value_parser = validate::dns_name)]
    pub name: String,
    /// The guest: a GUID, a user principal name with #EXT#, or the guest's current mail.
    #[arg(long, value_parser = validate::user_auto)]
    pub user: Option<UserRef>,
    /// The guest's object id.
    #[arg(long, value_parser = validate::guid)]
    pub user_id: Option<String>,
    /// The guest's user principal name.
    #[arg(long, value_parser = validate::upn)]
    pub user_principal_name: Option<String>,
    /// The guest's current mail (must match exactly one user).
    #[arg(long, value_parser = validate::email)]
    pub user_mail: Option<String>,
    /// The new sign-in e-mail.
    #[arg(long, value_parser = validate::email)]
    pub email: String,
    /// A change or ticket reference, carried into Events and logs.
    #[arg(long, value_parser = validate::change_ref)]
    pub change_ref: Option<String>,
    /// spec.dryRun: the controller plans without writing to Graph (not kubectl's --dry-run).
    #[arg(long)]
    pub dry_run: bool,
    /// A custom body of the invitation e-mail.
    #[arg(long, value_parser = validate::message_body)]
    pub message_body: Option<String>,
    /// The language of the invitation e-mail (default en-US; Graph ignores it with a body).
    #[arg(long, value_parser = validate::language)]
    pub message_language: Option<String>,
    /// One address to copy on the invitation e-mail.
    #[arg(long, value_parser = validate::email)]
    pub cc: Option<String>,
    /// Microsoft sends no invitation e-mail (use --redeem-url-secret to get the link).
    #[arg(long)]
    pub no_invitation_message: bool,
    /// Stop with EmailNotOnUser instead of setting the user's mail to the new e-mail.
    #[arg(long)]
    pub no_update_mail: bool,
    /// Where the guest lands after redeeming (https; default https://myapps.microsoft.com).
    #[arg(long, value_parser = validate::redirect_url)]
    pub redirect_url: Option<String>,
    /// A Secret of the namespace to receive the redeem URL.
    #[arg(long, value_parser = validate::dns_name)]
    pub redeem_url_secret: Option<String>,
    /// The requester to record in a printed manifest: the user name the API server will see
    /// when it is applied.
    #[arg(long, conflicts_with = "apply", value_parser = validate::user_name)]
    pub requested_by: Option<String>,
    /// Create the resource through the API server, with you as its requester.
    #[arg(long)]
    pub apply: bool,
    /// Output format of the manifest (or, with --apply, of what was created).
    #[arg(short, long, value_enum, default_value_t = Format::Yaml)]
    pub output: Format,
}

#[derive(Args, Debug)]
pub struct DecideArgs {
    /// Name of the resource.
    pub name: String,
    /// Why: a review note or a change ticket (required, at most 1024 characters).
    #[arg(long, required = true, value_parser = validate::reason)]
    pub reason: String,
    /// The generation you reviewed: nothing is written when it is no longer the current one.
    #[arg(long)]
    pub generation: Option<i64>,
    /// The spec digest you reviewed (the plan's "spec digest"): nothing is written when the
    /// spec no longer has it.
    #[arg(long)]
    pub digest: Option<String>,
    /// Decide although the status shows no plan for the current generation (only with
    /// --generation or --digest, naming what you reviewed).
    #[arg(long)]
    pub without_plan: bool,
}

#[derive(Args, Debug)]
pub struct RetryArgs {
    /// Name of the resource.
    pub name: String,
    /// Retry without asking, also after OutcomeUnknown (a second invitation may follow).
    #[arg(short, long)]
    pub yes: bool,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Name of one resource; default: all in the namespace.
    pub name: Option<String>,
    /// All namespaces.
    #[arg(short = 'A', long, conflicts_with = "name")]
    pub all_namespaces: bool,
    /// Print the status as YAML or JSON instead of a table.
    #[arg(short, long, value_enum)]
    pub output: Option<Format>,
}

#[derive(Args, Debug)]
pub struct CompletionArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// The shells `completion` writes scripts for.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// Name of the resource.
    pub name: String,
    /// Print the plan as YAML or JSON.
    #[arg(short, long, value_enum)]
    pub output: Option<Format>,
}

/// kubectl's `--request-timeout`: a duration like 30s, `0` for no limit.
fn request_timeout(text: &str) -> Result<Duration, String> {
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let duration = crate::cli::parse_duration(text)?;
    Duration::try_from(duration).map_err(|e| e.to_string())
}

impl Connection {
    /// The bound on one request; none for `0`.
    pub fn request_timeout(&self) -> Option<Duration> {
        Some(self.request_timeout).filter(|t| !t.is_zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("kubectl-guestreset").chain(args.iter().copied()))
    }

    fn usage_error(args: &[&str]) -> String {
        let err = parse(args).unwrap_err();
        let usage = i32::from(crate::plugin::Exit::Usage.code());
        assert_eq!(err.exit_code(), usage, "{args:?}: {err}");
        err.to_string()
    }

    const NEW: [&str; 4] = ["new", "a", "--email", "alice@newco.example"];

    fn new_with<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        NEW.iter().chain(extra).copied().collect()
    }

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn new_needs_exactly_one_user_key() {
        let err = usage_error(&NEW);
        assert!(err.contains("--user"), "{err}");
        let err = usage_error(&new_with(&[
            "--user-id",
            "3f0a6c1e-8d2b-4c55-9b0e-2f6a1d9c7e41",
            "--user-mail",
            "a@b.co",
        ]));
        assert!(err.contains("cannot be used with"), "{err}");
        for key in [
            ["--user", "a@b.co"],
            ["--user-id", "3f0a6c1e-8d2b-4c55-9b0e-2f6a1d9c7e41"],
            ["--user-principal-name", "a@b.co"],
            ["--user-mail", "a@b.co"],
        ] {
            assert!(parse(&new_with(&key)).is_ok(), "{key:?}");
        }
    }

    #[test]
    fn bad_values_name_their_flag() {
        let cases = [
            (vec!["--user-id", "not-a-guid"], "--user-id"),
            (vec!["--user", "alice"], "--user"),
            (vec!["--user-mail", "a@b", "--cc", "x@y.z"], "--user-mail"),
            (
                vec!["--user-mail", "a@b.co", "--cc", "boss;x@fabrikam.example"],
                "--cc",
            ),
            (
                vec![
                    "--user-mail",
                    "a@b.co",
                    "--redirect-url",
                    "http://x.example",
                ],
                "--redirect-url",
            ),
            (
                vec!["--user-mail", "a@b.co", "--message-language", "english"],
                "--message-language",
            ),
            (
                vec!["--user-mail", "a@b.co", "--redeem-url-secret", "Bad_Name"],
                "--redeem-url-secret",
            ),
            (
                vec!["--user-mail", "a@b.co", "--change-ref", ""],
                "--change-ref",
            ),
        ];
        for (extra, flag) in cases {
            let err = usage_error(&new_with(&extra));
            assert!(err.contains(&format!("'{flag} <")), "{flag}: {err}");
        }
        let err = usage_error(&[
            "new",
            "a",
            "--user-mail",
            "a@b.co",
            "--email",
            "al ice@x.example",
        ]);
        assert!(
            err.contains("--email") && err.contains("must be an e-mail address"),
            "{err}"
        );
        let err = usage_error(&[
            "new",
            "Not_A_Name",
            "--user-mail",
            "a@b.co",
            "--email",
            "a@b.co",
        ]);
        assert!(err.contains("<NAME>"), "{err}");
    }

    #[test]
    fn requested_by_is_for_printed_manifests_only() {
        let err = usage_error(&new_with(&[
            "--user-mail",
            "a@b.co",
            "--apply",
            "--requested-by",
            "x",
        ]));
        assert!(err.contains("--requested-by"), "{err}");
        assert!(
            parse(&new_with(&[
                "--user-mail",
                "a@b.co",
                "--requested-by",
                "flux"
            ]))
            .is_ok()
        );
    }

    #[test]
    fn decisions_need_a_reason() {
        for verb in ["approve", "deny"] {
            let err = parse(&[verb, "a"]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument);
            let err = usage_error(&[verb, "a", "--reason", "  "]);
            assert!(err.contains("must not be empty"), "{err}");
            assert!(parse(&[verb, "a", "--reason", "ok"]).is_ok());
        }
    }

    #[test]
    fn connection_flags_are_global() {
        let cli = parse(&[
            "status",
            "-n",
            "identity",
            "--context",
            "prod",
            "--kubeconfig",
            "/k",
        ])
        .unwrap();
        assert_eq!(cli.connection.namespace.as_deref(), Some("identity"));
        assert_eq!(cli.connection.context.as_deref(), Some("prod"));
        assert_eq!(cli.connection.kubeconfig, Some(PathBuf::from("/k")));
        assert_eq!(
            cli.connection.request_timeout(),
            Some(Duration::from_secs(30))
        );
        let cli = parse(&["--request-timeout", "0", "plan", "a"]).unwrap();
        assert_eq!(cli.connection.request_timeout(), None);
        let cli = parse(&["plan", "a", "--request-timeout", "2m"]).unwrap();
        assert_eq!(
            cli.connection.request_timeout(),
            Some(Duration::from_secs(120))
        );
        assert!(
            parse(&["status", "-A", "a"]).is_err(),
            "-A lists, a NAME picks one"
        );
    }

    #[test]
    fn impersonation_flags_are_global_and_groups_repeat() {
        let line = "--as bob approve a --reason r --as-group g1 --as-group g2";
        let cli = parse(&words_of(line)).unwrap();
        assert_eq!(cli.connection.impersonate.as_deref(), Some("bob"));
        assert_eq!(cli.connection.impersonate_groups, ["g1", "g2"]);
        let cli = parse(&["status"]).unwrap();
        assert_eq!(cli.connection.impersonate, None);
        assert!(cli.connection.impersonate_groups.is_empty());
        let err = usage_error(&["status", "--as", " "]);
        assert!(err.contains("--as <USER>"), "{err}");
    }

    fn words_of(line: &str) -> Vec<&str> {
        line.split_whitespace().collect()
    }

    #[test]
    fn outputs_are_yaml_or_json() {
        let err = usage_error(&["status", "-o", "wide"]);
        assert!(err.contains("yaml") && err.contains("json"), "{err}");
        assert!(parse(&["plan", "a", "-o", "json"]).is_ok());
    }

    #[test]
    fn help_shows_examples_and_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        for text in [
            "Examples:",
            "kubectl guestreset approve",
            "Exit codes:",
            "  7  ",
        ] {
            assert!(help.contains(text), "{text}: {help}");
        }
    }
}
