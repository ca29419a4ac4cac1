//! OData filters and URL encoding for the Graph calls.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Everything but RFC 3986 unreserved characters and `@` is encoded in a path segment:
/// a guest's UPN `a_b.com#EXT#@t.onmicrosoft.com` becomes `a_b.com%23EXT%23@t.onmicrosoft.com`.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'@');

/// A query value keeps only unreserved characters literal (a space is `%20`, never `+`).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub fn encode_path_segment(segment: &str) -> String {
    utf8_percent_encode(segment, PATH_SEGMENT).to_string()
}

pub fn encode_query_value(value: &str) -> String {
    utf8_percent_encode(value, QUERY_VALUE).to_string()
}

/// An OData string literal: single-quoted, a quote inside doubled (`o'neil` → `'o''neil'`).
pub fn odata_string(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Users whose `mail` is `mail`.
pub fn mail_filter(mail: &str) -> String {
    format!("mail eq {}", odata_string(mail))
}

/// Users holding `email` anywhere Graph would treat it as theirs: the filter Microsoft
/// suggests before inviting (UPN, mail, SMTP proxy address, other mails).
pub fn email_in_use_filter(email: &str) -> String {
    let quoted = odata_string(email);
    let smtp = odata_string(&format!("SMTP:{email}"));
    format!(
        "userPrincipalName eq {quoted} or mail eq {quoted} or proxyAddresses/any(x:x eq {smtp}) or otherMails/any(x:x eq {quoted})"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odata_quotes_are_doubled() {
        assert_eq!(odata_string("alice@contoso.com"), "'alice@contoso.com'");
        assert_eq!(odata_string("o'neil@x.com"), "'o''neil@x.com'");
        assert_eq!(odata_string("''"), "''''''");
    }

    #[test]
    fn mail_filter_is_quoted() {
        assert_eq!(mail_filter("o'neil@x.com"), "mail eq 'o''neil@x.com'");
    }

    #[test]
    fn email_in_use_filter_covers_all_four_places() {
        assert_eq!(
            email_in_use_filter("o'neil@x.com"),
            "userPrincipalName eq 'o''neil@x.com' or mail eq 'o''neil@x.com' or \
             proxyAddresses/any(x:x eq 'SMTP:o''neil@x.com') or otherMails/any(x:x eq 'o''neil@x.com')"
        );
    }

    #[test]
    fn upn_is_percent_encoded_in_the_path() {
        assert_eq!(
            encode_path_segment("alice_contoso.com#EXT#@fabrikam.onmicrosoft.com"),
            "alice_contoso.com%23EXT%23@fabrikam.onmicrosoft.com"
        );
        assert_eq!(encode_path_segment("a/b?c d"), "a%2Fb%3Fc%20d");
        assert_eq!(
            encode_path_segment("3f0a6c1e-8d2b-4c55-9b0e-2f6a1d9c7e41"),
            "3f0a6c1e-8d2b-4c55-9b0e-2f6a1d9c7e41"
        );
    }

    #[test]
    fn filter_is_encoded_as_one_query_value() {
        assert_eq!(
            encode_query_value("mail eq 'a+b@x.com' & x"),
            "mail%20eq%20%27a%2Bb%40x.com%27%20%26%20x"
        );
    }
}
