//! The follow-through's read of a guest: `GET /users/{id}` in exactly **one** HTTP attempt.
//! The read budget pays for one request, and a failed check simply comes again later, so the
//! client's retries (which [`GraphClient::get_user`] makes) would only spend Graph's limits.

use reqwest::Method;

use super::GraphClient;
use crate::graph::error::{GraphCall, GraphError};
use crate::graph::model::{DirectoryUser, USER_SELECT};
use crate::graph::query::encode_path_segment;
use crate::graph::response::decode;

impl GraphClient {
    /// As [`GraphClient::get_user`] by object id, in one attempt; `None` for Graph's 404.
    pub async fn get_user_once(&self, id: &str) -> Result<Option<DirectoryUser>, GraphError> {
        const CALL: GraphCall = GraphCall::GetUser;
        let segment = encode_path_segment(id);
        let url = format!("{}/users/{segment}?$select={USER_SELECT}", self.inner.base);
        match self.attempt(CALL, Method::GET, &url, None, 1, &[]).await {
            Ok(answer) => decode::<DirectoryUser>(CALL, &answer).map(Some),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
}
