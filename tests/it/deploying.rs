//! The deployment examples agree with the proxy: probes on the admin port's paths, a termination
//! grace long enough for the drain and the requests in flight, the registry where the unit keeps
//! its state, and a Docker build context without `target/`.

use sfbulk_proxy::config::Settings;

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
}
