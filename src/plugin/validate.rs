//! Local checks of flag values, so that a mistake is reported at once and names its flag.
//!
//! They follow the admission rules of the CRD (src/resource/reset.rs, docs/resource.md), which stay
//! the authority: a value that passes here and fails there is refused by the API server with
//! its own message. The tests hold both to the same verdicts (the CEL rules evaluated offline,
//! the schema's bounds and patterns read from the CRD).

use crate::resource::UserRef;

/// The characters Graph refuses in the local part of `invitedUserEmailAddress`.
const EMAIL_LOCAL_FORBIDDEN: &str = "~!#$%^&*()+=[]{}\\/|;:\"<>?,@";

pub const EMAIL_LEN: (usize, usize) = (3, 254);
pub const UPN_LEN: (usize, usize) = (3, 256);
pub const REDIRECT_MAX: usize = 2048;
pub const BODY_LEN: (usize, usize) = (1, 4000);
pub const LANGUAGE_LEN: (usize, usize) = (2, 35);
pub const CHANGE_REF_LEN: (usize, usize) = (1, 128);
pub const DNS_NAME_MAX: usize = 253;
/// `status.approval.reason` and `.by`.
pub const REASON_LEN: (usize, usize) = (1, 1024);
pub const BY_MAX: usize = 512;

/// `--user`: the key is recognised by its shape. A GUID is the object id; a value containing
/// `#EXT#` is a guest's user principal name; any other value with an `@` is the guest's current
/// mail. (A user principal name without `#EXT#` needs `--user-principal-name`.)
pub fn user_auto(value: &str) -> Result<UserRef, String> {
    if looks_like_guid(value) {
        return Ok(UserRef {
            id: Some(value.to_owned()),
            ..UserRef::default()
        });
    }
    if value.to_ascii_uppercase().contains("#EXT#") {
        return Ok(UserRef {
            user_principal_name: Some(upn(value)?),
            ..UserRef::default()
        });
    }
    if value.contains('@') {
        return Ok(UserRef {
            mail: Some(
                email(value)
                    .map_err(|e| format!("taken as the guest's current mail (no #EXT#): {e}"))?,
            ),
            ..UserRef::default()
        });
    }
    Err("neither a GUID (object id), a user principal name with #EXT#, nor a mail address; use --user-id, --user-principal-name or --user-mail".into())
}

/// An object id: a GUID without braces.
pub fn guid(value: &str) -> Result<String, String> {
    if looks_like_guid(value) {
        Ok(value.to_owned())
    } else {
        Err("must be a GUID like 3f0a6c1e-8d2b-4c55-9b0e-2f6a1d9c7e41".into())
    }
}

fn looks_like_guid(value: &str) -> bool {
    let groups: Vec<&str> = value.split('-').collect();
    let sizes: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    sizes == [8, 4, 4, 4, 12]
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// An e-mail address as the CRD's rule takes it (docs/resource.md, `email`).
pub fn email(value: &str) -> Result<String, String> {
    within(value, EMAIL_LEN)?;
    if email_shape(value) {
        Ok(value.to_owned())
    } else {
        Err("must be an e-mail address: one '@', a dotted domain, no spaces or consecutive dots, and none of ~ ! # $ % ^ & * ( ) + = [ ] { } \\ / | ; : \" < > ? , in the local part (nor '.' or '-' at its start or end)".into())
    }
}

/// The CRD's CEL rule for addresses (its length bounds are separate, in the schema).
fn email_shape(value: &str) -> bool {
    let parts = value.split_once('@');
    parts.is_some_and(|(local, domain)| email_local_part(local) && dns_domain(domain))
        && !value.contains("..")
}

fn email_local_part(local: &str) -> bool {
    let allowed = |c: char| !is_space_or_control(c) && !EMAIL_LOCAL_FORBIDDEN.contains(c);
    let edge = |c: Option<char>| c.is_some_and(|c| allowed(c) && c != '.' && c != '-');
    local.chars().all(allowed) && edge(local.chars().next()) && edge(local.chars().last())
}

/// Labels of letters, digits and inner hyphens, at least two of them.
fn dns_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The CRD's `\p{Z}\p{Cc}`: Unicode's separators and control characters. Rust's white space
/// is exactly the separators plus some control characters, so the union is the same set.
fn is_space_or_control(c: char) -> bool {
    c.is_whitespace() || c.is_control()
}

/// A user principal name: one `@`, a dotted domain, no white space.
pub fn upn(value: &str) -> Result<String, String> {
    within(value, UPN_LEN)?;
    if upn_shape(value) {
        Ok(value.to_owned())
    } else {
        Err("must be a user principal name: one '@' with a dotted domain and no spaces".into())
    }
}

fn upn_shape(value: &str) -> bool {
    let parts = value.split_once('@');
    let dotted = |domain: &str| {
        domain
            .char_indices()
            .any(|(i, c)| c == '.' && i > 0 && i + 1 < domain.len())
    };
    parts.is_some_and(|(name, domain)| !name.is_empty() && !domain.contains('@') && dotted(domain))
        && !value.chars().any(is_space_or_control)
}

pub fn redirect_url(value: &str) -> Result<String, String> {
    within(value, (0, REDIRECT_MAX))?;
    if redirect_shape(value) {
        Ok(value.to_owned())
    } else {
        Err("must be an https:// URL".into())
    }
}

fn redirect_shape(value: &str) -> bool {
    value.starts_with("https://") && value.chars().count() > 8 && !value.contains(' ')
}

/// BCP-47 in the CRD's shape: `en`, `en-US`, `zh-Hant-TW`.
pub fn language(value: &str) -> Result<String, String> {
    within(value, LANGUAGE_LEN)?;
    let mut parts = value.split('-');
    let primary = parts.next().unwrap_or_default();
    let ok = (2..=3).contains(&primary.len())
        && primary.chars().all(|c| c.is_ascii_alphabetic())
        && parts
            .all(|p| (2..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()));
    if ok {
        Ok(value.to_owned())
    } else {
        Err("must be a BCP-47 language tag like en-US".into())
    }
}

pub fn message_body(value: &str) -> Result<String, String> {
    within(value, BODY_LEN).map(|()| value.to_owned())
}

pub fn change_ref(value: &str) -> Result<String, String> {
    within(value, CHANGE_REF_LEN).map(|()| value.to_owned())
}

/// A DNS subdomain (RFC 1123): the names of resources and Secrets.
pub fn dns_name(value: &str) -> Result<String, String> {
    within(value, (1, DNS_NAME_MAX))?;
    let label_ok = |label: &str| {
        !label.is_empty()
            && label
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if value.split('.').all(label_ok) {
        Ok(value.to_owned())
    } else {
        Err("must be a DNS name: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit".into())
    }
}

/// `--reason` of approve and deny: something a reviewer can read later.
pub fn reason(value: &str) -> Result<String, String> {
    if value.trim().is_empty() {
        return Err("must not be empty: say why (a review note, a change ticket)".into());
    }
    within(value, REASON_LEN).map(|()| value.to_owned())
}

/// `--requested-by`: the user name the API server will see when the manifest is applied.
pub fn user_name(value: &str) -> Result<String, String> {
    if value.trim().is_empty() {
        return Err("must not be empty".into());
    }
    within(value, (1, BY_MAX)).map(|()| value.to_owned())
}

/// Lengths count characters, as the API server's `maxLength` does.
fn within(value: &str, (min, max): (usize, usize)) -> Result<(), String> {
    let n = value.chars().count();
    if n < min {
        Err(format!("must be at least {min} characters long"))
    } else if n > max {
        Err(format!(
            "must be at most {max} characters long (it has {n})"
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
