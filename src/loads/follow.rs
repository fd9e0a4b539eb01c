//! A load's jobs followed to their end: the proxy alone asks Salesforce for each job's state,
//! waiting longer between asks as a job runs on (`load.poll_min_ms` to `load.poll_max_ms`), for
//! at most `load.poll_max_secs` (then the job is `Unknown`: never counted as failed). A session
//! that expired with no grant to renew it stops the load until its caller brings a new one.

use std::sync::Arc;
use std::time::Instant;

use crate::loads::load::{Load, LoadState};
use crate::loads::settings::LoadSettings;
use crate::pipeline::context::Pipeline;

/// What the follower tells of a load's end.
pub type OnEnd = Arc<dyn Fn(&Load) + Send + Sync>;

/// Follows `load`'s jobs until each is done (or no longer followed); then ends the load.
pub async fn follow(
    pipeline: Arc<Pipeline>,
    settings: LoadSettings,
    load: Arc<Load>,
    ended: OnEnd,
) {
    let started = Instant::now();
    let mut wait = settings.poll_min_ms;
    loop {
        if load.state().is_done() {
            break;
        }
        // A caller's nudge (it brought a new session, or aborted the load) asks again at once;
        // the load's own changes (this follower's asks among them) do not, or each ask would
        // start the next one at once.
        let _ = tokio::time::timeout(wait, load.nudged()).await;
        if load.state().is_done() {
            break;
        }
        if started.elapsed() >= settings.poll_max_secs {
            load.update(|progress| {
                for job in progress.jobs.iter_mut().filter(|j| !j.is_done()) {
                    job.state = "Unknown".into();
                }
                progress.waiting = Some(format!(
                    "no longer followed after load.poll_max_secs ({} s): getLoad asks again",
                    settings.poll_max_secs.as_secs()
                ));
            });
            return;
        }
        if !ask(&pipeline, &load).await {
            // Stopped until a caller brings a session (or aborts), for at most what is left of
            // load.poll_max_secs.
            let left = settings.poll_max_secs.saturating_sub(started.elapsed());
            let _ = tokio::time::timeout(left, load.nudged()).await;
            continue;
        }
        wait = (wait * 2).min(settings.poll_max_ms);
        let all_done = load.progress().jobs.iter().all(|j| j.is_done());
        if all_done {
            break;
        }
    }
    end(&load, &ended);
}

/// Asks Salesforce once for every job not done; `false` when the session expired and nothing
/// can renew it (the load then waits for its caller).
pub async fn ask(pipeline: &Pipeline, load: &Load) -> bool {
    let (credentials, jobs) = {
        let progress = load.progress();
        let jobs: Vec<_> = progress
            .jobs
            .iter()
            .filter(|j| !j.is_done())
            .cloned()
            .collect();
        (progress.credentials.clone(), jobs)
    };
    for mut job in jobs {
        match load.side.refresh(pipeline, &credentials, &mut job).await {
            Ok(()) => load.update(|progress| {
                progress.waiting = None;
                if let Some(kept) = progress.jobs.iter_mut().find(|j| j.id == job.id) {
                    *kept = job;
                }
            }),
            Err(e) if e.session_expired() => {
                load.update(|progress| {
                    progress.waiting = Some(
                        "session expired: the load resumes when its caller's next getLoad or \
                         getLoadResults brings a valid session"
                            .into(),
                    )
                });
                return false;
            }
            Err(e) => {
                // A passing failure: asked again next time.
                tracing::event!(
                    target: "sfbulk_proxy::loads",
                    tracing::Level::DEBUG,
                    load.id = %load.id,
                    job.id = %job.id,
                    error = ?e,
                    "a job's state could not be read"
                );
            }
        }
    }
    true
}

/// Marks `load` ended by its jobs' states (unless it already ended), once.
pub fn end(load: &Load, ended: &OnEnd) {
    let now_ended = load.update(|progress| {
        if progress.state.is_done() {
            return false;
        }
        let failed = progress.jobs.iter().any(|j| j.has_failed());
        let aborted = progress.jobs.iter().any(|j| j.state == "Aborted");
        progress.state = if failed {
            LoadState::Failed
        } else if aborted {
            LoadState::Aborted
        } else {
            LoadState::Completed
        };
        progress.ended = Some(Instant::now());
        true
    });
    if now_ended {
        ended(load);
    }
}
