//! The renamed local parts of a migration (`spec.mapping`): lines `old-local new-local` in a
//! ConfigMap. Parsed strictly: a malformed line stops the migration with a condition that
//! names the line, before anything is planned or created.

use std::collections::BTreeMap;

/// Characters Graph refuses in the local part of `invitedUserEmailAddress` (the reset's
/// admission rule), and the at sign.
const FORBIDDEN: &str = "~!#$%^&*()+=[]{}\\/|;:\"<>?,@";

/// Old local part (lower case) to new local part.
pub type Renames = BTreeMap<String, String>;

/// A line that is not `old-local new-local`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line} ({text:?}): {problem}")]
pub struct LineError {
    /// 1-based.
    pub line: usize,
    pub text: String,
    pub problem: String,
}

/// Whether `local` can stand before the `@` of an address the reset's admission accepts.
pub fn local_part_problem(local: &str) -> Option<String> {
    if local.is_empty() || local.len() > 64 {
        return Some("a local part has 1 to 64 characters".to_owned());
    }
    if let Some(c) = local
        .chars()
        .find(|c| FORBIDDEN.contains(*c) || c.is_whitespace() || c.is_control())
    {
        return Some(format!("{c:?} is not allowed in a local part"));
    }
    if local.starts_with(['.', '-']) || local.ends_with(['.', '-']) {
        return Some("a local part may not start or end with '.' or '-'".to_owned());
    }
    if local.contains("..") {
        return Some("a local part may not hold consecutive dots".to_owned());
    }
    None
}

/// Parses the mapping's text. Blank lines and lines starting with `#` are skipped; every
/// other line is two local parts separated by white space; an old local part appears once.
pub fn parse(text: &str) -> Result<Renames, LineError> {
    let mut renames = Renames::new();
    let mut seen_at = BTreeMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let error = |problem: String| LineError {
            line,
            text: trimmed.chars().take(120).collect(),
            problem,
        };
        let words: Vec<&str> = trimmed.split_whitespace().collect();
        let [old, new] = words[..] else {
            return Err(error(format!(
                "expected two local parts, \"old-local new-local\", found {}",
                words.len()
            )));
        };
        for (which, local) in [("old", old), ("new", new)] {
            if let Some(problem) = local_part_problem(local) {
                return Err(error(format!(
                    "the {which} local part {local:?}: {problem}"
                )));
            }
        }
        let key = old.to_lowercase();
        if let Some(first) = seen_at.insert(key.clone(), line) {
            return Err(error(format!("{old:?} is already renamed on line {first}")));
        }
        renames.insert(key, new.to_owned());
    }
    Ok(renames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_blank_lines_and_comments() {
        let text = "# renamed people\n\nann.lee ann.park\n  Bob   robert  \n";
        let renames = parse(text).unwrap();
        assert_eq!(renames.len(), 2);
        assert_eq!(renames["ann.lee"], "ann.park");
        // The old local part is matched without regard to case.
        assert_eq!(renames["bob"], "robert");
    }

    #[test]
    fn a_malformed_line_is_named_by_its_number() {
        let cases = [
            ("a b\nlonely\n", 2, "expected two local parts"),
            ("a b c\n", 1, "found 3"),
            ("\n\nann@contoso.com ann\n", 3, "'@' is not allowed"),
            ("ann ann;x\n", 1, "the new local part"),
            ("ann .ann\n", 1, "start or end"),
            ("a..b c\n", 1, "consecutive dots"),
            ("ann x\nANN y\n", 2, "already renamed on line 1"),
        ];
        for (text, line, problem) in cases {
            let err = parse(text).unwrap_err();
            assert_eq!(err.line, line, "{text:?}: {err}");
            assert!(err.to_string().contains(problem), "{text:?}: {err}");
            assert!(
                err.to_string().starts_with(&format!("line {line} ")),
                "{err}"
            );
        }
    }

    #[test]
    fn local_parts_follow_the_reset_rules() {
        assert_eq!(local_part_problem("o'neil"), None);
        assert_eq!(local_part_problem("a.b-c_d"), None);
        assert!(local_part_problem("").is_some());
        assert!(local_part_problem(&"a".repeat(65)).is_some());
        assert!(local_part_problem("a b").is_some());
    }
}
