//! The process signals the server acts on: SIGTERM/SIGINT (shut down) and
//! SIGHUP (reload).

/// Resolves at the first SIGTERM or SIGINT (only Ctrl-C where there are no
/// Unix signals).
pub(super) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// SIGHUP notifications (never fires where there are none).
pub(super) struct Hangup {
    #[cfg(unix)]
    inner: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    pub(super) async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(s) = &mut self.inner {
            s.recv().await;
            return;
        }
        std::future::pending::<()>().await
    }
}

pub(super) fn hangup_stream() -> Hangup {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        Hangup { inner: signal(SignalKind::hangup()).ok() }
    }
    #[cfg(not(unix))]
    Hangup {}
}
