//! The answers sluice gives itself: an error, a refusal (400, 408, 413, 429, 502, 503...), a short
//! plain-text body and `Connection: close` when the connection cannot carry another request. The
//! `Answer` state ([`Core::http_answer`]) sends one; then the session closes or reads the next
//! request.

use std::io::Write as _;

use crate::worker::buffer::Buf;
use crate::worker::conn::{write_from, ClientKey, ClientState, Io};
use crate::worker::{Core, Next};

/// The reason phrase for statuses sluice answers itself.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

impl Core {
    /// Starts sending a response sluice writes itself: `status`, a one-line body, and
    /// `Connection: close` when the connection cannot carry another request.
    pub(super) fn answer(&mut self, k: ClientKey, status: u16, why: &str, close: bool) -> Next {
        self.answer_with(k, status, why, close, "")
    }

    /// [`Core::answer`] with `extra` header lines (each ending in CRLF).
    pub(super) fn answer_with(
        &mut self,
        k: ClientKey,
        status: u16,
        why: &str,
        close: bool,
        extra: &str,
    ) -> Next {
        let Core {
            conns,
            io,
            cfg,
            metrics,
            life,
            now,
            ..
        } = self;
        let c = &mut conns[k];
        let ex = c.ex.get_or_insert_with(Default::default);
        let then_close =
            close || life.shutting_down || !ex.client_keep_alive || !ex.req_body.is_done();
        metrics.current.client_responses[usize::from(status / 100).min(5)] += 1;
        ex.answered_status = status;
        let resp = ex.resp.get_or_insert_with(|| io.bufs.get());
        resp.clear();
        write_error_response(resp, status, why, then_close, extra);
        ex.resp_len = resp.len();
        ex.resp_started = true;
        c.state = ClientState::Answer { then_close };
        c.deadline
            .set(now.ms + cfg.response_timeout_ms, k.token(), &mut io.timers);
        Next::Again
    }

    /// `Answer`: writes sluice's own response, then closes or goes on with the next request.
    pub(super) fn http_answer(&mut self, k: ClientKey, then_close: bool) -> Next {
        let c = &mut self.conns[k];
        let Some(ex) = c.ex.as_deref_mut() else {
            return Next::Close;
        };
        let Some(resp) = ex.resp.as_mut() else {
            return Next::Close;
        };
        while ex.resp_len > 0 {
            match write_from(&mut c.sock, &mut c.ready, &resp.bytes()[..ex.resp_len]) {
                Io::Done(n) => {
                    self.metrics.current.bytes_out += n as u64;
                    ex.bytes_out += n as u64;
                    resp.consume(n);
                    ex.resp_len -= n;
                }
                Io::Blocked => return Next::Wait,
                Io::Eof | Io::Err(_) => return Next::Close,
            }
        }
        let status = ex.answered_status;
        self.request_done(k, status);
        if then_close {
            self.begin_close(k)
        } else {
            self.next_request(k)
        }
    }
}

/// Writes a complete small response: status line, plain-text body of one line.
pub(super) fn write_error_response(
    buf: &mut Buf,
    status: u16,
    why: &str,
    close: bool,
    extra: &str,
) {
    let mut head = [0u8; 256];
    let mut cursor = std::io::Cursor::new(&mut head[..]);
    let _ = write!(
        cursor,
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{extra}{}\r\n",
        reason_phrase(status),
        why.len() + 1,
        if close { "Connection: close\r\n" } else { "" },
    );
    let n = cursor.position() as usize;
    buf.extend(&head[..n]);
    buf.extend(why.as_bytes());
    buf.extend(b"\n");
}
