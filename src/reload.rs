//! Reloading the configuration file: the one path behind the runtime API's `reload`,
//! SIGHUP and file changes.
//!
//! Reading, checking and compiling run on a thread of their own, never on the threads that
//! serve traffic, and the caller waits at most `global.reload_timeout` for them. Past it
//! the caller is told the reload gave up, and that configuration is never applied (see
//! [`Attempt`]); the thread ends on its own, and no other reload starts before it has.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use rampart_proxy::runtime::{Attempt, Control, ReloadError};

/// Reloads one configuration file.
pub struct Reloader {
    control: Arc<Control>,
    path: PathBuf,
    text: rampart_admin::ConfigText,
    xds: Option<Arc<rampart_xds::Xds>>,
    /// A reload given up on whose thread has not ended yet: when, and the thread.
    abandoned: Mutex<Option<(Instant, std::thread::JoinHandle<()>)>>,
}

impl Reloader {
    pub fn new(
        control: Arc<Control>,
        path: &Path,
        text: rampart_admin::ConfigText,
        xds: Option<Arc<rampart_xds::Xds>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            control,
            path: path.to_path_buf(),
            text,
            xds,
            abandoned: Mutex::new(None),
        })
    }

    /// The certificate, key, CA and CRL files the running configuration read.
    pub fn tls_files(&self) -> Vec<PathBuf> {
        self.control.shared().snapshot.load().tls_files.clone()
    }

    /// Reloads, waiting at most the running configuration's `global.reload_timeout`.
    /// Returns what to tell the caller. Reloads asked for at once run one after the other.
    pub fn reload(&self) -> Result<String, String> {
        // systemd hears of it (`Type=notify-reload`): RELOADING=1 now, READY=1 when it
        // ends, applied or not (the configuration in use serves either way).
        crate::notify::reloading();
        let r = self.reload_now();
        crate::notify::ready();
        r
    }

    fn reload_now(&self) -> Result<String, String> {
        let mut abandoned = self
            .abandoned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((since, thread)) = abandoned.take() {
            if !thread.is_finished() {
                let msg = format!(
                    "a reload given up {:.0?} ago is still reading or compiling its \
                     configuration (which will not be applied); try again once it ends",
                    since.elapsed()
                );
                *abandoned = Some((since, thread));
                self.failed(&msg);
                return Err(msg);
            }
            let _ = thread.join();
        }
        let timeout = self.control.shared().snapshot.load().global.reload_timeout;
        let attempt = Attempt::new();
        let (tx, rx) = mpsc::channel();
        let work = Work {
            control: self.control.clone(),
            path: self.path.clone(),
            text: self.text.clone(),
            xds: self.xds.clone(),
        };
        let a = attempt.clone();
        let thread = std::thread::Builder::new()
            .name("rampart-reload".into())
            .spawn(move || {
                let r = a.run(|| work.reload(&a));
                if a.given_up() {
                    tracing::warn!(
                        "a reload given up on has ended ({}); its configuration was not applied",
                        match &r {
                            Ok(_) => "compiled".to_owned(),
                            Err(e) => e.lines().next().unwrap_or_default().to_owned(),
                        }
                    );
                }
                let _ = tx.send(r);
            })
            .map_err(|e| format!("cannot start the reload: {e}"))?;
        match rx.recv_timeout(timeout) {
            Ok(r) => {
                let _ = thread.join();
                r
            }
            Err(mpsc::RecvTimeoutError::Timeout) if attempt.give_up() => {
                *abandoned = Some((Instant::now(), thread));
                let msg = gave_up(timeout);
                self.failed(&msg);
                Err(msg)
            }
            // Being installed: that cannot fail and is quick.
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let r = rx
                    .recv()
                    .unwrap_or_else(|_| Err("the reload stopped unexpectedly".to_owned()));
                let _ = thread.join();
                r
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = thread.join();
                Err("the reload stopped unexpectedly".to_owned())
            }
        }
    }

    /// Counts and logs a reload that failed before the proxy saw it.
    fn failed(&self, msg: &str) {
        refusal(&self.control, " ", &msg);
    }
}

/// Counts and logs a refused reload; `sep` goes before `msg` (a new line before a list
/// of errors).
fn refusal(control: &Control, sep: &str, msg: &dyn std::fmt::Display) {
    control
        .shared()
        .live
        .global
        .reloads_failed
        .fetch_add(1, Relaxed);
    tracing::error!("reload refused, the running configuration is unchanged:{sep}{msg}");
}

fn gave_up(timeout: Duration) -> String {
    format!(
        "gave up after {timeout:?} (global.reload_timeout): reading, checking and compiling \
         the configuration did not finish in time; it will not be applied"
    )
}

/// What the reload thread needs.
struct Work {
    control: Arc<Control>,
    path: PathBuf,
    text: rampart_admin::ConfigText,
    xds: Option<Arc<rampart_xds::Xds>>,
}

impl Work {
    fn reload(&self, attempt: &Attempt) -> Result<String, String> {
        let control = &self.control;
        let file = self.path.display().to_string();
        // A refusal the proxy did not see itself: counted and logged here.
        // (Not when the caller gave up: that was counted when it did.)
        let refused = |e: rampart_config::ConfigErrors| {
            let e = e.in_file(&file);
            if !attempt.given_up() {
                refusal(control, "\n", &e);
            }
            e.to_string()
        };
        let text = rampart_config::read_file(&self.path).map_err(refused)?;
        let cfg = rampart_config::load_text_with(&text, &self.path, Default::default())
            .map_err(refused)?;
        if attempt.given_up() {
            return Err("given up".to_owned());
        }
        let running = control.shared().snapshot.load().config.clone();
        for (what, changed) in [
            ("peers", running.peers != cfg.peers),
            ("admin", running.admin != cfg.admin),
            ("xds", self.xds.is_some() && running.xds != cfg.xds),
        ] {
            if changed {
                tracing::warn!("{what} settings changed: they apply at the next start");
            }
        }
        let done = |generation: u64, warnings: &[String]| {
            if let Ok(mut t) = self.text.lock() {
                *t = Some(text.clone());
            }
            let mut answer = format!("Configuration reloaded (generation {generation}).");
            for w in warnings {
                answer.push_str(&format!("\n{file}: warning: {w}"));
            }
            answer
        };
        if let Some(x) = &self.xds {
            // The control plane's resources are added to the new file's configuration.
            return match x.set_base(cfg) {
                Ok(()) => {
                    let now = control.shared().snapshot.load();
                    Ok(done(now.generation, &now.warnings))
                }
                Err(rampart_xds::BaseRefused::Conflict(e)) => Err(refused(e)),
                Err(rampart_xds::BaseRefused::Applier(e)) => Err(e.in_file(&file).to_string()),
            };
        }
        let base = self
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        match control.reload(cfg, &base) {
            Ok(r) => Ok(done(r.generation, &r.warnings)),
            Err(ReloadError::Config(e)) => Err(e.in_file(&file).to_string()),
            Err(e) => Err(e.to_string()),
        }
    }
}
