//! Runtime API sockets and HAProxy's session framing.
//!
//! By default a session is one line: the client writes a line of commands separated by
//! `;` (`\;` escapes one), rampart answers each, each answer ending with an empty line, and
//! closes. `prompt` makes the session interactive: every answer is followed by `"> "`,
//! lines are read until `quit`, end of input, or the session's idle timeout
//! (`set timeout cli`, 10 s by default).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rampart_config::model::{AdminSocket, CliLevel};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener};

use crate::AdminCtx;
use crate::commands;

/// The longest command line read (HAProxy's default payload cap).
const MAX_LINE: usize = 128 * 1024;

/// A runtime API socket that could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("runtime API socket {path}: {error}")]
    Unix {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("runtime API address {addr}: {error}")]
    Tcp { addr: String, error: std::io::Error },
}

/// The state of one session.
pub struct Session {
    pub level: CliLevel,
    pub prompt: bool,
    pub timeout: Duration,
    /// The payload of the command being run: the lines after a command line ending in
    /// `<<`, up to an empty line.
    pub payload: Option<String>,
}

/// Opens every configured socket and serves it until the returned tasks are aborted.
/// Relative paths are resolved from `base_dir`.
pub async fn serve_sockets(
    sockets: &[AdminSocket],
    base_dir: &Path,
    ctx: Arc<AdminCtx>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, SocketError> {
    let mut tasks = Vec::new();
    for s in sockets {
        let level = s.level;
        if let Some(p) = &s.path {
            let path = base_dir.join(&p.value);
            let l = bind_unix(&path, s.mode.0)
                .await
                .map_err(|error| SocketError::Unix {
                    path: path.clone(),
                    error,
                })?;
            tracing::info!(
                "runtime API on {} (level {})",
                path.display(),
                level.as_str()
            );
            tasks.push(tokio::spawn(accept_loop(l, ctx.clone(), level)));
        }
        if let Some(a) = &s.address {
            let l =
                rampart_proxy::inherit::take_or_bind(&format!("runtime-api {}", a.value), &a.value)
                    .and_then(TcpListener::from_std)
                    .map_err(|error| SocketError::Tcp {
                        addr: a.value.clone(),
                        error,
                    })?;
            let local = l.local_addr().map_err(|error| SocketError::Tcp {
                addr: a.value.clone(),
                error,
            })?;
            tracing::info!("runtime API on {local} (level {})", level.as_str());
            tasks.push(tokio::spawn(accept_loop(l, ctx.clone(), level)));
        }
    }
    Ok(tasks)
}

/// A listening socket of either kind.
trait Accept: Send + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept_one(&self)
    -> impl std::future::Future<Output = std::io::Result<Self::Stream>> + Send;
}

impl Accept for UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn accept_one(&self) -> std::io::Result<Self::Stream> {
        self.accept().await.map(|(s, _)| s)
    }
}

impl Accept for TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept_one(&self) -> std::io::Result<Self::Stream> {
        self.accept().await.map(|(s, _)| s)
    }
}

/// Serves sessions on `l` until aborted.
async fn accept_loop<L: Accept>(l: L, ctx: Arc<AdminCtx>, level: CliLevel) {
    loop {
        match l.accept_one().await {
            Ok(stream) => {
                tokio::spawn(session(stream, ctx.clone(), level));
            }
            Err(e) => {
                tracing::warn!("runtime API accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Binds a Unix socket, replacing a stale socket file that nobody listens on.
async fn bind_unix(path: &Path, mode: u32) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    // Handed over by the process this one replaces: the same socket, no gap.
    if let Some(l) = rampart_proxy::inherit::take_unix(path) {
        l.set_nonblocking(true)?;
        rampart_proxy::inherit::export("runtime-api", &l);
        return UnixListener::from_std(l);
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket",
            ));
        }
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another process is listening on it",
            ));
        }
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    rampart_proxy::inherit::export("runtime-api", &l);
    Ok(l)
}

/// Splits a command line on unescaped `;`.
pub fn split_commands(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&';') => {
                cur.push(';');
                chars.next();
            }
            ';' => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
        .collect()
}

/// Splits a command into words on blanks; a backslash escapes the next character.
pub fn split_words(cmd: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut has = false;
    let mut chars = cmd.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    has = true;
                }
            }
            c if c.is_ascii_whitespace() => {
                if has {
                    out.push(std::mem::take(&mut cur));
                    has = false;
                }
            }
            c => {
                cur.push(c);
                has = true;
            }
        }
    }
    if has {
        out.push(cur);
    }
    out
}

/// Serves one session.
pub async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    ctx: Arc<AdminCtx>,
    level: CliLevel,
) {
    let (r, mut w) = tokio::io::split(stream);
    let mut r = BufReader::new(r);
    let mut s = Session {
        level,
        prompt: false,
        timeout: Duration::from_secs(10),
        payload: None,
    };
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = tokio::time::timeout(s.timeout, async {
            let mut limited = (&mut r).take(MAX_LINE as u64);
            limited.read_until(b'\n', &mut line).await
        })
        .await;
        match read {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(_)) => {}
        }
        if line.len() >= MAX_LINE && !line.ends_with(b"\n") {
            let _ = w.write_all(b"Command line too long.\n\n").await;
            return;
        }
        let text = String::from_utf8_lossy(&line).into_owned();
        let mut text = text.trim_end_matches(['\n', '\r']);
        // A line ending in " <<" is followed by a payload, up to an empty line, for the
        // last command of the line.
        let mut payload = None;
        if let Some(head) = text
            .strip_suffix("<<")
            .filter(|h| h.is_empty() || h.ends_with(' '))
        {
            text = head;
            let mut body = Vec::new();
            loop {
                let mut l = Vec::new();
                let read = tokio::time::timeout(s.timeout, async {
                    let room = (MAX_LINE + 1).saturating_sub(body.len() + line.len()) as u64;
                    (&mut r).take(room).read_until(b'\n', &mut l).await
                })
                .await;
                match read {
                    Ok(Ok(0)) => break,
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) | Err(_) => return,
                }
                if body.len() + line.len() + l.len() > MAX_LINE {
                    let _ = w.write_all(b"Payload too long.\n\n").await;
                    return;
                }
                if l == b"\n" || l == b"\r\n" {
                    break;
                }
                body.extend_from_slice(&l);
            }
            payload = Some(String::from_utf8_lossy(&body).into_owned());
        }
        // From here until the answer is written, a draining process waits for it.
        let _busy = ctx.busy();
        let mut out = String::new();
        let cmds = split_commands(text);
        let last = cmds.len().saturating_sub(1);
        for (ci, cmd) in cmds.into_iter().enumerate() {
            if ci == last {
                s.payload = payload.take();
            }
            let words = split_words(&cmd);
            let Some(first) = words.first() else {
                continue;
            };
            let answer = match first.as_str() {
                "quit" => {
                    let _ = w.write_all(out.as_bytes()).await;
                    let _ = w.flush().await;
                    return;
                }
                "prompt" => {
                    s.prompt = !s.prompt;
                    String::new()
                }
                _ => commands::run(&ctx, &mut s, &words).await,
            };
            out.push_str(&answer);
            if !answer.is_empty() && !answer.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(if s.prompt { "\n> " } else { "\n" });
        }
        s.payload = None;
        if text.trim().is_empty() && s.prompt {
            out.push_str("\n> ");
        }
        if w.write_all(out.as_bytes()).await.is_err() || w.flush().await.is_err() {
            return;
        }
        if !s.prompt {
            let _ = w.shutdown().await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitting() {
        assert_eq!(
            split_commands("show info; show stat"),
            vec!["show info", "show stat"]
        );
        assert_eq!(split_commands("a\\;b;;c "), vec!["a;b", "c"]);
        assert_eq!(
            split_words("set  server a/b\\ c state"),
            vec!["set", "server", "a/b c", "state"]
        );
        assert!(split_words("   ").is_empty());
    }
}
