//! Allocation of sandbox slots. A slot names the sandbox's cgroup and selects
//! its host uid/gid range, so two live sandboxes never share host ids or a
//! cgroup. A slot whose teardown failed stays taken (quarantined) rather than
//! be handed to a new sandbox with leftovers.

use std::sync::Mutex;

/// The free/taken state of every slot.
#[derive(Debug)]
pub struct Slots {
    taken: Mutex<Vec<bool>>,
}

impl Slots {
    pub fn new(count: u32) -> Self {
        Self {
            taken: Mutex::new(vec![false; count as usize]),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<bool>> {
        self.taken
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The lowest free slot, now taken; `None` when all are in use.
    pub fn acquire(&self) -> Option<u32> {
        let mut taken = self.lock();
        let index = taken.iter().position(|t| !t)?;
        taken[index] = true;
        Some(index as u32)
    }

    pub fn release(&self, slot: u32) {
        if let Some(entry) = self.lock().get_mut(slot as usize) {
            *entry = false;
        }
    }

    pub fn in_use(&self) -> usize {
        self.lock().iter().filter(|t| **t).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_unique_until_released() {
        let slots = Slots::new(2);
        let a = slots.acquire().expect("first");
        let b = slots.acquire().expect("second");
        assert_ne!(a, b);
        assert_eq!(slots.acquire(), None);
        slots.release(a);
        assert_eq!(slots.acquire(), Some(a));
        assert_eq!(slots.in_use(), 2);
    }
}
