//! Opening connections to servers: TCP, then TLS when the backend asks for it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

use crate::error::{ErrorKind, ProxyError};
use crate::io::UpIo;

/// TLS settings for connections to one server.
#[derive(Clone)]
pub struct UpstreamTls {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: ServerName<'static>,
}

/// Connects to `addr`, sends `proxy` (a PROXY header) when given, and completes TLS,
/// within `timeout`.
pub async fn connect(
    addr: SocketAddr,
    tls: Option<&UpstreamTls>,
    timeout: Duration,
    proxy: Option<&[u8]>,
) -> Result<UpIo, ProxyError> {
    let work = async {
        let mut tcp = TcpStream::connect(addr).await.map_err(|e| {
            ProxyError::new(ErrorKind::ConnectFailed, format!("connect to {addr}: {e}"))
        })?;
        let _ = tcp.set_nodelay(true);
        if let Some(header) = proxy {
            use tokio::io::AsyncWriteExt;
            tcp.write_all(header).await.map_err(|e| {
                ProxyError::new(
                    ErrorKind::ConnectFailed,
                    format!("PROXY header to {addr}: {e}"),
                )
            })?;
        }
        match tls {
            None => Ok(UpIo::Plain(tcp)),
            Some(t) => {
                let s = crate::tls::stream::TlsStream::connect(
                    tcp,
                    t.config.clone(),
                    t.server_name.clone(),
                )
                .await
                .map_err(|e| {
                    ProxyError::new(ErrorKind::ConnectFailed, format!("TLS with {addr}: {e}"))
                })?;
                Ok(UpIo::Tls(Box::new(s)))
            }
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(ProxyError::new(
            ErrorKind::ConnectTimeout,
            format!("connect to {addr}: timed out after {timeout:?}"),
        )),
    }
}
