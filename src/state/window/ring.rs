//! The double-ended queue behind a window's max/min deques.
//!
//! The first `N` values live inline, inside the window and so inside the
//! instrument's state: a tick on an instrument whose deques are short (the
//! usual case: a monotonic deque over a random walk holds a handful of
//! values) touches no cache line outside that state, which the engine
//! prefetches. Longer queues spill to a heap ring that doubles as needed
//! and is kept once grown, so a busy instrument stops allocating after its
//! busiest span. Capacities are powers of two: an index is a mask.
//!
//! Unsafe code is allowed here: unchecked indexing, where the mask keeps
//! every index in bounds and the bounds check would cost on every tick.
#![allow(unsafe_code)]

use std::fmt;

/// A deque of `Copy` values, `N` of them inline (`N` a power of two). A
/// clone keeps the capacity: a spilled ring stays spilled.
#[derive(Clone)]
pub struct Ring<T: Copy + Default, const N: usize> {
    /// Position of the front value; always below the capacity.
    head: u32,
    len: u32,
    /// Capacity - 1: `N - 1` inline, the heap ring's length - 1 once
    /// spilled.
    mask: u32,
    inline: [T; N],
    /// Empty until the queue outgrows `inline`; then the whole ring.
    heap: Box<[T]>,
}

impl<T: Copy + Default, const N: usize> Ring<T, N> {
    const INLINE_IS_POWER_OF_TWO: () = assert!(N.is_power_of_two() && N <= 1 << 16);

    pub fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::INLINE_IS_POWER_OF_TWO;
        Ring {
            head: 0,
            len: 0,
            mask: N as u32 - 1,
            inline: [T::default(); N],
            heap: Box::default(),
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn capacity(&self) -> u32 {
        self.mask + 1
    }

    #[inline]
    fn spilled(&self) -> bool {
        self.mask as usize >= N
    }

    /// The value `i` places from the front, `i < len`.
    #[inline]
    fn at(&self, i: u32) -> &T {
        debug_assert!(i < self.len);
        let position = (self.head.wrapping_add(i) & self.mask) as usize;
        // SAFETY: `position <= mask`, and the buffer in use (inline while
        // not spilled, else `heap`) holds `mask + 1` values.
        unsafe {
            if self.spilled() {
                self.heap.get_unchecked(position)
            } else {
                self.inline.get_unchecked(position)
            }
        }
    }

    /// As [`Ring::at`], mutable.
    #[inline]
    fn at_mut(&mut self, i: u32) -> &mut T {
        debug_assert!(i <= self.mask);
        let position = (self.head.wrapping_add(i) & self.mask) as usize;
        // SAFETY: as in `at`.
        unsafe {
            if self.spilled() {
                self.heap.get_unchecked_mut(position)
            } else {
                self.inline.get_unchecked_mut(position)
            }
        }
    }

    #[inline]
    pub fn front(&self) -> Option<&T> {
        (self.len != 0).then(|| self.at(0))
    }

    #[inline]
    pub fn back(&self) -> Option<&T> {
        (self.len != 0).then(|| self.at(self.len - 1))
    }

    #[inline]
    pub fn pop_front(&mut self) -> Option<T> {
        let value = *self.front()?;
        self.head = self.head.wrapping_add(1) & self.mask;
        self.len -= 1;
        Some(value)
    }

    #[inline]
    pub fn pop_back(&mut self) -> Option<T> {
        let value = *self.back()?;
        self.len -= 1;
        Some(value)
    }

    #[inline]
    pub fn push_back(&mut self, value: T) {
        if self.len == self.capacity() {
            self.grow();
        }
        *self.at_mut(self.len) = value;
        self.len += 1;
    }

    /// Doubles the capacity, moving the values to a new heap ring in order.
    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        let capacity = (self.capacity() as usize)
            .checked_mul(2)
            .filter(|&c| c <= 1 << 31)
            .expect("a window deque holds at most 2^31 values");
        let mut heap = vec![T::default(); capacity].into_boxed_slice();
        for (slot, value) in heap.iter_mut().zip(self.iter()) {
            *slot = value;
        }
        self.heap = heap;
        self.head = 0;
        self.mask = capacity as u32 - 1;
    }

    /// The first value for which `reached` holds, given that it holds for
    /// every value after one it holds for (values ordered by it): a
    /// binary search.
    #[inline]
    pub fn first_from(&self, reached: impl Fn(&T) -> bool) -> Option<T> {
        let (mut lo, mut hi) = (0, self.len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if reached(self.at(mid)) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        (lo < self.len).then(|| *self.at(lo))
    }

    /// The values, front to back.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = T> + ExactSizeIterator + '_ {
        (0..self.len).map(move |i| *self.at(i))
    }
}

impl<T: Copy + Default, const N: usize> Default for Ring<T, N> {
    fn default() -> Self {
        Ring::new()
    }
}

impl<T: Copy + Default, const N: usize> FromIterator<T> for Ring<T, N> {
    fn from_iter<I: IntoIterator<Item = T>>(values: I) -> Self {
        let mut ring = Ring::new();
        for value in values {
            ring.push_back(value);
        }
        ring
    }
}

impl<T: Copy + Default + PartialEq, const N: usize> PartialEq for Ring<T, N> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl<T: Copy + Default + Eq, const N: usize> Eq for Ring<T, N> {}

impl<T: Copy + Default + fmt::Debug, const N: usize> fmt::Debug for Ring<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Serialised as a plain sequence, front to back: the same form a
/// `VecDeque` takes, so checkpoints do not depend on the inline size.
impl<T: Copy + Default + serde::Serialize, const N: usize> serde::Serialize for Ring<T, N> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de, T: Copy + Default + serde::Deserialize<'de>, const N: usize> serde::Deserialize<'de> for Ring<T, N> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let values: Vec<T> = Vec::deserialize(deserializer)?;
        Ok(values.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use proptest::prelude::*;

    use super::Ring;

    #[derive(Clone, Debug)]
    enum Op {
        Push(u16),
        PopFront,
        PopBack,
        Clone,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => any::<u16>().prop_map(Op::Push),
            2 => Just(Op::PopFront),
            1 => Just(Op::PopBack),
            1 => Just(Op::Clone),
        ]
    }

    proptest! {
        /// Any sequence of operations leaves the ring holding what a
        /// `VecDeque` would, inline and after spilling to the heap.
        #[test]
        fn behaves_like_a_vec_deque(ops in proptest::collection::vec(op(), 0..300)) {
            let mut ring: Ring<u16, 4> = Ring::new();
            let mut model: VecDeque<u16> = VecDeque::new();
            for op in ops {
                match op {
                    Op::Push(v) => {
                        ring.push_back(v);
                        model.push_back(v);
                    }
                    Op::PopFront => prop_assert_eq!(ring.pop_front(), model.pop_front()),
                    Op::PopBack => prop_assert_eq!(ring.pop_back(), model.pop_back()),
                    Op::Clone => ring = ring.clone(),
                }
                prop_assert_eq!(ring.len(), model.len());
                prop_assert_eq!(ring.front().copied(), model.front().copied());
                prop_assert_eq!(ring.back().copied(), model.back().copied());
                prop_assert!(ring.iter().eq(model.iter().copied()));
                prop_assert!(ring.iter().rev().eq(model.iter().rev().copied()));
            }
            prop_assert_eq!(ring.clone(), ring);
        }
    }

    #[test]
    fn serialises_as_the_sequence_a_vec_deque_gives() {
        let mut ring: Ring<u32, 2> = Ring::new();
        for v in 0..5 {
            ring.push_back(v);
        }
        ring.pop_front();
        let model: VecDeque<u32> = (1..5).collect();
        let bytes = postcard::to_allocvec(&ring).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&model).unwrap());
        let back: Ring<u32, 2> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, ring);
    }

    #[test]
    fn stays_inline_until_it_outgrows_its_inline_values() {
        let mut ring: Ring<u8, 4> = Ring::new();
        for round in 0..100u8 {
            ring.push_back(round);
            if ring.len() > 3 {
                ring.pop_front();
            }
        }
        assert!(!ring.spilled(), "a queue that never held more than 4 stays inline");
        ring.push_back(1);
        ring.push_back(2);
        assert_eq!(ring.heap.len(), 8);
        assert!(ring.iter().eq([97, 98, 99, 1, 2]));
    }
}
