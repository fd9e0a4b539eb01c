//! The id of the request being served, for the few events logged while it runs (a task-local:
//! a tracing span per request cost more than the access line itself).

use std::future::Future;

use axum::http::HeaderValue;

tokio::task_local! {
    static CURRENT: HeaderValue;
}

/// `future`, run as the request `id`. Not an `async fn`: that would keep `future` beside the
/// scoped future that holds it, doubling the size of every request's future.
pub fn scope<F: Future>(id: HeaderValue, future: F) -> impl Future<Output = F::Output> {
    CURRENT.scope(id, future)
}

/// `future` run with the current request's id, for work a request spawns off itself.
pub fn with_current_request_id<F: Future>(future: F) -> impl Future<Output = F::Output> {
    let id = CURRENT.try_with(HeaderValue::clone).ok();
    async move {
        match id {
            Some(id) => CURRENT.scope(id, future).await,
            None => future.await,
        }
    }
}

/// The id of the request being served, for log events made while it runs.
pub fn current_request_id() -> Option<String> {
    CURRENT
        .try_with(|id| id.to_str().ok().map(str::to_string))
        .ok()
        .flatten()
}
