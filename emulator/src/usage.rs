//! The org's API usage over a rolling 24 hours ([`ApiUsage`]), as `Sforce-Limit-Info` reports it.
//!
//! Requests are counted in one bucket a minute, 1440 of them, with their sum kept beside them: the
//! memory is the same however many requests come, and counting one costs a constant (a bucket
//! emptied for each minute that passed, at most 1440 after a long silence). A request leaves the
//! count between 23 h 59 min and 24 h after it came, as a bucket's minute passes out of the window.

use std::sync::Mutex;
use std::time::Instant;

/// Minutes in the window.
const WINDOW_MINUTES: u64 = 24 * 60;

/// Bulk API requests over the last 24 hours.
pub(crate) struct ApiUsage {
    started: Instant,
    window: Mutex<Window>,
}

struct Window {
    /// Requests counted in each minute of the window, the minute `m` at `m % WINDOW_MINUTES`.
    buckets: Vec<u64>,
    /// The sum of `buckets`.
    total: u64,
    /// The newest minute counted in, since `started`.
    newest: u64,
}

impl ApiUsage {
    pub(crate) fn new() -> ApiUsage {
        ApiUsage {
            started: Instant::now(),
            window: Mutex::new(Window {
                buckets: vec![0; WINDOW_MINUTES as usize],
                total: 0,
                newest: 0,
            }),
        }
    }

    /// Counts one request now; the requests of the last 24 hours, this one included.
    pub(crate) fn count(&self) -> u64 {
        let minute = self.started.elapsed().as_secs() / 60;
        self.window
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .count_at(minute)
    }
}

impl Window {
    /// Counts one request in `minute` (never before the newest seen), emptying the buckets of the
    /// minutes that passed since the newest: their requests are now 24 hours old.
    fn count_at(&mut self, minute: u64) -> u64 {
        let minute = minute.max(self.newest);
        let passed = (minute - self.newest).min(WINDOW_MINUTES);
        for step in 1..=passed {
            let bucket = &mut self.buckets[((self.newest + step) % WINDOW_MINUTES) as usize];
            self.total -= *bucket;
            *bucket = 0;
        }
        self.newest = minute;
        self.buckets[(minute % WINDOW_MINUTES) as usize] += 1;
        self.total += 1;
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_for_24_hours_then_leave_the_count() {
        let usage = ApiUsage::new();
        let mut window = usage.window.lock().unwrap();
        assert_eq!(window.count_at(0), 1);
        assert_eq!(window.count_at(0), 2);
        assert_eq!(window.count_at(60), 3);
        // Minute 1439 is the last of the first requests' 24 hours; at 1440 they have left.
        assert_eq!(window.count_at(WINDOW_MINUTES - 1), 4);
        assert_eq!(window.count_at(WINDOW_MINUTES), 3);
        assert_eq!(window.count_at(WINDOW_MINUTES + 60), 3);
        // A silence longer than the window leaves only the request that ends it.
        assert_eq!(window.count_at(10 * WINDOW_MINUTES), 1);
        assert_eq!(window.buckets.len(), WINDOW_MINUTES as usize);
    }

    #[test]
    fn a_clock_reading_older_than_the_newest_counts_in_the_newest_minute() {
        let usage = ApiUsage::new();
        let mut window = usage.window.lock().unwrap();
        assert_eq!(window.count_at(100), 1);
        assert_eq!(window.count_at(99), 2);
        assert_eq!(window.count_at(100 + WINDOW_MINUTES), 1);
    }

    #[test]
    fn counting_now_starts_at_one() {
        let usage = ApiUsage::new();
        assert_eq!(usage.count(), 1);
        assert_eq!(usage.count(), 2);
    }
}
