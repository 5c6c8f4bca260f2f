//! One client connection: the TLS handshake, then hyper's HTTP/1.1 under
//! the connection's watchdog, each request handed to [`api::serve`].

mod activity;
mod deadline_body;
mod shutdown;
mod watchdog;

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::MAX_HEAD_AND_FRAME;
use crate::api::{self, Peer};
use crate::config::LimitSettings;
use crate::state::State;
use activity::{Activity, Answer, WriteWatch};
use deadline_body::DeadlineBody;
use watchdog::{Cut, HeadWatchdog};

pub(super) use shutdown::Shutdown;

/// Runs one client connection: TLS handshake under `limits.handshake_timeout`,
/// then HTTP/1.1 with `limits.header_timeout` and `limits.body_timeout`.
pub(super) async fn serve_connection(
    state: &'static State,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    addr: std::net::SocketAddr,
    shutdown: Arc<Shutdown>,
    limits: LimitSettings,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(peer = %addr, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            state.metrics.connections_timed_out.with_label_values(&["handshake"]).inc();
            tracing::debug!(peer = %addr, "TLS handshake timed out");
            return;
        }
    };
    let identity = {
        let (_, conn) = tls.get_ref();
        let chain = conn.peer_certificates().unwrap_or(&[]);
        crate::tls::identity_of_chain(chain)
    };
    let peer = Arc::new(Peer { ip: Some(addr.ip().to_string().into()), identity: identity.map(Arc::from) });
    let metrics = state.metrics.clone();
    let body_timeout = limits.body_timeout;
    let activity = Arc::new(Activity::new());
    let requests = activity.clone();
    let service = service_fn(move |req: http::Request<Incoming>| {
        requests.begin();
        let reply = api::serve(state, peer.clone(), req.map(|body| DeadlineBody::new(body, body_timeout)));
        Answer { reply, activity: Some(requests.clone()) }
    });
    // hyper's own HTTP/1 connection, not hyper-util's `auto` one: `auto`
    // first waits for 24 bytes to tell HTTP/2 from HTTP/1 with no timeout,
    // so a client that handshakes and then sends nothing would hold its
    // slot forever. HTTP/2 is not served anyway. The header timeout is the
    // connection's `HeadWatchdog`, not hyper's (which arms a timer per request).
    let io = WriteWatch { inner: tls, activity: activity.clone() };
    let conn = http1::Builder::new().max_buf_size(MAX_HEAD_AND_FRAME).serve_connection(TokioIo::new(io), service);
    match HeadWatchdog::new(conn, activity, shutdown, limits).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(peer = %addr, error = %e, "connection ended with an error"),
        Err(Cut::Head) => {
            metrics.connections_timed_out.with_label_values(&["header"]).inc();
            tracing::debug!(peer = %addr, "request head not received within limits.header_timeout");
        }
        Err(Cut::Write) => {
            metrics.connections_timed_out.with_label_values(&["write"]).inc();
            tracing::debug!(peer = %addr, "answer not read by the client within limits.write_timeout");
        }
    }
}
