//! Hold points: a chosen call ([`Step`]) held before or after its effect ([`When`]) until the
//! test that set the hold ([`Held`]) lets it go, so a test can stop a client at an exact step.
//!
//! One table ([`STEPS`]) says which requests each step is: method, path shape, and for calls that
//! share a path, the state their body asks for. The router asks [`Holds::catch`] about every
//! request; nothing else knows holds exist.

use std::sync::Mutex;

use axum::http::Method;
use tokio::sync::watch;

/// A call a test can hold: those of Bulk API 2.0 ingest and Bulk API 1.0 that create, fill or end
/// a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `POST /services/data/vXX.X/jobs/ingest`: an ingest job created.
    Bulk2Create,
    /// `PUT .../jobs/ingest/{id}/batches`: its data uploaded.
    Bulk2Upload,
    /// `PATCH .../jobs/ingest/{id}` with `{"state":"UploadComplete"}`: closed.
    Bulk2Close,
    /// `PATCH .../jobs/ingest/{id}` with `{"state":"Aborted"}`: aborted.
    Bulk2Abort,
    /// `POST /services/async/XX.X/job`: a 1.0 job created.
    Bulk1Create,
    /// `POST .../job/{id}/batch`: a batch added.
    Bulk1AddBatch,
    /// `POST .../job/{id}` with state `Closed`: the job closed.
    Bulk1Close,
}

/// Where a held call waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Before it has any effect: the org has not seen it yet.
    Before,
    /// Once its effect is applied (job created, data taken, job closed), its answer withheld: the
    /// caller cannot know the outcome.
    After,
}

/// Which requests each step is: method, path (`*` any one segment; a trailing `/` is the same
/// path, as the routes take both), and the state the body must ask for, if any.
const STEPS: [(Step, &str, &str, Option<&str>); 7] = [
    (
        Step::Bulk2Create,
        "POST",
        "/services/data/*/jobs/ingest",
        None,
    ),
    (
        Step::Bulk2Upload,
        "PUT",
        "/services/data/*/jobs/ingest/*/batches",
        None,
    ),
    (
        Step::Bulk2Close,
        "PATCH",
        "/services/data/*/jobs/ingest/*",
        Some("UploadComplete"),
    ),
    (
        Step::Bulk2Abort,
        "PATCH",
        "/services/data/*/jobs/ingest/*",
        Some("Aborted"),
    ),
    (Step::Bulk1Create, "POST", "/services/async/*/job", None),
    (
        Step::Bulk1AddBatch,
        "POST",
        "/services/async/*/job/*/batch",
        None,
    ),
    (
        Step::Bulk1Close,
        "POST",
        "/services/async/*/job/*",
        Some("Closed"),
    ),
];

impl Step {
    /// The step a request is, if any; `body` is the request's (decoded) body when it was read.
    fn of(method: &Method, path: &str, body: Option<&[u8]>) -> Option<Step> {
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        let shaped = |pattern: &str| {
            let wanted: Vec<&str> = pattern.split('/').collect();
            wanted.len() == segments.len()
                && wanted
                    .iter()
                    .zip(&segments)
                    .all(|(w, s)| (*w == "*" && !s.is_empty()) || w == s)
        };
        STEPS
            .iter()
            .filter(|(_, m, pattern, _)| method.as_str() == *m && shaped(pattern))
            .find(|(_, _, _, state)| {
                state.is_none_or(|state| body.and_then(state_named).as_deref() == Some(state))
            })
            .map(|(step, ..)| *step)
    }
}

/// The state a JSON (`{"state":...}`) or XML (`<jobInfo><state>...`) body asks for.
fn state_named(body: &[u8]) -> Option<String> {
    if let Ok(serde_json::Value::Object(members)) = serde_json::from_slice(body) {
        return members.get("state")?.as_str().map(str::to_string);
    }
    crate::xml::read_document(body)
        .ok()?
        .children
        .into_iter()
        .find(|c| c.name == "state")
        .map(|c| c.text.trim().to_string())
}

/// The holds set and not yet caught.
#[derive(Default)]
pub(crate) struct Holds {
    armed: Mutex<Vec<Armed>>,
}

/// A hold waiting for its call.
struct Armed {
    step: Step,
    when: When,
    /// Calls of its step still to pass before the one it holds.
    left: usize,
    reached: watch::Sender<bool>,
    released: watch::Receiver<bool>,
}

/// A hold a test set: see [`crate::Org::hold`]. Dropping it releases the call (or, before the
/// call came, takes the hold away), so a test that ends early never leaves the org waiting.
pub struct Held {
    reached: watch::Receiver<bool>,
    released: watch::Sender<bool>,
}

impl Held {
    /// Resolves once the chosen call is being held.
    pub async fn reached(&self) {
        let mut reached = self.reached.clone();
        // The sender goes only with the call, once it was reached.
        let _ = reached.wait_for(|reached| *reached).await;
    }

    /// Resolves once the call caught is held no more: released, or dropped with its connection
    /// because its caller went away (then, unreleased, `Before` had no effect).
    pub async fn ended(&self) {
        let mut reached = self.reached.clone();
        self.reached().await;
        // The sender goes with the call's hold.
        while reached.changed().await.is_ok() {}
    }

    /// Lets the call go on (and answer). A hold released before its call came lets that call
    /// pass without waiting.
    pub fn release(&self) {
        self.released.send_replace(true);
    }
}

/// A call caught by a hold.
pub(crate) struct Caught {
    when: When,
    reached: watch::Sender<bool>,
    released: watch::Receiver<bool>,
}

impl Caught {
    pub(crate) fn when(&self) -> When {
        self.when
    }

    /// Says the call is held, then waits until the test lets it go or drops its [`Held`].
    pub(crate) async fn hold(mut self) {
        self.reached.send_replace(true);
        let _ = self.released.wait_for(|released| *released).await;
    }
}

impl Holds {
    /// Holds the `nth` call of `step` from now (1: the next), `when` says where.
    pub(crate) fn arm(&self, step: Step, nth: usize, when: When) -> Held {
        assert!(nth > 0, "calls are counted from 1");
        let (reached_tx, reached_rx) = watch::channel(false);
        let (released_tx, released_rx) = watch::channel(false);
        self.armed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Armed {
                step,
                when,
                left: nth - 1,
                reached: reached_tx,
                released: released_rx,
            });
        Held {
            reached: reached_rx,
            released: released_tx,
        }
    }

    /// The hold that catches this request, if any: the request counts towards every hold set on
    /// its step, and the one whose turn it is takes it.
    pub(crate) fn catch(&self, method: &Method, path: &str, body: Option<&[u8]>) -> Option<Caught> {
        let mut armed = self.armed.lock().unwrap_or_else(|e| e.into_inner());
        // Holds whose `Held` was dropped are gone.
        armed.retain(|a| a.released.has_changed().is_ok());
        if armed.is_empty() {
            return None;
        }
        let step = Step::of(method, path, body)?;
        let mut turn = None;
        for (i, hold) in armed.iter_mut().enumerate().filter(|(_, h)| h.step == step) {
            if hold.left == 0 && turn.is_none() {
                turn = Some(i);
            } else {
                hold.left = hold.left.saturating_sub(1);
            }
        }
        let hold = armed.remove(turn?);
        Some(Caught {
            when: hold.when,
            reached: hold.reached,
            released: hold.released,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_step_is_told_by_method_path_and_the_state_its_body_asks_for() {
        let of =
            |method: Method, path: &str, body: &str| Step::of(&method, path, Some(body.as_bytes()));
        assert_eq!(
            of(Method::POST, "/services/data/v59.0/jobs/ingest", "{}"),
            Some(Step::Bulk2Create)
        );
        assert_eq!(
            Step::of(
                &Method::PUT,
                "/services/data/v59.0/jobs/ingest/750x/batches/",
                None
            ),
            Some(Step::Bulk2Upload)
        );
        let patch = "/services/data/v59.0/jobs/ingest/750x";
        assert_eq!(
            of(Method::PATCH, patch, r#"{"state":"UploadComplete"}"#),
            Some(Step::Bulk2Close)
        );
        assert_eq!(
            of(Method::PATCH, patch, r#"{"state":"Aborted"}"#),
            Some(Step::Bulk2Abort)
        );
        assert_eq!(of(Method::PATCH, patch, r#"{"state":"Open"}"#), None);
        assert_eq!(of(Method::GET, patch, ""), None);
        assert_eq!(
            of(Method::POST, "/services/async/59.0/job/", "<jobInfo/>"),
            Some(Step::Bulk1Create)
        );
        assert_eq!(
            of(
                Method::POST,
                "/services/async/59.0/job/750x/batch",
                "A\n1\n"
            ),
            Some(Step::Bulk1AddBatch)
        );
        let job = "/services/async/59.0/job/750x";
        assert_eq!(
            of(
                Method::POST,
                job,
                "<jobInfo xmlns=\"x\"><state>Closed</state></jobInfo>"
            ),
            Some(Step::Bulk1Close)
        );
        assert_eq!(
            of(Method::POST, job, r#"{"state":"Closed"}"#),
            Some(Step::Bulk1Close)
        );
        assert_eq!(
            of(
                Method::POST,
                job,
                "<jobInfo><state>Aborted</state></jobInfo>"
            ),
            None
        );
        assert_eq!(
            of(Method::POST, "/services/async/59.0/job/750x/batch/751y", ""),
            None
        );
    }

    #[test]
    fn the_nth_call_of_a_step_is_caught_and_a_dropped_hold_catches_nothing() {
        let holds = Holds::default();
        let path = "/services/data/v59.0/jobs/ingest";
        let catch = || holds.catch(&Method::POST, path, Some(b"{}"));
        let second = holds.arm(Step::Bulk2Create, 2, When::After);
        let dropped = holds.arm(Step::Bulk2Create, 1, When::Before);
        drop(dropped);
        assert!(catch().is_none(), "the first call passes");
        let caught = catch().expect("the second is held");
        assert_eq!(caught.when(), When::After);
        assert!(catch().is_none(), "a hold catches one call");
        drop(second);
    }
}
