//! `--hash-key`: which request attribute `maglev` hashes in HTTP mode, parsed from its flag text.

/// The request attribute `maglev` hashes in HTTP mode (`--hash-key`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestAttr {
    ClientIp,
    Path,
    PathQuery,
    Host,
    Header(String),
    Cookie(String),
}

impl std::str::FromStr for RequestAttr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad_name = |n: &str| {
            n.is_empty()
                || !n
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        match s {
            "client-ip" => Ok(RequestAttr::ClientIp),
            "path" => Ok(RequestAttr::Path),
            "path-query" => Ok(RequestAttr::PathQuery),
            "host" => Ok(RequestAttr::Host),
            _ => match s.split_once(':') {
                Some(("header", name)) if !bad_name(name) => Ok(RequestAttr::Header(name.to_string())),
                Some(("cookie", name)) if !bad_name(name) => Ok(RequestAttr::Cookie(name.to_string())),
                _ => Err(format!(
                    "bad hash key {s:?} (expected client-ip, path, path-query, host, header:NAME or cookie:NAME)"
                )),
            },
        }
    }
}
