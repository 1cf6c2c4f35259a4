//! `--request-id`: where a request's id comes from, for the attempt budget per id
//! ([`crate::retry::budget`]). Off by default: a general-purpose proxy must not remember requests
//! or answer for a backend unless asked to. The flaky-servers challenge turns it on with
//! `body-alnum24` (its ids are bodies of 24 letters and digits); an API with idempotency keys with
//! `header:Idempotency-Key`.

/// The sources of a request id; none (the default) turns the budget per id off.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestIds {
    /// A body of exactly 24 ASCII letters and digits is the id.
    pub body_alnum24: bool,
    /// The value of this request header field is the id (when the body is not one).
    pub header: Option<String>,
}

impl RequestIds {
    /// Whether any source is configured (the budget per id is kept).
    pub fn is_on(&self) -> bool {
        self.body_alnum24 || self.header.is_some()
    }

    /// Adds the sources in `list` (comma-separated `body-alnum24`, `header:NAME` or `off`), as one
    /// `--request-id` flag gives them.
    pub fn add(&mut self, list: &str) -> Result<(), String> {
        for item in list.split(',').map(str::trim) {
            match item.split_once(':') {
                _ if item == "body-alnum24" => self.body_alnum24 = true,
                _ if item == "off" => *self = RequestIds::default(),
                Some(("header", name)) if is_token(name) => match &self.header {
                    Some(other) if !other.eq_ignore_ascii_case(name) => {
                        return Err(format!(
                            "--request-id takes one header, not both {other:?} and {name:?}"
                        ))
                    }
                    _ => self.header = Some(name.to_string()),
                },
                _ => {
                    return Err(format!(
                        "bad --request-id {item:?} (expected body-alnum24, header:NAME or off)"
                    ))
                }
            }
        }
        Ok(())
    }

    /// The sources of every `--request-id` flag given.
    pub fn parse_all(flags: &[String]) -> Result<RequestIds, String> {
        let mut ids = RequestIds::default();
        for f in flags {
            ids.add(f)?;
        }
        Ok(ids)
    }
}

/// A field name as RFC 9110 section 5.1 allows it (a token).
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(flags: &[&str]) -> Result<RequestIds, String> {
        RequestIds::parse_all(&flags.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn request_ids_are_off_unless_a_source_is_given() {
        assert!(!parse(&[]).map(|r| r.is_on()).unwrap_or(true));
        assert_eq!(parse(&["off"]), Ok(RequestIds::default()));
    }

    #[test]
    fn sources_come_as_a_list_or_as_repeated_flags() {
        let both = RequestIds {
            body_alnum24: true,
            header: Some("Idempotency-Key".into()),
        };
        assert_eq!(
            parse(&["body-alnum24,header:Idempotency-Key"]),
            Ok(both.clone())
        );
        assert_eq!(parse(&["body-alnum24", "header:Idempotency-Key"]), Ok(both));
    }

    #[test]
    fn bad_sources_are_refused_with_what_is_expected() {
        for bad in ["body", "header:", "header:a b", "cookie:x"] {
            let err = parse(&[bad]).expect_err(bad);
            assert!(err.contains("expected body-alnum24"), "{err}");
        }
        let err = parse(&["header:A,header:B"]).expect_err("two headers");
        assert!(err.contains("one header"), "{err}");
    }
}
