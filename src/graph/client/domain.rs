//! Every user whose mail is in a domain, for a domain migration's plan (docs/graph.md,
//! "Finding every guest of a domain"): `endswith(mail,'@domain')` is an *advanced query*,
//! which Graph answers only with the header `ConsistencyLevel: eventual` and `$count=true`
//! (otherwise 400 `Request_UnsupportedQuery`), from an eventually consistent index. A plan
//! made from it is therefore checked again per user before any write: each reset's own
//! preflight reads its guest by id.

use reqwest::Method;

use super::GraphClient;
use crate::graph::error::{FailureKind, GraphCall, GraphError};
use crate::graph::model::{DirectoryUser, USER_SELECT, UserPage};
use crate::graph::query::{encode_query_value, odata_string};
use crate::graph::response::{decode, invalid_answer};

/// Graph's largest page for `/users`.
pub const DOMAIN_PAGE_SIZE: usize = 999;
/// A guard against a server that keeps handing out next links: a million users.
const MAX_DOMAIN_PAGES: usize = 1_000;

/// The users of one mail domain and how many pages it took to read them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DomainListing {
    pub users: Vec<DirectoryUser>,
    pub pages: usize,
}

/// The advanced query's filter: users whose mail ends in `@domain`, guests only when
/// `guests_only`.
pub fn domain_filter(domain: &str, guests_only: bool) -> String {
    let suffix = odata_string(&format!("@{domain}"));
    if guests_only {
        format!("endswith(mail,{suffix}) and userType eq 'Guest'")
    } else {
        format!("endswith(mail,{suffix})")
    }
}

impl GraphClient {
    /// Every user (members too, so that a plan can list them as excluded) whose mail is in
    /// `domain`, following `@odata.nextLink` with pages of [`DOMAIN_PAGE_SIZE`]. Each page is
    /// retried as any read is; the next link must stay on the configured endpoint.
    pub async fn list_domain_users(&self, domain: &str) -> Result<DomainListing, GraphError> {
        const CALL: GraphCall = GraphCall::ListUsers;
        const EVENTUAL: [(&str, &str); 1] = [("ConsistencyLevel", "eventual")];
        let mut url = format!(
            "{}/users?$filter={}&$select={USER_SELECT}&$count=true&$top={DOMAIN_PAGE_SIZE}",
            self.inner.base,
            encode_query_value(&domain_filter(domain, false)),
        );
        let mut listing = DomainListing::default();
        while listing.pages < MAX_DOMAIN_PAGES {
            let answer = self
                .execute_with(CALL, Method::GET, &url, None, &EVENTUAL)
                .await?;
            listing.pages += 1;
            let page: UserPage = decode(CALL, &answer)?;
            listing.users.extend(page.value);
            let Some(next) = page.next_link else {
                return Ok(listing);
            };
            if !next.starts_with(&format!("{}/", self.inner.base)) {
                return Err(invalid_answer(
                    CALL,
                    &answer,
                    "the next-page link points outside the Graph endpoint",
                ));
            }
            url = next;
        }
        Err(GraphError::new(
            CALL,
            FailureKind::InvalidResponse,
            format!("more than {MAX_DOMAIN_PAGES} pages of users in {domain}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_is_an_endswith_on_mail_with_the_at_sign() {
        assert_eq!(
            domain_filter("contoso.com", false),
            "endswith(mail,'@contoso.com')"
        );
        assert_eq!(
            domain_filter("contoso.com", true),
            "endswith(mail,'@contoso.com') and userType eq 'Guest'"
        );
    }
}
