//! The activation workspace's bookkeeping: one device allocation, handed out front to back
//! during a step and taken back whole when the next step's metadata is uploaded.
//!
//! A step asks for its buffers in the same order with the same sizes every time it has the
//! same shape, so it gets the same addresses: what CUDA graph replay needs. A buffer from an
//! earlier step is refused by its generation rather than read after its memory was reused.

/// Alignment of every buffer: cuBLAS and vector loads want 16 bytes; 256 keeps each buffer
/// on its own cache lines.
pub const ALIGN: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arena {
    capacity: usize,
    used: usize,
    generation: u64,
}

impl Arena {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            used: 0,
            generation: 0,
        }
    }

    /// Starts a step: everything handed out before is free again.
    pub fn reset(&mut self) -> u64 {
        self.used = 0;
        self.generation += 1;
        self.generation
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes in use (up to the end of the last buffer handed out).
    pub fn used(&self) -> usize {
        self.used
    }

    /// Marks the workspace in use up to `used`, as a replayed graph left it.
    pub fn resume_at(&mut self, used: usize) {
        self.used = used.min(self.capacity);
    }

    /// The offset of `bytes` more, or why there is no room.
    pub fn take(&mut self, bytes: usize) -> Result<usize, String> {
        let offset = self.used.next_multiple_of(ALIGN);
        let end = offset
            .checked_add(bytes)
            .filter(|&end| end <= self.capacity)
            .ok_or_else(|| {
                format!(
                    "the CUDA activation workspace ({} MiB) is exhausted: {} MiB in use, {bytes} bytes more asked",
                    self.capacity >> 20,
                    self.used >> 20
                )
            })?;
        self.used = end;
        Ok(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_and_the_same_requests_get_the_same_offsets() {
        let mut arena = Arena::new(4096);
        let first: Vec<usize> = [10, 300, 1].map(|b| arena.take(b).expect("room")).to_vec();
        assert_eq!(first, [0, 256, 768]);
        let generation = arena.generation();
        assert_eq!(arena.reset(), generation + 1);
        let again: Vec<usize> = [10, 300, 1].map(|b| arena.take(b).expect("room")).to_vec();
        assert_eq!(first, again);
    }

    #[test]
    fn running_out_is_an_error_that_says_so() {
        let mut arena = Arena::new(1024);
        arena.take(1000).expect("room");
        let err = arena.take(100).expect_err("full");
        assert!(err.contains("exhausted"), "{err}");
        arena.reset();
        assert_eq!(arena.take(1024), Ok(0));
    }
}
