//! `completion bash|zsh|fish`: clap_complete's static scripts for the plugin's command line,
//! written for the executable's own name, `kubectl-guestreset`, which is the command a shell
//! can attach completions to (docs/plugin.md, "Shell completion").

use clap::CommandFactory;
use clap_complete::shells;

use super::cli::{Cli, Shell};
use super::error::Error;
use super::output;

/// The executable the script completes.
pub const BIN: &str = "kubectl-guestreset";

pub fn print(shell: Shell) -> Result<(), Error> {
    output::print(&script(shell))
}

/// The completion script for `shell`.
pub fn script(shell: Shell) -> String {
    let mut command = Cli::command();
    let mut out = Vec::new();
    match shell {
        Shell::Bash => clap_complete::generate(shells::Bash, &mut command, BIN, &mut out),
        Shell::Zsh => clap_complete::generate(shells::Zsh, &mut command, BIN, &mut out),
        Shell::Fish => clap_complete::generate(shells::Fish, &mut command, BIN, &mut out),
    }
    String::from_utf8(out).expect("clap_complete writes UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    const SUBCOMMANDS: [&str; 7] = [
        "new",
        "approve",
        "deny",
        "retry",
        "status",
        "plan",
        "completion",
    ];

    /// Each script registers itself for the executable and offers every subcommand and the
    /// connection flags, the impersonation ones included.
    #[test]
    fn every_script_names_the_subcommands_and_connection_flags() {
        let registers = [
            (Shell::Bash, "complete -F _kubectl__guestreset"),
            (Shell::Zsh, "#compdef kubectl-guestreset"),
            (Shell::Fish, "complete -c kubectl-guestreset"),
        ];
        assert_eq!(registers.len(), Shell::value_variants().len());
        for (shell, registration) in registers {
            let text = script(shell);
            assert!(text.contains(registration), "{shell:?}:\n{text}");
            for word in SUBCOMMANDS.iter().chain(&["context", "as-group"]) {
                assert!(text.contains(word), "{shell:?} lacks {word}:\n{text}");
            }
        }
    }

    /// Bash itself, given the script, completes the first word with the subcommands and the
    /// connection flags.
    #[test]
    fn bash_completes_the_subcommands() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kubectl-guestreset.bash");
        std::fs::write(&file, script(Shell::Bash)).unwrap();
        let line = format!(
            "source {}; COMP_WORDS=({BIN} ''); COMP_CWORD=1; \
             _kubectl__guestreset {BIN} '' {BIN}; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            file.display()
        );
        let out = std::process::Command::new("bash")
            .args(["--norc", "-c", &line])
            .output()
            .expect("run bash");
        assert!(out.status.success(), "{out:?}");
        let offered = String::from_utf8(out.stdout).unwrap();
        let offered: Vec<&str> = offered.lines().collect();
        for word in SUBCOMMANDS
            .iter()
            .chain(&["--as", "--as-group", "--namespace"])
        {
            assert!(offered.contains(word), "{word} not offered: {offered:?}");
        }
    }

    /// The shell is chosen by name; another is a usage error naming the three.
    #[test]
    fn the_shell_is_bash_zsh_or_fish() {
        use clap::Parser;
        let cli = Cli::try_parse_from(["kubectl-guestreset", "completion", "fish"]).unwrap();
        assert!(
            matches!(cli.command, crate::plugin::Command::Completion(a) if a.shell == Shell::Fish)
        );
        let err = Cli::try_parse_from(["kubectl-guestreset", "completion", "tcsh"]).unwrap_err();
        assert!(
            err.to_string()
                .contains("[possible values: bash, zsh, fish]"),
            "{err}"
        );
    }
}
