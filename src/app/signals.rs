//! The signals the process answers: SIGINT and SIGTERM to drain and stop, and SIGHUP to read
//! the TLS and token files again ([`reload`]); none of them ends the process unhandled.

use crate::edge::admission::GuardTokens;
use crate::edge::tls::ServerTls;

/// SIGINT and SIGTERM, caught from the moment this is made: a signal that comes before the
/// process waits for it is not lost (and does not kill the process by default). SIGHUP is caught
/// from then on too, so one sent while the application is still being built never ends it.
pub struct ShutdownSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    /// Held only to keep SIGHUP's handler installed; the application reads its own.
    #[cfg(unix)]
    _hangup: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    pub fn install() -> std::io::Result<ShutdownSignals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(ShutdownSignals {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
                _hangup: signal(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        Ok(ShutdownSignals {})
    }

    /// Completes on the next SIGINT or SIGTERM, with its name.
    pub async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        let signal = tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        };
        #[cfg(not(unix))]
        let signal = {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        };
        tracing::info!(target: "sfbulk_proxy::server", signal, "shutdown signal received");
        signal
    }
}

/// What SIGHUP does: reads the TLS files and the token files again, each on its own, and logs
/// what it reloaded (or that there was nothing to reload).
pub fn reload(tls: Option<&ServerTls>, tokens: &[&GuardTokens]) {
    if tls.is_none() && !tokens.iter().any(|t| t.has_files()) {
        tracing::info!(
            target: "sfbulk_proxy::server",
            "SIGHUP: nothing to reload (no server.tls_listen, no server.auth_tokens_file, no \
             token_scopes token_file, no admin.auth_tokens_file)"
        );
        return;
    }
    if let Some(tls) = tls {
        tls.reload();
    }
    // The traffic ports' tokens and the admin port's, each a set of its own.
    for tokens in tokens.iter().filter(|t| t.has_files()) {
        let report = tokens.reload();
        if !report.refused {
            tracing::info!(
                target: "sfbulk_proxy::server",
                reloaded = %report.reloaded.join(", "),
                kept = %report.failed.join(", "),
                "bearer token files reloaded"
            );
        }
    }
}
