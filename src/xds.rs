//! Wiring of the xDS client: where its settings come from (the YAML `xds` section or an
//! Envoy bootstrap file), the applier it reloads the proxy through, and its views for the
//! runtime API and the admin listener.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rampart_config::{Config, ConfigError, ConfigErrors, Pos};
use rampart_proxy::runtime::{Control, ReloadError};
use rampart_xds::{Settings, Xds};

/// Applies configurations from the control plane through the proxy's one reload path.
pub struct ProxyApplier {
    pub control: Arc<Control>,
    pub base_dir: PathBuf,
}

impl rampart_xds::Applier for ProxyApplier {
    fn current(&self) -> Option<Arc<Config>> {
        Some(self.control.shared().snapshot.load().config.clone())
    }

    fn apply(&self, cfg: Config) -> Result<(), ConfigErrors> {
        match self.control.reload(cfg, &self.base_dir) {
            Ok(_) => Ok(()),
            Err(ReloadError::Config(e)) => Err(e),
            Err(ReloadError::Bind {
                frontend,
                addr,
                error,
            }) => Err(ConfigErrors(vec![ConfigError::new(
                Pos::default(),
                format!("frontends.{frontend}.bind"),
                format!("cannot bind {addr}: {error}"),
            )])),
            Err(e @ (ReloadError::GaveUp | ReloadError::Draining)) => {
                Err(ConfigErrors(vec![ConfigError::new(
                    Pos::default(),
                    "",
                    e.to_string(),
                )]))
            }
        }
    }
}

/// The client as the admin crate sees it.
pub struct View(pub Arc<Xds>);

impl rampart_admin::XdsView for View {
    fn show(&self, json: bool) -> String {
        self.0.show(json)
    }

    fn config_dump(&self) -> String {
        self.0.config_dump()
    }

    fn metrics(&self) -> rampart_admin::XdsMetrics {
        let m = self.0.metrics();
        rampart_admin::XdsMetrics {
            connected: m.connected,
            connects: m.connects,
            disconnects: m.disconnects,
            types: m
                .types
                .into_iter()
                .map(|t| rampart_admin::XdsTypeMetrics {
                    kind: t.kind,
                    resources: t.resources as u64,
                    warming: t.warming as u64,
                    accepted: t.accepted,
                    rejected: t.rejected,
                    last_update: t.last_update,
                })
                .collect(),
        }
    }
}

/// What `run` and `check` start from: the static configuration, the directory its file
/// names are relative to, its text (for `show config`), and the ADS connection if any.
pub struct Sources {
    pub config: Config,
    pub base_dir: PathBuf,
    pub text: Option<String>,
    pub ads: Option<Settings>,
}

fn base_dir(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Loads the YAML file, the Envoy bootstrap file, or both: the bootstrap's static
/// listeners and clusters join the YAML ones, and its ADS settings replace an `xds`
/// section (having both is an error).
pub fn load(yaml: Option<&Path>, bootstrap: Option<&Path>) -> Result<Sources, ConfigErrors> {
    let from_yaml = match yaml {
        Some(p) => {
            let opts = rampart_config::Load {
                frontends_elsewhere: bootstrap.is_some(),
            };
            let text = rampart_config::read_file(p)?;
            let cfg = rampart_config::load_text_with(&text, p, opts)?;
            let dir = base_dir(p);
            let ads = match &cfg.xds {
                Some(x) => Some(Settings::from_config(x, &dir).map_err(|e| {
                    ConfigErrors(vec![ConfigError::new(x.server.pos, "xds", e)])
                        .in_file(&p.display().to_string())
                })?),
                None => None,
            };
            Some((cfg, dir, Some(text), ads))
        }
        None => None,
    };
    let Some(b) = bootstrap else {
        return match from_yaml {
            Some((config, base_dir, text, ads)) => Ok(Sources {
                config,
                base_dir,
                text,
                ads,
            }),
            None => Err(ConfigErrors(vec![ConfigError::new(
                Pos::default(),
                "",
                "give a configuration file (-c) or an Envoy bootstrap file (--envoy-bootstrap)",
            )])),
        };
    };
    let boot = rampart_xds::bootstrap::load(b)?;
    let file = b.display().to_string();
    let Some((mut cfg, dir, text, ads)) = from_yaml else {
        return Ok(Sources {
            config: boot.config,
            base_dir: std::env::current_dir().unwrap_or_default(),
            text: rampart_config::read_file(b).ok(),
            ads: boot.ads,
        });
    };
    let clash = |what: &str, name: &str| {
        ConfigErrors(vec![ConfigError::new(
            Pos::default(),
            "",
            format!("{what} {name:?} is both in the configuration and in the bootstrap file"),
        )])
        .in_file(&file)
    };
    if ads.is_some() && boot.ads.is_some() {
        return Err(ConfigErrors(vec![ConfigError::new(
            Pos::default(),
            "xds",
            "the control plane is set both here and in the bootstrap file",
        )]));
    }
    for (n, f) in boot.config.frontends.into_entries() {
        if cfg.frontends.contains(&n.value) {
            return Err(clash("listener", &n.value));
        }
        cfg.frontends.push(n, f);
    }
    for (n, bk) in boot.config.backends.into_entries() {
        if cfg.backends.contains(&n.value) {
            return Err(clash("cluster", &n.value));
        }
        cfg.backends.push(n, bk);
    }
    if cfg.admin.http.is_none() {
        cfg.admin.http = boot.config.admin.http;
    }
    if cfg.xds.is_none() {
        cfg.xds = boot.config.xds;
    }
    // Addresses bound twice and the like, across the two files.
    let errors = rampart_config::validate::validate(&cfg, false);
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    Ok(Sources {
        config: cfg,
        base_dir: dir,
        text,
        ads: ads.or(boot.ads),
    })
}
