//! Bounded in-memory lists behind the inbox and the request log.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

/// A list that keeps the newest `capacity` items, dropping the oldest.
#[derive(Debug)]
pub(crate) struct Bounded<T> {
    capacity: usize,
    items: Mutex<VecDeque<T>>,
}

impl<T: Clone> Bounded<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            items: Mutex::new(VecDeque::new()),
        }
    }

    /// A poisoned lock only means another thread panicked mid-push; the list
    /// itself is still consistent, so keep serving.
    fn lock(&self) -> MutexGuard<'_, VecDeque<T>> {
        self.items
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn push(&self, item: T) {
        if self.capacity == 0 {
            return;
        }
        let mut items = self.lock();
        while items.len() >= self.capacity {
            items.pop_front();
        }
        items.push_back(item);
    }

    pub(crate) fn oldest_first(&self) -> Vec<T> {
        self.lock().iter().cloned().collect()
    }

    pub(crate) fn newest_first(&self) -> Vec<T> {
        self.lock().iter().rev().cloned().collect()
    }

    pub(crate) fn clear(&self) {
        self.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_oldest_beyond_capacity() {
        let list = Bounded::new(2);
        for i in 0..5 {
            list.push(i);
        }
        assert_eq!(list.oldest_first(), vec![3, 4]);
        assert_eq!(list.newest_first(), vec![4, 3]);
        list.clear();
        assert!(list.oldest_first().is_empty());
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let list = Bounded::new(0);
        list.push(1);
        assert!(list.oldest_first().is_empty());
    }
}
