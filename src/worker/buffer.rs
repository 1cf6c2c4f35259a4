//! I/O buffers and the per-worker pool they come from.
//!
//! A connection holds a buffer only while bytes are in flight: an idle keep-alive client or an idle
//! pooled backend connection owns none, which is what keeps an idle connection at a few dozen bytes of
//! user-space memory. Buffers are boxed so that "no buffer" costs one null pointer in the connection
//! state, and recycled through [`BufPool`] so the request path never calls the allocator.
//!
//! The one exception is a request head larger than a pooled buffer (`--max-header-bytes` above
//! `--buffer-size`): its buffer grows to hold it ([`Buf::grow`]) and is freed, not pooled, once the
//! request is done, so rare large heads don't make every pooled buffer large.

/// A byte buffer with a readable window `[start, end)` over fixed storage.
pub struct Buf {
    data: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Buf {
    pub fn with_capacity(capacity: usize) -> Buf {
        Buf {
            data: vec![0; capacity].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// The bytes held, oldest first.
    pub fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn capacity(&self) -> usize {
        self.data.len()
    }

    /// Drops `n` bytes from the front.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len());
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Drops everything after the first `n` bytes.
    pub fn truncate(&mut self, n: usize) {
        if n < self.len() {
            self.end = self.start + n;
        }
    }

    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Free space that a read may fill while keeping the total at most `limit` bytes; moves the held
    /// bytes to the front first when that makes room.
    pub fn spare(&mut self, limit: usize) -> &mut [u8] {
        let limit = limit.min(self.data.len());
        if self.start > 0 && self.end == self.data.len() {
            self.compact();
        }
        let want_end = self.start + limit;
        let end = want_end.min(self.data.len());
        if end <= self.end {
            return &mut [];
        }
        &mut self.data[self.end..end]
    }

    /// Marks `n` bytes of the slice returned by [`Buf::spare`] as filled.
    pub fn fill(&mut self, n: usize) {
        debug_assert!(self.end + n <= self.data.len());
        self.end += n;
    }

    /// Appends `bytes` if they fit, returning whether they did.
    pub fn extend(&mut self, bytes: &[u8]) -> bool {
        if self.data.len() - self.end < bytes.len() {
            self.compact();
        }
        if self.data.len() - self.end < bytes.len() {
            return false;
        }
        self.data[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
        true
    }

    /// The whole storage after the held bytes, for writers that build a message in place.
    pub fn tail_mut(&mut self) -> &mut [u8] {
        &mut self.data[self.end..]
    }

    /// Moves the held bytes to the front of new storage of `capacity` bytes, if that is larger.
    pub fn grow(&mut self, capacity: usize) {
        if capacity <= self.data.len() {
            return;
        }
        let mut data = vec![0; capacity].into_boxed_slice();
        data[..self.len()].copy_from_slice(self.bytes());
        self.end -= self.start;
        self.start = 0;
        self.data = data;
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }
}

/// Default number of spare buffers a worker keeps for reuse; more are freed.
pub const DEFAULT_POOL_MAX_FREE: usize = 1024;

/// A worker's free list of equally sized buffers.
pub struct BufPool {
    // Boxed so that handing a buffer to a connection moves one pointer, not the struct.
    #[allow(clippy::vec_box)]
    free: Vec<Box<Buf>>,
    buf_size: usize,
    max_free: usize,
}

impl BufPool {
    pub fn new(buf_size: usize, max_free: usize) -> BufPool {
        BufPool {
            free: Vec::new(),
            buf_size,
            max_free,
        }
    }

    pub fn buf_size(&self) -> usize {
        self.buf_size
    }

    /// An empty buffer, reused when one is free.
    pub fn get(&mut self) -> Box<Buf> {
        match self.free.pop() {
            Some(buf) => buf,
            None => Box::new(Buf::with_capacity(self.buf_size)),
        }
    }

    /// An empty buffer of at least `capacity` bytes: a pooled one when that is large enough, else a
    /// new one (which [`BufPool::put`] will free rather than keep).
    pub fn get_at_least(&mut self, capacity: usize) -> Box<Buf> {
        if capacity <= self.buf_size {
            self.get()
        } else {
            Box::new(Buf::with_capacity(capacity))
        }
    }

    /// Returns a buffer for reuse; its contents are discarded. A buffer of another size (grown for
    /// a large head) is freed.
    pub fn put(&mut self, mut buf: Box<Buf>) {
        if self.free.len() < self.max_free && buf.capacity() == self.buf_size {
            buf.clear();
            self.free.push(buf);
        }
    }

    /// Returns the buffer in `slot`, if any.
    pub fn release(&mut self, slot: &mut Option<Box<Buf>>) {
        if let Some(buf) = slot.take() {
            self.put(buf);
        }
    }

    /// Returns the buffer in `slot` if it holds no bytes.
    pub fn release_if_empty(&mut self, slot: &mut Option<Box<Buf>>) {
        if slot.as_ref().is_some_and(|b| b.is_empty()) {
            self.release(slot);
        }
    }

    /// Buffers currently cached for reuse.
    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    /// Frees cached buffers beyond `keep`, so memory returns to the system after a burst.
    /// Keeps at most `keep` spare buffers; true when it freed any.
    pub fn trim(&mut self, keep: usize) -> bool {
        let freed = self.free.len() > keep;
        self.free.truncate(keep);
        self.free.shrink_to(keep);
        freed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spare_respects_limit_and_compacts() {
        let mut b = Buf::with_capacity(8);
        let s = b.spare(6);
        assert_eq!(s.len(), 6);
        s.copy_from_slice(b"abcdef");
        b.fill(6);
        assert_eq!(b.spare(6).len(), 0, "limit of 6 held bytes reached");
        b.consume(4);
        assert_eq!(b.bytes(), b"ef");
        // 2 held at offset 4 of 8: room to the end is 2 although the limit would allow 4.
        let s = b.spare(6);
        assert_eq!(s.len(), 2);
        s.copy_from_slice(b"gh");
        b.fill(2);
        // The end of storage is reached with free space at the front: spare compacts.
        assert_eq!(b.spare(8).len(), 4);
        assert_eq!(b.bytes(), b"efgh");
    }

    #[test]
    fn extend_compacts_and_refuses_overflow() {
        let mut b = Buf::with_capacity(4);
        assert!(b.extend(b"abc"));
        b.consume(2);
        assert!(b.extend(b"de"));
        assert_eq!(b.bytes(), b"cde");
        assert!(!b.extend(b"xy"));
        assert_eq!(b.bytes(), b"cde");
    }

    #[test]
    fn consume_all_resets_window() {
        let mut b = Buf::with_capacity(4);
        assert!(b.extend(b"abcd"));
        b.consume(4);
        assert!(b.is_empty());
        assert_eq!(b.spare(4).len(), 4);
    }

    #[test]
    fn grow_keeps_the_held_bytes_and_a_grown_buffer_is_not_pooled() {
        let mut p = BufPool::new(8, 4);
        let mut b = p.get();
        assert!(b.extend(b"abcdefgh"));
        b.consume(2);
        b.grow(32);
        assert_eq!(b.bytes(), b"cdefgh");
        assert_eq!(b.capacity(), 32);
        assert_eq!(b.spare(usize::MAX).len(), 26);
        p.put(b);
        assert_eq!(p.free_count(), 0, "grown buffers are freed");
        assert_eq!(p.get_at_least(8).capacity(), 8);
        assert_eq!(p.get_at_least(9).capacity(), 9);
    }

    #[test]
    fn pool_reuses_and_caps() {
        let mut p = BufPool::new(16, 1);
        let a = p.get();
        let b = p.get();
        p.put(a);
        p.put(b);
        assert_eq!(p.free_count(), 1);
        let mut slot = Some(p.get());
        assert_eq!(p.free_count(), 0);
        p.release_if_empty(&mut slot);
        assert!(slot.is_none());
        assert_eq!(p.free_count(), 1);
    }
}
