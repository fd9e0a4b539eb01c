//! The pages of a Bulk API 2.0 query result as Salesforce lists them (`resultPages`, API 58.0 and
//! later): up to five result URLs an answer, the next answer at its `nextRecordsUrl`. The lists
//! are followed ahead of the reads, each URL handed on as a page to read.
//!
//! Only Salesforce's own URLs are followed: a relative path to the job's results (or its next
//! list) at the job's API version, whose only parameter is a locator of Salesforce's shape; the
//! proxy then builds the path it reads itself. Anything else cuts the answer: a session must not go
//! wherever an answer points.

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::Arc;

use http_body_util::BodyExt;
use tokio::sync::mpsc;

use super::passing::PageError;
use super::{Ctx, PageCall};
use crate::pipeline::operation::{Locator, Pages};
use crate::salesforce::UpstreamResponse;

/// A list is five URLs: a few kilobytes.
const MAX_LIST_BYTES: usize = 64 * 1024;

/// One `resultPages` answer.
#[derive(Debug, serde::Deserialize)]
struct List {
    #[serde(rename = "resultPages", default)]
    result_pages: Vec<Listed>,
    /// The documentation's table spells it `nextRecordUrl`, its example `nextRecordsUrl`.
    #[serde(rename = "nextRecordsUrl", alias = "nextRecordUrl", default)]
    next: Option<String>,
    #[serde(default)]
    done: bool,
}

#[derive(Debug, serde::Deserialize)]
struct Listed {
    #[serde(rename = "resultUrl")]
    result_url: String,
}

/// What a list's URLs may name: the job's own results, or its own next list.
struct Shape {
    /// `/services/data/v{version}/jobs/query/{id}/`
    prefix: String,
}

impl Shape {
    fn new(version: &str, pages: &Pages) -> Shape {
        Shape {
            prefix: format!("/services/data/v{version}{}/", pages.job_path()),
        }
    }

    /// The locator `url` names under `leaf` (`results` or `resultPages`); `None`: the first
    /// page, which needs none.
    fn locator(&self, url: &str, leaf: &str) -> Result<Option<Locator>, String> {
        let shown = || {
            let cut = crate::common::redact::cut(url, 200);
            format!("{:?}", crate::common::redact::quotable(&cut))
        };
        let Some(rest) = url.strip_prefix(&self.prefix) else {
            return Err(format!(
                "Salesforce named {}, which is not this job's {leaf} at its version",
                shown()
            ));
        };
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if path != leaf {
            return Err(format!(
                "Salesforce named {}, which is not the job's {leaf}",
                shown()
            ));
        }
        let mut locator = None;
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if name != "locator" || locator.is_some() {
                return Err(format!(
                    "Salesforce named {}, whose query is not a single locator",
                    shown()
                ));
            }
            locator = Some(Locator::parse(&value).map_err(|reason| {
                format!(
                    "Salesforce named {}, whose locator is not one: {reason}",
                    shown()
                )
            })?);
        }
        Ok(locator)
    }
}

/// Follows the lists from `first` (the first `resultPages` answer, a 200), handing each page to
/// `to` in order, until the last list (or the caller has gone); a problem is handed on as the
/// next page, and the walk stops.
pub(super) async fn follow(
    ctx: Arc<Ctx>,
    pages: Pages,
    first: UpstreamResponse,
    to: mpsc::Sender<Result<PageCall, PageError>>,
) {
    if let Err(error) = walk(&ctx, &pages, first, &to).await {
        let _ = to.send(Err(error)).await;
    }
}

async fn walk(
    ctx: &Ctx,
    pages: &Pages,
    first: UpstreamResponse,
    to: &mpsc::Sender<Result<PageCall, PageError>>,
) -> Result<(), PageError> {
    let shape = Shape::new(ctx.credentials.api_version.as_str(), pages);
    // A digest of each locator named so far, of pages and of lists: a cycle of any length is
    // caught, in 8 bytes a locator.
    let digests = std::collections::hash_map::RandomState::new();
    let mut seen = HashSet::new();
    let mut listed: u64 = 0;
    let mut lists: u32 = 1;
    let mut answer = first;
    loop {
        let at = format!("result page list {lists}");
        let list = read_list(&at, answer).await?;
        for page in list.result_pages {
            let locator = shape
                .locator(&page.result_url, "results")
                .map_err(|reason| PageError::unexpected(&at, reason))?;
            let digest = digests.hash_one(locator.as_ref().map(Locator::as_str));
            if !seen.insert(digest) {
                return Err(PageError::unexpected(
                    &at,
                    "Salesforce listed a page it had listed before in this result (a cycle)",
                ));
            }
            listed += 1;
            if listed > ctx.max_pages {
                return Err(PageError::unexpected(
                    &at,
                    format!(
                        "the result has more pages than salesforce.max_pages ({})",
                        ctx.max_pages
                    ),
                ));
            }
            let call = PageCall::page(pages.page_path(locator.as_ref()), listed);
            if to.send(Ok(call)).await.is_err() {
                return Ok(());
            }
        }
        if list.done {
            break;
        }
        let Some(next) = list.next else {
            return Err(PageError::unexpected(
                &at,
                "Salesforce said the list is not done but named no next list",
            ));
        };
        let locator = shape
            .locator(&next, "resultPages")
            .map_err(|reason| PageError::unexpected(&at, reason))?
            .ok_or_else(|| PageError::unexpected(&at, "the next list has no locator"))?;
        if !seen.insert(digests.hash_one(Some(format!("list {}", locator.as_str())))) {
            return Err(PageError::unexpected(
                &at,
                "Salesforce named a list it had named before in this result (a cycle)",
            ));
        }
        lists += 1;
        let call = PageCall {
            path: pages.listing_path(Some(&locator)),
            label: format!("result page list {lists}"),
            compressed: false,
        };
        answer = ctx.read(&call, None).await?;
    }
    // A result Salesforce lists no page of is still a header line: its first page.
    if listed == 0 {
        let _ = to.send(Ok(PageCall::page(pages.page_path(None), 1))).await;
    }
    Ok(())
}

/// A list answer, read within its bound.
async fn read_list(at: &str, answer: UpstreamResponse) -> Result<List, PageError> {
    let bytes = http_body_util::Limited::new(answer.body, MAX_LIST_BYTES)
        .collect()
        .await
        .map_err(|e| PageError::unexpected(at, format!("reading it failed: {e}")))?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .map_err(|e| PageError::unexpected(at, format!("it is not a list of result pages: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_jobs_own_urls_at_its_version_are_followed() {
        let pages = Pages::for_query_job("750R0000000zlh9IAA", None);
        let shape = Shape::new("59.0", &pages);
        let base = "/services/data/v59.0/jobs/query/750R0000000zlh9IAA";
        assert_eq!(
            shape
                .locator(&format!("{base}/results?locator=MTAw%2B"), "results")
                .unwrap()
                .unwrap()
                .as_str(),
            "MTAw+"
        );
        assert!(shape
            .locator(&format!("{base}/results"), "results")
            .unwrap()
            .is_none());
        for bad in [
            format!("https://evil.example{base}/results?locator=MTAw"),
            format!("//evil.example{base}/results?locator=MTAw"),
            "/services/data/v58.0/jobs/query/750R0000000zlh9IAA/results?locator=MTAw".into(),
            "/services/data/v59.0/jobs/query/750R0000000zlhAIAQ/results?locator=MTAw".into(),
            format!("{base}/results/../../ingest?locator=MTAw"),
            format!("{base}/results?locator=MTAw&maxRecords=5"),
            format!("{base}/results?locator=MTAw&locator=MjAw"),
            format!("{base}/results?locator=a%26b"),
            format!("{base}/resultPages?locator=MTAw"),
        ] {
            assert!(shape.locator(&bad, "results").is_err(), "{bad}");
        }
        assert!(shape
            .locator(&format!("{base}/resultPages?locator=MTAw"), "resultPages")
            .is_ok());
    }

    #[test]
    fn a_list_is_read_with_either_spelling_of_its_next_url() {
        for name in ["nextRecordsUrl", "nextRecordUrl"] {
            let text =
                format!(r#"{{"resultPages":[{{"resultUrl":"/a"}}],"{name}":"/b","done":false}}"#);
            let list: List = serde_json::from_str(&text).unwrap();
            assert_eq!((list.next.as_deref(), list.done), (Some("/b"), false));
        }
    }
}
