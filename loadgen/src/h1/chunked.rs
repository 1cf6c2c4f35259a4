//! Decoding of `Transfer-Encoding: chunked` bodies (RFC 9112 section 7.1), incrementally:
//! sizes, extensions and trailers are skipped; data is copied out only when asked for.

use super::H1Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum ChunkState {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerLineStart,
    TrailerLine,
    TrailerEndLf,
    Done,
}

/// Decodes a `Transfer-Encoding: chunked` body incrementally.
#[derive(Debug, Default, Clone)]
pub struct ChunkedDecoder {
    state: ChunkState,
    size: u64,
    digits: u32,
}

impl ChunkedDecoder {
    /// Consumes bytes of `input`, appending decoded data to `out` when given. Returns the bytes
    /// consumed and whether the body (including trailers) is complete.
    pub fn decode(
        &mut self,
        input: &[u8],
        mut out: Option<&mut Vec<u8>>,
    ) -> Result<(usize, bool), H1Error> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                ChunkState::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let digit = (b as char).to_digit(16).unwrap_or(0);
                        self.digits += 1;
                        if self.digits > 15 {
                            return Err(H1Error::BadChunk);
                        }
                        self.size = self.size * 16 + u64::from(digit);
                    }
                    b';' | b' ' | b'\t' if self.digits > 0 => self.state = ChunkState::Extension,
                    b'\r' if self.digits > 0 => self.state = ChunkState::SizeLf,
                    b'\n' if self.digits > 0 => self.end_of_size_line(),
                    _ => return Err(H1Error::BadChunk),
                },
                ChunkState::Extension => match b {
                    b'\r' => self.state = ChunkState::SizeLf,
                    b'\n' => self.end_of_size_line(),
                    _ => {}
                },
                ChunkState::SizeLf => {
                    if b != b'\n' {
                        return Err(H1Error::BadChunk);
                    }
                    self.end_of_size_line();
                }
                ChunkState::Data => {
                    let take = (input.len() - i).min(self.size as usize);
                    if let Some(out) = out.as_deref_mut() {
                        out.extend_from_slice(&input[i..i + take]);
                    }
                    self.size -= take as u64;
                    i += take;
                    if self.size == 0 {
                        self.state = ChunkState::DataCr;
                    }
                    continue;
                }
                ChunkState::DataCr => match b {
                    b'\r' => self.state = ChunkState::DataLf,
                    b'\n' => self.next_chunk(),
                    _ => return Err(H1Error::BadChunk),
                },
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return Err(H1Error::BadChunk);
                    }
                    self.next_chunk();
                }
                ChunkState::TrailerLineStart => match b {
                    b'\r' => self.state = ChunkState::TrailerEndLf,
                    b'\n' => self.state = ChunkState::Done,
                    _ => self.state = ChunkState::TrailerLine,
                },
                ChunkState::TrailerLine => {
                    if b == b'\n' {
                        self.state = ChunkState::TrailerLineStart;
                    }
                }
                ChunkState::TrailerEndLf => {
                    if b != b'\n' {
                        return Err(H1Error::BadChunk);
                    }
                    self.state = ChunkState::Done;
                }
                ChunkState::Done => break,
            }
            i += 1;
            if self.state == ChunkState::Done {
                break;
            }
        }
        Ok((i, self.state == ChunkState::Done))
    }

    fn end_of_size_line(&mut self) {
        self.state = if self.size == 0 {
            ChunkState::TrailerLineStart
        } else {
            ChunkState::Data
        };
    }

    fn next_chunk(&mut self) {
        self.state = ChunkState::Size;
        self.size = 0;
        self.digits = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_chunks_with_extensions_and_trailers() {
        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        let msg = b"3;ext=1\r\nabc\r\n1\r\nd\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let (n, done) = d.decode(msg, Some(&mut out)).unwrap();
        assert!(done);
        assert_eq!(&msg[n..], b"NEXT");
        assert_eq!(out, b"abcd");
    }

    #[test]
    fn rejects_bad_sizes() {
        let mut d = ChunkedDecoder::default();
        assert_eq!(d.decode(b"zz\r\n", None), Err(H1Error::BadChunk));
        let mut d = ChunkedDecoder::default();
        assert_eq!(
            d.decode(b"1234567890abcdef0\r\n", None),
            Err(H1Error::BadChunk)
        );
    }
}
