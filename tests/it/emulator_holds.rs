//! The emulator's hold points and witnesses of what each job inserted, spoken to directly (no
//! proxy): each call held before its effect has none until let go, held after it has its effect
//! with the answer withheld, a caller gone while held wedges nothing, a dropped hold lets go;
//! records inserted per 2.0 job and per 1.0 batch; the 2.0 job list in pages.

use std::sync::Arc;
use std::time::Duration;

use sfbulk_emulator::{BatchSeen, Emulator, Held, IngestJobSeen, Org, Step, When, FAIL_MARKER};
use tokio::task::JoinHandle;

use crate::support::{element, test_settings, JsonValue};

/// A generous ceiling for a held call to be reached, or let go.
const PATIENCE: Duration = Duration::from_secs(30);

const NS: &str = "http://www.force.com/2009/06/asyncapi/dataload";

/// The emulator alone, on loopback port 0, with its session.
struct FakeOrg {
    url: String,
    org: Arc<Org>,
    http: reqwest::Client,
    session: String,
}

async fn fake_org() -> FakeOrg {
    let settings = test_settings().emulator;
    let emulator = Emulator::bind(&settings.to_emulator().expect("emulator settings"))
        .await
        .expect("emulator binds");
    let url = format!("http://{}", emulator.local_addr());
    let org = emulator.org();
    tokio::spawn(emulator.run_until(std::future::pending()));
    FakeOrg {
        url,
        org,
        http: reqwest::Client::new(),
        session: settings.access_token.expose().to_string(),
    }
}

/// A call's status and body.
type Answer = (u16, String);

async fn answer(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

impl FakeOrg {
    fn v2(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(
                method,
                format!("{}/services/data/v59.0/jobs/ingest{path}", self.url),
            )
            .header("authorization", format!("Bearer {}", self.session))
    }

    fn v1(&self, path: &str, content_type: &str, body: String) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}/services/async/59.0/job{path}", self.url))
            .header("x-sfdc-session", &self.session)
            .header("content-type", content_type)
            .body(body)
    }

    fn create2(&self) -> reqwest::RequestBuilder {
        self.v2(reqwest::Method::POST, "")
            .header("content-type", "application/json")
            .body(r#"{"object":"Contact","operation":"insert"}"#)
    }

    fn upload2(&self, job: &str, csv: &str) -> reqwest::RequestBuilder {
        self.v2(reqwest::Method::PUT, &format!("/{job}/batches"))
            .header("content-type", "text/csv")
            .body(csv.to_string())
    }

    fn state2(&self, job: &str, state: &str) -> reqwest::RequestBuilder {
        self.v2(reqwest::Method::PATCH, &format!("/{job}"))
            .header("content-type", "application/json")
            .body(format!(r#"{{"state":"{state}"}}"#))
    }

    fn create1(&self) -> reqwest::RequestBuilder {
        self.v1(
            "",
            "application/xml",
            format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><jobInfo xmlns=\"{NS}\"><operation>insert</operation><object>Contact</object><contentType>CSV</contentType></jobInfo>"),
        )
    }

    fn batch1(&self, job: &str, csv: &str) -> reqwest::RequestBuilder {
        self.v1(&format!("/{job}/batch"), "text/csv", csv.to_string())
    }

    fn close1(&self, job: &str) -> reqwest::RequestBuilder {
        self.v1(
            &format!("/{job}"),
            "application/xml",
            format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><jobInfo xmlns=\"{NS}\"><state>Closed</state></jobInfo>"),
        )
    }

    /// A new 2.0 ingest job's id.
    async fn job2(&self) -> String {
        let (status, body) = answer(self.create2()).await;
        assert_eq!(status, 200, "{body}");
        id_of_json(&body)
    }

    /// A new 1.0 job's id.
    async fn job1(&self) -> String {
        let (status, body) = answer(self.create1()).await;
        assert_eq!(status, 201, "{body}");
        element(&body, "id").unwrap()
    }

    fn seen2(&self) -> Vec<IngestJobSeen> {
        self.org.ingest_jobs_seen()
    }

    fn seen2_of(&self, job: &str) -> IngestJobSeen {
        self.seen2()
            .into_iter()
            .find(|seen| seen.id == job)
            .expect("the job was seen")
    }

    fn batches1_of(&self, job: &str) -> (String, Vec<BatchSeen>) {
        let seen = self
            .org
            .bulk1_jobs_seen()
            .into_iter()
            .find(|seen| seen.id == job)
            .expect("the job was seen");
        (seen.state, seen.batches)
    }
}

fn id_of_json(body: &str) -> String {
    let info: serde_json::Value = serde_json::from_str(body).unwrap();
    info["id"].as_str().unwrap().to_string()
}

/// Sends `request` on a task of its own, so the test can look at the org while it is held.
fn in_flight(request: reqwest::RequestBuilder) -> JoinHandle<Answer> {
    tokio::spawn(answer(request))
}

async fn reached(held: &Held) {
    tokio::time::timeout(PATIENCE, held.reached())
        .await
        .expect("the held call arrives");
}

async fn answered(call: JoinHandle<Answer>) -> Answer {
    tokio::time::timeout(PATIENCE, call)
        .await
        .expect("the call answers once let go")
        .unwrap()
}

#[tokio::test]
async fn bulk2_calls_held_before_their_effect_have_none_until_released() {
    let org = fake_org().await;

    let held = org.org.hold(Step::Bulk2Create, 1, When::Before);
    let create = in_flight(org.create2());
    reached(&held).await;
    assert!(org.seen2().is_empty(), "no job while the create is held");
    held.release();
    let (status, body) = answered(create).await;
    assert_eq!(status, 200);
    let job = id_of_json(&body);
    assert_eq!(org.seen2().len(), 1);

    let held = org.org.hold(Step::Bulk2Upload, 1, When::Before);
    let upload = in_flight(org.upload2(&job, "LastName\nA\nB\n"));
    reached(&held).await;
    assert_eq!(
        org.seen2_of(&job).uploads,
        0,
        "the upload has not reached the job"
    );
    held.release();
    assert_eq!(answered(upload).await.0, 201);
    assert_eq!(org.seen2_of(&job).records, 2);

    let held = org.org.hold(Step::Bulk2Close, 1, When::Before);
    let close = in_flight(org.state2(&job, "UploadComplete"));
    reached(&held).await;
    let seen = org.seen2_of(&job);
    assert_eq!((seen.close_requests, seen.state.as_str()), (0, "Open"));
    assert!(org.org.records_of("Contact").is_empty());
    held.release();
    assert_eq!(answered(close).await.0, 200);
    assert_eq!(org.seen2_of(&job).state, "JobComplete");
    assert_eq!(org.org.records_of("Contact").len(), 2);

    let other = org.job2().await;
    let held = org.org.hold(Step::Bulk2Abort, 1, When::Before);
    let abort = in_flight(org.state2(&other, "Aborted"));
    reached(&held).await;
    let seen = org.seen2_of(&other);
    assert_eq!((seen.abort_requests, seen.state.as_str()), (0, "Open"));
    held.release();
    assert_eq!(answered(abort).await.0, 200);
    assert_eq!(org.seen2_of(&other).state, "Aborted");
}

#[tokio::test]
async fn bulk2_calls_held_after_their_effect_have_it_with_the_answer_withheld() {
    let org = fake_org().await;

    let held = org.org.hold(Step::Bulk2Create, 1, When::After);
    let create = in_flight(org.create2());
    reached(&held).await;
    let seen = org.seen2();
    assert_eq!(seen.len(), 1, "the job exists while its answer is withheld");
    let job = seen[0].id.clone();
    assert!(!create.is_finished(), "the caller has no answer");
    held.release();
    let (status, body) = answered(create).await;
    assert_eq!((status, id_of_json(&body)), (200, job.clone()));

    let held = org.org.hold(Step::Bulk2Upload, 1, When::After);
    let upload = in_flight(org.upload2(&job, "LastName\nA\nB\n"));
    reached(&held).await;
    let seen = org.seen2_of(&job);
    assert_eq!((seen.uploads_accepted, seen.records), (1, 2));
    assert!(!upload.is_finished());
    held.release();
    assert_eq!(answered(upload).await.0, 201);

    let held = org.org.hold(Step::Bulk2Close, 1, When::After);
    let close = in_flight(org.state2(&job, "UploadComplete"));
    reached(&held).await;
    assert!(org.seen2_of(&job).closed);
    assert_eq!(org.org.records_of("Contact").len(), 2);
    assert!(!close.is_finished());
    held.release();
    assert_eq!(answered(close).await.0, 200);

    let other = org.job2().await;
    let held = org.org.hold(Step::Bulk2Abort, 1, When::After);
    let abort = in_flight(org.state2(&other, "Aborted"));
    reached(&held).await;
    assert_eq!(org.seen2_of(&other).state, "Aborted");
    assert!(!abort.is_finished());
    held.release();
    assert_eq!(answered(abort).await.0, 200);
}

#[tokio::test]
async fn bulk1_calls_held_before_have_no_effect_and_held_after_have_it_unanswered() {
    let org = fake_org().await;

    let held = org.org.hold(Step::Bulk1Create, 1, When::Before);
    let create = in_flight(org.create1());
    reached(&held).await;
    assert!(org.org.bulk1_jobs_seen().is_empty());
    held.release();
    let (status, body) = answered(create).await;
    assert_eq!(status, 201);
    let job = element(&body, "id").unwrap();

    // The second batch is held, the first passes.
    let held = org.org.hold(Step::Bulk1AddBatch, 2, When::Before);
    assert_eq!(
        answered(in_flight(org.batch1(&job, "LastName\nA\n")))
            .await
            .0,
        201
    );
    let second = in_flight(org.batch1(&job, "LastName\nB\nC\n"));
    reached(&held).await;
    assert_eq!(org.batches1_of(&job).1.len(), 1);
    assert_eq!(org.org.records_of("Contact").len(), 1);
    held.release();
    assert_eq!(answered(second).await.0, 201);
    assert_eq!(org.org.records_of("Contact").len(), 3);

    let held = org.org.hold(Step::Bulk1AddBatch, 1, When::After);
    let third = in_flight(org.batch1(&job, "LastName\nD\n"));
    reached(&held).await;
    assert_eq!(org.batches1_of(&job).1.len(), 3, "the batch was taken");
    assert!(!third.is_finished());
    held.release();
    assert_eq!(answered(third).await.0, 201);

    let held = org.org.hold(Step::Bulk1Close, 1, When::Before);
    let close = in_flight(org.close1(&job));
    reached(&held).await;
    assert_eq!(org.batches1_of(&job).0, "Open");
    held.release();
    assert_eq!(answered(close).await.0, 200);
    assert_eq!(org.batches1_of(&job).0, "Closed");

    let other = org.job1().await;
    let held = org.org.hold(Step::Bulk1Close, 1, When::After);
    let close = in_flight(org.close1(&other));
    reached(&held).await;
    assert_eq!(org.batches1_of(&other).0, "Closed");
    assert!(!close.is_finished());
    held.release();
    assert_eq!(answered(close).await.0, 200);

    let held = org.org.hold(Step::Bulk1Create, 1, When::After);
    let create = in_flight(org.create1());
    reached(&held).await;
    assert_eq!(org.org.bulk1_jobs_seen().len(), 3);
    assert!(!create.is_finished());
    held.release();
    assert_eq!(answered(create).await.0, 201);
}

#[tokio::test]
async fn a_caller_gone_while_held_wedges_nothing_before_leaves_no_effect_and_after_keeps_its() {
    let org = fake_org().await;

    let held = org.org.hold(Step::Bulk2Create, 1, When::Before);
    let create = in_flight(org.create2());
    reached(&held).await;
    // As a killed caller's connection closes: the call's future is dropped with it.
    create.abort();
    tokio::time::timeout(PATIENCE, held.ended())
        .await
        .expect("the org lets go of a call whose caller went away");
    assert!(
        org.seen2().is_empty(),
        "no job for a caller gone before the effect"
    );

    let job = org.job2().await;
    let held = org.org.hold(Step::Bulk2Upload, 1, When::Before);
    // Larger than the connection's buffers, so the body is still arriving when the call is held.
    let rows = "LastName\n".to_string() + &"A\n".repeat(2_000_000);
    let upload = in_flight(org.upload2(&job, &rows));
    reached(&held).await;
    upload.abort();
    tokio::time::timeout(PATIENCE, held.ended()).await.unwrap();
    drop(held);
    let seen = org.seen2_of(&job);
    assert_eq!((seen.uploads, seen.uploads_accepted), (0, 0));
    assert_eq!(
        answered(in_flight(org.upload2(&job, "LastName\nB\n")))
            .await
            .0,
        201,
        "the next call works"
    );

    let held = org.org.hold(Step::Bulk2Close, 1, When::After);
    let close = in_flight(org.state2(&job, "UploadComplete"));
    reached(&held).await;
    close.abort();
    tokio::time::timeout(PATIENCE, held.ended()).await.unwrap();
    assert_eq!(org.seen2_of(&job).state, "JobComplete", "the effect stays");
    assert_eq!(org.org.records_of("Contact").len(), 1);
    assert_eq!(org.job2().await.len(), 18, "the next call works");
}

#[tokio::test]
async fn a_dropped_hold_lets_its_call_go_on_and_one_dropped_early_holds_nothing() {
    let org = fake_org().await;
    let held = org.org.hold(Step::Bulk2Create, 1, When::Before);
    let create = in_flight(org.create2());
    reached(&held).await;
    drop(held);
    assert_eq!(answered(create).await.0, 200);

    let unused = org.org.hold(Step::Bulk2Create, 1, When::Before);
    drop(unused);
    assert_eq!(answered(in_flight(org.create2())).await.0, 200);
    assert_eq!(org.seen2().len(), 2);
}

#[tokio::test]
async fn inserted_counts_leave_out_failed_rows_per_2_0_job_and_per_1_0_batch() {
    let org = fake_org().await;
    let job = org.job2().await;
    let csv = format!("LastName,Description\nA,ok\nB,{FAIL_MARKER}\nC,ok\n");
    assert_eq!(answered(in_flight(org.upload2(&job, &csv))).await.0, 201);
    assert_eq!(
        org.seen2_of(&job).inserted,
        0,
        "nothing inserted before the run"
    );
    assert_eq!(
        answered(in_flight(org.state2(&job, "UploadComplete")))
            .await
            .0,
        200
    );
    let seen = org.seen2_of(&job);
    assert_eq!((seen.records, seen.inserted), (3, 2));

    let job = org.job1().await;
    assert_eq!(answered(in_flight(org.batch1(&job, &csv))).await.0, 201);
    assert_eq!(
        answered(in_flight(org.batch1(&job, "LastName\nD\n")))
            .await
            .0,
        201
    );
    let (_, batches) = org.batches1_of(&job);
    assert_eq!(
        batches
            .iter()
            .map(|b| (b.records, b.inserted))
            .collect::<Vec<_>>(),
        [(3, 2), (1, 1)]
    );
    assert!(batches.iter().all(|b| b.id.starts_with("751")));

    let stored = org.org.records_of("contact");
    let mut names: Vec<&str> = stored
        .iter()
        .map(|record| {
            record
                .iter()
                .find(|(n, _)| n == "LastName")
                .unwrap()
                .1
                .as_str()
        })
        .collect();
    names.sort();
    assert_eq!(names, ["A", "A", "C", "C", "D"]);
}

#[tokio::test]
async fn the_2_0_job_list_comes_in_pages_each_job_once_with_salesforces_paging_fields() {
    let org = fake_org().await;
    org.org.set_job_list_page(2);
    let mut created = Vec::new();
    for _ in 0..5 {
        created.push(org.job2().await);
    }
    let mut listed = Vec::new();
    let mut url = format!(
        "{}/services/data/v59.0/jobs/ingest?jobType=V2Ingest",
        org.url
    );
    let mut pages = 0;
    loop {
        pages += 1;
        let page = org
            .http
            .get(&url)
            .header("authorization", format!("Bearer {}", org.session))
            .send()
            .await
            .unwrap()
            .json_value()
            .await
            .unwrap();
        let records = page["records"].as_array().unwrap();
        assert!(records.len() <= 2, "{page}");
        listed.extend(
            records
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_string()),
        );
        if page["done"] == true {
            assert!(page["nextRecordsUrl"].is_null(), "{page}");
            break;
        }
        let next = page["nextRecordsUrl"].as_str().unwrap();
        assert!(
            next.starts_with("/services/data/v59.0/jobs/ingest?jobType=V2Ingest&queryLocator="),
            "{next}"
        );
        url = format!("{}{next}", org.url);
        assert!(pages < 10, "the pages end");
    }
    assert_eq!((pages, listed), (3, created));

    let none = org
        .http
        .get(format!(
            "{}/services/data/v59.0/jobs/ingest?jobType=Classic",
            org.url
        ))
        .header("authorization", format!("Bearer {}", org.session))
        .send()
        .await
        .unwrap()
        .json_value()
        .await
        .unwrap();
    assert_eq!(none["records"].as_array().unwrap().len(), 0);
    assert_eq!(none["done"], true);
}
