//! A team's share of an org's API budget (`server.token_scopes.TEAM.api_share_percent`) through
//! real processes against the emulator, on a real `redis-server`: two teams with bearer tokens
//! from token files share one org; the team at its share is refused across two replicas while the
//! other is still served, Salesforce never refusing; and every call a request makes is charged to
//! its team, the pages it reads in tasks of their own included.

use std::path::{Path, PathBuf};

use futures_util::future::join_all;

use crate::support::process::{start_proxy, ProxyProcess};
use crate::support::redis::RedisServer;
use crate::support::{element, envelope, spawn_app_with, temp_dir, TestApp};

/// The org's limit in the emulator, and the proxy's ceiling of it: 800 calls.
const API_LIMIT: u64 = 1000;
const CEILING_PERCENT: &str = "80";

/// The org's id, as the emulator's sessions carry it.
const ORG: &str = "00DSFBULKDEMO01";

/// Each team's token file, under `dir`: the team's name, its one token, its share.
struct Team {
    name: &'static str,
    token: &'static str,
    share: &'static str,
}

const ALPHA: Team = Team {
    name: "alpha",
    token: "alpha-team-token",
    share: "5",
};

const BETA: Team = Team {
    name: "beta",
    token: "beta-team-token",
    share: "100",
};

/// The settings of a replica: the registry on `redis`, the connection `org` (client credentials
/// to the emulator's org), and each of `teams` scoped to it with its share; `extra` besides.
fn replica(
    app: &TestApp,
    redis: &RedisServer,
    dir: &Path,
    teams: &[&Team],
    extra: &[(&str, &str)],
) -> ProxyProcess {
    let e = &app.settings.emulator;
    let mut env: Vec<(String, String)> = vec![
        ("SFBULK__REGISTRY__BACKEND".into(), "redis".into()),
        ("SFBULK__REGISTRY__REDIS_URL".into(), redis.url()),
        ("SFBULK__REGISTRY__TIMEOUT_MS".into(), "300".into()),
        (
            "SFBULK__CONNECTIONS__ORG__GRANT".into(),
            "client_credentials".into(),
        ),
        (
            "SFBULK__CONNECTIONS__ORG__LOGIN_URL".into(),
            app.emulator.clone(),
        ),
        (
            "SFBULK__CONNECTIONS__ORG__CLIENT_ID".into(),
            e.client_id.clone(),
        ),
        (
            "SFBULK__CONNECTIONS__ORG__CLIENT_SECRET".into(),
            e.client_secret.expose().to_string(),
        ),
        (
            "SFBULK__CONNECTIONS__ORG__API_VERSION".into(),
            "34.0".into(),
        ),
        (
            "SFBULK__GOVERNOR__API_CEILING_PERCENT".into(),
            CEILING_PERCENT.into(),
        ),
    ];
    for team in teams {
        let file: PathBuf = dir.join(format!("{}.tokens", team.name));
        std::fs::write(&file, format!("# team {}\n{}\n", team.name, team.token)).unwrap();
        let key = |k: &str| {
            format!(
                "SFBULK__SERVER__TOKEN_SCOPES__{}__{k}",
                team.name.to_uppercase()
            )
        };
        env.push((key("TOKEN_FILE"), file.display().to_string()));
        env.push((key("CONNECTIONS"), "org".into()));
        env.push((key("API_SHARE_PERCENT"), team.share.into()));
    }
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    start_proxy(app, &env)
}

/// `getJob` of `job` through `proxy` on the connection `org`, as `team`: its status,
/// `Retry-After` and body.
async fn get_job_as(
    app: &TestApp,
    proxy: &str,
    team: &Team,
    job: &str,
) -> (u16, Option<String>, String) {
    let answer = app
        .http
        .post(format!("{proxy}/services/salesforcebulk_getJob"))
        .header("content-type", "text/xml")
        .bearer_auth(team.token)
        .body(envelope("getJob", &[("connection", "org"), ("jobId", job)]))
        .send()
        .await
        .expect("proxy answers");
    crate::support::status_retry_after_body(answer).await
}

/// The value of the sample `series` (its name and labels) on the admin port `admin`, if shown.
async fn sample(app: &TestApp, admin: &str, series: &str) -> Option<u64> {
    app.metrics_at(admin)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn a_team_at_its_share_is_refused_while_another_team_of_the_org_is_still_served() {
    let redis = RedisServer::start();
    let app = spawn_app_with(|s| s.emulator.api_limit = API_LIMIT).await;
    let job = app.create_job().await;
    let dir = temp_dir("team-shares");
    let block = [("SFBULK__GOVERNOR__API_BLOCK", "5")];
    let replicas: Vec<ProxyProcess> = (0..2)
        .map(|_| replica(&app, &redis, &dir, &[&ALPHA, &BETA], &block))
        .collect();

    // Alpha's three callers, each through the replicas in turn until refused three times in a
    // row (or 200 calls).
    let callers = (0..3).map(|caller| {
        let (app, replicas, job) = (&app, &replicas, &job);
        async move {
            let mut answers = Vec::new();
            let mut refused_in_a_row = 0;
            for n in 0..200 {
                let proxy = &replicas[(caller + n) % replicas.len()].url;
                let answer = get_job_as(app, proxy, &ALPHA, job).await;
                refused_in_a_row = if answer.0 == 429 {
                    refused_in_a_row + 1
                } else {
                    0
                };
                answers.push(answer);
                if refused_in_a_row == 3 {
                    break;
                }
            }
            answers
        }
    });
    let answers: Vec<_> = join_all(callers).await.into_iter().flatten().collect();
    let served = answers.iter().filter(|a| a.0 == 200).count();
    assert!(
        answers.iter().any(|a| a.0 == 429),
        "alpha was never refused"
    );
    for (status, retry_after, body) in &answers {
        assert!(matches!(status, 200 | 429), "{status}: {body}");
        if *status == 429 {
            assert_eq!(retry_after.as_deref(), Some("300"), "{body}");
            assert_eq!(
                element(body, "exceptionCode").as_deref(),
                Some("SFBULK_TEAM_BUDGET_EXHAUSTED"),
                "{body}"
            );
            let message = element(body, "exceptionMessage").unwrap();
            assert!(
                message.contains(&format!("team alpha is at its share of org {ORG}")),
                "{message}"
            );
        }
    }
    // Alpha's share: 5 % of the org's ceiling of 800, 40 calls, counted across both replicas;
    // besides them only each replica's first calls, made before Salesforce had accepted its
    // session (they count against no org), up to one a caller.
    assert!(
        (40..=40 + 2 * 3).contains(&served),
        "alpha was served {served} calls"
    );

    // Beta is served through both replicas, and alpha is still refused.
    for replica in &replicas {
        for _ in 0..5 {
            let (status, _, body) = get_job_as(&app, &replica.url, &BETA, &job).await;
            assert_eq!(status, 200, "{body}");
        }
        let (status, _, body) = get_job_as(&app, &replica.url, &ALPHA, &job).await;
        assert_eq!(status, 429, "{body}");
    }
    assert_eq!(
        app.org.limit_refusals(),
        0,
        "Salesforce never had to refuse"
    );
    assert!(
        app.org.api_usage() < 800,
        "the org stayed under its ceiling"
    );

    // Each replica shows alpha's count as the fleet keeps it, and its refusals.
    for replica in &replicas {
        let used = format!("sfbulk_governor_api_used{{org=\"{ORG}\",team=\"alpha\"}}");
        assert_eq!(sample(&app, &replica.admin, &used).await, Some(40));
        let refusals =
            format!("sfbulk_governor_refusals_total{{org=\"{ORG}\",reason=\"team_share\"}}");
        assert!(sample(&app, &replica.admin, &refusals).await.unwrap_or(0) >= 1);
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn every_call_of_a_request_is_charged_to_its_team_the_pages_read_ahead_in_tasks_included() {
    let redis = RedisServer::start();
    let app = spawn_app_with(|s| {
        s.emulator.api_limit = API_LIMIT;
        s.emulator.generated_contacts = 5000;
        s.emulator.query_page_rows = 1000;
    })
    .await;
    let job = app.create_job().await;
    let dir = temp_dir("team-charges");
    // A block of one: the team's count is each call as it is made.
    let env = [
        ("SFBULK__GOVERNOR__API_BLOCK", "1"),
        ("SFBULK__LOAD__POLL_MIN_MS", "5"),
        ("SFBULK__LOAD__POLL_MAX_MS", "20"),
    ];
    let replica = replica(&app, &redis, &dir, &[&BETA], &env);
    let used = format!("sfbulk_governor_api_used{{org=\"{ORG}\",team=\"beta\"}}");
    // The connection's session accepted first (a call before that counts against no org).
    for _ in 0..2 {
        assert_eq!(get_job_as(&app, &replica.url, &BETA, &job).await.0, 200);
    }
    let (charged, sent) = (
        sample(&app, &replica.admin, &used).await.unwrap(),
        app.org.api_usage(),
    );
    app.org.reset_query_page_reads();
    let export = app
        .http
        .post(format!("{}/services/salesforcebulkv2_query", replica.url))
        .header("content-type", "text/xml")
        .bearer_auth(BETA.token)
        .body(envelope(
            "query",
            &[
                ("connection", "org"),
                ("apiVersion", "59.0"),
                (
                    "query",
                    "SELECT Id, FirstName, LastName, Email FROM Contact",
                ),
            ],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(export.status(), 200);
    let rows = export.text().await.unwrap().lines().count();
    assert_eq!(rows, 5001, "a header and every row");
    assert_eq!(app.org.query_page_reads(), 5, "five pages, read ahead");
    let sent = app.org.api_usage() - sent;
    let charged = sample(&app, &replica.admin, &used).await.unwrap() - charged;
    assert!(
        sent >= 7,
        "the job made, read, its pages listed and read: {sent}"
    );
    assert_eq!(
        charged, sent,
        "every call the export made was charged to beta"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
