//! A load's input, taken in: read as it streams (gzip decoded on the way), checked and cut into
//! pieces, each piece sent (a job of its own, or a Bulk 1.0 batch) while the next is read; then,
//! only once the whole input was read and found good, every job is closed. A problem anywhere in
//! the input, or a caller who goes away before its end, aborts every job of the load: nothing is
//! processed. Bulk 1.0 processes a batch as it is added: there, each piece goes only once it was
//! read and checked whole, and once one was sent the pieces before a problem (or whatever else
//! stops the load) stand: the job is closed, never aborted.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use http_body_util::BodyExt;

use crate::loads::book::Book;
use crate::loads::calls::CallError;
use crate::loads::csv::{Checks, Found, Reader, MAX_PROBLEMS_LISTED};
use crate::loads::load::{Load, LoadState};
use crate::loads::pieces::{Piece, Splitter};
use crate::loads::settings::LoadSettings;
use crate::pipeline::context::Pipeline;
use crate::pipeline::fault::Fault;

/// Compressed bytes decoded at a time: a gzip bomb expands a slice at most about a
/// thousandfold, so one decoded slice stays a few megabytes.
const GZIP_SLICE_BYTES: usize = 4 * 1024;

/// A load's input.
pub enum Input {
    /// A CSV body as it streams; `gzip` when its `Content-Encoding` is.
    Body { body: Body, gzip: bool },
    /// An envelope's `inputData`.
    Text(Bytes),
}

/// Why a load's input was not taken.
#[derive(Debug)]
pub enum IngestError {
    /// The input has problems: the first ones, and how many were found (in all, when the input
    /// was `read_through`; reading stops once enough are listed).
    Invalid {
        listed: Vec<String>,
        count: u64,
        read_through: bool,
    },
    /// More jobs than `load.max_jobs` would be needed.
    TooManyJobs(usize),
    /// The body could not be read (the caller stalled, or broke off).
    Body(Fault),
    /// A call to Salesforce failed.
    Call(CallError),
    /// Bulk 1.0: `error` stopped the load after rows 1 to `sent` were sent; their batches stand,
    /// their job closed, and the load goes on with them.
    Stood { error: Box<IngestError>, sent: u64 },
    /// A load sent again whose input differs from what it recorded: at its `piece`th piece
    /// (1 is the first), or in its length. Nothing was sent.
    Mismatch { piece: usize },
}

/// A load sent again after the request that fed it went away (its replica died): what it
/// recorded of its pieces, in order, and what becomes of each once the input sent again is
/// found the same there.
#[derive(Debug, Default)]
pub struct Resume {
    pub pieces: Vec<Recorded>,
    /// Whether a job of the load was closed: its whole input had been read, so the input sent
    /// again must have no piece beyond the recorded ones; and, as a job ran, a refusal of the
    /// input sent again aborts none of its standing jobs nor gives its loadId back.
    pub closing: bool,
}

/// A piece a load recorded: its last row, its digest (none in a record written before digests
/// were noted with the job's making, whose upload was never answered), and whether its job
/// stands (closed, or holding its piece); if not, its job is aborted and the piece sent to a
/// new one.
#[derive(Debug)]
pub struct Recorded {
    pub last_row: u64,
    pub digest: Option<u64>,
    pub stands: bool,
}

/// Where a piece goes.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// A new job (or batch).
    New,
    /// The load's job `at` holds it already: it is not sent.
    Stands(usize),
    /// In place of the load's job `at`, which is aborted.
    Replaces(usize),
}

impl From<CallError> for IngestError {
    fn from(e: CallError) -> IngestError {
        IngestError::Call(e)
    }
}

/// What a load needs to take its input in.
pub struct Intake<'a> {
    pub pipeline: &'a Arc<Pipeline>,
    pub settings: &'a LoadSettings,
    pub book: &'a Book,
    pub load: &'a Arc<Load>,
    /// `server.body_read_timeout_secs`: the longest silence of a streamed body.
    pub read_timeout: Duration,
    /// For a load sent again: what it recorded.
    pub resume: Resume,
}

/// Aborts the jobs of a load whose input was not taken whole (refused, or the caller went
/// away), once its uploads have stopped; disarmed when every job was closed.
struct AbortUnlessClosed {
    pipeline: Arc<Pipeline>,
    load: Arc<Load>,
    armed: bool,
    why: &'static str,
    /// The jobs a load sent again already had that stand: they are left to a later send.
    sparing: Vec<String>,
}

impl Drop for AbortUnlessClosed {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (pipeline, load, why) = (self.pipeline.clone(), self.load.clone(), self.why);
        let sparing = std::mem::take(&mut self.sparing);
        tokio::spawn(async move {
            if sparing.is_empty() {
                abort_jobs(&pipeline, &load, why).await;
            } else {
                abort_new_jobs(&pipeline, &load, &sparing).await;
            }
        });
    }
}

/// Aborts the jobs of a load sent again that this send made, sparing the ones it had: the load
/// stays as it was recorded, to be sent again.
async fn abort_new_jobs(pipeline: &Pipeline, load: &Load, sparing: &[String]) {
    let (credentials, jobs) = {
        let progress = load.progress();
        let jobs: Vec<String> = progress
            .jobs
            .iter()
            .filter(|j| !j.is_done() && !sparing.contains(&j.id))
            .map(|j| j.id.clone())
            .collect();
        (progress.credentials.clone(), jobs)
    };
    for job in jobs {
        let _ = load.side.abort(pipeline, &credentials, &job).await;
    }
}

/// Aborts every job of `load` not yet done, and marks it aborted.
pub async fn abort_jobs(pipeline: &Pipeline, load: &Load, why: &str) {
    let (credentials, jobs) = {
        let progress = load.progress();
        let jobs: Vec<String> = progress
            .jobs
            .iter()
            .filter(|j| !j.is_done())
            .map(|j| j.id.clone())
            .collect();
        (progress.credentials.clone(), jobs)
    };
    for job in jobs {
        let aborted = load.side.abort(pipeline, &credentials, &job).await;
        load.update(|progress| {
            if let Some(j) = progress.jobs.iter_mut().find(|j| j.id == job) {
                if aborted.is_ok() {
                    j.state = "Aborted".into();
                }
            }
        });
        if let Err(e) = aborted {
            tracing::event!(
                target: "sfbulk_proxy::loads",
                tracing::Level::WARN,
                load.id = %load.id,
                job.id = %job,
                error = ?e,
                "a job of an aborted load could not be aborted"
            );
        }
    }
    load.update(|progress| {
        if !progress.state.is_done() {
            progress.state = LoadState::Aborted;
            progress.ended = Some(std::time::Instant::now());
            progress.waiting = Some(why.into());
        }
    });
}

/// Takes `input` in: every piece uploaded to a job of its own and, when the whole input was
/// good, every job closed. On an error, every job made is aborted (Bulk 1.0, once a batch was
/// sent: closed, the error `Stood`).
pub async fn take_in(intake: Intake<'_>, input: Input) -> Result<(), IngestError> {
    let Intake {
        pipeline,
        settings,
        book,
        load,
        read_timeout,
        resume,
    } = intake;
    let sparing: Vec<String> = {
        let progress = load.progress();
        resume
            .pieces
            .iter()
            .zip(&progress.jobs)
            .filter(|(piece, _)| piece.stands)
            .map(|(_, job)| job.id.clone())
            .collect()
    };
    let mut guard = AbortUnlessClosed {
        pipeline: pipeline.clone(),
        load: load.clone(),
        armed: true,
        why: "the caller went away before its input was whole: every job was aborted",
        sparing,
    };
    // Pieces go up one at a time while the next is read; at most one waits.
    let (pieces, mut queued) = tokio::sync::mpsc::channel::<(Piece, Slot)>(1);
    let uploader = {
        let (pipeline, book, load) = (pipeline.clone(), book.clone(), load.clone());
        let max_jobs = settings.max_jobs;
        tokio::spawn(crate::common::request_id::with_current_request_id(
            async move {
                while let Some((piece, slot)) = queued.recv().await {
                    if load.taken_over.load(std::sync::atomic::Ordering::SeqCst) {
                        return Err(IngestError::Call(CallError::Fault(Fault::LoadBusy(
                            "another request took this load's feeding over".into(),
                        ))));
                    }
                    match slot {
                        Slot::Stands(at) => load.side.attach(&load, at, piece),
                        Slot::Replaces(at) => {
                            let (credentials, old) = {
                                let progress = load.progress();
                                let old = progress.jobs.get(at).map(|j| j.id.clone());
                                (progress.credentials.clone(), old)
                            };
                            if let Some(old) = old {
                                // Its upload's outcome is not known: it must never run.
                                let _ = load.side.abort(&pipeline, &credentials, &old).await;
                            }
                            load.side
                                .send_piece(&pipeline, &book, &load, piece, Some(at))
                                .await?;
                        }
                        Slot::New => {
                            if load.progress().pieces() >= max_jobs {
                                return Err(IngestError::TooManyJobs(max_jobs));
                            }
                            load.side
                                .send_piece(&pipeline, &book, &load, piece, None)
                                .await?;
                        }
                    }
                }
                Ok(())
            },
        ))
    };
    let mut reader = Reader::checking(
        load.spec.dialect,
        Checks {
            max_field_chars: settings.max_field_chars,
        },
    );
    let mut splitter = Splitter::new(
        settings.spool_dir(),
        load.side.piece_limits(settings),
        load.spec.line_ending,
    )
    .cut_after(resume.pieces.iter().map(|p| p.last_row));
    let mut feeding = Feeding {
        splitter: &mut splitter,
        ready: Vec::new(),
        spool_error: None,
        columns: None,
        resume: &resume,
        verified: 0,
        held: Vec::new(),
        mismatch: None,
    };
    let mut ended = false;
    let keeps_before_problem = load.side.sends_pieces_before_a_problem();
    let take = |bytes: &[u8], done: bool| {
        if done {
            ended = true;
            reader.finish(&mut |found| feeding.take(found));
        } else {
            reader.feed(bytes, &mut |found| feeding.take(found));
        }
        // Once a problem is found nothing more goes up (the load will be refused), but for the
        // pieces read whole before it where those stand.
        let mut ready = std::mem::take(&mut feeding.ready);
        let first_problem = reader.problems().iter().map(|p| p.row).min();
        if feeding.spool_error.is_some() {
            ready.clear();
        } else if let Some(row) = first_problem {
            ready.retain(|(piece, _)| keeps_before_problem && piece.last_row < row);
        }
        if feeding.mismatch.is_some() {
            ready.clear();
        }
        Taken {
            enough: reader.problem_count() >= MAX_PROBLEMS_LISTED as u64
                || feeding.spool_error.is_some()
                || feeding.mismatch.is_some(),
            ready,
        }
    };
    let read = read_input(input, read_timeout, take, &pieces).await;
    let columns = feeding.columns.take();
    let spool_error = feeding.spool_error.take();
    // The last piece is placed as any other (checked against the record of a load sent
    // again); then an input sent again must have reached every recorded piece.
    let last = match feeding.splitter.complete() {
        Ok(Some(piece)) if feeding.mismatch.is_none() && spool_error.is_none() => {
            feeding.place(piece);
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(e) => Err(e),
    };
    if ended && feeding.mismatch.is_none() && feeding.verified < resume.pieces.len() {
        feeding.mismatch = Some(feeding.verified + 1);
    }
    let mismatch = feeding.mismatch;
    let tail = std::mem::take(&mut feeding.ready);
    load.update(|progress| {
        progress.total = reader.records();
        progress.bom_removed = reader.bom_removed();
        if let Some(columns) = columns {
            progress.columns = columns;
        }
    });
    let spooling =
        |e: std::io::Error| IngestError::Body(Fault::Internal(format!("spooling the input: {e}")));
    // What stops the load, if anything, first: the caller's body, the input's problems, the
    // spool; then whatever ended the uploader.
    let mut stop = match read {
        _ if mismatch.is_some() => {
            guard.why = "its input differs from what it recorded: nothing was sent";
            Some(IngestError::Mismatch {
                piece: mismatch.unwrap_or_default(),
            })
        }
        Err(e) => Some(e),
        Ok(()) if reader.problem_count() > 0 => {
            guard.why = "its input was refused: every job was aborted";
            // Refused, a load sent again gives its loadId back too (none of its jobs stands),
            // unless a job of it ran: what ran must never run again under a new load.
            if !resume.closing {
                guard.sparing.clear();
            }
            Some(IngestError::Invalid {
                listed: reader.problems().iter().map(|p| p.to_string()).collect(),
                count: reader.problem_count(),
                read_through: ended,
            })
        }
        Ok(()) => spool_error.map(spooling),
    };
    if stop.is_none() && ended {
        match last {
            Ok(()) => {
                for piece in tail {
                    let _ = pieces.send(piece).await;
                }
            }
            Err(e) => stop = Some(spooling(e)),
        }
    }
    drop(pieces);
    let uploaded = match uploader.await {
        Ok(uploaded) => uploaded,
        Err(e) => Err(IngestError::Body(Fault::Internal(format!(
            "the uploader ended: {e}"
        )))),
    };
    if stop.is_none() {
        guard.why =
            "a call to Salesforce failed while its input was taken in: every job was aborted";
    }
    let error = match (stop, uploaded) {
        (Some(stop), _) => Some(stop),
        (None, Err(e)) => Some(e),
        // Reading stopped only because the uploader ended; it gave no reason.
        (None, Ok(())) if !ended => Some(IngestError::Body(Fault::Internal(
            "the uploader ended early".into(),
        ))),
        (None, Ok(())) => None,
    };
    if load.taken_over.load(std::sync::atomic::Ordering::SeqCst) {
        // Another request feeds the load now, from its record: nothing of it is aborted here.
        guard.armed = false;
    }
    if let Some(IngestError::TooManyJobs(_)) = &error {
        // Refused for its size: a load sent again gives its loadId back, none of its jobs
        // stands, unless a job of it ran.
        if !resume.closing {
            guard.sparing.clear();
        }
    }
    let Some(error) = error else {
        // The whole input was read and found good: now, and only now, the jobs may run.
        load.side.close(pipeline, book, load).await?;
        guard.armed = false;
        started(load);
        return Ok(());
    };
    let sent = load.progress().rows_sent();
    if keeps_before_problem && sent > 0 {
        // The batches sent are being processed already, whatever stopped the load: they stand,
        // their job is closed, and the load goes on with them under its loadId.
        load.side.close(pipeline, book, load).await?;
        guard.armed = false;
        started(load);
        return Err(IngestError::Stood {
            error: Box::new(error),
            sent,
        });
    }
    Err(error)
}

/// Marks `load` under way: its jobs closed, Salesforce processing them.
fn started(load: &Load) {
    load.update(|progress| {
        if progress.state == LoadState::Uploading {
            progress.state = LoadState::InProgress;
        }
    });
}

/// Where the reader's findings go: records into pieces; complete pieces set aside for the
/// uploader, each with its slot (for a load sent again, once found the same as recorded).
struct Feeding<'s> {
    splitter: &'s mut Splitter,
    ready: Vec<(Piece, Slot)>,
    spool_error: Option<std::io::Error>,
    columns: Option<Vec<String>>,
    resume: &'s Resume,
    /// The recorded pieces found the same so far.
    verified: usize,
    /// Recorded pieces to send again, held until every recorded piece was found the same: a
    /// load sent again with another input sends nothing.
    held: Vec<(Piece, Slot)>,
    /// The first piece (1-based) found to differ.
    mismatch: Option<usize>,
}

impl Feeding<'_> {
    fn take(&mut self, found: Found<'_>) {
        if let Found::Header { names, .. } = &found {
            self.columns = Some(names.to_vec());
        }
        if self.spool_error.is_some() || self.mismatch.is_some() {
            return;
        }
        match self.splitter.take(found) {
            Ok(Some(piece)) => self.place(piece),
            Ok(None) => {}
            Err(e) => self.spool_error = Some(e),
        }
    }

    /// Gives a complete piece its slot: a recorded one is checked against the record first.
    fn place(&mut self, piece: Piece) {
        let recorded = &self.resume.pieces;
        let at = self.verified;
        let Some(record) = recorded.get(at) else {
            if self.resume.closing {
                // The whole input had been read: there is nothing beyond it.
                self.mismatch = Some(at + 1);
            } else {
                self.ready.push((piece, Slot::New));
            }
            return;
        };
        let same = piece.last_row == record.last_row
            && record.digest.is_none_or(|digest| digest == piece.digest);
        if !same {
            self.mismatch = Some(at + 1);
            return;
        }
        self.verified += 1;
        let slot = if record.stands {
            Slot::Stands(at)
        } else {
            Slot::Replaces(at)
        };
        self.held.push((piece, slot));
        if self.verified == recorded.len() {
            self.ready.append(&mut self.held);
        }
    }
}

/// What the reader made of some input: whether enough problems were found to answer with, and
/// the pieces complete so far that may be sent.
struct Taken {
    enough: bool,
    ready: Vec<(Piece, Slot)>,
}

/// Reads `input` to its end, handing each piece of bytes to `take` (and, at the end, an empty
/// one with `done`); complete pieces are sent to `pieces` (waiting while the uploader is busy).
/// Once the input is found bad `take` gives no piece that may not go, and reading stops when
/// enough problems are listed; it stops too when the uploader has ended (its failure is reported by the caller).
async fn read_input(
    input: Input,
    read_timeout: Duration,
    mut take: impl FnMut(&[u8], bool) -> Taken,
    pieces: &tokio::sync::mpsc::Sender<(Piece, Slot)>,
) -> Result<(), IngestError> {
    // Whether to read on.
    async fn send(taken: Taken, pieces: &tokio::sync::mpsc::Sender<(Piece, Slot)>) -> bool {
        for piece in taken.ready {
            if pieces.send(piece).await.is_err() {
                return false;
            }
        }
        !taken.enough
    }
    match input {
        Input::Text(text) => {
            if !send(take(&text, false), pieces).await {
                return Ok(());
            }
        }
        Input::Body { mut body, gzip } => {
            let mut decoder = gzip.then(|| flate2::write::MultiGzDecoder::new(Vec::new()));
            loop {
                let frame = tokio::time::timeout(read_timeout, body.frame())
                    .await
                    .map_err(|_| {
                        IngestError::Body(Fault::RequestTimeout(format!(
                            "the load's input was silent for more than {} s \
                             (server.body_read_timeout_secs)",
                            read_timeout.as_secs_f64()
                        )))
                    })?;
                let Some(frame) = frame else { break };
                let frame = frame.map_err(|e| {
                    IngestError::Body(Fault::ClientAborted(format!(
                        "the caller broke off while sending the load's input: {e}"
                    )))
                })?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                let go_on = match &mut decoder {
                    None => send(take(&data, false), pieces).await,
                    Some(decoder) => {
                        let mut go_on = true;
                        for slice in data.chunks(GZIP_SLICE_BYTES) {
                            decoder.write_all(slice).map_err(|e| {
                                IngestError::Body(Fault::InvalidRequest(format!(
                                    "the load's gzip input cannot be decoded: {e}"
                                )))
                            })?;
                            let decoded = std::mem::take(decoder.get_mut());
                            go_on = send(take(&decoded, false), pieces).await;
                            if !go_on {
                                break;
                            }
                        }
                        go_on
                    }
                };
                if !go_on {
                    return Ok(());
                }
            }
            if let Some(decoder) = decoder {
                let decoded = decoder.finish().map_err(|e| {
                    IngestError::Body(Fault::InvalidRequest(format!(
                        "the load's gzip input ends before its end: {e}"
                    )))
                })?;
                if !send(take(&decoded, false), pieces).await {
                    return Ok(());
                }
            }
        }
    }
    send(take(&[], true), pieces).await;
    Ok(())
}
