//! The Azure credential, chosen from the standard environment variables of the Azure
//! SDKs (docs/graph.md, "Credentials"). Tokens are cached and refreshed by `azure_identity` itself (each
//! credential keeps a per-scope cache and renews a token 5 minutes before it expires).

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ClientOptions, ExponentialRetryOptions, RetryOptions, Transport};
use azure_identity::{
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

pub const AZURE_TENANT_ID: &str = "AZURE_TENANT_ID";
pub const AZURE_CLIENT_ID: &str = "AZURE_CLIENT_ID";
pub const AZURE_FEDERATED_TOKEN_FILE: &str = "AZURE_FEDERATED_TOKEN_FILE";
pub const AZURE_CLIENT_SECRET: &str = "AZURE_CLIENT_SECRET";
pub const AZURE_CLIENT_CERTIFICATE_PATH: &str = "AZURE_CLIENT_CERTIFICATE_PATH";
pub const AZURE_CLIENT_CERTIFICATE_PASSWORD: &str = "AZURE_CLIENT_CERTIFICATE_PASSWORD";
pub const AZURE_AUTHORITY_HOST: &str = "AZURE_AUTHORITY_HOST";
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";

/// Which credential the environment selects, with its non-secret parameters
/// (for a startup log line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialKind {
    /// `AZURE_FEDERATED_TOKEN_FILE`: a Kubernetes service-account token exchanged for an Entra token.
    WorkloadIdentity {
        tenant_id: String,
        client_id: String,
        token_file: PathBuf,
        authority_host: String,
    },
    /// `AZURE_CLIENT_SECRET`.
    ClientSecret {
        tenant_id: String,
        client_id: String,
        authority_host: String,
    },
    /// `AZURE_CLIENT_CERTIFICATE_PATH` (a PKCS#12 file with an RSA key).
    ClientCertificate {
        tenant_id: String,
        client_id: String,
        certificate_path: PathBuf,
        authority_host: String,
    },
    /// None of the above: the managed identity of the host (user-assigned when
    /// `AZURE_CLIENT_ID` is set).
    ManagedIdentity { client_id: Option<String> },
}

impl CredentialKind {
    /// The credential the environment selects, in the order of docs/graph.md: workload
    /// identity, client secret, client certificate, managed identity.
    pub fn from_env(env: &impl Fn(&str) -> Option<String>) -> Result<Self, CredentialError> {
        let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let required = |name: &'static str, needed_by: &'static str| {
            var(name).ok_or(CredentialError::Missing {
                variable: name,
                needed_by,
            })
        };
        let authority_host = || -> Result<String, CredentialError> {
            let host = var(AZURE_AUTHORITY_HOST).unwrap_or_else(|| DEFAULT_AUTHORITY_HOST.into());
            if !host.starts_with("https://") {
                return Err(CredentialError::InsecureAuthorityHost { host });
            }
            Ok(host)
        };
        if let Some(token_file) = var(AZURE_FEDERATED_TOKEN_FILE) {
            const BY: &str = AZURE_FEDERATED_TOKEN_FILE;
            return Ok(CredentialKind::WorkloadIdentity {
                tenant_id: required(AZURE_TENANT_ID, BY)?,
                client_id: required(AZURE_CLIENT_ID, BY)?,
                token_file: PathBuf::from(token_file),
                authority_host: authority_host()?,
            });
        }
        if var(AZURE_CLIENT_SECRET).is_some() {
            const BY: &str = AZURE_CLIENT_SECRET;
            return Ok(CredentialKind::ClientSecret {
                tenant_id: required(AZURE_TENANT_ID, BY)?,
                client_id: required(AZURE_CLIENT_ID, BY)?,
                authority_host: authority_host()?,
            });
        }
        if let Some(path) = var(AZURE_CLIENT_CERTIFICATE_PATH) {
            const BY: &str = AZURE_CLIENT_CERTIFICATE_PATH;
            return Ok(CredentialKind::ClientCertificate {
                tenant_id: required(AZURE_TENANT_ID, BY)?,
                client_id: required(AZURE_CLIENT_ID, BY)?,
                certificate_path: PathBuf::from(path),
                authority_host: authority_host()?,
            });
        }
        Ok(CredentialKind::ManagedIdentity {
            client_id: var(AZURE_CLIENT_ID),
        })
    }

    /// The `azure_identity` type used.
    pub fn name(&self) -> &'static str {
        match self {
            CredentialKind::WorkloadIdentity { .. } => "WorkloadIdentityCredential",
            CredentialKind::ClientSecret { .. } => "ClientSecretCredential",
            CredentialKind::ClientCertificate { .. } => "ClientCertificateCredential",
            CredentialKind::ManagedIdentity { .. } => "ManagedIdentityCredential",
        }
    }
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialKind::WorkloadIdentity {
                tenant_id,
                client_id,
                token_file,
                authority_host,
            } => write!(
                f,
                "workload identity (tenant {tenant_id}, client {client_id}, token file {}, authority {authority_host})",
                token_file.display()
            ),
            CredentialKind::ClientSecret {
                tenant_id,
                client_id,
                authority_host,
            } => write!(
                f,
                "client secret (tenant {tenant_id}, client {client_id}, authority {authority_host})"
            ),
            CredentialKind::ClientCertificate {
                tenant_id,
                client_id,
                certificate_path,
                authority_host,
            } => write!(
                f,
                "client certificate (tenant {tenant_id}, client {client_id}, certificate {}, authority {authority_host})",
                certificate_path.display()
            ),
            CredentialKind::ManagedIdentity { client_id: None } => {
                f.write_str("managed identity (system-assigned)")
            }
            CredentialKind::ManagedIdentity {
                client_id: Some(id),
            } => write!(f, "managed identity (user-assigned, client {id})"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("{variable} is required when {needed_by} is set")]
    Missing {
        variable: &'static str,
        needed_by: &'static str,
    },
    #[error("AZURE_AUTHORITY_HOST must be an https URL, got {host:?}")]
    InsecureAuthorityHost { host: String },
    #[error("cannot use the client certificate {}: {reason}", path.display())]
    Certificate { path: PathBuf, reason: String },
    #[error("cannot set up {credential}: {source}")]
    Build {
        credential: &'static str,
        #[source]
        source: azure_core::Error,
    },
}

/// Builds the credential the environment selects (see [`CredentialKind::from_env`]),
/// sending its token requests through `http`, the same client as the Graph calls.
pub fn from_env(
    env: &impl Fn(&str) -> Option<String>,
    http: &reqwest::Client,
) -> Result<Arc<dyn TokenCredential>, CredentialError> {
    let kind = CredentialKind::from_env(env)?;
    build(&kind, env, http)
}

/// Builds the credential of `kind`; `env` supplies the secrets `kind` does not carry.
pub fn build(
    kind: &CredentialKind,
    env: &impl Fn(&str) -> Option<String>,
    http: &reqwest::Client,
) -> Result<Arc<dyn TokenCredential>, CredentialError> {
    let wrap = |source| CredentialError::Build {
        credential: kind.name(),
        source,
    };
    match kind {
        CredentialKind::WorkloadIdentity {
            tenant_id,
            client_id,
            token_file,
            authority_host,
        } => {
            let options = WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions {
                    client_options: client_options(http, Some(authority_host)),
                },
                client_id: Some(client_id.clone()),
                tenant_id: Some(tenant_id.clone()),
                token_file_path: Some(token_file.clone()),
            };
            let credential = WorkloadIdentityCredential::new(Some(options)).map_err(wrap)?;
            Ok(credential)
        }
        CredentialKind::ClientSecret {
            tenant_id,
            client_id,
            authority_host,
        } => {
            let secret = env(AZURE_CLIENT_SECRET).unwrap_or_default();
            let options = ClientSecretCredentialOptions {
                client_options: client_options(http, Some(authority_host)),
            };
            let credential = ClientSecretCredential::new(
                tenant_id,
                client_id.clone(),
                Secret::new(secret),
                Some(options),
            )
            .map_err(wrap)?;
            Ok(credential)
        }
        CredentialKind::ClientCertificate {
            tenant_id,
            client_id,
            certificate_path,
            authority_host,
        } => client_certificate(
            tenant_id,
            client_id,
            certificate_path,
            env(AZURE_CLIENT_CERTIFICATE_PASSWORD),
            client_options(http, Some(authority_host)),
        ),
        CredentialKind::ManagedIdentity { client_id } => {
            let options = ManagedIdentityCredentialOptions {
                user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                client_options: client_options(http, None),
            };
            let credential = ManagedIdentityCredential::new(Some(options)).map_err(wrap)?;
            Ok(credential)
        }
    }
}

fn client_certificate(
    tenant_id: &str,
    client_id: &str,
    path: &std::path::Path,
    password: Option<String>,
    client_options: ClientOptions,
) -> Result<Arc<dyn TokenCredential>, CredentialError> {
    use azure_core::credentials::SecretBytes;
    use azure_identity::{ClientCertificateCredential, ClientCertificateCredentialOptions};

    let bytes = std::fs::read(path).map_err(|e| CredentialError::Certificate {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    if bytes.starts_with(b"-----BEGIN") {
        return Err(CredentialError::Certificate {
            path: path.to_owned(),
            reason: "PEM is not supported; convert it to PKCS#12 (openssl pkcs12 -export) and set \
                     AZURE_CLIENT_CERTIFICATE_PASSWORD if it has one"
                .into(),
        });
    }
    let options = ClientCertificateCredentialOptions {
        client_options,
        password: password.map(Secret::new),
    };
    let credential = ClientCertificateCredential::new(
        tenant_id.to_owned(),
        client_id.to_owned(),
        SecretBytes::new(bytes),
        Some(options),
    )
    .map_err(|source| CredentialError::Build {
        credential: "ClientCertificateCredential",
        source,
    })?;
    Ok(credential)
}

/// The token requests share the process's HTTP client and trust store. The authority
/// host is always passed explicitly: `azure_identity` would otherwise read
/// `AZURE_AUTHORITY_HOST` from the process environment behind our back.
fn client_options(http: &reqwest::Client, authority_host: Option<&str>) -> ClientOptions {
    let cloud = authority_host.map(|host| {
        let mut custom = CustomConfiguration::default();
        custom.authority_host = host.to_owned();
        Arc::new(CloudConfiguration::Custom(custom))
    });
    ClientOptions {
        transport: Some(Transport::new(Arc::new(http.clone()))),
        // A few quick retries of 5xx/429/connection failures; the Graph client retries
        // on top with its own backoff, so keep this short.
        retry: RetryOptions::exponential(ExponentialRetryOptions {
            initial_delay: azure_core::time::Duration::milliseconds(300),
            max_retries: 2,
            max_total_elapsed: azure_core::time::Duration::seconds(15),
            max_delay: azure_core::time::Duration::seconds(3),
        }),
        cloud,
        ..Default::default()
    }
}

/// Whether a token failure may clear by itself (network, token service 5xx/429/408)
/// rather than being a wrong or unusable credential.
pub fn is_transient(err: &azure_core::Error) -> bool {
    use azure_core::error::ErrorKind;
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(az) = e.downcast_ref::<azure_core::Error>() {
            match az.kind() {
                ErrorKind::HttpResponse { status, .. } => {
                    let code = u16::from(*status);
                    return code >= 500 || code == 429 || code == 408;
                }
                ErrorKind::Connection | ErrorKind::Io => return true,
                _ => {}
            }
        }
        if e.is::<reqwest::Error>() {
            // Any transport failure of a token request: repeating it is harmless.
            return true;
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn federated_token_file_wins() {
        let env = env_of(&[
            (AZURE_TENANT_ID, "t"),
            (AZURE_CLIENT_ID, "c"),
            (AZURE_FEDERATED_TOKEN_FILE, "/var/run/token"),
            (AZURE_CLIENT_SECRET, "s"),
        ]);
        let kind = CredentialKind::from_env(&env).unwrap();
        assert_eq!(
            kind,
            CredentialKind::WorkloadIdentity {
                tenant_id: "t".into(),
                client_id: "c".into(),
                token_file: "/var/run/token".into(),
                authority_host: DEFAULT_AUTHORITY_HOST.into(),
            }
        );
        assert_eq!(kind.name(), "WorkloadIdentityCredential");
    }

    #[test]
    fn secret_then_certificate_then_managed_identity() {
        let secret = env_of(&[
            (AZURE_TENANT_ID, "t"),
            (AZURE_CLIENT_ID, "c"),
            (AZURE_CLIENT_SECRET, "very-secret"),
            (AZURE_CLIENT_CERTIFICATE_PATH, "/cert.pfx"),
            (AZURE_AUTHORITY_HOST, "https://login.microsoftonline.us"),
        ]);
        let kind = CredentialKind::from_env(&secret).unwrap();
        assert!(matches!(
            &kind,
            CredentialKind::ClientSecret { authority_host, .. } if authority_host == "https://login.microsoftonline.us"
        ));
        assert!(!kind.to_string().contains("very-secret"));
        assert!(!format!("{kind:?}").contains("very-secret"));

        let cert = env_of(&[
            (AZURE_TENANT_ID, "t"),
            (AZURE_CLIENT_ID, "c"),
            (AZURE_CLIENT_CERTIFICATE_PATH, "/cert.pfx"),
        ]);
        assert_eq!(
            CredentialKind::from_env(&cert).unwrap().name(),
            "ClientCertificateCredential"
        );

        let none = env_of(&[]);
        assert_eq!(
            CredentialKind::from_env(&none).unwrap(),
            CredentialKind::ManagedIdentity { client_id: None }
        );
        let user_assigned = env_of(&[(AZURE_CLIENT_ID, "c"), (AZURE_CLIENT_SECRET, "")]);
        assert_eq!(
            CredentialKind::from_env(&user_assigned).unwrap(),
            CredentialKind::ManagedIdentity {
                client_id: Some("c".into())
            },
            "an empty variable counts as unset"
        );
    }

    #[test]
    fn missing_companions_are_named() {
        let env = env_of(&[(AZURE_CLIENT_SECRET, "s"), (AZURE_CLIENT_ID, "c")]);
        let err = CredentialKind::from_env(&env).unwrap_err();
        assert_eq!(
            err.to_string(),
            "AZURE_TENANT_ID is required when AZURE_CLIENT_SECRET is set"
        );
        let env = env_of(&[(AZURE_FEDERATED_TOKEN_FILE, "/t"), (AZURE_TENANT_ID, "t")]);
        let err = CredentialKind::from_env(&env).unwrap_err();
        assert_eq!(
            err.to_string(),
            "AZURE_CLIENT_ID is required when AZURE_FEDERATED_TOKEN_FILE is set"
        );
    }

    #[test]
    fn authority_host_must_be_https() {
        let env = env_of(&[
            (AZURE_TENANT_ID, "t"),
            (AZURE_CLIENT_ID, "c"),
            (AZURE_CLIENT_SECRET, "s"),
            (AZURE_AUTHORITY_HOST, "http://login.example"),
        ]);
        assert!(matches!(
            CredentialKind::from_env(&env),
            Err(CredentialError::InsecureAuthorityHost { .. })
        ));
    }

    #[test]
    fn pem_certificate_is_refused_clearly() {
        let path = std::env::temp_dir().join(format!("graph-cred-{}.pem", uuid::Uuid::new_v4()));
        std::fs::write(&path, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let env = env_of(&[
            (AZURE_TENANT_ID, "t"),
            (AZURE_CLIENT_ID, "c"),
            (AZURE_CLIENT_CERTIFICATE_PATH, path.to_str().unwrap()),
        ]);
        let http = reqwest::Client::new();
        let err = from_env(&env, &http).map(|_| ()).expect_err("PEM refused");
        std::fs::remove_file(&path).ok();
        assert!(err.to_string().contains("PKCS#12"), "{err}");
    }

    #[test]
    fn workload_identity_with_missing_token_file_fails_at_setup() {
        let env = env_of(&[
            (AZURE_TENANT_ID, "t"),
            (AZURE_CLIENT_ID, "c"),
            (AZURE_FEDERATED_TOKEN_FILE, "/nonexistent/token"),
        ]);
        let http = reqwest::Client::new();
        let err = from_env(&env, &http)
            .map(|_| ())
            .expect_err("no token file");
        assert!(
            err.to_string().contains("WorkloadIdentityCredential"),
            "{err}"
        );
    }

    #[test]
    fn transient_token_failures_are_told_apart() {
        use azure_core::error::ErrorKind;
        let io = azure_core::Error::with_message(ErrorKind::Io, "reset");
        assert!(is_transient(&io));
        let wrapped = azure_core::Error::with_error(
            ErrorKind::Credential,
            azure_core::Error::with_message(ErrorKind::Connection, "refused"),
            "ClientSecretCredential authentication failed.",
        );
        assert!(is_transient(&wrapped));
        let config = azure_core::Error::with_message(ErrorKind::Credential, "no secret specified");
        assert!(!is_transient(&config));
    }
}
