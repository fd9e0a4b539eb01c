//! HTTPS on `server.tls_listen` with certificates the test makes: calls go through, SIGHUP loads
//! a new certificate and keeps the old one when the new pair is broken, and client certificates
//! are required when a client CA is set.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{spawn_app_with, temp_dir, TestApp};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use sfbulk_proxy::app::Application;

const CEILING: Duration = Duration::from_secs(20);

/// A CA of the test's own.
pub fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A certificate and key signed by `ca`, as PEM.
pub fn leaf(
    ca: &CertifiedIssuer<'static, KeyPair>,
    purpose: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.extended_key_usages = vec![purpose];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

pub fn write_pair(dir: &Path, (cert, key): &(String, String)) {
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
}

/// The emulator, and a proxy serving HTTPS with the pair in `dir` (and `client_ca`, if any).
async fn proxy_over_tls(dir: &Path, client_ca: Option<PathBuf>) -> (TestApp, Application) {
    let dir = dir.to_path_buf();
    let app = spawn_app_with(move |s| {
        s.server.tls_listen = Some("127.0.0.1:0".into());
        s.server.tls_cert_file = Some(dir.join("cert.pem"));
        s.server.tls_key_file = Some(dir.join("key.pem"));
        s.server.tls_client_ca_file = client_ca;
    })
    .await;
    let proxy = Application::build(&app.settings).await.unwrap();
    (app, proxy)
}

/// A client trusting `ca`, presenting `identity` when given.
pub fn client(
    ca: &CertifiedIssuer<'static, KeyPair>,
    identity: Option<&(String, String)>,
) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap());
    if let Some((cert, key)) = identity {
        builder = builder
            .identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

#[tokio::test]
async fn calls_go_through_https_and_sighup_loads_a_new_certificate_but_not_a_broken_one() {
    let dir = temp_dir("tls");
    let (first_ca, second_ca) = (ca("first CA"), ca("second CA"));
    write_pair(&dir, &leaf(&first_ca, ExtendedKeyUsagePurpose::ServerAuth));
    let (app, proxy) = proxy_over_tls(&dir, None).await;
    let url = format!(
        "https://localhost:{}",
        proxy.tls_local_addr().unwrap().port()
    );
    let tls = proxy.tls().unwrap();
    tokio::spawn(proxy.run_until(std::future::pending()));

    let first = client(&first_ca, None);
    let created = first
        .post(format!("{url}/services/salesforcebulk_createJob"))
        .body(app.envelope("createJob", crate::support::CSV_INSERT_JOB))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    let hangup = |tls: &std::sync::Arc<sfbulk_proxy::edge::tls::ServerTls>| {
        let before = tls.reloads();
        let sent = std::process::Command::new("kill")
            .args(["-HUP", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let tls = tls.clone();
        async move {
            tokio::time::timeout(CEILING, async {
                while tls.reloads() == before {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .expect("the reload ran");
        }
    };

    write_pair(&dir, &leaf(&second_ca, ExtendedKeyUsagePurpose::ServerAuth));
    hangup(&tls).await;
    let second = client(&second_ca, None);
    let health = second.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "the new certificate is served");
    assert!(client(&first_ca, None)
        .get(format!("{url}/healthz"))
        .send()
        .await
        .is_err());

    std::fs::write(dir.join("cert.pem"), "not a certificate").unwrap();
    hangup(&tls).await;
    let health = client(&second_ca, None)
        .get(format!("{url}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        health.status(),
        200,
        "a broken pair keeps the last good one"
    );
}

#[tokio::test]
async fn with_a_client_ca_only_clients_with_its_certificates_get_through() {
    let dir = temp_dir("mtls");
    let (server_ca, client_ca, stranger_ca) = (ca("server CA"), ca("client CA"), ca("stranger CA"));
    write_pair(&dir, &leaf(&server_ca, ExtendedKeyUsagePurpose::ServerAuth));
    std::fs::write(dir.join("clients.pem"), client_ca.pem()).unwrap();
    let (app, proxy) = proxy_over_tls(&dir, Some(dir.join("clients.pem"))).await;
    let url = format!(
        "https://localhost:{}/services/salesforcebulk_createJob",
        proxy.tls_local_addr().unwrap().port()
    );
    tokio::spawn(proxy.run_until(std::future::pending()));
    let body = app.envelope("createJob", crate::support::CSV_INSERT_JOB);
    let stranger = leaf(&stranger_ca, ExtendedKeyUsagePurpose::ClientAuth);
    for refused in [
        client(&server_ca, None),
        client(&server_ca, Some(&stranger)),
    ] {
        let outcome = refused.post(&url).body(body.clone()).send().await;
        assert!(outcome.is_err(), "{outcome:?}");
    }
    assert!(
        app.org.recorded_requests().is_empty(),
        "nothing went upstream"
    );
    let known = leaf(&client_ca, ExtendedKeyUsagePurpose::ClientAuth);
    let created = client(&server_ca, Some(&known))
        .post(&url)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
}

#[tokio::test]
async fn salesforce_over_https_is_trusted_through_salesforce_ca_file_and_refused_without_it() {
    let dir = temp_dir("upstream-tls");
    let ca = ca("test org CA");
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    write_pair(
        &dir,
        &(
            params.signed_by(&key, &ca).unwrap().pem(),
            key.serialize_pem(),
        ),
    );
    let (cert, key, ca_file) = (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("ca.pem"),
    );
    let app = crate::support::spawn_app_around_emulator(
        move |s| {
            s.emulator.tls_cert_file = Some(cert);
            s.emulator.tls_key_file = Some(key);
        },
        move |s, emulator| {
            let https = emulator.replace("http://", "https://");
            s.salesforce.allowed_origins.push(https.clone());
            s.salesforce.token_endpoint_hostname = https;
            s.salesforce.ca_file = Some(ca_file);
        },
    )
    .await;
    let https = app.emulator.replace("http://", "https://");
    assert_eq!(
        app.org.instance_url(),
        https,
        "the emulator says it serves HTTPS"
    );
    let fields = [
        ("apiUrl", https.as_str()),
        ("operation", "insert"),
        ("object", "Contact"),
        ("contentType", "CSV"),
    ];
    let job = app.call_with("createJob", &fields).await;
    assert_eq!(job.status(), 201, "{}", job.text().await.unwrap());
    // A session refresh goes to the HTTPS token endpoint too.
    app.org.expire_sessions();
    let again = app.call_with("createJob", &fields).await;
    assert_eq!(again.status(), 201);
    assert_eq!(app.org.refresh_attempts(), 1);

    // The built-in roots alone do not know the test org's CA.
    let mut untrusting = app.settings.clone();
    untrusting.salesforce.ca_file = None;
    let proxy = crate::support::spawn_proxy(&untrusting).await;
    let refused = app
        .call_at(
            &proxy,
            "getJob",
            &[("apiUrl", &https), ("jobId", "750000000000001AAA")],
        )
        .await;
    assert_eq!(refused.status(), 502);
    assert_eq!(
        refused.headers()["x-sfbulk-proxy-fault"],
        "SFBULK_UPSTREAM_UNAVAILABLE"
    );
    let message = refused.text().await.unwrap();
    assert!(message.contains("certificate"), "{message}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_ca_file_that_holds_no_certificate_stops_start_up_naming_the_setting() {
    let dir = temp_dir("bad-ca");
    std::fs::write(dir.join("ca.pem"), "not a certificate").unwrap();
    let mut settings = crate::support::test_settings();
    settings.salesforce.ca_file = Some(dir.join("ca.pem"));
    let message = settings.prepare().unwrap_err().to_string();
    assert!(message.contains("salesforce.ca_file"), "{message}");
    settings.salesforce.ca_file = None;
    settings.salesforce.native_roots = true;
    // The system store is read (Debian's ca-certificates, or none at all: then start-up says so).
    match settings.prepare() {
        Ok(_) => {}
        Err(e) => assert!(e.to_string().contains("salesforce.native_roots"), "{e}"),
    }
    std::fs::remove_dir_all(dir).unwrap();
}
