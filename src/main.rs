//! rampart: a high-availability L7 reverse proxy and load balancer.
//!
//! The binary: command line, logging, signals, and the wiring of configuration to the
//! proxy. Everything else lives in the crates.

mod ctl;
mod demo;
mod ha;
mod notify;
mod reload;
mod upgrade;
mod xds;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};

/// jemalloc (the `jemalloc` feature, on by default): see Cargo.toml.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "rampart",
    version,
    about = "A high-availability L7 reverse proxy and load balancer"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy with a configuration file, an Envoy bootstrap file, or both.
    #[command(group(clap::ArgGroup::new("source").required(true).multiple(true).args(["config", "envoy_bootstrap"])))]
    Run {
        /// Configuration file (YAML).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Envoy's bootstrap file (YAML or JSON), as `envoy -c` takes it: the node, the
        /// ADS control plane, static listeners and clusters, the admin address.
        #[arg(long, value_name = "FILE")]
        envoy_bootstrap: Option<PathBuf>,
    },
    /// Check a configuration file (or an Envoy bootstrap file) and exit: 0 when valid, 1
    /// otherwise.
    #[command(group(clap::ArgGroup::new("source").required(true).multiple(true).args(["config", "envoy_bootstrap"])))]
    Check {
        /// Configuration file (YAML).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Envoy's bootstrap file (YAML or JSON).
        #[arg(long, value_name = "FILE")]
        envoy_bootstrap: Option<PathBuf>,
        /// Print nothing when the file is valid.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Send a command to the runtime API and print the answer; without a command, an
    /// interactive prompt.
    Ctl {
        /// Runtime API socket: a Unix socket path or ip:port (default: the first
        /// admin.socket of --config, else ./run/rampart.sock).
        #[arg(short, long)]
        socket: Option<String>,
        /// Take the socket from this configuration file.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// The command, e.g. `show stat` or `set server app/web1 state drain`.
        command: Vec<String>,
    },
    /// Print the configuration's JSON Schema, for editors (`rampart schema >
    /// rampart.schema.json`; VS Code's YAML extension: `yaml.schemas`).
    Schema,
    /// Run a demo: the front door on 127.0.0.1:8080 with three built-in servers.
    Demo {
        /// Use this configuration instead of examples/demo.yaml.
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},h2=warn,hyper=warn,rustls=warn"))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

fn load(path: &Path) -> Result<rampart_config::Config, rampart_config::ConfigErrors> {
    rampart_config::load_file(path)
}

fn base_dir(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

async fn wait_for_stop() -> Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// A fingerprint of the file, to notice changes: its modification time, length and text.
fn fingerprint(path: &Path) -> Option<(std::time::SystemTime, u64, u64)> {
    use std::hash::{Hash, Hasher};
    use std::io::Read;
    let meta = std::fs::metadata(path).ok()?;
    // No more than a configuration may be: past that, the reload refuses it anyway.
    let mut text = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(rampart_config::limits::MAX_FILE_BYTES + 1)
        .read_to_end(&mut text)
        .ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    Some((meta.modified().ok()?, meta.len(), h.finish()))
}

/// A fingerprint of the files TLS read: a certificate renewed in place (by an ACME client,
/// say) is served without a reload by hand.
fn tls_fingerprint(files: &[PathBuf]) -> u64 {
    use std::hash::{Hash, Hasher};
    use std::io::Read;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in files {
        f.hash(&mut h);
        let mut text = Vec::new();
        if let Ok(file) = std::fs::File::open(f) {
            let _ = file
                .take(rampart_config::limits::MAX_PEM_FILE_BYTES + 1)
                .read_to_end(&mut text);
        }
        text.hash(&mut h);
    }
    h.finish()
}

/// Reloads on SIGHUP and when the file's content changes, or the content of a certificate,
/// key, CA or CRL file it uses (checked every second; a change is applied once the files
/// have been stable for a check, so half-written files are not read).
async fn watch_config(reloader: std::sync::Arc<reload::Reloader>, path: PathBuf) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("cannot install the SIGHUP handler: {e}");
            None
        }
    };
    let mut applied = fingerprint(&path).map(|f| f.2);
    let mut seen = fingerprint(&path);
    let mut tls_applied = tls_fingerprint(&reloader.tls_files());
    let mut tls_seen = tls_applied;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        let by_signal = tokio::select! {
            _ = tick.tick() => false,
            Some(()) = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => true,
        };
        let now = fingerprint(&path);
        let changed = now.is_some() && now == seen && now.map(|f| f.2) != applied;
        seen = now;
        let tls_files = reloader.tls_files();
        let tls_now = tls_fingerprint(&tls_files);
        let tls_changed = tls_now == tls_seen && tls_now != tls_applied;
        tls_seen = tls_now;
        if by_signal || changed || tls_changed {
            tracing::info!(
                "reloading {} ({})",
                path.display(),
                if by_signal {
                    "SIGHUP"
                } else if changed {
                    "file changed"
                } else {
                    "a certificate file changed"
                }
            );
            applied = now.map(|f| f.2);
            let r = reloader.clone();
            match tokio::task::spawn_blocking(move || r.reload()).await {
                Ok(Ok(msg)) => tracing::info!("{msg}"),
                // Logged where it failed.
                Ok(Err(_)) => {}
                Err(e) => tracing::error!("reload: {e}"),
            }
            // The files of the configuration now in use, as they were before the reload
            // read them: one written while it ran is seen as changed at the next checks
            // (and read again), never taken for what was applied; after a failed reload,
            // bad files are not tried again until they change again. A configuration that
            // names other files has them fingerprinted as they are now.
            let now_files = reloader.tls_files();
            tls_applied = if now_files == tls_files {
                tls_now
            } else {
                tls_fingerprint(&now_files)
            };
            tls_seen = tls_applied;
        }
    }
}

/// How `serve` runs: `rampart run` may be upgraded, and may itself have been started by an
/// upgrade.
#[derive(Default)]
struct Upgrades {
    enabled: bool,
    received: Option<upgrade::Received>,
}

/// What an upgrade of this process hands over: copies of every listening socket, the
/// server states, the VRRP instances that are Master, and every stick table's entries.
fn handed(handle: &rampart_proxy::ProxyHandle, admin: &rampart_admin::AdminCtx) -> upgrade::Handed {
    let mut listeners = handle.control().listening_sockets();
    listeners.extend(rampart_proxy::inherit::exported());
    let tables = handle
        .snapshot()
        .tables
        .iter()
        .flat_map(|t| rampart_proxy::stick::peers::encode_updates(t, &t.snapshot()))
        .collect();
    upgrade::Handed {
        listeners,
        states: rampart_admin::state_file::text(admin),
        vrrp_masters: admin.vrrp.masters(),
        tables,
    }
}

/// Starts the new process and waits until it serves: its pid and the answer for the
/// runtime API.
async fn upgrade_now(
    handle: &rampart_proxy::ProxyHandle,
    admin: &rampart_admin::AdminCtx,
) -> Result<(u32, String), String> {
    tracing::info!("upgrade: starting the new process");
    let handed = handed(handle, admin);
    let started = tokio::task::spawn_blocking(move || upgrade::start_successor(handed))
        .await
        .map_err(|e| e.to_string())??;
    let msg = format!(
        "Upgrade done: process {} ({}) serves on the {} listening sockets handed over; \
         process {} drains (grace {}s).",
        started.pid,
        started.exe.display(),
        started.sockets,
        std::process::id(),
        handle.grace().as_secs()
    );
    tracing::info!("{msg}");
    Ok((started.pid, msg))
}

async fn serve(
    cfg: rampart_config::Config,
    text: Option<String>,
    base: &Path,
    path: Option<&Path>,
    banner: Option<&dyn Fn(&rampart_proxy::ProxyHandle) -> String>,
    ads: Option<rampart_xds::Settings>,
    mut upgrades: Upgrades,
) -> Result<()> {
    if upgrades.enabled {
        rampart_proxy::inherit::enable_export();
    }
    let received = upgrades.received.take();
    let static_cfg = ads.as_ref().map(|_| cfg.clone());
    let mut admin_vrrp_resume = Vec::new();
    let sockets = cfg.admin.socket.clone();
    let state_file = cfg.global.state_file.as_ref().map(|p| base.join(&p.value));
    let admin_http = cfg.admin.http.clone();
    let stats = cfg.admin.stats.clone();
    let peers_cfg = cfg.peers.clone();
    let handle = rampart_proxy::start(cfg, base).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut handed_states = None;
    if let Some(r) = received {
        let n = upgrade::restore_tables(&handle.snapshot().tables, r.tables);
        tracing::info!(
            "upgrade: took over {} listening sockets and {n} stick table entries",
            r.sockets
        );
        handed_states = r.states;
        admin_vrrp_resume = r.vrrp_masters;
    }
    // Peers replicate stick tables; the tables are read from the running snapshot, so
    // reloads that change tables apply at once (the peers section itself at restart).
    let peers = match &peers_cfg {
        Some(p) => {
            let shared = handle.control().shared().clone();
            let tables: rampart_proxy::stick::peers::TablesFn =
                std::sync::Arc::new(move || shared.snapshot.load().tables.clone());
            let status = handle.control().shared().live.peers.clone();
            Some(
                rampart_proxy::stick::peers::start(p, tables, status).with_context(|| {
                    format!(
                        "peers: cannot listen on {}",
                        p.nodes.get(&p.local.value).map_or("", |a| a.value.as_str())
                    )
                })?,
            )
        }
        None => None,
    };
    for b in handle.bound() {
        tracing::info!(frontend = %b.frontend, "listening on {}", b.local);
    }
    // The control plane's resources are added to the static configuration through the
    // same reload path as a file change.
    let xds_client = match (ads, static_cfg) {
        (Some(settings), Some(base_cfg)) => {
            tracing::info!(
                "xDS: control plane {} ({})",
                settings.display,
                settings.mode.as_str()
            );
            let applier = xds::ProxyApplier {
                control: handle.control().clone(),
                base_dir: base.to_path_buf(),
            };
            Some(std::sync::Arc::new(
                rampart_xds::Xds::start(settings, base_cfg, Box::new(applier))
                    .context("starting the xDS client")?,
            ))
        }
        _ => None,
    };
    let text: rampart_admin::ConfigText = std::sync::Arc::new(std::sync::Mutex::new(text));
    let reloader = path.map(|p| {
        reload::Reloader::new(
            handle.control().clone(),
            p,
            text.clone(),
            xds_client.clone(),
        )
    });
    let reload: Option<std::sync::Arc<rampart_admin::Reloader>> = reloader.clone().map(|r| {
        std::sync::Arc::new(move || r.reload()) as std::sync::Arc<rampart_admin::Reloader>
    });
    let admin = rampart_admin::AdminCtx::build(
        handle.control().clone(),
        reload,
        state_file.clone(),
        text.clone(),
    );
    if let Some(x) = &xds_client {
        let _ = admin.xds.set(std::sync::Arc::new(xds::View(x.clone())));
    }
    // Upgrades asked for on the runtime API wait until this process is ready.
    let (up_tx, mut up_rx) = tokio::sync::mpsc::unbounded_channel::<
        tokio::sync::oneshot::Sender<Result<String, String>>,
    >();
    if upgrades.enabled {
        let _ = admin.upgrade.set(std::sync::Arc::new(move || {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let _ = up_tx.send(tx);
            rx
        }));
    }
    if let Some(text) = &handed_states {
        // The replaced process's states: newer than any file.
        match rampart_admin::state_file::load_text(&admin, text) {
            Ok(l) => tracing::info!(
                "upgrade: restored {} server states ({} lines skipped)",
                l.servers,
                l.skipped
            ),
            Err(e) => tracing::warn!("upgrade: server states not restored: {e}"),
        }
    } else if let Some(p) = &state_file {
        match rampart_admin::state_file::load(&admin, p) {
            Ok(l) => tracing::info!(
                "restored {} server states from {} ({} lines skipped)",
                l.servers,
                p.display(),
                l.skipped
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("cannot read server states from {}: {e}", p.display()),
        }
    }
    let api_tasks = rampart_admin::serve_sockets(&sockets, base, admin.clone())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let http = match admin_http {
        Some(a) => Some(
            rampart_admin::serve_http(&a.value, rampart_admin::HttpOpts { stats }, admin.clone())
                .await
                .with_context(|| format!("admin.http: cannot listen on {}", a.value))?,
        ),
        None => None,
    };
    let vrrp = admin.vrrp.clone();
    vrrp.resume_as_master(admin_vrrp_resume);
    if let Err(failures) = ha::start(&vrrp, &handle.snapshot().config, base).await {
        let all: Vec<String> = failures.iter().map(ToString::to_string).collect();
        anyhow::bail!("VRRP: {}", all.join("; "));
    }
    let ha_task = tokio::spawn(ha::run(
        vrrp.clone(),
        handle.control().clone(),
        base.to_path_buf(),
    ));
    if let Some(f) = banner {
        println!("{}", f(&handle));
    }
    let watch_task = match (path, reloader) {
        (Some(p), Some(r)) => Some(tokio::spawn(watch_config(r, p.to_path_buf()))),
        _ => None,
    };
    // Listeners bound, configuration applied, runtime API and VRRP up.
    if upgrade::report_ready() {
        // The replaced process tells systemd this is the main process now.
        for (tag, addr) in rampart_proxy::inherit::release_unclaimed() {
            tracing::info!("upgrade: closed {addr} ({tag}): the configuration no longer has it");
        }
    } else {
        notify::ready();
    }
    if let Some(every) = notify::watchdog_interval() {
        tokio::spawn(notify::watchdog(every));
    }
    let mut usr2 = {
        use tokio::signal::unix::{SignalKind, signal};
        signal(SignalKind::user_defined2()).context("installing the SIGUSR2 handler")?
    };
    let stop = wait_for_stop();
    tokio::pin!(stop);
    let handed_to = loop {
        tokio::select! {
            sig = &mut stop => break Err(sig?),
            Some(()) = usr2.recv() => {
                if !upgrades.enabled {
                    tracing::warn!("SIGUSR2: upgrades need `rampart run`");
                    continue;
                }
                match upgrade_now(&handle, &admin).await {
                    Ok((pid, _)) => break Ok(pid),
                    Err(e) => tracing::error!("upgrade failed, this process keeps serving: {e}"),
                }
            }
            Some(reply) = up_rx.recv() => {
                match upgrade_now(&handle, &admin).await {
                    Ok((pid, msg)) => {
                        let _ = reply.send(Ok(msg));
                        break Ok(pid);
                    }
                    Err(e) => {
                        tracing::error!("upgrade failed, this process keeps serving: {e}");
                        let _ = reply.send(Err(e));
                    }
                }
            }
        }
    };
    if let Ok(pid) = handed_to {
        notify::send(&format!("MAINPID={pid}\nREADY=1\nSTATUS=serving"));
        while let Ok(r) = up_rx.try_recv() {
            let _ = r.send(Err(format!(
                "this process already handed over to process {pid}"
            )));
        }
        // The new process accepts on every socket now: stop taking anything here.
        for t in &api_tasks {
            t.abort();
        }
        if let Some((_, t)) = &http {
            t.abort();
        }
        if let Some(p) = &peers {
            p.stop_accepting();
        }
        if let Some(t) = watch_task {
            t.abort();
        }
        ha_task.abort();
        // The new process started these instances as Master: no priority 0, the
        // addresses stay.
        vrrp.hand_over().await;
        if let Some(x) = &xds_client {
            x.shutdown();
        }
        tracing::info!(
            "handed over to process {pid}: draining (grace {:?})",
            handle.grace()
        );
        tokio::select! {
            _ = handle.hand_over() => {}
            sig = &mut stop => {
                tracing::warn!("{}: the drain ends now", sig.unwrap_or("signal"));
            }
        }
        // Answers being written (the `upgrade` that started this) get out first.
        admin.answered(std::time::Duration::from_secs(5)).await;
        if let Some(p) = peers {
            tokio::task::spawn_blocking(move || p.shutdown()).await.ok();
        }
        tracing::info!("stopped");
        return Ok(());
    }
    let sig = match handed_to {
        Err(sig) => sig,
        Ok(_) => "upgrade",
    };
    notify::stopping();
    tracing::info!("{sig}: stopping (grace {:?})", handle.grace());
    admin.persist();
    // Hand the floating addresses over first (priority 0: the peer takes over after its
    // skew time), then drain.
    vrrp.shutdown().await;
    // No update is applied while the proxy drains.
    if let Some(x) = &xds_client {
        x.shutdown();
    }
    handle.shutdown().await;
    if let Some(p) = peers {
        // Last, so that updates made while draining reach the other nodes.
        tokio::task::spawn_blocking(move || p.shutdown()).await.ok();
    }
    tracing::info!("stopped");
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the main runtime")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check {
            config,
            envoy_bootstrap,
            quiet,
        } => {
            init_logging("warn");
            let name = config
                .as_ref()
                .or(envoy_bootstrap.as_ref())
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let checked = xds::load(config.as_deref(), envoy_bootstrap.as_deref()).and_then(|s| {
                rampart_proxy::check(s.config, &s.base_dir).map_err(|e| e.in_file(&name))
            });
            return match checked {
                Ok(warnings) => {
                    for w in &warnings {
                        eprintln!("{name}: warning: {w}");
                    }
                    if !quiet {
                        println!("Configuration file is valid");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    eprintln!(
                        "Configuration file has {} error{}",
                        e.0.len(),
                        if e.0.len() == 1 { "" } else { "s" }
                    );
                    ExitCode::FAILURE
                }
            };
        }
        Command::Ctl {
            socket,
            config,
            command,
        } => {
            let target = match ctl::socket_for(socket, config.as_deref()) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("rampart ctl: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            if command.is_empty() {
                ctl::interactive(&target)
            } else {
                ctl::one(&target, &command.join(" ")).map(|answer| {
                    if !answer.is_empty() {
                        println!("{answer}");
                    }
                })
            }
        }
        Command::Run {
            config,
            envoy_bootstrap,
        } => {
            upgrade::note_exe();
            // Started by an upgrade: the old process's sockets first, before anything binds.
            let received = match upgrade::receive() {
                None => None,
                Some(Ok(r)) => Some(r),
                Some(Err(e)) => {
                    eprintln!("rampart: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match xds::load(config.as_deref(), envoy_bootstrap.as_deref()) {
                Ok(s) => {
                    init_logging(s.config.global.log_level.as_str());
                    runtime().and_then(|rt| {
                        rt.block_on(serve(
                            s.config,
                            s.text,
                            &s.base_dir,
                            config.as_deref(),
                            None,
                            s.ads,
                            Upgrades {
                                enabled: true,
                                received,
                            },
                        ))
                    })
                }
                Err(e) => {
                    eprintln!("{e}");
                    upgrade::report_failure(&e.to_string());
                    return ExitCode::FAILURE;
                }
            }
        }
        Command::Schema => {
            print!("{}", rampart_config::schema::json_schema());
            Ok(())
        }
        Command::Demo { config } => {
            let loaded = match &config {
                Some(p) => load(p),
                None => {
                    rampart_config::load_str(demo::CONFIG, None, &rampart_config::yaml::ProcessEnv)
                        .map_err(|e| e.in_file("examples/demo.yaml"))
                }
            };
            match loaded {
                Ok(cfg) => {
                    init_logging(cfg.global.log_level.as_str());
                    let base = config.as_deref().map(base_dir).unwrap_or_default();
                    runtime().and_then(|rt| {
                        rt.block_on(async {
                            for (name, addr) in demo::SERVERS {
                                let a = addr.parse().context("demo address")?;
                                demo::serve(name, a).await.with_context(|| {
                                    format!("starting demo server {name} on {addr}")
                                })?;
                            }
                            let banner = |h: &rampart_proxy::ProxyHandle| {
                                demo::banner(h.bound().first().map_or_else(
                                    || {
                                        "127.0.0.1:8080".parse().unwrap_or(
                                            std::net::SocketAddr::from(([127, 0, 0, 1], 8080)),
                                        )
                                    },
                                    |b| b.local,
                                ))
                            };
                            let text = match &config {
                                Some(p) => rampart_config::read_file(p).ok(),
                                None => Some(demo::CONFIG.to_owned()),
                            };
                            serve(
                                cfg,
                                text,
                                &base,
                                config.as_deref(),
                                Some(&banner),
                                None,
                                Upgrades::default(),
                            )
                            .await
                        })
                    })
                }
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rampart: {e:#}");
            // Started by an upgrade: the old process keeps serving and says why.
            upgrade::report_failure(&format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}
