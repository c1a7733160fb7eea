//! A mutex under which no job may be answered, so that the device's lock rule ("never held
//! across a reply", see the `device` module) is checked rather than trusted: a reply wakes
//! its waiter and can drop a batch's buffers, neither of which belongs inside the board's or
//! the submitter's critical section.
//!
//! In debug builds (so in every test) each [`Quiet`] guard counts itself in a thread-local
//! while it lives, and the reply path calls [`assert_may_reply`], which fails when its thread
//! holds one. Release builds count nothing.

use std::cell::Cell;
use std::ops::{Deref, DerefMut};

use parking_lot::{Mutex, MutexGuard};

thread_local! {
    /// Quiet guards alive on this thread.
    static HELD: Cell<u32> = const { Cell::new(0) };
}

/// A mutex whose guard forbids replies on its thread (see the module docs).
pub(crate) struct Quiet<T>(Mutex<T>);

/// A [`Quiet`] mutex's guard.
pub(crate) struct QuietGuard<'a, T> {
    guard: MutexGuard<'a, T>,
    _held: Held,
}

/// One count in [`HELD`] while it lives.
struct Held;

// Counted in debug builds only, where the check runs: release builds pay nothing.
impl Held {
    fn new() -> Held {
        #[cfg(debug_assertions)]
        HELD.with(|h| h.set(h.get() + 1));
        Held
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        #[cfg(debug_assertions)]
        HELD.with(|h| h.set(h.get().saturating_sub(1)));
    }
}

impl<T> Quiet<T> {
    pub(crate) fn new(value: T) -> Quiet<T> {
        Quiet(Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> QuietGuard<'_, T> {
        let guard = self.0.lock();
        QuietGuard {
            guard,
            _held: Held::new(),
        }
    }

    pub(crate) fn try_lock(&self) -> Option<QuietGuard<'_, T>> {
        let guard = self.0.try_lock()?;
        Some(QuietGuard {
            guard,
            _held: Held::new(),
        })
    }
}

impl<T> Deref for QuietGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for QuietGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

/// Fails (in debug builds) when this thread holds a [`Quiet`] lock: called as a job is
/// answered. A thread unwinding from a panic is exempt: the jobs it drops answer as they go
/// (the panic is the device's loss), and a second panic would abort the process.
pub(crate) fn assert_may_reply() {
    debug_assert!(
        std::thread::panicking() || HELD.with(Cell::get) == 0,
        "a job was answered while the board or submitter lock was held"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(debug_assertions)]
    fn guards_count_while_they_live() {
        let m = Quiet::new(1);
        assert_may_reply();
        {
            let _g = m.lock();
            assert_eq!(HELD.with(Cell::get), 1);
            assert!(m.try_lock().is_none());
        }
        assert_may_reply();
    }

    #[test]
    #[should_panic(expected = "answered while")]
    #[cfg(debug_assertions)]
    fn a_reply_under_the_lock_fails() {
        let m = Quiet::new(());
        let _g = m.lock();
        assert_may_reply();
    }
}
