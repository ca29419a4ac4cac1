//! `completion bash|zsh|fish`: clap_complete's static scripts for the plugin's command line,
//! written for the executable's own name, `kubectl-guestreset`, which is the command a shell
//! can attach completions to; and, for `kubectl guestreset <TAB>`, kubectl's protocol: kubectl
//! (1.26 or newer) runs `kubectl_complete-guestreset` (this binary under a second name) with
//! the words after the plugin's name and reads one candidate per line, then `:<directive>`
//! (docs/plugin.md, "Shell completion").

use clap::{Command, CommandFactory};
use clap_complete::shells;

use super::cli::{Cli, Shell};
use super::error::Error;
use super::output;

/// The executable the script completes.
pub const BIN: &str = "kubectl-guestreset";

pub fn print(shell: Shell) -> Result<(), Error> {
    output::print(&script(shell))
}

/// The name kubectl runs to complete the plugin's words.
pub const KUBECTL_COMPLETE: &str = "kubectl_complete-guestreset";

/// cobra's ShellCompDirectiveNoFileComp: offer no file names besides the candidates.
const NO_FILES: u8 = 4;
/// cobra's ShellCompDirectiveDefault: the shell may offer file names (a flag's value).
const FILES: u8 = 0;

/// Answers kubectl's completion request: `words` are the plugin's words, the last one the
/// word being completed.
pub fn answer_kubectl(words: &[String]) -> Result<(), Error> {
    let (candidates, directive) = candidates(words);
    let mut text: String = candidates.iter().map(|c| format!("{c}\n")).collect();
    text.push_str(&format!(":{directive}\n"));
    output::print(&text)
}

/// The subcommands or flags that complete the last of `words`, and cobra's directive.
pub fn candidates(words: &[String]) -> (Vec<String>, u8) {
    let mut command = Cli::command();
    command.build();
    let (partial, before) = words
        .split_last()
        .map_or(("", &[][..]), |(p, b)| (p.as_str(), b));
    let mut current = &command;
    let mut value_of_flag = false;
    for word in before {
        if std::mem::take(&mut value_of_flag) {
            continue;
        }
        if word.starts_with('-') {
            value_of_flag = !word.contains('=') && takes_value(current, word);
        } else if let Some(sub) = current.find_subcommand(word) {
            current = sub;
        }
    }
    if value_of_flag {
        return (vec![], FILES);
    }
    let offered: Vec<String> = if partial.starts_with('-') {
        current
            .get_arguments()
            .filter(|a| !a.is_hide_set())
            .filter_map(|a| a.get_long().map(|long| format!("--{long}")))
            .collect()
    } else {
        current
            .get_subcommands()
            .filter(|c| !c.is_hide_set() && c.get_name() != "help")
            .map(|c| c.get_name().to_owned())
            .collect()
    };
    let offered = offered
        .into_iter()
        .filter(|c| c.starts_with(partial))
        .collect();
    (offered, NO_FILES)
}

/// Whether the flag `word` (`--long` or `-s`) of `command` is followed by its value.
fn takes_value(command: &Command, word: &str) -> bool {
    let flag = command
        .get_arguments()
        .find(|a| match word.strip_prefix("--") {
            Some(long) => a.get_long() == Some(long),
            None => {
                word.chars()
                    .nth(1)
                    .is_some_and(|s| a.get_short() == Some(s))
                    && word.len() == 2
            }
        });
    flag.is_some_and(|a| a.get_action().takes_values())
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

    const SUBCOMMANDS: [&str; 8] = [
        "new",
        "approve",
        "deny",
        "retry",
        "status",
        "plan",
        "completion",
        "migration",
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

    fn complete(line: &str) -> Vec<String> {
        let mut words: Vec<String> = line.split(' ').map(str::to_owned).collect();
        if line.is_empty() {
            words = vec![String::new()];
        }
        let (offered, directive) = candidates(&words);
        assert_eq!(directive, NO_FILES, "{line:?}");
        offered
    }

    /// kubectl's protocol: the subcommands first, then the flags of the subcommand the words
    /// name (the global ones included), filtered by the word being completed; after a flag
    /// that takes a value, nothing but file names.
    #[test]
    fn kubectl_gets_the_candidates_for_the_words_so_far() {
        let mut all: Vec<String> = SUBCOMMANDS.map(str::to_owned).to_vec();
        all.sort();
        let mut offered = complete("");
        offered.sort();
        assert_eq!(offered, all);
        assert_eq!(complete("-n identity st"), ["status"]);
        let reason = complete("--context prod approve alice --re");
        assert_eq!(reason, ["--reason", "--request-timeout"]);
        let flags = complete("retry alice --");
        for flag in ["--yes", "--as", "--as-group", "--namespace", "--context"] {
            assert!(flags.iter().any(|f| f == flag), "{flag}: {flags:?}");
        }
        assert!(!flags.iter().any(|f| f == "--reason"), "{flags:?}");
        assert_eq!(complete("completion "), Vec::<String>::new());
        let words: Vec<String> = ["status", "--kubeconfig", ""].map(str::to_owned).to_vec();
        assert_eq!(candidates(&words), (vec![], FILES));
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
