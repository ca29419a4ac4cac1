//! What can go wrong in the plugin, and the exit code each outcome gives (docs/plugin.md,
//! "Exit codes"). The API server is the authority on what may be written: its refusals are
//! passed on with their message unchanged.

use kube::core::Status;

/// The exit codes of `kubectl guestreset`, documented in `--help` and docs/plugin.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::VariantArray)]
pub enum Exit {
    Success = 0,
    Failure = 1,
    /// clap's own code for usage errors; the checks of flag values run inside clap.
    Usage = 2,
    NotFound = 3,
    Refused = 4,
    NotNow = 5,
    Unconfirmed = 6,
    Conflict = 7,
}

impl Exit {
    pub const ALL: &[Exit] = <Exit as strum::VariantArray>::VARIANTS;

    pub fn code(self) -> u8 {
        self as u8
    }

    /// One line of the exit-code table.
    pub fn meaning(self) -> &'static str {
        match self {
            Exit::Success => "success",
            Exit::Failure => {
                "error talking to the API server, a kubeconfig problem, or anything unexpected"
            }
            Exit::Usage => "usage: unknown or missing flags, or a value the local checks refuse",
            Exit::NotFound => "not found: the resource, its namespace, or the CRD",
            Exit::Refused => {
                "refused by the API server: RBAC (403), admission or validation (422), name taken"
            }
            Exit::NotNow => {
                "precondition not met, nothing done: no plan for the current generation, nothing to retry"
            }
            Exit::Unconfirmed => "confirmation needed (no terminal and no --yes) or declined",
            Exit::Conflict => {
                "the resource changed between read and write; nothing was written, run it again"
            }
        }
    }
}

/// The table printed after `--help`.
pub fn exit_code_help() -> String {
    let rows: Vec<String> = Exit::ALL
        .iter()
        .map(|exit| format!("  {}  {}", exit.code(), exit.meaning()))
        .collect();
    format!("Exit codes:\n{}", rows.join("\n"))
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubeconfig: {0}")]
    Config(String),
    /// The API server's answer, unchanged.
    #[error("Error from server (NotFound): {0}")]
    NotFound(String),
    /// The API server's refusal (RBAC, admission, validation), with its message unchanged.
    #[error("Error from server ({reason}): {message}")]
    Refused { reason: String, message: String },
    /// The resource is not in a state where the command makes sense.
    #[error("{0}")]
    NotNow(String),
    #[error("{0}")]
    Unconfirmed(String),
    #[error(
        "Error from server (Conflict): {0}\nthe resource changed since it was read; nothing was written: run the command again to see its current state"
    )]
    Conflict(String),
    #[error("the API server did not say who you are: {0}")]
    WhoAmI(String),
    #[error("{}", with_causes(.0))]
    Kube(kube::Error),
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
}

impl Error {
    pub fn exit(&self) -> Exit {
        match self {
            Error::NotFound(_) => Exit::NotFound,
            Error::Refused { .. } => Exit::Refused,
            Error::NotNow(_) => Exit::NotNow,
            Error::Unconfirmed(_) => Exit::Unconfirmed,
            Error::Conflict(_) => Exit::Conflict,
            Error::Config(_) | Error::WhoAmI(_) | Error::Kube(_) | Error::Output(_) => {
                Exit::Failure
            }
        }
    }
}

impl From<kube::Error> for Error {
    fn from(err: kube::Error) -> Self {
        match err {
            kube::Error::Api(status) => from_status(*status),
            other => Error::Kube(other),
        }
    }
}

/// An error and what caused it, each cause once: a connection error's own text ("client error
/// (Connect)") hides the reason ("Connection refused") in its sources, other errors repeat
/// theirs in their own text.
pub fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(&format!(": {cause_text}"));
        }
        source = cause.source();
    }
    text
}

/// Sorts an API server answer by what the user can do about it.
fn from_status(status: Status) -> Error {
    let reason = if status.reason.is_empty() {
        format!("{}", status.code)
    } else {
        status.reason.clone()
    };
    match (status.code, status.reason.as_str()) {
        (404, _) => Error::NotFound(not_found_message(status.message)),
        (409, "AlreadyExists") | (403 | 413 | 422, _) => Error::Refused {
            reason,
            message: status.message,
        },
        (409, _) => Error::Conflict(status.message),
        _ => Error::Kube(kube::Error::Api(Box::new(status))),
    }
}

/// A 404 without an object's name means the API server does not serve the resource at all.
fn not_found_message(message: String) -> String {
    if message == "the server could not find the requested resource" {
        format!(
            "{message} (is the GuestRedemptionReset CRD, guestredemptionresets.guestreset.io, installed?)"
        )
    } else {
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(Status::failure(message, reason).with_code(code)))
    }

    fn exit_of(code: u16, reason: &str) -> Exit {
        Error::from(status(code, reason, "m")).exit()
    }

    #[test]
    fn api_answers_map_to_their_exit_codes() {
        assert_eq!(exit_of(404, "NotFound"), Exit::NotFound);
        assert_eq!(exit_of(403, "Forbidden"), Exit::Refused);
        assert_eq!(exit_of(422, "Invalid"), Exit::Refused);
        assert_eq!(exit_of(413, "RequestEntityTooLarge"), Exit::Refused);
        assert_eq!(exit_of(409, "AlreadyExists"), Exit::Refused);
        assert_eq!(exit_of(409, "Conflict"), Exit::Conflict);
        assert_eq!(exit_of(500, "InternalError"), Exit::Failure);
        assert_eq!(exit_of(401, "Unauthorized"), Exit::Failure);
        assert_eq!(exit_of(400, "BadRequest"), Exit::Failure);
    }

    #[test]
    fn refusals_keep_the_servers_message_verbatim() {
        let message = "guestredemptionresets.guestreset.io \"a\" is forbidden: ValidatingAdmissionPolicy 'p' with binding 'b' denied request: the requester of a generation cannot approve it";
        let err = Error::from(status(422, "Invalid", message));
        assert_eq!(
            err.to_string(),
            format!("Error from server (Invalid): {message}")
        );
        let err = Error::from(status(403, "", message));
        assert_eq!(
            err.to_string(),
            format!("Error from server (403): {message}")
        );
    }

    #[test]
    fn a_missing_resource_type_hints_at_the_crd() {
        let err = Error::from(status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ));
        assert!(err.to_string().contains("CRD"), "{err}");
        let err = Error::from(status(404, "NotFound", "x \"a\" not found"));
        assert_eq!(
            err.to_string(),
            "Error from server (NotFound): x \"a\" not found"
        );
    }

    #[test]
    fn every_error_has_its_documented_code() {
        let cases = [
            (Error::Config("c".into()), 1),
            (Error::NotNow("n".into()), 5),
            (Error::Unconfirmed("c".into()), 6),
            (Error::Conflict("c".into()), 7),
            (Error::WhoAmI("w".into()), 1),
            (Error::Output(std::io::Error::other("o")), 1),
        ];
        for (err, code) in cases {
            assert_eq!(err.exit().code(), code, "{err}");
        }
    }

    #[test]
    fn causes_are_told_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer ({0})")]
        struct Repeats(#[source] std::io::Error);
        #[derive(Debug, thiserror::Error)]
        #[error("client error (Connect)")]
        struct Hides(#[source] std::io::Error);
        let refused = || std::io::Error::other("Connection refused");
        assert_eq!(
            with_causes(&Repeats(refused())),
            "outer (Connection refused)"
        );
        assert_eq!(
            with_causes(&Hides(refused())),
            "client error (Connect): Connection refused"
        );
    }

    #[test]
    fn codes_are_distinct_and_in_order() {
        let codes: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes, (0..=7).collect::<Vec<u8>>());
    }

    #[test]
    fn the_help_and_the_docs_carry_the_same_table() {
        let help = exit_code_help();
        let docs = include_str!("../../docs/plugin.md");
        for exit in Exit::ALL {
            assert!(help.contains(&format!("  {}  {}", exit.code(), exit.meaning())));
            let row = format!("| {} | {} |", exit.code(), exit.meaning());
            assert!(docs.contains(&row), "docs/plugin.md lacks the row {row:?}");
        }
    }
}
