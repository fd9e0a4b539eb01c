//! What each command of the binary does once its settings are read: `serve` (and `demo`, the
//! proxy beside the emulator), `check` and `healthcheck`. The settings are prepared once per
//! process start.

use std::process::ExitCode;

use crate::app::{Application, ShutdownSignals};
use crate::config::{Prepared, Settings};

/// Why a command stopped, for its last log line.
pub type Stopped = String;

/// The process's last log line: `stopped`, with the reason (and at ERROR when it failed).
pub fn log_stopped(reason: &str, failed: bool) {
    if failed {
        tracing::error!(target: "sfbulk_proxy", reason, "stopped");
    } else {
        tracing::info!(target: "sfbulk_proxy", reason, "stopped");
    }
}

/// Serves the proxy on `prepared` until SIGINT or SIGTERM, then drains; a second signal ends
/// the process at once.
pub async fn serve_proxy(settings: &Settings, prepared: Prepared) -> anyhow::Result<Stopped> {
    // Caught before the addresses are logged: whoever reads them may signal at once.
    let signals = ShutdownSignals::install()?;
    let app = listen(settings, prepared).await?;
    run_proxy(app, signals).await
}

/// The proxy built on `prepared`, its listeners bound and their addresses logged.
async fn listen(settings: &Settings, prepared: Prepared) -> anyhow::Result<Application> {
    let app = Application::on(settings, prepared).await?;
    if let Some(address) = app.local_addr() {
        tracing::info!(target: "sfbulk_proxy", %address, "proxy listening");
    }
    if let Some(address) = app.tls_local_addr() {
        tracing::info!(target: "sfbulk_proxy", %address, "proxy listening for HTTPS");
    }
    if let Some(address) = app.admin_local_addr() {
        tracing::info!(target: "sfbulk_proxy", %address, "admin listening");
    }
    Ok(app)
}

/// Serves `app` until the first of `signals`, then drains; a second signal ends the process at
/// once.
async fn run_proxy(app: Application, mut signals: ShutdownSignals) -> anyhow::Result<Stopped> {
    let (first, received) = tokio::sync::oneshot::channel();
    app.run_until(async move {
        let signal = signals.recv().await;
        let _ = first.send(signal);
        // A second signal ends the process at once (Ctrl-C twice ends the demo).
        tokio::spawn(async move {
            let again = signals.recv().await;
            tracing::warn!(
                target: "sfbulk_proxy",
                "second shutdown signal: exiting without waiting"
            );
            log_stopped(&format!("a second {again}: exited without waiting"), false);
            std::process::exit(130);
        });
    })
    .await?;
    let signal = received.await.unwrap_or("the shutdown signal");
    Ok(format!("{signal}: drained and done"))
}

/// `emulator`: the fake org alone, until SIGINT or SIGTERM.
#[cfg(feature = "emulator")]
pub async fn emulator(settings: &Settings) -> anyhow::Result<Stopped> {
    let mut signals = ShutdownSignals::install()?;
    let (first, received) = tokio::sync::oneshot::channel();
    bind_emulator(settings)
        .await?
        .run_until(async move {
            let _ = first.send(signals.recv().await);
        })
        .await?;
    Ok(format!(
        "{}: done",
        received.await.unwrap_or("the shutdown signal")
    ))
}

/// The emulator of `settings`, bound, its address logged.
#[cfg(feature = "emulator")]
async fn bind_emulator(settings: &Settings) -> anyhow::Result<sfbulk_emulator::Emulator> {
    let emulator_settings = settings
        .emulator
        .to_emulator()
        .map_err(anyhow::Error::msg)?;
    let emulator = sfbulk_emulator::Emulator::bind(&emulator_settings)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "emulator.listen {}: cannot listen: {e}",
                settings.emulator.listen
            )
        })?;
    tracing::info!(
        target: "sfbulk_proxy",
        address = %emulator.local_addr(),
        instance_url = %emulator.org().instance_url(),
        "Salesforce emulator listening"
    );
    Ok(emulator)
}

/// The demo: the emulator and the proxy bound, what to try first shown, then both served; the
/// emulator stays up while the proxy drains, and ends with it.
#[cfg(feature = "emulator")]
pub async fn demo(settings: &Settings, prepared: Prepared) -> anyhow::Result<Stopped> {
    let signals = ShutdownSignals::install()?;
    let emulator = bind_emulator(settings).await?;
    if let Some(to) = &settings.salesforce.connect_to {
        tracing::info!(
            target: "sfbulk_proxy",
            org = %to.origin,
            emulator = %to.address,
            "the demo org's address, as the samples give it, leads to the emulator"
        );
    }
    let app = listen(settings, prepared).await?;
    show_demo(settings, &app);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let emulator = emulator.run_until(async {
        let _ = stopped.await;
    });
    let proxy = async {
        let served = run_proxy(app, signals).await;
        let _ = stop.send(());
        served
    };
    let (proxy, emulator) = tokio::join!(proxy, emulator);
    emulator.map_err(anyhow::Error::from).and(proxy)
}

/// The demo's console and the first call of README's walk, with the ports the demo has: logged,
/// and printed plainly beside a text log.
#[cfg(feature = "emulator")]
fn show_demo(settings: &Settings, app: &Application) {
    let reachable = |mut address: std::net::SocketAddr| {
        if address.ip().is_unspecified() {
            address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        address
    };
    let console = app
        .admin_local_addr()
        .map(|a| format!("http://{}/ui", reachable(a)));
    let first_call = app.local_addr().map(|a| {
        format!(
            "curl -d @samples/demo/createJob.xml http://{}/services/salesforcebulk_createJob",
            reachable(a)
        )
    });
    tracing::info!(
        target: "sfbulk_proxy",
        console = console.as_deref().unwrap_or("off (admin.listen is empty)"),
        first_call = first_call.as_deref().unwrap_or("none: server.listen is off"),
        "demo ready"
    );
    if settings.log.format != crate::observe::settings::LogFormat::Text {
        return;
    }
    let mut shown = String::from("\nThe demo is ready.\n");
    if let Some(console) = console {
        shown.push_str(&format!("  The console:  {console}\n"));
    }
    if let Some(first_call) = first_call {
        shown.push_str(&format!(
            "  A first call, from the repository root (README, \"With the demo running\"):\n    {first_call}\n"
        ));
    }
    if let Some(port) = app.local_addr().map(|a| a.port()).filter(|&p| p != 8280) {
        shown.push_str(&format!(
            "  README's walk runs as it is in a shell with SFBULK_DEMO_PORT={port} exported.\n"
        ));
    }
    // A closed stdout is no reason to stop the demo.
    let _ = std::io::Write::write_all(
        &mut std::io::stdout().lock(),
        format!("{shown}\n").as_bytes(),
    );
}

/// `check`: settings that prepared (the files they need read too, so a `check` that passes is
/// a start-up that will), printed with every secret shown as `(set)` or `(not set)`, then the
/// warnings `serve` would log, as comments.
pub fn check(settings: &Settings, prepared: &Prepared) -> ExitCode {
    print!("{}", settings.to_toml());
    let edge = &prepared.edge;
    let client_certificates = settings.server.tls_client_ca_file.is_some();
    for exposed in edge.exposures(client_certificates, edge.listening()) {
        println!("# warning: {}: {}", exposed.address, exposed.warning);
    }
    if let Some(proxy) = &prepared.outbound.https_proxy {
        println!(
            "# https origins are reached through the proxy {}",
            proxy.shown()
        );
    }
    ExitCode::SUCCESS
}

/// Where `healthcheck` asks when given no URL: the admin port's `/livez`, or else the traffic
/// port's `/healthz`; a wildcard address is asked on loopback.
pub fn health_url(settings: &Settings) -> Option<String> {
    let on = |raw: Option<&str>, path: &str| {
        let mut address = crate::common::setting::listen_address(raw?).ok()?;
        if address.ip().is_unspecified() {
            address.set_ip(if address.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        Some(format!("http://{address}{path}"))
    };
    on(settings.admin.listen.as_deref(), "/livez")
        .or_else(|| on(settings.server.listen.as_deref(), "/healthz"))
}

/// `healthcheck`: 0 when `url` answers 2xx within 3 s.
pub async fn healthcheck(url: &str) -> ExitCode {
    match tokio::time::timeout(std::time::Duration::from_secs(3), probe(url)).await {
        Ok(Ok(true)) => ExitCode::SUCCESS,
        Ok(Ok(false)) => {
            eprintln!("healthcheck {url}: not a 2xx answer");
            ExitCode::FAILURE
        }
        Ok(Err(error)) => {
            eprintln!("healthcheck {url}: {error}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("healthcheck {url}: no answer within 3 s");
            ExitCode::FAILURE
        }
    }
}

/// Whether a plain-http `GET url` answers 2xx.
async fn probe(url: &str) -> anyhow::Result<bool> {
    let url = url::Url::parse(url)?;
    anyhow::ensure!(url.scheme() == "http", "only http:// URLs can be checked");
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(80);
    let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port)).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    tokio::spawn(connection);
    let request = axum::http::Request::get(&url[url::Position::BeforePath..])
        .header(
            axum::http::header::HOST,
            &url[url::Position::BeforeHost..url::Position::AfterPort],
        )
        .body(axum::body::Body::empty())?;
    Ok(sender.send_request(request).await?.status().is_success())
}
