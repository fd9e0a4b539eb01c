//! The deployment examples agree with the proxy: probes on the admin port's paths, a termination
//! grace long enough for the drain and the requests in flight, the registry where the unit keeps
//! its state, and a Docker build context without `target/` that still names the revision. The
//! admin port (console, job ids, registry paths, metrics) is guarded wherever an example
//! publishes it: a token Prometheus scrapes with, a NetworkPolicy admitting only the monitoring
//! namespace, and loopback only in the documented `docker run` (docs/deploying.md).

use serde_json::Value;
use sfbulk_proxy::config::Settings;

use crate::support::yaml_documents;

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The number after `key` in `text`, each time it appears.
fn numbers_after(text: &str, key: &str) -> Vec<f64> {
    text.match_indices(key)
        .filter_map(|(at, _)| {
            let rest = text[at + key.len()..].trim_start_matches([' ', '"', ':', '=']);
            let digits: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            digits.parse().ok()
        })
        .collect()
}

#[test]
fn the_kubernetes_examples_probe_the_admin_port_and_wait_out_the_drain() {
    let defaults = Settings::load_from(None, Vec::new()).unwrap();
    let admin_port = defaults
        .admin
        .listen
        .as_deref()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let needed = (defaults.server.drain_secs + defaults.server.shutdown_grace_secs).as_secs_f64();
    for file in [
        "deploy/kubernetes/sfbulk-proxy.yaml",
        "deploy/kubernetes/single-replica-file-registry.yaml",
    ] {
        let text = read(file);
        for expected in [
            "path: /livez".to_string(),
            "path: /readyz".to_string(),
            format!("containerPort: {admin_port}"),
            "runAsNonRoot: true".to_string(),
        ] {
            assert!(text.contains(&expected), "{expected} missing from {file}");
        }
        let grace = numbers_after(&text, "terminationGracePeriodSeconds");
        assert!(
            !grace.is_empty() && grace.iter().all(|g| *g > needed),
            "{file}: {grace:?} does not cover {needed} s"
        );
    }
    assert!(read("deploy/kubernetes/sfbulk-proxy.yaml").contains("value: redis"));
}

#[test]
fn the_systemd_unit_keeps_the_registry_in_its_state_directory_and_waits_out_the_drain() {
    let defaults = Settings::load_from(None, Vec::new()).unwrap();
    let unit = read("deploy/systemd/sfbulk-proxy.service");
    assert!(unit.contains("StateDirectory=sfbulk-proxy"));
    assert!(unit.contains("SFBULK__REGISTRY__DIR=%S/sfbulk-proxy/registry"));
    assert!(unit.contains("NoNewPrivileges=yes"));
    let stop = numbers_after(&unit, "TimeoutStopSec");
    assert!(
        stop.iter().all(|s| *s
            > (defaults.server.drain_secs + defaults.server.shutdown_grace_secs).as_secs_f64()),
        "{stop:?}"
    );
}

#[test]
fn the_docker_build_context_leaves_target_out_and_the_image_runs_as_a_number() {
    let ignored = read(".dockerignore");
    assert!(ignored.lines().any(|l| l.trim() == "target/"), "{ignored}");
    let dockerfile = read("Dockerfile");
    let user = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert!(user.trim().parse::<u32>().is_ok_and(|u| u > 0), "{user}");
    assert!(dockerfile.contains("SFBULK__ADMIN__LISTEN=0.0.0.0:9280"));
    assert!(dockerfile.contains("CMD [\"sfbulk-proxy\", \"healthcheck\"]"));
    // The context has no .git: the revision comes as a build argument, read by build.rs.
    assert!(dockerfile
        .lines()
        .any(|l| l.starts_with("COPY ") && l.split_whitespace().any(|w| w == "build.rs")));
    let argument = dockerfile
        .lines()
        .position(|l| l.starts_with("ARG SFBULK_GIT_REVISION"))
        .expect("an ARG SFBULK_GIT_REVISION line");
    let build = dockerfile
        .lines()
        .position(|l| l.starts_with("RUN cargo build"))
        .unwrap();
    assert!(
        argument < build,
        "the argument is declared before the build"
    );
}

/// The admin port's number in the examples (the image's `admin.listen`).
const ADMIN_PORT: u64 = 9280;

/// Whether a NetworkPolicy port entry, or a Service port, is the admin port, by number or name.
fn is_admin_port(port: &Value) -> bool {
    ["port", "targetPort"]
        .iter()
        .any(|key| port[key] == ADMIN_PORT || port[key] == "admin")
}

/// The Secret, and its key, that an example's container takes `admin.auth_tokens` from.
fn admin_token_secret(container: &Value) -> (String, String) {
    let env = container["env"].as_array().expect("env");
    let tokens = env
        .iter()
        .find(|e| e["name"] == "SFBULK__ADMIN__AUTH_TOKENS")
        .expect("SFBULK__ADMIN__AUTH_TOKENS set");
    assert!(
        tokens.get("value").is_none(),
        "no token in the file: {tokens}"
    );
    let secret = &tokens["valueFrom"]["secretKeyRef"];
    (
        secret["name"].as_str().expect("a Secret").to_string(),
        secret["key"].as_str().expect("a key").to_string(),
    )
}

#[test]
fn the_kubernetes_examples_guard_the_admin_port_with_a_token_and_a_network_policy() {
    let monitor = yaml_documents("deploy/kubernetes/sfbulk-proxy-servicemonitor.yaml");
    assert_eq!(monitor.len(), 1);
    let monitor = &monitor[0];
    assert_eq!(monitor["kind"], "ServiceMonitor");
    let scrape = yaml_documents("deploy/prometheus/scrape-config.yaml");
    let job = &scrape[0]["scrape_configs"][0];
    assert_eq!(job["metrics_path"], "/metrics");
    assert!(job["authorization"]["credentials_file"]
        .as_str()
        .is_some_and(|f| f.contains("sfbulk-proxy-admin")));
    assert_eq!(scrape[0]["rule_files"][0], "sfbulk-proxy-rules.yaml");

    for file in [
        "deploy/kubernetes/sfbulk-proxy.yaml",
        "deploy/kubernetes/single-replica-file-registry.yaml",
    ] {
        let documents = yaml_documents(file);
        let of_kind = |kind: &str| -> Vec<&Value> {
            documents.iter().filter(|d| d["kind"] == kind).collect()
        };
        let deployment = of_kind("Deployment")[0];
        let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        let secret = admin_token_secret(container);
        // No annotation invites a scraper that has no token.
        let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
        assert!(annotations.get("prometheus.io/scrape").is_none(), "{file}");

        // Prometheus scrapes with that very token.
        let endpoint = &monitor["spec"]["endpoints"][0];
        assert_eq!(endpoint["port"], "admin");
        let credentials = &endpoint["authorization"]["credentials"];
        assert_eq!(
            (&credentials["name"], &credentials["key"]),
            (
                &Value::from(secret.0.as_str()),
                &Value::from(secret.1.as_str())
            ),
            "{file}"
        );
        let scraped = of_kind("Service").into_iter().find(|service| {
            let selector = monitor["spec"]["selector"]["matchLabels"]
                .as_object()
                .unwrap();
            selector
                .iter()
                .all(|(k, v)| service["metadata"]["labels"][k] == *v)
        });
        let scraped = scraped.unwrap_or_else(|| panic!("{file}: no Service the monitor finds"));
        assert!(scraped["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "admin" && is_admin_port(p)));

        // The callers' Service leaves the admin port out.
        for service in of_kind("Service") {
            let ports = service["spec"]["ports"].as_array().unwrap();
            if ports.iter().any(|p| p["name"] == "traffic") {
                assert!(!ports.iter().any(is_admin_port), "{file}: {service}");
            }
        }

        // A NetworkPolicy on the pods admits the traffic port, and the admin port only from
        // the monitoring namespace.
        let policies = of_kind("NetworkPolicy");
        let policy = policies
            .iter()
            .find(|p| {
                let selector = p["spec"]["podSelector"]["matchLabels"].as_object().unwrap();
                selector.iter().all(|(k, v)| pod_labels[k] == *v)
            })
            .unwrap_or_else(|| panic!("{file}: no NetworkPolicy selects the pods"));
        let types = policy["spec"]["policyTypes"].as_array().unwrap();
        assert!(types.contains(&Value::from("Ingress")), "{file}");
        let rules = policy["spec"]["ingress"].as_array().unwrap();
        let admits = |rule: &Value, admin: bool| match rule["ports"].as_array() {
            // A rule without ports admits every port.
            None => true,
            Some(ports) => ports.iter().any(|p| is_admin_port(p) == admin),
        };
        assert!(rules.iter().any(|r| admits(r, false)), "{file}: no traffic");
        assert!(rules.iter().any(|r| admits(r, true)), "{file}: no scraping");
        for rule in rules.iter().filter(|r| admits(r, true)) {
            let from = rule["from"].as_array();
            assert!(
                from.is_some_and(|peers| !peers.is_empty()
                    && peers.iter().all(|peer| {
                        peer.as_object().unwrap().len() == 1
                            && peer["namespaceSelector"]["matchLabels"]
                                ["kubernetes.io/metadata.name"]
                                == "monitoring"
                    })),
                "{file}: the admin port is open to more than the monitoring namespace: {rule}"
            );
        }
    }
}

#[test]
fn the_documented_docker_run_publishes_the_admin_port_on_loopback_only() {
    let documented = format!("{}{}", read("README.md"), read("docs/deploying.md"));
    let runs: Vec<&str> = documented
        .lines()
        .filter(|l| l.trim_start().starts_with("docker run"))
        .collect();
    assert!(!runs.is_empty());
    for run in runs {
        let words: Vec<&str> = run.split_whitespace().collect();
        let published: Vec<&str> = words
            .windows(2)
            .filter(|w| w[0] == "-p" || w[0] == "--publish")
            .map(|w| w[1])
            .collect();
        let admin: Vec<&&str> = published
            .iter()
            .filter(|p| p.ends_with(&format!(":{ADMIN_PORT}")))
            .collect();
        assert!(!admin.is_empty(), "{run}");
        for mapping in admin {
            assert!(mapping.starts_with("127.0.0.1:"), "{run}");
        }
    }
}
