//! Message framing, strictly by RFC 9112: CRLF line endings only, one Content-Length, transfer
//! codings that are codings, so that no two parsers could read a message's length differently.

use super::*;

/// Where `part`, a slice of `src`, ends within `src` (`None` if it is not a slice of `src`).
pub(super) fn end_in(src: &[u8], part: &[u8]) -> Option<usize> {
    let start = (part.as_ptr() as usize).checked_sub(src.as_ptr() as usize)?;
    let end = start + part.len();
    (end <= src.len()).then_some(end)
}

/// Refuses line endings other than CRLF: httparse accepts a bare LF, RFC 9112 section 2.2 lets a
/// recipient do so, and a proxy must not, since the next hop might not.
///
/// httparse refuses an LF inside a line and a CR not followed by LF, so a bare LF can only end a
/// line, and it is enough to look at the byte ending each line httparse found: the first line,
/// every field (past trailing whitespace), and the empty last line. That costs a few instructions
/// per line instead of a branch per byte; when a line's end is unknown (an empty reason phrase or
/// field value may not point into the buffer) every byte is counted instead. The fuzz invariant
/// `check::no_bare_line_endings` verifies the reasoning byte by byte.
pub(super) fn check_line_endings(
    head: &[u8],
    first_line: Option<(usize, usize)>,
    fields: &[httparse::Header<'_>],
) -> Result<(), HeadError> {
    let bare = HeadError::Malformed("bare LF or CR in head");
    let cr_at = |mut at: usize| {
        while matches!(head.get(at), Some(b' ' | b'\t')) {
            at += 1;
        }
        head.get(at) == Some(&b'\r')
    };
    let Some((start, end)) = first_line else {
        return count_line_endings(head);
    };
    // Empty lines before the first line are skipped (RFC 9112 section 2.2), CRLF ones only.
    if start % 2 != 0 || !head[..start].chunks(2).all(|pair| pair == b"\r\n") || !cr_at(end) {
        return Err(bare);
    }
    for f in fields {
        match end_in(head, f.value) {
            Some(at) if !f.value.is_empty() => {
                if !cr_at(at) {
                    return Err(bare);
                }
            }
            _ => return count_line_endings(head),
        }
    }
    if !head.ends_with(b"\r\n") {
        return Err(bare);
    }
    Ok(())
}

/// The slow way: every CR starts a CRLF (httparse saw to that), so a bare LF shows as one LF more
/// than there are CRs.
pub(super) fn count_line_endings(head: &[u8]) -> Result<(), HeadError> {
    let count = |c: u8| head.iter().filter(|&&b| b == c).count();
    if count(b'\n') != count(b'\r') {
        return Err(HeadError::Malformed("bare LF or CR in head"));
    }
    Ok(())
}

/// Parses a Content-Length value: digits only (RFC 9110 section 8.6), no sign, no list.
pub(super) fn parse_length(value: &[u8]) -> Result<u64, HeadError> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return Err(HeadError::Malformed("bad Content-Length"));
    }
    Ok(value
        .iter()
        .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// The transfer codings a message lists, read from its Transfer-Encoding fields in order (several
/// fields make one list, RFC 9110 section 5.3).
#[derive(Clone, Copy, Default)]
pub(super) struct TransferCodings {
    /// A Transfer-Encoding field was seen.
    pub(super) present: bool,
    pub(super) chunked_seen: bool,
    /// The last coding so far is `chunked`: sluice can find where the body ends.
    pub(super) final_chunked: bool,
}

impl TransferCodings {
    /// Adds one Transfer-Encoding field value. The rule (RFC 9112 section 6.1 and 7), checked per
    /// coding in list order:
    /// - a coding is a token (RFC 9110 section 5.6.2) with optional whitespace around each comma; an
    ///   empty element or other bytes are malformed (400), since a parser that skips an empty
    ///   element and one that doesn't would disagree on which coding is final;
    /// - `chunked` may appear once (RFC 9112 section 6.1: never applied twice), else 400;
    /// - the other codings sluice forwards are the registered ones of RFC 9112 section 7.2: `gzip`,
    ///   `deflate`, `compress` and their `x-gzip`, `x-compress` aliases. sluice only frames by the
    ///   final `chunked`, so the codings under it are the backend's business;
    /// - `identity` is not a transfer coding (RFC 7230 removed it, Appendix A.2; nginx answers 501)
    ///   and neither is anything else, nor a coding with parameters (none is defined): 501, as RFC
    ///   9112 section 6.1 asks of a server that does not understand a coding.
    ///
    /// Whether the final coding must be `chunked` depends on the direction; see
    /// [`forward_request`] and [`forward_response`].
    pub(super) fn add(&mut self, value: &[u8]) -> Result<(), HeadError> {
        let ows = |b: &u8| *b == b' ' || *b == b'\t';
        self.present = true;
        for element in value.split(|&b| b == b',') {
            let start = element
                .iter()
                .position(|b| !ows(b))
                .unwrap_or(element.len());
            let end = element
                .iter()
                .rposition(|b| !ows(b))
                .map_or(start, |i| i + 1);
            let element = &element[start..end];
            let name_len = element
                .iter()
                .position(|&b| !is_tchar(b))
                .unwrap_or(element.len());
            let (name, rest) = element.split_at(name_len);
            let params = rest.iter().find(|b| !ows(b)) == Some(&b';');
            if name.is_empty() || (!rest.is_empty() && !params) {
                return Err(HeadError::Malformed("malformed Transfer-Encoding"));
            }
            if params {
                return Err(HeadError::NotImplemented(
                    "transfer coding parameters are not supported",
                ));
            }
            let is = |coding: &str| name.eq_ignore_ascii_case(coding.as_bytes());
            if is("chunked") {
                if self.chunked_seen {
                    return Err(HeadError::Malformed("chunked applied twice"));
                }
                self.chunked_seen = true;
                self.final_chunked = true;
            } else if is("gzip")
                || is("deflate")
                || is("compress")
                || is("x-gzip")
                || is("x-compress")
            {
                self.final_chunked = false;
            } else if is("identity") {
                return Err(HeadError::NotImplemented(
                    "identity is not a transfer coding",
                ));
            } else {
                return Err(HeadError::NotImplemented("unknown transfer coding"));
            }
        }
        Ok(())
    }
}
