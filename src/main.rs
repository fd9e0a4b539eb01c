//! Command line: `serve` (the default), `emulator`, `demo`, `check`, `healthcheck`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: a proxied request makes many small, short-lived
/// allocations, and glibc's malloc and free were about a tenth of the profile. Built without
/// transparent huge pages, which otherwise added about 12 MB of resident memory at 256 connections.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use sfbulk_proxy::config::Settings;
use sfbulk_proxy::server::{Application, ShutdownSignals};
use sfbulk_proxy::telemetry;

#[derive(Parser)]
#[command(version, about = "WSO2 Salesforce Bulk connector proxy, rebuilt")]
struct Cli {
    /// A settings file layered over config/default.toml (environment variables still win).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy on server.listen.
    Serve,
    /// Run the Salesforce emulator alone on emulator.listen.
    #[cfg(feature = "emulator")]
    Emulator,
    /// Run the proxy and the emulator together, the emulator standing in for Salesforce.
    #[cfg(feature = "emulator")]
    Demo,
    /// Check the settings (defaults, --config file, SFBULK__ variables) and print the effective
    /// ones as TOML with every secret hidden; exit 2 listing every problem when they are invalid.
    Check,
    /// Exit 0 if the service answers 200 (for container health checks): at URL, or else at
    /// admin.listen's /livez, or server.listen's /healthz when the admin port is off.
    Healthcheck { url: Option<String> },
}

fn main() -> ExitCode {
    // With one core to run on (a pinned or 1-CPU container), a single-threaded runtime does the
    // same work without the multi-threaded scheduler's hand-offs.
    let one_core = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    let runtime = if one_core {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    match runtime {
        Ok(runtime) => runtime.block_on(run_command()),
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_command() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    let settings = Settings::load(cli.config.as_deref());
    if let Command::Healthcheck { url } = &command {
        let url = match (url, &settings) {
            (Some(url), _) => url.clone(),
            (None, Ok(settings)) => match health_url(settings) {
                Some(url) => url,
                None => {
                    eprintln!("healthcheck: admin.listen and server.listen are both off");
                    return ExitCode::FAILURE;
                }
            },
            (None, Err(e)) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        };
        return healthcheck(&url).await;
    }
    #[cfg(feature = "emulator")]
    let settings = settings.and_then(|s| match command {
        Command::Demo => s.for_demo(),
        _ => Ok(s),
    });
    let settings = match settings {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Command::Check = command {
        return check(&settings);
    }
    telemetry::init(&settings.log);
    match run(command, settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "exiting");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve => serve_proxy(&settings).await,
        #[cfg(feature = "emulator")]
        Command::Emulator => {
            let mut signals = ShutdownSignals::install()?;
            serve_emulator(&settings, async move { signals.recv().await }).await
        }
        #[cfg(feature = "emulator")]
        Command::Demo => {
            // The emulator stays up while the proxy drains, and ends with it.
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let emulator = serve_emulator(&settings, async {
                let _ = stopped.await;
            });
            let proxy = async {
                let served = serve_proxy(&settings).await;
                let _ = stop.send(());
                served
            };
            let (proxy, emulator) = tokio::join!(proxy, emulator);
            proxy.and(emulator)
        }
        Command::Healthcheck { .. } | Command::Check => {
            unreachable!("handled before anything is served")
        }
    }
}

async fn serve_proxy(settings: &Settings) -> anyhow::Result<()> {
    // Caught before the addresses are logged: whoever reads them may signal at once.
    let mut signals = ShutdownSignals::install()?;
    let app = Application::build(settings).await?;
    if let Some(address) = app.local_addr() {
        tracing::info!(%address, "proxy listening");
    }
    if let Some(address) = app.tls_local_addr() {
        tracing::info!(%address, "proxy listening for HTTPS");
    }
    if let Some(address) = app.admin_local_addr() {
        tracing::info!(%address, "admin listening");
    }
    app.run_until(async move {
        signals.recv().await;
        // A second signal ends the process at once (Ctrl-C twice ends the demo).
        tokio::spawn(async move {
            signals.recv().await;
            tracing::warn!("second shutdown signal: exiting without waiting");
            std::process::exit(130);
        });
    })
    .await?;
    Ok(())
}

/// Where `healthcheck` asks when given no URL: the admin port's `/livez`, or else the traffic
/// port's `/healthz`; a wildcard address is asked on loopback.
fn health_url(settings: &Settings) -> Option<String> {
    let on = |raw: &str, path: &str| {
        let mut address: std::net::SocketAddr = raw.trim().parse().ok()?;
        if address.ip().is_unspecified() {
            address.set_ip(if address.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        Some(format!("http://{address}{path}"))
    };
    on(&settings.admin.listen, "/livez").or_else(|| on(&settings.server.listen, "/healthz"))
}

#[cfg(feature = "emulator")]
async fn serve_emulator(
    settings: &Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let emulator_settings = settings
        .emulator
        .to_emulator()
        .map_err(anyhow::Error::msg)?;
    let emulator = sfbulk_emulator::Emulator::bind(&emulator_settings).await?;
    tracing::info!(address = %emulator.local_addr(), instance_url = %emulator.org().instance_url(), "Salesforce emulator listening");
    emulator.run_until(shutdown).await?;
    Ok(())
}

/// Settings that loaded and validated: the files they need (TLS pair, token file, registry keys)
/// are read too, so a `check` that passes is a start-up that will.
fn check(settings: &Settings) -> ExitCode {
    match settings.build() {
        Ok(built) => {
            print!("{}", settings.to_toml());
            if let Some(proxy) = built.https_proxy {
                println!(
                    "# https origins are reached through the proxy {}",
                    proxy.shown()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

async fn healthcheck(url: &str) -> ExitCode {
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
