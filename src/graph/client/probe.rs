//! What `guestreset check` asks of Graph before the first reset: the application permissions
//! in the token the credential hands out, and one cheap read (`GET /users?$top=1&$select=id`,
//! one HTTP attempt) to prove Graph answers.

use reqwest::Method;

use super::GraphClient;
use crate::graph::claims::{self, ClaimsError};
use crate::graph::error::{FailureKind, GraphCall, GraphError};

impl GraphClient {
    /// The `roles` claim of a freshly acquired token. The outer error is the credential's
    /// (no token); the inner one says the token could not be read (not a JWT).
    pub async fn token_roles(&self) -> Result<Result<Vec<String>, ClaimsError>, GraphError> {
        let header = self.authorization(GraphCall::ListUsers).await?;
        let bearer = header.to_str().map_err(|_| {
            GraphError::new(
                GraphCall::ListUsers,
                FailureKind::Credential { transient: false },
                "the token is not printable",
            )
        })?;
        let token = bearer.strip_prefix("Bearer ").unwrap_or(bearer);
        Ok(claims::roles(token))
    }

    /// `GET /users?$top=1&$select=id` in one attempt: Graph reachable and the token accepted.
    pub async fn probe(&self) -> Result<(), GraphError> {
        let url = format!("{}/users?$top=1&$select=id", self.inner.base);
        self.attempt(GraphCall::ListUsers, Method::GET, &url, None, 1, &[])
            .await
            .map(drop)
    }
}
