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
use sfbulk_proxy::server::{shutdown_signal, Application};
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
    /// Exit 0 if the service at URL answers 200 (for container health checks).
    Healthcheck {
        #[arg(default_value = "http://127.0.0.1:8280/healthz")]
        url: String,
    },
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
    if let Command::Healthcheck { url } = &command {
        return healthcheck(url).await;
    }
    let settings = Settings::load(cli.config.as_deref());
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
        Command::Emulator => serve_emulator(&settings).await,
        #[cfg(feature = "emulator")]
        Command::Demo => {
            let (proxy, emulator) = tokio::join!(serve_proxy(&settings), serve_emulator(&settings));
            proxy.and(emulator)
        }
        Command::Healthcheck { .. } | Command::Check => {
            unreachable!("handled before anything is served")
        }
    }
}

async fn serve_proxy(settings: &Settings) -> anyhow::Result<()> {
    let app = Application::build(settings).await?;
    if let Some(address) = app.local_addr() {
        tracing::info!(%address, "proxy listening");
    }
    if let Some(address) = app.tls_local_addr() {
        tracing::info!(%address, "proxy listening for HTTPS");
    }
    app.run_until(shutdown_signal()).await?;
    Ok(())
}

#[cfg(feature = "emulator")]
async fn serve_emulator(settings: &Settings) -> anyhow::Result<()> {
    let emulator = sfbulk_emulator::Emulator::bind(&settings.emulator.to_emulator()).await?;
    tracing::info!(address = %emulator.local_addr(), instance_url = %emulator.org().instance_url(), "Salesforce emulator listening");
    emulator.run_until(shutdown_signal()).await?;
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
        Ok(Ok(false)) => ExitCode::FAILURE,
        Ok(Err(error)) => {
            eprintln!("healthcheck: {error}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("healthcheck: no answer within 3 s");
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
