//! The worker's index types: a client connection's key, a backend connection's key (both slab
//! keys, told apart in mio tokens by a high bit), and a backend's position in the routing table.
//! Three `usize` spaces that must never be mixed up, so each has its own type.

use mio::Token;

/// Backend connection tokens are their slab key with this bit set; client tokens are bare keys.
pub(super) const BACKEND_BIT: usize = 1 << 40;

/// A client connection's key in `Conns`; its mio token is the bare key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ClientKey(pub(super) usize);

/// A backend connection's key in `Conns`; its mio token is the key with [`BACKEND_BIT`] set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct BackendConnKey(pub(super) usize);

impl ClientKey {
    pub(super) fn token(self) -> Token {
        Token(self.0)
    }
}

impl BackendConnKey {
    pub(super) fn token(self) -> Token {
        Token(self.0 | BACKEND_BIT)
    }
}

/// Whose a connection token is (fixed tokens such as the listener's are matched before this).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Owner {
    Client(ClientKey),
    Backend(BackendConnKey),
}

impl Owner {
    pub(super) fn of(token: Token) -> Owner {
        if token.0 & BACKEND_BIT != 0 {
            Owner::Backend(BackendConnKey(token.0 & !BACKEND_BIT))
        } else {
            Owner::Client(ClientKey(token.0))
        }
    }
}

/// A backend's position in the current table's `backends` (and in the pool's slots).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct TableIndex(pub(super) usize);
