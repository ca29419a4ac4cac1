//! The small part of OData `$filter` that guestreset uses on `/users`:
//! `mail eq 'v'`, `userPrincipalName eq 'v'`, `otherMails/any(x:x eq 'v')`,
//! `proxyAddresses/any(x:x eq 'v')`, joined by `or`, optionally parenthesised.

use crate::model::SeedUser;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Clause {
    Mail(String),
    UserPrincipalName(String),
    OtherMailsAny(String),
    ProxyAddressesAny(String),
}

/// A disjunction of clauses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter(pub Vec<Clause>);

/// Why a filter was refused; maps onto Graph's two answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterError {
    /// Well-formed but outside what is supported (`Request_UnsupportedQuery`).
    Unsupported(String),
    /// Not parseable (`BadRequest`).
    Syntax(String),
}

impl Filter {
    pub fn matches(&self, user: &SeedUser) -> bool {
        self.0.iter().any(|clause| clause.matches(user))
    }
}

impl Clause {
    fn matches(&self, user: &SeedUser) -> bool {
        let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        match self {
            Clause::Mail(v) => user.mail.as_deref().is_some_and(|m| eq(m, v)),
            Clause::UserPrincipalName(v) => eq(&user.user_principal_name, v),
            Clause::OtherMailsAny(v) => user.other_mails.iter().any(|m| eq(m, v)),
            Clause::ProxyAddressesAny(v) => user.proxy_addresses.iter().any(|m| eq(m, v)),
        }
    }
}

/// The advanced query of a domain migration: `endswith(mail,'@domain')`, optionally
/// `and userType eq 'Guest'` (or `'Member'`). Graph answers it only with the header
/// `ConsistencyLevel: eventual` and `$count=true`; the caller checks those.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advanced {
    /// What `mail` must end with (compared case-insensitively).
    pub suffix: String,
    /// `userType` it must have, when the filter names one.
    pub user_type: Option<String>,
}

impl Advanced {
    pub fn matches(&self, user: &SeedUser) -> bool {
        let suffix = self.suffix.to_ascii_lowercase();
        user.mail
            .as_deref()
            .is_some_and(|m| m.to_ascii_lowercase().ends_with(&suffix))
            && self
                .user_type
                .as_deref()
                .is_none_or(|t| user.user_type.eq_ignore_ascii_case(t))
    }
}

/// `Some` when `input` is an advanced query (it starts with `endswith(`), parsed.
pub fn parse_advanced(input: &str) -> Option<Result<Advanced, FilterError>> {
    let mut parser = Parser { src: input, pos: 0 };
    parser.skip_ws();
    if !parser.rest().to_ascii_lowercase().starts_with("endswith(") {
        return None;
    }
    Some(parser.advanced())
}

pub fn parse(input: &str) -> Result<Filter, FilterError> {
    let mut parser = Parser { src: input, pos: 0 };
    let clauses = parser.disjunction()?;
    parser.skip_ws();
    if parser.pos != input.len() {
        return Err(parser.syntax("unexpected text"));
    }
    Ok(Filter(clauses))
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.src.len() - trimmed.len();
    }

    fn syntax(&self, what: &str) -> FilterError {
        FilterError::Syntax(format!(
            "Invalid filter clause: {what} at position {} in '{}'.",
            self.pos, self.src
        ))
    }

    /// Consumes `lit` (ASCII, case-insensitive) if it comes next.
    fn eat(&mut self, lit: &str) -> bool {
        let rest = self.rest();
        if rest.len() >= lit.len()
            && rest.is_char_boundary(lit.len())
            && rest[..lit.len()].eq_ignore_ascii_case(lit)
        {
            self.pos += lit.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, lit: &str) -> Result<(), FilterError> {
        self.skip_ws();
        if self.eat(lit) {
            Ok(())
        } else {
            Err(self.syntax(&format!("expected '{lit}'")))
        }
    }

    /// A keyword must be followed by whitespace (so `order` is not `or`).
    fn eat_keyword(&mut self, word: &str) -> bool {
        let start = self.pos;
        if self.eat(word) && self.rest().starts_with(char::is_whitespace) {
            true
        } else {
            self.pos = start;
            false
        }
    }

    fn identifier(&mut self) -> Result<&'a str, FilterError> {
        self.skip_ws();
        let rest = self.rest();
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if len == 0 {
            return Err(self.syntax("expected a property name"));
        }
        self.pos += len;
        Ok(&rest[..len])
    }

    /// An OData string literal: single quotes, `''` for a quote inside.
    fn string(&mut self) -> Result<String, FilterError> {
        self.skip_ws();
        if !self.eat("'") {
            let rest = self.rest();
            if rest.starts_with(|c: char| c.is_ascii_digit()) || rest.starts_with("null") {
                return Err(FilterError::Unsupported(
                    "Unsupported Query. Only string literals are supported here.".into(),
                ));
            }
            return Err(self.syntax("expected a string literal"));
        }
        let mut out = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '\'' {
                if self.rest()[i + 1..].starts_with('\'') {
                    out.push('\'');
                    chars.next();
                } else {
                    self.pos += i + 1;
                    return Ok(out);
                }
            } else {
                out.push(c);
            }
        }
        Err(self.syntax("unterminated string literal"))
    }

    fn advanced(&mut self) -> Result<Advanced, FilterError> {
        self.expect("endswith")?;
        self.expect("(")?;
        let property = self.identifier()?;
        if !property.eq_ignore_ascii_case("mail") {
            return Err(unsupported_property(property));
        }
        self.expect(",")?;
        let suffix = self.string()?;
        self.expect(")")?;
        self.skip_ws();
        let mut user_type = None;
        if self.eat_keyword("and") {
            let property = self.identifier()?;
            if !property.eq_ignore_ascii_case("userType") {
                return Err(unsupported_property(property));
            }
            self.skip_ws();
            let op = self.identifier()?;
            if !op.eq_ignore_ascii_case("eq") {
                return Err(FilterError::Unsupported(format!(
                    "Unsupported Query. Operator '{op}' is not supported for property 'userType'."
                )));
            }
            user_type = Some(self.string()?);
        }
        self.skip_ws();
        if self.pos != self.src.len() {
            return Err(self.syntax("unexpected text"));
        }
        Ok(Advanced { suffix, user_type })
    }

    fn disjunction(&mut self) -> Result<Vec<Clause>, FilterError> {
        let mut clauses = self.term()?;
        loop {
            let save = self.pos;
            self.skip_ws();
            if self.pos == save && self.pos != self.src.len() && save != 0 {
                // `or` must be separated by whitespace from what precedes it.
                if !self.rest().starts_with(')') {
                    return Err(self.syntax("expected whitespace"));
                }
            }
            if self.eat_keyword("or") {
                clauses.extend(self.term()?);
            } else if self.rest().to_ascii_lowercase().starts_with("and ") {
                return Err(FilterError::Unsupported(
                    "Unsupported Query. Only 'or' may join clauses here.".into(),
                ));
            } else {
                self.pos = save;
                return Ok(clauses);
            }
        }
    }

    fn term(&mut self) -> Result<Vec<Clause>, FilterError> {
        self.skip_ws();
        if self.eat("(") {
            let inner = self.disjunction()?;
            self.expect(")")?;
            return Ok(inner);
        }
        let property = self.identifier()?;
        if self.eat("/") {
            return self.lambda(property).map(|c| vec![c]);
        }
        self.skip_ws();
        let op = self.identifier()?;
        if !op.eq_ignore_ascii_case("eq") {
            return Err(FilterError::Unsupported(format!(
                "Unsupported Query. Operator '{op}' is not supported for property '{property}'."
            )));
        }
        let value = self.string()?;
        match property.to_ascii_lowercase().as_str() {
            "mail" => Ok(vec![Clause::Mail(value)]),
            "userprincipalname" => Ok(vec![Clause::UserPrincipalName(value)]),
            _ => Err(unsupported_property(property)),
        }
    }

    /// After `collection/`: `any(x:x eq 'v')`.
    fn lambda(&mut self, property: &str) -> Result<Clause, FilterError> {
        let func = self.identifier()?;
        if !func.eq_ignore_ascii_case("any") {
            return Err(FilterError::Unsupported(format!(
                "Unsupported Query. Lambda operator '{func}' is not supported."
            )));
        }
        self.expect("(")?;
        let var = self.identifier()?;
        self.expect(":")?;
        let used = self.identifier()?;
        if used != var {
            return Err(self.syntax(&format!("unknown range variable '{used}'")));
        }
        self.skip_ws();
        let op = self.identifier()?;
        if !op.eq_ignore_ascii_case("eq") {
            return Err(FilterError::Unsupported(format!(
                "Unsupported Query. Operator '{op}' is not supported inside any()."
            )));
        }
        let value = self.string()?;
        self.expect(")")?;
        match property.to_ascii_lowercase().as_str() {
            "othermails" => Ok(Clause::OtherMailsAny(value)),
            "proxyaddresses" => Ok(Clause::ProxyAddressesAny(value)),
            _ => Err(unsupported_property(property)),
        }
    }
}

fn unsupported_property(property: &str) -> FilterError {
    FilterError::Unsupported(format!(
        "Unsupported or invalid query filter clause specified for property '{property}' of resource 'User'."
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Vec<Clause> {
        parse(s).unwrap_or_else(|e| panic!("{s}: {e:?}")).0
    }

    #[test]
    fn single_clauses() {
        assert_eq!(ok("mail eq 'a@b.c'"), vec![Clause::Mail("a@b.c".into())]);
        assert_eq!(
            ok("userPrincipalName eq 'a_b.c#EXT#@t.onmicrosoft.com'"),
            vec![Clause::UserPrincipalName(
                "a_b.c#EXT#@t.onmicrosoft.com".into()
            )]
        );
        assert_eq!(
            ok("otherMails/any(x:x eq 'a@b.c')"),
            vec![Clause::OtherMailsAny("a@b.c".into())]
        );
        assert_eq!(
            ok("proxyAddresses/any(c: c eq 'SMTP:a@b.c')"),
            vec![Clause::ProxyAddressesAny("SMTP:a@b.c".into())]
        );
    }

    #[test]
    fn microsoft_suggested_filter() {
        let f = "userPrincipalName eq 'a@b.c' or mail eq 'a@b.c' or proxyAddresses/any(x:x eq 'SMTP:a@b.c') or otherMails/any(x:x eq 'a@b.c')";
        assert_eq!(
            ok(f),
            vec![
                Clause::UserPrincipalName("a@b.c".into()),
                Clause::Mail("a@b.c".into()),
                Clause::ProxyAddressesAny("SMTP:a@b.c".into()),
                Clause::OtherMailsAny("a@b.c".into()),
            ]
        );
    }

    #[test]
    fn property_and_operator_names_are_case_insensitive_and_parens_allowed() {
        assert_eq!(
            ok("(MAIL EQ 'x@y.z') OR (othermails/ANY(m:m eq 'q@y.z'))"),
            vec![
                Clause::Mail("x@y.z".into()),
                Clause::OtherMailsAny("q@y.z".into())
            ]
        );
        assert_eq!(
            ok("  mail   eq   'x@y.z'  "),
            vec![Clause::Mail("x@y.z".into())]
        );
    }

    #[test]
    fn doubled_quotes_escape_a_quote() {
        assert_eq!(
            ok("mail eq 'o''brien@x.y'"),
            vec![Clause::Mail("o'brien@x.y".into())]
        );
        assert_eq!(ok("mail eq ''''"), vec![Clause::Mail("'".into())]);
        assert_eq!(ok("mail eq ''"), vec![Clause::Mail(String::new())]);
    }

    #[test]
    fn unsupported_queries() {
        for f in [
            "displayName eq 'x'",
            "mail ne 'x'",
            "startswith(mail,'x')",
            "mail eq 'x' and userType eq 'Guest'",
            "otherMails/all(x:x eq 'a')",
            "identities/any(x:x eq 'a')",
            "mail eq 5",
        ] {
            match parse(f) {
                Err(FilterError::Unsupported(_)) | Err(FilterError::Syntax(_)) => {}
                other => panic!("{f}: {other:?}"),
            }
        }
        assert!(matches!(
            parse("displayName eq 'x'"),
            Err(FilterError::Unsupported(_))
        ));
        assert!(matches!(
            parse("mail ne 'x'"),
            Err(FilterError::Unsupported(_))
        ));
    }

    #[test]
    fn syntax_errors() {
        for f in [
            "",
            "mail eq 'x",
            "mail eq 'x' or",
            "mail eq 'x' mail eq 'y'",
            "otherMails/any(x:y eq 'a')",
            "(mail eq 'x'",
            "mail eq 'x')",
            "mail eq 'x'or mail eq 'y'",
        ] {
            assert!(
                matches!(parse(f), Err(FilterError::Syntax(_))),
                "{f}: {:?}",
                parse(f)
            );
        }
    }

    #[test]
    fn advanced_domain_queries() {
        assert_eq!(parse_advanced("mail eq 'a@b.c'"), None);
        assert_eq!(
            parse_advanced("endswith(mail,'@contoso.com')"),
            Some(Ok(Advanced {
                suffix: "@contoso.com".into(),
                user_type: None
            }))
        );
        assert_eq!(
            parse_advanced(" endsWith(mail, '@contoso.com') and userType eq 'Guest' "),
            Some(Ok(Advanced {
                suffix: "@contoso.com".into(),
                user_type: Some("Guest".into())
            }))
        );
        assert!(matches!(
            parse_advanced("endswith(displayName,'x')"),
            Some(Err(FilterError::Unsupported(_)))
        ));
        assert!(matches!(
            parse_advanced("endswith(mail,'@c.com') or mail eq 'x'"),
            Some(Err(FilterError::Syntax(_)))
        ));
        let guest = SeedUser::guest("1", "a_b.c#EXT#@t.onmicrosoft.com", "Ann@Contoso.com");
        let q = parse_advanced("endswith(mail,'@contoso.com') and userType eq 'Guest'")
            .unwrap()
            .unwrap();
        assert!(q.matches(&guest));
        let q = parse_advanced("endswith(mail,'@contoso.com') and userType eq 'Member'")
            .unwrap()
            .unwrap();
        assert!(!q.matches(&guest));
        // The at sign keeps a look-alike domain out.
        let other = SeedUser::guest("2", "x", "ann@notcontoso.com");
        let q = parse_advanced("endswith(mail,'@contoso.com')")
            .unwrap()
            .unwrap();
        assert!(!q.matches(&other));
    }

    #[test]
    fn matching_is_case_insensitive_on_values() {
        let mut u = SeedUser::guest("1", "a_b.c#EXT#@t.onmicrosoft.com", "Alice@Contoso.com");
        u.other_mails = vec!["alt@Example.org".into()];
        assert!(parse("mail eq 'alice@contoso.COM'").unwrap().matches(&u));
        assert!(
            parse("otherMails/any(x:x eq 'ALT@example.org')")
                .unwrap()
                .matches(&u)
        );
        assert!(
            parse("proxyAddresses/any(x:x eq 'smtp:alice@contoso.com')")
                .unwrap()
                .matches(&u)
        );
        assert!(
            parse("userPrincipalName eq 'A_B.C#ext#@t.onmicrosoft.com'")
                .unwrap()
                .matches(&u)
        );
        assert!(!parse("mail eq 'alt@example.org'").unwrap().matches(&u));
        assert!(
            parse("mail eq 'nobody@x.y' or otherMails/any(x:x eq 'alt@example.org')")
                .unwrap()
                .matches(&u)
        );
    }
}
