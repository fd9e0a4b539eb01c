//! The API a load is made with, and what differs between the two: Bulk 2.0 makes a job per piece,
//! uploaded while the input is read and closed only once all of it was found good; Bulk 1.0 makes
//! one job and a batch per piece, which Salesforce processes the moment it is added, so each
//! piece is checked whole before it goes and the pieces before a problem stand.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::loads::book::Book;
use crate::loads::calls::{self, CallError};
use crate::loads::load::{Batch, Job, Load};
use crate::loads::pieces::{Piece, PieceLimits};
use crate::loads::settings::LoadSettings;
use crate::loads::{bulk1, load};
use crate::pipeline::context::Pipeline;
use crate::salesforce::Api;
use crate::session::Credentials;
use std::sync::Arc;

pub use crate::loads::load::Side;

impl Side {
    pub fn of(api: Api) -> Side {
        match api {
            Api::Bulk1 => Side::Bulk1,
            Api::Bulk2 => Side::Bulk2,
        }
    }

    pub fn api(self) -> Api {
        match self {
            Side::Bulk1 => Api::Bulk1,
            Side::Bulk2 => Api::Bulk2,
        }
    }

    /// How large a piece may grow: a Bulk 2.0 job's, or a Bulk 1.0 batch's.
    pub fn piece_limits(self, settings: &LoadSettings) -> PieceLimits {
        match self {
            Side::Bulk2 => PieceLimits {
                bytes: settings.job_bytes,
                records: settings.job_records,
            },
            Side::Bulk1 => PieceLimits {
                bytes: settings.batch_bytes,
                records: settings.batch_records,
            },
        }
    }

    /// Whether the pieces read whole before the input's first problem are sent (and stand): a
    /// Bulk 1.0 batch is processed as soon as it is added, so nothing waits for the whole input.
    pub fn sends_pieces_before_a_problem(self) -> bool {
        self == Side::Bulk1
    }

    /// Sends `piece` to Salesforce as `load`'s next job (Bulk 2.0: created and uploaded; in
    /// place of its job `at`, for a load sent again whose job there is not known to hold it) or
    /// batch (Bulk 1.0: the load's job created with its first piece). Each step is kept in the
    /// fleet's book as it is answered, so a load sent again after this process dies knows which
    /// jobs exist and which hold their piece.
    pub async fn send_piece(
        self,
        pipeline: &Pipeline,
        book: &Book,
        load: &Load,
        piece: Piece,
        at: Option<usize>,
    ) -> Result<(), CallError> {
        let credentials = load.progress().credentials.clone();
        match self {
            Side::Bulk2 => {
                // Recorded before it is sent: should its answer be lost with this process, a load
                // sent again finds the job it made among the open ones, and aborts it.
                load.update(|progress| progress.intent_ms = Some(crate::registry::now_ms()));
                keep_before(book, load).await?;
                let id = calls::create_job(pipeline, &credentials, &load.spec).await?;
                // Noted before its upload: a job that exists is aborted if the load does not
                // go on. Its piece's digest too: a load sent again after a crash during the
                // upload is checked against it before the piece goes to a new job.
                load.update(|progress| {
                    progress.intent_ms = None;
                    let mut job = new_job(id.clone(), &piece, None);
                    job.piece_digest = Some(piece.digest);
                    match at.and_then(|at| progress.jobs.get_mut(at)) {
                        Some(slot) => *slot = job,
                        None => progress.jobs.push(job),
                    }
                });
                keep(book, load).await;
                calls::upload(pipeline, &credentials, &id, &piece).await?;
                let digests = Some(Arc::new(piece.digests));
                load.update(|progress| {
                    if let Some(job) = progress.jobs.iter_mut().find(|j| j.id == id) {
                        job.digests = digests;
                        job.uploaded = true;
                    }
                });
                keep(book, load).await;
            }
            Side::Bulk1 => {
                let existing = load.progress().jobs.first().map(|j| j.id.clone());
                let job = match existing {
                    Some(id) => id,
                    None => {
                        let id = bulk1::create_job(pipeline, &credentials, &load.spec).await?;
                        let mut job = new_job(id.clone(), &piece, Some(Vec::new()));
                        job.last_row = piece.first_row - 1;
                        load.update(|progress| progress.jobs.push(job));
                        // Recorded before its first batch, which runs the moment it is added:
                        // a load sent again after a crash here finds that batch in this job's
                        // list, never adds it to a second job.
                        keep_before(book, load).await?;
                        id
                    }
                };
                let batch = bulk1::add_batch(pipeline, &credentials, &job, &piece).await?;
                load.update(|progress| {
                    let job = &mut progress.jobs[0];
                    job.last_row = piece.last_row;
                    job.batches.get_or_insert_with(Vec::new).push(Batch {
                        id: batch,
                        state: "Queued".into(),
                        state_message: None,
                        first_row: piece.first_row,
                        last_row: piece.last_row,
                        processed: 0,
                        failed: 0,
                        piece_digest: Some(piece.digest),
                    });
                });
                keep(book, load).await;
            }
        }
        Ok(())
    }

    /// Takes `piece`, sent again and found the same as the one job `at` of a load sent again
    /// holds, without sending it: its row digests are what the results need here.
    pub fn attach(self, load: &Load, at: usize, piece: Piece) {
        if self == Side::Bulk1 {
            // A batch's results come beside its request, in order: no digests are needed.
            return;
        }
        let Piece { digests, .. } = piece;
        load.update(|progress| {
            if let Some(job) = progress.jobs.get_mut(at) {
                job.digests = Some(Arc::new(digests));
            }
        });
    }

    /// Lets `load`'s jobs run: every job closed (Bulk 2.0: `UploadComplete`; Bulk 1.0: its job
    /// `Closed`, no more batches to come).
    pub async fn close(
        self,
        pipeline: &Pipeline,
        book: &Book,
        load: &Load,
    ) -> Result<(), CallError> {
        if self == Side::Bulk2 {
            // Every job and what it holds, known to the fleet before any of them may run.
            keep_before(book, load).await?;
        }
        let (credentials, jobs) = {
            let progress = load.progress();
            let ids: Vec<String> = progress.jobs.iter().map(|j| j.id.clone()).collect();
            (progress.credentials.clone(), ids)
        };
        let closed = match self {
            Side::Bulk2 => "UploadComplete",
            Side::Bulk1 => "Closed",
        };
        for job in &jobs {
            // A load sent again after its feeder died may hold jobs closed already.
            let open = load
                .progress()
                .jobs
                .iter()
                .any(|j| &j.id == job && j.state == "Open");
            if !open {
                continue;
            }
            self.set_state(pipeline, &credentials, job, closed).await?;
            load.update(|progress| {
                if let Some(j) = progress.jobs.iter_mut().find(|j| &j.id == job) {
                    j.state = closed.into();
                }
            });
        }
        Ok(())
    }

    /// Aborts `job`.
    pub async fn abort(
        self,
        pipeline: &Pipeline,
        credentials: &Credentials,
        job: &str,
    ) -> Result<(), CallError> {
        self.set_state(pipeline, credentials, job, "Aborted").await
    }

    async fn set_state(
        self,
        pipeline: &Pipeline,
        credentials: &Credentials,
        job: &str,
        state: &str,
    ) -> Result<(), CallError> {
        match self {
            Side::Bulk2 => calls::set_state(pipeline, credentials, job, state).await,
            Side::Bulk1 => bulk1::set_state(pipeline, credentials, job, state).await,
        }
    }

    /// Salesforce's state of `job` (and of its batches), written into it.
    pub async fn refresh(
        self,
        pipeline: &Pipeline,
        credentials: &Credentials,
        job: &mut Job,
    ) -> Result<(), CallError> {
        match self {
            Side::Bulk2 => calls::refresh(pipeline, credentials, job).await,
            Side::Bulk1 => bulk1::refresh(pipeline, credentials, job).await.map(drop),
        }
    }

    /// The load's status as this API's callers read it: JSON (Bulk 2.0), `<loadInfo>` XML
    /// (Bulk 1.0).
    pub fn status_answer(self, status: StatusCode, load: &Load) -> Response {
        let (content_type, body) = self.status_body(load);
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    }

    /// The status document and its content type.
    pub fn status_body(self, load: &Load) -> (&'static str, String) {
        let status: load::LoadStatus = load.status();
        match self {
            Side::Bulk2 => (
                "application/json",
                serde_json::to_string(&status).unwrap_or_default(),
            ),
            Side::Bulk1 => ("application/xml", status.to_xml()),
        }
    }
}

fn new_job(id: String, piece: &Piece, batches: Option<Vec<Batch>>) -> Job {
    Job {
        id,
        state: "Open".into(),
        first_row: piece.first_row,
        last_row: piece.last_row,
        processed: 0,
        failed: 0,
        error_message: None,
        digests: None,
        uploaded: false,
        piece_digest: None,
        batches,
    }
}

/// Writes `load`'s record as its feeding goes; a registry that does not answer is logged, and the
/// record is written at the next step.
async fn keep(book: &Book, load: &Load) {
    if let Err(error) = book.keep_fed(load).await {
        tracing::event!(
            target: "sfbulk_proxy::loads",
            tracing::Level::WARN,
            load.id = %load.id,
            %error,
            "a step of a load's feeding could not be kept in the registry"
        );
    }
}

/// Writes `load`'s record before a step that cannot be undone (a Bulk 1.0 job's first batch,
/// which runs as it is added; a Bulk 2.0 load's closes, which let its jobs run): a load sent
/// again after this process dies must know of everything that may run. A registry that does
/// not take it stops the load there.
async fn keep_before(book: &Book, load: &Load) -> Result<(), CallError> {
    book.keep_fed(load)
        .await
        .map_err(|error| CallError::Fault(error.into()))
}
