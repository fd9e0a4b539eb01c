//! Command line: `serve` (the default), `emulator`, `demo`, `check`, `healthcheck`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator (`common::allocator` says why and how it is asked).
/// Built without transparent huge pages, which otherwise added about 12 MB of resident memory at
/// 256 connections.
#[global_allocator]
static ALLOCATOR: sfbulk_proxy::common::allocator::Allocator =
    sfbulk_proxy::common::allocator::Allocator;
use sfbulk_proxy::app::command;
use sfbulk_proxy::config::Settings;
use sfbulk_proxy::observe::log_format;
use sfbulk_proxy::observe::settings::LogSettings;

#[derive(Parser)]
#[command(version = sfbulk_proxy::common::build::LONG_VERSION, about = "WSO2 Salesforce Bulk connector proxy, rebuilt")]
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
        // A panic that reaches here ends the process: it is its last line too.
        Ok(runtime) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.block_on(run_command())
        }))
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            command::log_stopped(&format!("panic: {what}"), true);
            ExitCode::from(101)
        }),
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_command() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    let unchecked = Settings::read(cli.config.as_deref(), std::env::vars());
    if let Command::Healthcheck { url } = &command {
        let url = match (url, &unchecked) {
            (Some(url), _) => url.clone(),
            (None, Ok(unchecked)) => match command::health_url(&unchecked.settings) {
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
        return command::healthcheck(&url).await;
    }
    #[cfg(feature = "emulator")]
    let unchecked = unchecked.map(|u| match command {
        Command::Demo => u.for_demo(
            std::env::var_os(sfbulk_proxy::config::DEMO_PORT_VARIABLE)
                .map(|port| port.to_string_lossy().into_owned())
                .as_deref(),
        ),
        _ => u,
    });
    // Prepared once: every problem reported together, every file read once.
    let (settings, prepared) = match unchecked.and_then(|u| u.prepare()) {
        Ok(ready) => ready,
        Err(e) => {
            eprintln!("{e}");
            if !matches!(command, Command::Check) {
                // Logged with the defaults: the settings' own log settings may be the problem.
                log_format::init(&LogSettings::default());
                command::log_stopped(
                    &format!(
                        "start-up refused: {} problem(s) in the settings (listed on stderr)",
                        e.0.len()
                    ),
                    true,
                );
            }
            return ExitCode::from(2);
        }
    };
    if let Command::Check = command {
        return command::check(&settings, &prepared);
    }
    log_format::init(&settings.log);
    let served = match command {
        #[cfg(feature = "emulator")]
        Command::Emulator => command::emulator(&settings).await,
        #[cfg(feature = "emulator")]
        Command::Demo => command::demo(&settings, prepared).await,
        _ => command::serve_proxy(&settings, prepared).await,
    };
    match served {
        Ok(reason) => {
            command::log_stopped(&reason, false);
            ExitCode::SUCCESS
        }
        Err(e) => {
            command::log_stopped(&format!("{e:#}"), true);
            ExitCode::FAILURE
        }
    }
}
