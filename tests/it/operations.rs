//! Each operation sends exactly the expected request to Salesforce and relays the answer unchanged.

use crate::support::{element, spawn_app};

const NS: &str = "http://www.force.com/2009/06/asyncapi/dataload";

#[tokio::test]
async fn create_job_posts_a_jobinfo_in_schema_order_and_relays_the_201() {
    let app = spawn_app().await;
    let response = app
        .call_with(
            "createJob",
            &[
                ("contentType", "CSV"),
                ("object", "Contact"),
                ("operation", "upsert"),
                ("externalIdFieldName", "Languages__c"),
                ("concurrencyMode", "Serial"),
            ],
        )
        .await;

    let sent = app.bulk_requests();
    assert_eq!(sent.len(), 1);
    let request = &sent[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.uri, "/services/async/34.0/job");
    assert_eq!(
        request.content_type.as_deref(),
        Some("application/xml; charset=UTF-8")
    );
    assert_eq!(
        request.session.as_deref(),
        Some(app.settings.emulator.access_token.expose())
    );
    assert_eq!(
        std::str::from_utf8(&request.body).unwrap(),
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><jobInfo xmlns=\"{NS}\"><operation>upsert</operation>\
             <object>Contact</object><externalIdFieldName>Languages__c</externalIdFieldName>\
             <concurrencyMode>Serial</concurrencyMode><contentType>CSV</contentType></jobInfo>"
        )
    );

    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["content-type"], "application/xml");
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let body = response.text().await.unwrap();
    let id = element(&body, "id").unwrap();
    assert_eq!(location, format!("/services/async/34.0/job/{id}"));
    assert!(body.starts_with(&format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><jobInfo\n   xmlns=\"{NS}\">\n <id>{id}</id>\n <operation>upsert</operation>\n"
    )));
    assert_eq!(
        element(&body, "externalIdFieldName").as_deref(),
        Some("Languages__c")
    );
    assert_eq!(element(&body, "concurrencyMode").as_deref(), Some("Serial"));
}

#[tokio::test]
async fn api_version_34_is_sent_as_34_0() {
    let app = spawn_app().await;
    let response = app
        .call_with(
            "createJob",
            &[
                ("apiVersion", "34"),
                ("operation", "insert"),
                ("object", "Account"),
            ],
        )
        .await;
    assert_eq!(response.status(), 201);
    assert_eq!(app.bulk_requests()[0].uri, "/services/async/34.0/job");
}

#[tokio::test]
async fn get_job_relays_exactly_what_salesforce_answers() {
    let app = spawn_app().await;
    let job_id = app.create_job().await;

    let through_proxy = app.call_with("getJob", &[("jobId", &job_id)]).await;
    let sent = app.bulk_requests().pop().unwrap();
    assert_eq!(sent.method, "GET");
    assert_eq!(sent.uri, format!("/services/async/34.0/job/{job_id}"));
    assert!(sent.body.is_empty());

    let direct = app
        .http
        .get(format!("{}/services/async/34.0/job/{job_id}", app.emulator))
        .header(
            "X-SFDC-Session",
            app.settings.emulator.access_token.expose(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(through_proxy.status(), direct.status());
    assert_eq!(
        through_proxy.headers()["content-type"],
        direct.headers()["content-type"]
    );
    assert_eq!(
        through_proxy.bytes().await.unwrap(),
        direct.bytes().await.unwrap()
    );
}

#[tokio::test]
async fn update_job_sends_only_the_state_and_relays_salesforce_state_errors() {
    let app = spawn_app().await;
    let job_id = app.create_job().await;
    let close = app.envelope("updateJob", &[("jobId", &job_id), ("state", "Closed")]);

    let response = app.call("updateJob", close.clone()).await;
    let sent = app.bulk_requests().pop().unwrap();
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.uri, format!("/services/async/34.0/job/{job_id}"));
    assert_eq!(
        sent.content_type.as_deref(),
        Some("application/xml; charset=UTF-8")
    );
    assert_eq!(
        std::str::from_utf8(&sent.body).unwrap(),
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><jobInfo xmlns=\"{NS}\"><state>Closed</state></jobInfo>")
    );
    assert_eq!(response.status(), 200);
    assert_eq!(
        element(&response.text().await.unwrap(), "state").as_deref(),
        Some("Closed")
    );

    let again = app.call("updateJob", close).await;
    assert_eq!(again.status(), 400);
    assert!(
        again.headers().get("x-sfbulk-proxy-fault").is_none(),
        "Salesforce's answer, not ours"
    );
    assert_eq!(
        again.text().await.unwrap(),
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><error\n   xmlns=\"{NS}\">\n <exceptionCode>InvalidJobState</exceptionCode>\n <exceptionMessage>Closing already closed Job not allowed</exceptionMessage>\n</error>")
    );
}

#[tokio::test]
async fn a_soap_wrapped_envelope_works_like_a_bare_one() {
    let app = spawn_app().await;
    let job_id = app.create_job().await;
    let inner = app.envelope("getJob", &[("jobId", &job_id)]);
    let soap = format!(
        "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\"><soapenv:Header/>\
         <soapenv:Body>{inner}</soapenv:Body></soapenv:Envelope>"
    );
    let response = app.call("getJob", soap).await;
    assert_eq!(response.status(), 200);
    assert_eq!(element(&response.text().await.unwrap(), "id"), Some(job_id));
}

#[tokio::test]
async fn an_unknown_job_id_is_salesforces_error_to_give() {
    let app = spawn_app().await;
    let response = app
        .call_with("getJob", &[("jobId", "750000000000000AAA")])
        .await;
    assert_eq!(response.status(), 400);
    assert!(response.headers().get("x-sfbulk-proxy-fault").is_none());
    assert_eq!(
        element(&response.text().await.unwrap(), "exceptionCode").as_deref(),
        Some("InvalidJob")
    );
    assert_eq!(app.bulk_requests().len(), 1);
}

#[tokio::test]
async fn health_endpoint_answers_200() {
    let app = spawn_app().await;
    let response = app
        .http
        .get(format!("{}/healthz", app.proxy))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn every_answer_carries_the_callers_request_id_or_a_new_one() {
    let app = spawn_app().await;
    let relayed = app
        .http
        .post(format!("{}/services/salesforcebulk_getJob", app.proxy))
        .header("x-request-id", "flow-42")
        .body(app.envelope("getJob", &[("jobId", "750000000000000AAA")]))
        .send()
        .await
        .unwrap();
    assert_eq!(relayed.headers()["x-request-id"], "flow-42");
    let fault = app.call("getJob", "not xml".into()).await;
    let first = fault.headers()["x-request-id"].clone();
    let second = app.call("getJob", "not xml".into()).await.headers()["x-request-id"].clone();
    assert_ne!(first, second, "each request gets its own id");
}
