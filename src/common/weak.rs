//! A reading of an owner, handed to whatever asks at its own pace (the console, the metrics at
//! each scrape), that does not keep the owner alive: once it is gone, the reading is empty.

use std::sync::{Arc, Weak};

/// `read` of `owner` while it lives; the default after.
pub fn view<T, R>(owner: &Arc<T>, read: fn(&T) -> R) -> Box<dyn Fn() -> R + Send + Sync>
where
    T: Send + Sync + 'static,
    R: Default + 'static,
{
    let owner: Weak<T> = Arc::downgrade(owner);
    Box::new(move || {
        owner
            .upgrade()
            .map(|owner| read(&owner))
            .unwrap_or_default()
    })
}
