//! A load's jobs followed to their end: the proxy alone asks Salesforce for each job's state,
//! waiting longer between asks as a job runs on (`load.poll_min_ms` to `load.poll_max_ms`), for
//! at most `load.poll_max_secs` (then the job is `Unknown`: never counted as failed). A session
//! that expired with no grant to renew it stops the load until its caller brings a new one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::loads::book::{Book, Keeping, Place};
use crate::loads::load::{Job, Load, LoadState};
use crate::loads::settings::LoadSettings;
use crate::pipeline::context::Pipeline;

/// What the follower tells of a load's end.
pub type OnEnd = Arc<dyn Fn(&Load) + Send + Sync>;

/// Follows `load`'s jobs until each is done (or no longer followed); then ends the load. While
/// it follows, this process holds the load's lease in the fleet's book, renewed every third of
/// `load.lease_ms`, and keeps its record there after each ask; once the lease is lost (another
/// replica took the load on) it stops, and answers `false`: this process's view of the load is
/// then stale, and the record in the book is the one to answer from.
pub async fn follow(
    pipeline: Arc<Pipeline>,
    settings: LoadSettings,
    book: Book,
    load: Arc<Load>,
    ended: OnEnd,
) -> bool {
    let started = Instant::now();
    let mut backoff = settings.poll_min_ms;
    let mut wait = backoff;
    let mut pace = Pace::default();
    let mut away = false;
    loop {
        if load.state().is_done() {
            break;
        }
        // A caller's nudge (it brought a new session, or aborted the load) asks again at once;
        // the load's own changes (this follower's asks among them) do not, or each ask would
        // start the next one at once.
        if !hold(&book, &settings, &load, wait).await {
            return false;
        }
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
            // Kept so, and out of the fleet's running loads: no replica takes it on again with
            // a fresh clock.
            let _ = kept(&book, &load, &mut away).await;
            if let Some(place) = Place::of(&load.owner, &load.id) {
                let _ = book.mark_active(&place, false).await;
                let _ = book.leave(&place).await;
            }
            return true;
        }
        if !ask(&pipeline, &load).await {
            // Stopped until a caller brings a session (or aborts), for at most what is left of
            // load.poll_max_secs.
            let left = settings.poll_max_secs.saturating_sub(started.elapsed());
            if !hold(&book, &settings, &load, left).await {
                return false;
            }
            continue;
        }
        if let Ok(Keeping::EndedElsewhere) = kept(&book, &load, &mut away).await {
            break;
        }
        backoff = (backoff * 2).min(settings.poll_max_ms);
        let progress = load.progress();
        if progress.jobs.iter().all(|j| j.is_done()) {
            break;
        }
        // Asked again when the jobs' counts foretell the first end (within load.poll_min_ms and
        // load.poll_max_ms): sooner than a doubling wait, which sees an end up to that long
        // late, and with fewer asks on the way. Until a count moves, the backoff.
        wait = match pace.soonest_end(&progress.jobs, Instant::now()) {
            Some(left) => left.min(settings.poll_max_ms).max(settings.poll_min_ms),
            None => backoff,
        };
    }
    end(&load, &ended);
    let Some(place) = Place::of(&load.owner, &load.id) else {
        return true;
    };
    // The end is kept for the fleet however long the registry is away (for at most
    // load.poll_max_secs): a load left running in the book would be followed again.
    let ending = Instant::now();
    let mut logged = false;
    loop {
        let written = match book.keep(&load).await {
            Ok(_) => book.mark_active(&place, false).await,
            Err(error) => Err(error),
        };
        match written {
            Ok(()) => break,
            Err(_) if ending.elapsed() >= settings.poll_max_secs => break,
            Err(error) => {
                if !logged {
                    logged = true;
                    tracing::event!(
                        target: "sfbulk_proxy::loads",
                        tracing::Level::WARN,
                        load.id = %load.id,
                        %error,
                        "a load's end could not be kept in the registry; tried again until it is"
                    );
                }
                tokio::time::sleep(settings.lease_ms / 3).await;
            }
        }
    }
    let _ = book.leave(&place).await;
    true
}

/// Writes `load`'s record; a registry that does not answer is logged (once while it stays
/// away: `away`), and the record is written at the next ask.
async fn kept(book: &Book, load: &Load, away: &mut bool) -> Result<Keeping, ()> {
    let kept = book.keep(load).await;
    match &kept {
        Err(error) if !*away => tracing::event!(
            target: "sfbulk_proxy::loads",
            tracing::Level::WARN,
            load.id = %load.id,
            %error,
            "a load's record could not be kept in the registry; it is written again at each ask"
        ),
        _ => {}
    }
    *away = kept.is_err();
    kept.map_err(drop)
}

/// Waits `wait` (less if a caller nudges the load), renewing this process's lease on the load
/// every third of `load.lease_ms`; `false` once another replica holds it.
async fn hold(book: &Book, settings: &LoadSettings, load: &Load, wait: Duration) -> bool {
    let until = Instant::now() + wait;
    let Some(place) = Place::of(&load.owner, &load.id) else {
        return true;
    };
    loop {
        let step = until
            .saturating_duration_since(Instant::now())
            .min(settings.lease_ms / 3);
        let nudged = tokio::time::timeout(step, load.nudged()).await.is_ok();
        match book.follow_lease(&place, settings.lease_ms).await {
            Ok(true) => {}
            Ok(false) => return false,
            // The registry away: followed on here, the lease taken again once it is back.
            Err(error) => tracing::event!(
                target: "sfbulk_proxy::loads",
                tracing::Level::DEBUG,
                load.id = %load.id,
                %error,
                "a load's lease could not be renewed"
            ),
        }
        if nudged || Instant::now() >= until {
            return true;
        }
    }
}

/// How fast each running job's records are counted processed, from the first count the follower
/// saw of it.
#[derive(Default)]
struct Pace {
    /// Per job: when its count was first seen, and that count.
    first: HashMap<String, (Instant, u64)>,
}

impl Pace {
    /// The time left until the soonest end the running jobs' counts foretell at their pace so
    /// far (none for a job whose every record is counted); `None` when no job's count has moved
    /// since first seen.
    fn soonest_end(&mut self, jobs: &[Job], now: Instant) -> Option<Duration> {
        let mut soonest: Option<Duration> = None;
        for job in jobs.iter().filter(|j| !j.is_done()) {
            let &mut (since, from) = self
                .first
                .entry(job.id.clone())
                .or_insert((now, job.processed));
            let (done, total) = (job.processed, job.records());
            if done >= total {
                // Every record counted: the job's end is due.
                return Some(Duration::ZERO);
            }
            if done <= from {
                continue;
            }
            let per_record = now.duration_since(since).as_secs_f64() / (done - from) as f64;
            let Ok(left) = Duration::try_from_secs_f64(per_record * (total - done) as f64) else {
                continue;
            };
            soonest = Some(soonest.map_or(left, |s| s.min(left)));
        }
        soonest
    }
}

/// Asks Salesforce once for every job not done; `false` when the session expired and nothing
/// can renew it (the load then waits for its caller).
pub async fn ask(pipeline: &Pipeline, load: &Load) -> bool {
    ask_about(pipeline, load, |job| !job.is_done()).await
}

/// Asks Salesforce once for every job, done or not: after an abort, what each job did before it
/// was stopped (a Bulk 1.0 batch completed since the last ask is answered with its results, not
/// `unprocessed`).
pub async fn settle(pipeline: &Pipeline, load: &Load) {
    ask_about(pipeline, load, |_| true).await;
}

async fn ask_about(pipeline: &Pipeline, load: &Load, asked: impl Fn(&Job) -> bool) -> bool {
    let (credentials, jobs) = {
        let progress = load.progress();
        let jobs: Vec<_> = progress.jobs.iter().filter(|j| asked(j)).cloned().collect();
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
            Err(e) if e.org_budget().is_some() => {
                // The org is at its budget: asked again next time, the status saying why.
                let said = e.org_budget().unwrap_or_default();
                load.update(|progress| progress.waiting = Some(format!("org budget: {said}")));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, rows: u64, processed: u64) -> Job {
        Job {
            id: id.into(),
            state: "InProgress".into(),
            first_row: 1,
            last_row: rows,
            processed,
            failed: 0,
            error_message: None,
            digests: None,
            uploaded: false,
            piece_digest: None,
            batches: None,
        }
    }

    #[test]
    fn the_soonest_end_is_foretold_by_the_pace_of_the_counts_since_first_seen() {
        let mut pace = Pace::default();
        let start = Instant::now();
        // First seen: nothing foretold yet.
        let jobs = [job("a", 100_000, 0), job("b", 100_000, 10_000)];
        assert_eq!(pace.soonest_end(&jobs, start), None);
        // Two seconds on, a has done 20,000 (10,000 a second: 8 s left), b 30,000 (10,000
        // a second from its 10,000: 7 s left).
        let jobs = [job("a", 100_000, 20_000), job("b", 100_000, 30_000)];
        let left = pace.soonest_end(&jobs, start + Duration::from_secs(2));
        assert_eq!(left, Some(Duration::from_secs(7)));
        // A job whose count has not moved, or that is done, foretells nothing.
        let mut finished = job("c", 10, 10);
        finished.state = "JobComplete".into();
        let jobs = [job("a", 100_000, 0), finished];
        let mut fresh = Pace::default();
        fresh.soonest_end(&jobs, start);
        assert_eq!(
            fresh.soonest_end(&jobs, start + Duration::from_secs(5)),
            None
        );
        // One running with every record counted is due now.
        let jobs = [job("a", 100_000, 0), job("d", 10, 10)];
        assert_eq!(fresh.soonest_end(&jobs, start), Some(Duration::ZERO));
    }
}
