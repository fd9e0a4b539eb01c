//! Counts over a rolling 24 hours ([`DailyCount`]): the org's API requests, which
//! `Sforce-Limit-Info` and `/limits` report and `Settings::api_limit` caps, and its Bulk batches,
//! which `/limits` reports and `Settings::batch_limit` caps.
//!
//! Each count is kept in one bucket a minute, 1440 of them, with their sum kept beside them: the
//! memory is the same however much is counted, and counting costs a constant (a bucket emptied for
//! each minute that passed, at most 1440 after a long silence). What was counted leaves the count
//! between 23 h 59 min and 24 h after it came, as its bucket's minute passes out of the window.

use std::sync::Mutex;
use std::time::Instant;

/// Minutes in the window.
const WINDOW_MINUTES: u64 = 24 * 60;

/// What was counted over the last 24 hours.
pub(crate) struct DailyCount {
    started: Instant,
    window: Mutex<Window>,
}

struct Window {
    /// Counted in each minute of the window, the minute `m` at `m % WINDOW_MINUTES`.
    buckets: Vec<u64>,
    /// The sum of `buckets`.
    total: u64,
    /// The newest minute seen, since `started`.
    newest: u64,
}

impl DailyCount {
    pub(crate) fn new() -> DailyCount {
        DailyCount {
            started: Instant::now(),
            window: Mutex::new(Window {
                buckets: vec![0; WINDOW_MINUTES as usize],
                total: 0,
                newest: 0,
            }),
        }
    }

    /// Counts `n` now; the count of the last 24 hours, these included.
    pub(crate) fn count(&self, n: u64) -> u64 {
        let minute = self.minute();
        self.window().count_at(minute, n)
    }

    /// Counts one now if the count of the last 24 hours is below `limit`: `Ok` with the count,
    /// this one included, or `Err` with the count, nothing counted. Checked and counted under one
    /// lock, so callers side by side never take it past `limit`.
    pub(crate) fn admit(&self, limit: u64) -> Result<u64, u64> {
        let minute = self.minute();
        let mut window = self.window();
        match window.count_at(minute, 0) {
            full if full >= limit => Err(full),
            _ => Ok(window.count_at(minute, 1)),
        }
    }

    /// The count of the last 24 hours.
    pub(crate) fn now(&self) -> u64 {
        self.count(0)
    }

    fn minute(&self) -> u64 {
        self.started.elapsed().as_secs() / 60
    }

    fn window(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Window {
    /// Counts `n` in `minute` (never before the newest seen), emptying the buckets of the
    /// minutes that passed since the newest: what they held is now 24 hours old. The count.
    fn count_at(&mut self, minute: u64, n: u64) -> u64 {
        let minute = minute.max(self.newest);
        let passed = (minute - self.newest).min(WINDOW_MINUTES);
        for step in 1..=passed {
            let bucket = &mut self.buckets[((self.newest + step) % WINDOW_MINUTES) as usize];
            self.total -= *bucket;
            *bucket = 0;
        }
        self.newest = minute;
        self.buckets[(minute % WINDOW_MINUTES) as usize] += n;
        self.total += n;
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_for_24_hours_then_leave_the_count() {
        let usage = DailyCount::new();
        let mut window = usage.window();
        assert_eq!(window.count_at(0, 1), 1);
        assert_eq!(window.count_at(0, 1), 2);
        assert_eq!(window.count_at(60, 1), 3);
        // Minute 1439 is the last of the first requests' 24 hours; at 1440 they have left.
        assert_eq!(window.count_at(WINDOW_MINUTES - 1, 1), 4);
        assert_eq!(window.count_at(WINDOW_MINUTES, 1), 3);
        assert_eq!(window.count_at(WINDOW_MINUTES + 60, 1), 3);
        // A silence longer than the window leaves only the request that ends it.
        assert_eq!(window.count_at(10 * WINDOW_MINUTES, 1), 1);
        assert_eq!(window.buckets.len(), WINDOW_MINUTES as usize);
    }

    #[test]
    fn a_clock_reading_older_than_the_newest_counts_in_the_newest_minute() {
        let usage = DailyCount::new();
        let mut window = usage.window();
        assert_eq!(window.count_at(100, 1), 1);
        assert_eq!(window.count_at(99, 1), 2);
        assert_eq!(window.count_at(100 + WINDOW_MINUTES, 1), 1);
    }

    #[test]
    fn several_are_counted_at_once_and_leave_together() {
        let batches = DailyCount::new();
        let mut window = batches.window();
        assert_eq!(window.count_at(0, 3), 3);
        assert_eq!(window.count_at(10, 2), 5);
        assert_eq!(window.count_at(WINDOW_MINUTES, 0), 2);
    }

    #[test]
    fn counting_now_starts_at_one() {
        let usage = DailyCount::new();
        assert_eq!(usage.count(1), 1);
        assert_eq!(usage.count(1), 2);
        assert_eq!(usage.now(), 2);
    }

    #[test]
    fn admission_counts_up_to_the_limit_and_refuses_past_it_counting_nothing() {
        let usage = DailyCount::new();
        assert_eq!(usage.admit(2), Ok(1));
        assert_eq!(usage.admit(2), Ok(2));
        assert_eq!(usage.admit(2), Err(2));
        assert_eq!(usage.admit(2), Err(2));
        assert_eq!(usage.now(), 2);
        assert_eq!(usage.admit(3), Ok(3));
    }
}
