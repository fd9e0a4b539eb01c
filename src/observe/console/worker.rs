//! The console's worker: every `admin.console_sample_ms` it takes what requests handed over,
//! reads each answer only when its bytes differ from one read before, and samples the metrics'
//! counters for the traffic.

use std::sync::Arc;

use axum::body::Bytes;

use super::fingerprint::fingerprint;
use super::handover::Observation;
use super::jobs::{self, Described};
use super::{Console, Tables, ANSWERS_REMEMBERED, DESCRIBED_PER_ANSWER};
use crate::observe::metrics::Metrics;
use crate::registry::now_ms;
use std::sync::atomic::Ordering;

impl Console {
    /// Every `admin.console_sample_ms`, reads what requests handed over and samples the traffic,
    /// until `stop`. Started with the admin listener; a second one at the same time returns at
    /// once.
    pub async fn run(self: Arc<Console>, metrics: Arc<Metrics>, stop: impl std::future::Future) {
        if self.running.swap(true, Ordering::Relaxed) {
            return;
        }
        self.sample(&metrics);
        // The first sample is the baseline, taken now; the next come every sample_every.
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + self.sample_every,
            self.sample_every,
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => {
                    self.running.store(false, Ordering::Relaxed);
                    return;
                }
                _ = tick.tick() => {
                    // The list keeps its room for the next turn's requests.
                    let handed = {
                        let mut pending =
                            self.pending.lock().unwrap_or_else(|e| e.into_inner());
                        let room = pending.observations.len();
                        pending.bytes = 0;
                        std::mem::replace(&mut pending.observations, Vec::with_capacity(room))
                    };
                    for observation in handed {
                        self.take(observation);
                    }
                    self.sample(&metrics);
                }
            }
        }
    }

    fn sample(&self, metrics: &Metrics) {
        let snapshot = metrics.snapshot();
        self.tables().traffic.sample(&snapshot, now_ms());
    }

    fn take(&self, observation: Observation) {
        let now = now_ms();
        let mut tables = self.tables();
        let Tables {
            jobs,
            tokens,
            answers,
            answer_jobs,
            ..
        } = &mut *tables;
        if let Some(seen) = &observation.entry {
            Self::note_entry(tokens, seen, now);
        }
        if observation.answer.is_empty() {
            return;
        }
        let body: Bytes = match &observation.answer[..] {
            [one] => one.clone(),
            many => many.concat().into(),
        };
        let hash = fingerprint(&body);
        if let Some(ids) = answer_jobs.get(&hash) {
            for id in ids {
                jobs.touch(id, now);
            }
            return;
        }
        let via = observation.entry.as_ref().map(|e| &*e.key.registry_path);
        let mut ids = Vec::new();
        for item in jobs::describe(&body, DESCRIBED_PER_ANSWER) {
            ids.push(match &item {
                Described::Job(job) => job.id.clone(),
                Described::Batch(batch) => batch.job_id.clone(),
            });
            jobs.note(item, observation.api, via, now);
        }
        ids.dedup();
        if answers.len() >= ANSWERS_REMEMBERED {
            if let Some(oldest) = answers.pop_front() {
                answer_jobs.remove(&oldest);
            }
        }
        answers.push_back(hash);
        answer_jobs.insert(hash, ids);
    }
}
