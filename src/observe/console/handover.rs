//! The hand-over: what a request gives the console after its answer (its session's registry
//! entry, and a job or batch answer's frames through a [`Tap`]), put on a list under a lock,
//! bounded in count and bytes, for the worker's next turn.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, Response};

use super::{Console, MAX_ANSWER_BYTES, PENDING, PENDING_BYTES};
use crate::registry::RegistryKey;
use crate::salesforce::origin::Origin;
use std::sync::atomic::Ordering;

/// What one request saw.
#[derive(Clone)]
pub(super) struct Observation {
    pub(super) api: &'static str,
    /// The registry entry the session came from.
    pub(super) entry: Option<EntrySeen>,
    /// A job or batch answer's frames.
    pub(super) answer: Vec<Bytes>,
}

/// What requests handed over since the worker's last turn, and their answers' bytes.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) observations: Vec<Observation>,
    pub(super) bytes: usize,
}

/// A request's session, as its registry entry stood.
#[derive(Clone)]
pub struct EntrySeen {
    pub key: RegistryKey,
    pub instance: Origin,
    pub stored_at_ms: u64,
    pub version: u64,
    /// The envelope's `intervalTime`: when the entry is refreshed before use.
    pub interval_ms: u64,
}

impl Console {
    /// `response`, relayed from Salesforce for an `api` call made with the session `entry`:
    /// a job or batch answer (2xx, XML or JSON, not compressed, at most [`MAX_ANSWER_BYTES`])
    /// gets a [`Tap`], for the body that writes the access line to feed it the answer's frames
    /// and its end (the access log finds it in [`crate::observe::access_log::Handled`]); otherwise only
    /// the entry is handed over, now.
    pub fn watch(
        self: &Arc<Console>,
        response: Response<Body>,
        api: &'static str,
        entry: Option<EntrySeen>,
    ) -> (Response<Body>, Option<Tap>) {
        if !self.is_running() {
            return (response, None);
        }
        let headers = response.headers();
        let readable = response.status().is_success()
            && !headers.contains_key(header::CONTENT_ENCODING)
            && headers
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| is_xml_or_json(v.as_bytes()))
            && headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok())
                .is_none_or(|length| length <= MAX_ANSWER_BYTES);
        let observation = Observation {
            api,
            entry,
            answer: Vec::new(),
        };
        if !readable {
            self.hand_over(observation);
            return (response, None);
        }
        let tap = Tap {
            kept: 0,
            observation,
            console: self.clone(),
        };
        (response, Some(tap))
    }

    fn hand_over(&self, observation: Observation) {
        if observation.entry.is_none() && observation.answer.is_empty() {
            return;
        }
        let mut observation = observation;
        let bytes: usize = observation.answer.iter().map(Bytes::len).sum();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.observations.len() >= PENDING {
            drop(pending);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if pending.bytes + bytes > PENDING_BYTES {
            observation.answer = Vec::new();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            pending.bytes += bytes;
        }
        pending.observations.push(observation);
    }
}

/// Whether a content type is XML or JSON (`application/xml`, `text/xml`, `…+xml`,
/// `application/json`, with or without parameters).
fn is_xml_or_json(content_type: &[u8]) -> bool {
    let essence = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let subtype = match essence.iter().position(|&b| b == b'/') {
        Some(slash) => &essence[slash + 1..],
        None => return false,
    };
    [&b"xml"[..], b"json"].iter().any(|kind| {
        subtype.eq_ignore_ascii_case(kind)
            || (subtype.len() > kind.len()
                && subtype[subtype.len() - kind.len() - 1] == b'+'
                && subtype[subtype.len() - kind.len()..].eq_ignore_ascii_case(kind))
    })
}

/// A job or batch answer's frames, kept (shared, not copied) up to [`MAX_ANSWER_BYTES`] as
/// they go out, and handed to the console at the answer's end. The access log's body, which sees
/// every answer's frames and end, feeds it: one body wrapper per answer, not two. (Clone only
/// because response extensions must be, and it rides in one; nothing clones it.)
#[derive(Clone)]
pub struct Tap {
    kept: usize,
    observation: Observation,
    console: Arc<Console>,
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tap({} bytes kept)", self.kept)
    }
}

impl Tap {
    /// A frame of the answer went out.
    pub fn frame(&mut self, data: &Bytes) {
        self.kept += data.len();
        if self.kept > MAX_ANSWER_BYTES {
            self.observation.answer = Vec::new();
        } else {
            self.observation.answer.push(data.clone());
        }
    }

    /// The answer ended; `complete`: all of it went out (a cut answer describes nothing, its
    /// session still counts).
    pub fn end(mut self, complete: bool) {
        if !complete {
            self.observation.answer = Vec::new();
        }
        self.console.hand_over(self.observation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn answers_waiting_for_the_worker_are_bounded_in_bytes_and_count() {
        let console = Console::new(10, Duration::from_secs(1));
        let answer = || Observation {
            api: "bulk1",
            entry: None,
            answer: vec![Bytes::from(vec![b' '; 1024 * 1024])],
        };
        for _ in 0..(PENDING_BYTES / (1024 * 1024) + 3) {
            console.hand_over(answer());
        }
        let pending = console.pending.lock().unwrap();
        assert!(pending.bytes <= PENDING_BYTES);
        let kept: usize = pending.observations.iter().map(|o| o.answer.len()).sum();
        assert_eq!(kept, PENDING_BYTES / (1024 * 1024));
        assert_eq!(console.dropped.load(Ordering::Relaxed), 3);
        drop(pending);
        for _ in 0..PENDING {
            console.hand_over(answer());
        }
        assert_eq!(console.pending.lock().unwrap().observations.len(), PENDING);
    }

    #[test]
    fn xml_and_json_answers_are_told_by_their_content_type() {
        for yes in [
            "application/xml",
            "application/xml; charset=UTF-8",
            "text/xml",
            "application/json",
            "application/atom+xml",
            "APPLICATION/JSON ; charset=utf-8",
        ] {
            assert!(is_xml_or_json(yes.as_bytes()), "{yes}");
        }
        for no in [
            "text/csv",
            "xml",
            "application/zip",
            "application/xmlx",
            "",
            "text/x-json5",
        ] {
            assert!(!is_xml_or_json(no.as_bytes()), "{no}");
        }
    }
}
