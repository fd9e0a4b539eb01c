//! The request being served, for the few events logged while it runs (a task-local: a tracing
//! span per request cost more than the access line itself): its id, the operation once the
//! pipeline has found it, when its answer must have ended, and the team its bearer token is
//! charged to (for the org-budget guard's shares).

use std::cell::{Cell, OnceCell};
use std::future::Future;
use std::sync::Arc;

use axum::http::HeaderValue;
use tokio::time::Instant;

/// An operation as the access log names it: its API label and its name.
pub type OperationName = (&'static str, &'static str);

/// A team of `server.token_scopes`, as a request made with one of its tokens is charged to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Team {
    /// The team's name (lower case, as the settings hold it).
    pub name: Arc<str>,
    /// Its `api_share_percent`: `None`, its calls are not limited by a share.
    pub api_share_percent: Option<u64>,
}

/// What is known of the request being served.
struct Current {
    id: HeaderValue,
    operation: Cell<Option<OperationName>>,
    /// When its answer must have ended (`salesforce.max_answer_secs` after it came).
    deadline: Option<Instant>,
    /// The team its bearer token is charged to, once the edge has admitted it.
    team: OnceCell<Team>,
}

tokio::task_local! {
    static CURRENT: Current;
}

/// `future`, run as the request `id`. Not an `async fn`: that would keep `future` beside the
/// scoped future that holds it, doubling the size of every request's future. A future dropped
/// unfinished is dropped inside the scope, so what it drops can still read the request.
pub fn scope<F: Future>(
    id: HeaderValue,
    deadline: Instant,
    future: F,
) -> impl Future<Output = F::Output> {
    CURRENT.scope(
        Current {
            id,
            operation: Cell::new(None),
            deadline: Some(deadline),
            team: OnceCell::new(),
        },
        future,
    )
}

/// `future` run with the current request's id, operation, deadline and team, for work a request
/// spawns off itself to make its own answer (the pages of `allPages`).
pub fn with_current_request<F: Future>(future: F) -> impl Future<Output = F::Output> {
    in_scope_of_current(true, future)
}

/// `future` run with the current request's id, operation and team but not its deadline, for work
/// a request starts that others share (a token refresh every waiting request uses, and that may
/// have a rotated token to write, must not end at one caller's `salesforce.max_answer_secs`), or
/// that outlives its answer (a load's uploads). A token refresh is no API request: no share is
/// charged for it.
pub fn with_current_request_id<F: Future>(future: F) -> impl Future<Output = F::Output> {
    in_scope_of_current(false, future)
}

fn in_scope_of_current<F: Future>(
    with_deadline: bool,
    future: F,
) -> impl Future<Output = F::Output> {
    let current = CURRENT
        .try_with(|c| Current {
            id: c.id.clone(),
            operation: Cell::new(c.operation.get()),
            deadline: c.deadline.filter(|_| with_deadline),
            team: c.team.clone(),
        })
        .ok();
    async move {
        match current {
            Some(current) => CURRENT.scope(current, future).await,
            None => future.await,
        }
    }
}

/// The id of the request being served, for log events made while it runs.
pub fn current_request_id() -> Option<String> {
    CURRENT
        .try_with(|c| c.id.to_str().ok().map(str::to_string))
        .ok()
        .flatten()
}

/// Notes the operation the request being served asked for.
pub fn note_operation(operation: OperationName) {
    let _ = CURRENT.try_with(|c| c.operation.set(Some(operation)));
}

/// Notes the team the request being served is charged to (its bearer token's first scope).
pub fn note_team(team: Team) {
    let _ = CURRENT.try_with(|c| c.team.set(team));
}

/// The team the request being served (or the work it spawned) is charged to, if any.
pub fn current_team() -> Option<Team> {
    CURRENT.try_with(|c| c.team.get().cloned()).ok().flatten()
}

/// When the answer of the request being served must have ended, if a request is being served.
pub fn current_deadline() -> Option<Instant> {
    CURRENT.try_with(|c| c.deadline).ok().flatten()
}

/// The operation the request being served asked for, once the pipeline has found it.
pub fn current_operation() -> Option<OperationName> {
    CURRENT.try_with(|c| c.operation.get()).ok().flatten()
}
