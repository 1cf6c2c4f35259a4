//! Finds where a chunked message body ends, without changing a byte of it.
//!
//! sluice forwards chunked bodies as they are (both directions), so it only needs to know which bytes
//! belong to the current message: the decoder walks chunk sizes, skips chunk data in one step per read,
//! and stops after the trailer section's final CRLF. The grammar is RFC 9112 section 7.1: hex
//! `chunk-size`, optional `;ext` (token or quoted-string values), CRLF, data, CRLF, a zero-size last
//! chunk, trailer fields and CRLF. Line endings must be CRLF; a bare LF or CR is refused, as is a size
//! that overflows 64 bits, since a lenient chunk parser is how request smuggling starts.
//!
//! Whitespace on a size line is only the BWS of RFC 9112 section 7.1.1,
//! `chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )`: before and after a
//! `;` or `=`, never at the end of the line. `5 \r\n` and `5;a=1 \r\n` are refused (gunicorn and
//! llhttp refuse them too, so a backend would read the body differently); `5 ;a` is accepted.

use std::fmt;

/// Longest chunk-size line (size and extensions) and trailer line accepted, in bytes.
pub(crate) const MAX_CHUNK_LINE_BYTES: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size; `digits` counted so far.
    Size {
        digits: u8,
    },
    /// Whitespace after the size: only more of it or `;` may follow.
    SizeWs,
    /// Inside chunk extensions, up to CR (RFC 9112 section 7.1.1).
    Ext(Ext),
    /// Expecting LF after the size line's CR.
    SizeLf,
    /// Chunk data still to come.
    Data,
    /// Expecting CR, then LF, after chunk data.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field line.
    Trailer,
    TrailerLf,
    /// Expecting the LF that ends the body.
    FinalLf,
    Done,
}

/// Where in `*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )` the decoder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ext {
    /// After `;`: whitespace, then a name.
    BeforeName,
    Name,
    /// Whitespace after a name: more of it, then `=` or `;`.
    AfterName,
    /// After `=`: whitespace, then a token or a quoted string.
    BeforeValue,
    Token,
    Quoted,
    QuotedEscape,
    /// Right after a quoted string's closing quote: whitespace, `;` or the end of the line.
    AfterValue,
    /// Whitespace after a value: more of it, then `;`.
    AfterValueWs,
}

/// `tchar` of RFC 9110 section 5.6.2.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChunkError(&'static str);

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad chunked body: {}", self.0)
    }
}

impl std::error::Error for ChunkError {}

/// Progress through one chunked body.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ChunkedDecoder {
    state: State,
    /// Size of the chunk being read, then data bytes left in it.
    remaining: u64,
    /// Bytes on the current size or trailer line, bounded by [`MAX_CHUNK_LINE_BYTES`].
    line_bytes: usize,
    last_chunk: bool,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub(crate) fn new() -> ChunkedDecoder {
        ChunkedDecoder {
            state: State::Size { digits: 0 },
            remaining: 0,
            line_bytes: 0,
            last_chunk: false,
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Scans `bytes`, the next bytes of the body; returns how many of them belong to it. Fewer than
    /// `bytes.len()` means the body ended there and [`ChunkedDecoder::is_done`] is true.
    pub(crate) fn advance(&mut self, bytes: &[u8]) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < bytes.len() {
            if self.state == State::Done {
                return Ok(i);
            }
            if self.state == State::Data {
                let take =
                    (bytes.len() - i).min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                i += take;
                self.remaining -= take as u64;
                if self.remaining == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            self.step(bytes[i])?;
            i += 1;
        }
        Ok(i)
    }

    fn line_byte(&mut self) -> Result<(), ChunkError> {
        self.line_bytes += 1;
        if self.line_bytes > MAX_CHUNK_LINE_BYTES {
            return Err(ChunkError("line too long"));
        }
        Ok(())
    }

    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        self.state = match self.state {
            State::Size { digits } => {
                self.line_byte()?;
                match hex_value(b) {
                    Some(v) => {
                        if self.remaining >> 60 != 0 {
                            return Err(ChunkError("chunk size overflows"));
                        }
                        self.remaining = (self.remaining << 4) | u64::from(v);
                        State::Size {
                            digits: digits.saturating_add(1),
                        }
                    }
                    None if digits == 0 => return Err(ChunkError("chunk size is not hex")),
                    None => self.after_size(b)?,
                }
            }
            State::SizeWs => {
                self.line_byte()?;
                match b {
                    b' ' | b'\t' => State::SizeWs,
                    b';' => State::Ext(Ext::BeforeName),
                    _ => return Err(ChunkError("whitespace after chunk size")),
                }
            }
            State::Ext(ext) => {
                self.line_byte()?;
                match (ext, b) {
                    (Ext::Name | Ext::Token | Ext::AfterValue, b'\r') => State::SizeLf,
                    _ => State::Ext(step_ext(ext, b)?),
                }
            }
            State::SizeLf => {
                if b != b'\n' {
                    return Err(ChunkError("CR without LF after chunk size"));
                }
                self.line_bytes = 0;
                if self.remaining == 0 {
                    self.last_chunk = true;
                    State::TrailerStart
                } else {
                    State::Data
                }
            }
            State::Data => State::Data,
            State::DataCr => {
                if b != b'\r' {
                    return Err(ChunkError("chunk data longer than its size"));
                }
                State::DataLf
            }
            State::DataLf => {
                if b != b'\n' {
                    return Err(ChunkError("CR without LF after chunk data"));
                }
                State::Size { digits: 0 }
            }
            State::TrailerStart => match b {
                b'\r' => State::FinalLf,
                b'\n' => return Err(ChunkError("bare LF in trailer")),
                _ => {
                    self.line_byte()?;
                    State::Trailer
                }
            },
            State::Trailer => {
                self.line_byte()?;
                match b {
                    b'\r' => State::TrailerLf,
                    b'\n' | 0 => return Err(ChunkError("bad byte in trailer")),
                    _ => State::Trailer,
                }
            }
            State::TrailerLf => {
                if b != b'\n' {
                    return Err(ChunkError("CR without LF in trailer"));
                }
                self.line_bytes = 0;
                State::TrailerStart
            }
            State::FinalLf => {
                if b != b'\n' {
                    return Err(ChunkError("CR without LF at end of body"));
                }
                State::Done
            }
            State::Done => State::Done,
        };
        Ok(())
    }

    /// The byte after a chunk size: whitespace (BWS, which must lead to a `;`), an extension, or the
    /// CR ending the line.
    fn after_size(&mut self, b: u8) -> Result<State, ChunkError> {
        match b {
            b' ' | b'\t' => Ok(State::SizeWs),
            b';' => Ok(State::Ext(Ext::BeforeName)),
            b'\r' => Ok(State::SizeLf),
            _ => Err(ChunkError("bad byte after chunk size")),
        }
    }
}

/// One byte of a chunk extension.
fn step_ext(ext: Ext, b: u8) -> Result<Ext, ChunkError> {
    let bws = b == b' ' || b == b'\t';
    let next = match (ext, b) {
        (Ext::BeforeName, _) if bws => Ext::BeforeName,
        (Ext::BeforeName | Ext::Name, _) if is_tchar(b) => Ext::Name,
        (Ext::Name | Ext::AfterName, _) if bws => Ext::AfterName,
        (Ext::Name | Ext::AfterName, b'=') => Ext::BeforeValue,
        (Ext::Name | Ext::AfterName | Ext::Token | Ext::AfterValue | Ext::AfterValueWs, b';') => {
            Ext::BeforeName
        }
        (Ext::BeforeValue, _) if bws => Ext::BeforeValue,
        (Ext::BeforeValue, b'"') => Ext::Quoted,
        (Ext::BeforeValue | Ext::Token, _) if is_tchar(b) => Ext::Token,
        (Ext::Token | Ext::AfterValue | Ext::AfterValueWs, _) if bws => Ext::AfterValueWs,
        (Ext::Quoted, b'"') => Ext::AfterValue,
        (Ext::Quoted, b'\\') => Ext::QuotedEscape,
        // qdtext: HTAB, SP, VCHAR except DQUOTE and backslash, obs-text.
        (Ext::Quoted, b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff) => Ext::Quoted,
        (Ext::QuotedEscape, b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff) => Ext::Quoted,
        _ => return Err(ChunkError("malformed chunk extension")),
    };
    Ok(next)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_in_pieces(body: &[u8], piece: usize) -> Result<(usize, bool), ChunkError> {
        let mut d = ChunkedDecoder::new();
        let mut total = 0;
        for part in body.chunks(piece) {
            let n = d.advance(part)?;
            total += n;
            if n < part.len() {
                break;
            }
        }
        Ok((total, d.is_done()))
    }

    #[test]
    fn finds_the_end_of_a_body_in_any_split() {
        let body =
            b"5\r\nhello\r\n1a;name=\"v;x\"\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\n";
        for piece in 1..=body.len() {
            let mut with_next = body.to_vec();
            with_next.extend_from_slice(b"GET / HTTP/1.1\r\n");
            assert_eq!(
                scan_in_pieces(&with_next, piece),
                Ok((body.len(), true)),
                "piece {piece}"
            );
        }
    }

    #[test]
    fn empty_body_is_last_chunk_only() {
        assert_eq!(scan_in_pieces(b"0\r\n\r\n", 3), Ok((5, true)));
    }

    #[test]
    fn incomplete_body_is_not_done() {
        assert_eq!(scan_in_pieces(b"5\r\nhel", 2), Ok((6, false)));
    }

    #[test]
    fn refuses_bad_sizes_and_line_endings() {
        for bad in [
            &b"x\r\n"[..],
            b"5\nhello\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhelloX\r\n",
            b"11111111111111111\r\n",
            b"5\r\r\n",
            b"0\r\n\n",
            b"5;a\x01\r\n",
            b"-5\r\n",
            b"5;\r\nhello\r\n",
            b"5;=x\r\nhello\r\n",
            b"5;a=\r\nhello\r\n",
            b"5;a=b c\r\nhello\r\n",
            b"5;a@b\r\nhello\r\n",
            b"5;a=\"unterminated\r\nhello\r\n",
        ] {
            assert!(
                scan_in_pieces(bad, 64).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// The decoder frames both directions, so one verdict covers a request body (400) and a
    /// response body (the attempt fails as garbage).
    #[test]
    fn whitespace_on_a_size_line_is_only_accepted_before_a_semicolon_or_equals() {
        for bad in [
            &b"5 \r\nhello\r\n0\r\n\r\n"[..],
            b"5\t\r\nhello\r\n0\r\n\r\n",
            b"0 \r\n\r\n",
            b"5  \r\nhello\r\n0\r\n\r\n",
            b"5 x\r\nhello\r\n",
            b"5;a \r\nhello\r\n0\r\n\r\n",
            b"5;a=1 \r\nhello\r\n0\r\n\r\n",
            b"5;a=\"q\" \r\nhello\r\n0\r\n\r\n",
        ] {
            assert!(
                scan_in_pieces(bad, 64).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        for good in [
            &b"5;ext=1\r\nhello\r\n0\r\n\r\n"[..],
            b"5 ;ext\r\nhello\r\n0\r\n\r\n",
            b"5\t; a = 1 ;b\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"q\";b\r\nhello\r\n0\r\n\r\n",
            b"5;a=1 ; b=\"x y\"\r\nhello\r\n0 ;last\r\n\r\n",
        ] {
            for piece in 1..=good.len() {
                assert_eq!(
                    scan_in_pieces(good, piece),
                    Ok((good.len(), true)),
                    "{:?} in pieces of {piece}",
                    String::from_utf8_lossy(good)
                );
            }
        }
    }

    #[test]
    fn huge_chunk_is_skipped_without_scanning() {
        let mut d = ChunkedDecoder::new();
        assert_eq!(d.advance(b"FFFFFFFF\r\n"), Ok(10));
        let data = vec![b'z'; 1 << 20];
        assert_eq!(d.advance(&data), Ok(data.len()));
        assert!(!d.is_done());
    }

    #[test]
    fn long_extension_is_refused() {
        let mut line = b"1;".to_vec();
        line.extend(std::iter::repeat_n(b'a', MAX_CHUNK_LINE_BYTES));
        assert!(scan_in_pieces(&line, 100).is_err());
    }
}
