//! Errors of the effects layer, one per step, each carrying its source. Graph failures are not
//! errors here: they become reasons. The step names a label of the reconcile-error metric and
//! the Warning Event that `error_policy` emits.

/// A Kubernetes effect that failed, named by the step it belongs to.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
#[strum(serialize_all = "PascalCase")]
pub enum Error {
    #[error("the resource has no namespace or name")]
    Unaddressable,
    #[error(
        "the resource does not match the GuestRedemptionReset schema this controller knows: {0}"
    )]
    InvalidObject(String),
    #[error("accepting the retry annotation failed: {0}")]
    AcceptRetry(#[source] kube::Error),
    #[error("asking the API server whether the approver may approve failed: {0}")]
    CheckApprover(#[source] kube::Error),
    #[error("checking who owns the redeem-URL Secret failed: {0}")]
    CheckSecret(#[source] kube::Error),
    #[error("recording the intent (status.attempt) failed: {0}")]
    RecordIntent(#[source] kube::Error),
    #[error("reading the tenant-wide pause failed: {0}")]
    CheckTenant(#[source] kube::Error),
    #[error("marking the invitation as sending failed: {0}")]
    MarkSending(#[source] kube::Error),
    #[error("writing the outcome to status failed: {0}")]
    WriteReport(#[source] kube::Error),
    #[error("recording the follow-through (status.redemption) failed: {0}")]
    RecordRedemption(#[source] kube::Error),
}

impl Error {
    /// The step that failed, as the metric label and the Event say it.
    pub fn step(&self) -> &'static str {
        self.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_names_its_step() {
        let err = Error::MarkSending(kube::Error::LinesCodecMaxLineLengthExceeded);
        assert_eq!(err.step(), "MarkSending");
        assert!(
            err.to_string()
                .starts_with("marking the invitation as sending failed")
        );
        assert_eq!(Error::Unaddressable.step(), "Unaddressable");
    }
}
