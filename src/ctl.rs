//! `rampart ctl`: a client for the runtime API. With a command it sends that one line and
//! prints the answer; without, it opens an interactive prompt with line editing and
//! history (kept in `~/.rampart_history`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

/// A connection to a runtime API socket.
enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Conn {
    fn try_clone(&self) -> std::io::Result<Conn> {
        Ok(match self {
            Conn::Unix(s) => Conn::Unix(s.try_clone()?),
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
        })
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Unix(s) => s.flush(),
            Conn::Tcp(s) => s.flush(),
        }
    }
}

/// Connects to `target`: a Unix socket path, or `ip:port`.
fn connect(target: &str) -> Result<Conn> {
    if let Ok(addr) = target.parse::<std::net::SocketAddr>() {
        let s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        return Ok(Conn::Tcp(s));
    }
    let s = UnixStream::connect(target).with_context(|| format!("connecting to {target}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    Ok(Conn::Unix(s))
}

/// The socket to use: `-s`, else the first socket of `-c CONFIG`, else
/// `./run/rampart.sock`.
pub fn socket_for(socket: Option<String>, config: Option<&Path>) -> Result<String> {
    if let Some(s) = socket {
        return Ok(s);
    }
    if let Some(c) = config {
        let admin = rampart_config::load_admin(c).map_err(|e| anyhow::anyhow!("{e}"))?;
        let base = c.parent().unwrap_or(Path::new(""));
        if let Some(s) = admin.socket.first() {
            if let Some(p) = &s.path {
                return Ok(base.join(&p.value).display().to_string());
            }
            if let Some(a) = &s.address {
                return Ok(a.value.clone());
            }
        }
        anyhow::bail!("{} has no admin.socket", c.display());
    }
    Ok("./run/rampart.sock".to_owned())
}

/// Sends one command line; returns the answer without its final empty line.
pub fn one(target: &str, line: &str) -> Result<String> {
    let mut c = connect(target)?;
    c.write_all(format!("{line}\n").as_bytes())?;
    let mut out = String::new();
    c.read_to_string(&mut out)?;
    let len = out.trim_end_matches('\n').len();
    out.truncate(len);
    Ok(out)
}

/// Reads from the server until the prompt.
fn until_prompt(r: &mut impl BufRead) -> Result<Option<String>> {
    let mut out = Vec::new();
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(None);
        }
        let n = buf.len();
        out.extend_from_slice(buf);
        r.consume(n);
        if out.ends_with(b"\n> ") {
            out.truncate(out.len() - 3);
            return Ok(Some(String::from_utf8_lossy(&out).into_owned()));
        }
    }
}

/// The interactive prompt: line editing and history; `quit` or end of input leaves.
pub fn interactive(target: &str) -> Result<()> {
    let mut w = connect(target)?;
    let mut r = BufReader::new(w.try_clone()?);
    w.write_all(b"prompt\n")?;
    if until_prompt(&mut r)?.is_none() {
        anyhow::bail!("{target} closed the connection");
    }
    let mut ed = rustyline::DefaultEditor::new().context("starting the line editor")?;
    let history = std::env::var_os("HOME").map(|h| Path::new(&h).join(".rampart_history"));
    if let Some(h) = &history {
        let _ = ed.load_history(h);
    }
    loop {
        let line = match ed.readline("> ") {
            Ok(l) => l,
            Err(rustyline::error::ReadlineError::Interrupted) => continue,
            Err(_) => break,
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let _ = ed.add_history_entry(line);
        if line == "quit" {
            break;
        }
        w.write_all(format!("{line}\n").as_bytes())?;
        match until_prompt(&mut r)? {
            Some(answer) => {
                let answer = answer.trim_end_matches('\n');
                if !answer.is_empty() {
                    println!("{answer}");
                }
            }
            None => {
                eprintln!("connection closed");
                break;
            }
        }
    }
    let _ = w.write_all(b"quit\n");
    if let Some(h) = &history {
        let _ = ed.save_history(h);
    }
    Ok(())
}
