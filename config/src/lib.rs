//! rampart-config: the configuration model, YAML loading with precise errors, validation,
//! and the HAProxy-style rule language parsed into typed form.
//!
//! It owns what a configuration *means*; it does no I/O beyond reading the files a
//! configuration names (the file itself and ACL pattern files), and depends on no other
//! rampart crate. Certificates, addresses and sockets are checked when the proxy compiles
//! the configuration.
//!
//! Errors carry file, line, column and key path, and a misspelt key gets the nearest valid
//! one; every error in a file is reported, not only the first.

pub mod decode;
pub mod error;
pub mod limits;
pub mod logformat;
pub mod model;
pub mod resilience;
pub mod route;
pub mod rules;
pub mod schema;
pub mod stick;
pub mod time;
pub mod validate;
pub mod vrrp;
pub mod xds;
pub mod yaml;

use std::path::Path;

pub use decode::{NamedMap, Size, Spanned};
pub use error::{ConfigError, ConfigErrors, Pos};
pub use model::*;

use decode::{Cx, Decode};

/// Loads a configuration from YAML text. `base_dir` is where relative file names in it are
/// read from; `env` supplies `${VAR}` values.
pub fn load_str(
    text: &str,
    base_dir: Option<&Path>,
    env: &dyn yaml::Env,
) -> Result<Config, ConfigErrors> {
    load_str_with(text, base_dir, env, Load::default())
}

/// How a file is loaded.
#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    /// Frontends come from elsewhere too (an Envoy bootstrap file given beside it), so a
    /// file without any is not an error.
    pub frontends_elsewhere: bool,
}

/// [`load_str`] with options.
pub fn load_str_with(
    text: &str,
    base_dir: Option<&Path>,
    env: &dyn yaml::Env,
    opts: Load,
) -> Result<Config, ConfigErrors> {
    error::reset_hints();
    let node = yaml::parse(text, env).map_err(ConfigErrors)?;
    let mut cx = match base_dir {
        Some(d) => Cx::with_base_dir(d.to_path_buf()),
        None => Cx::new(),
    };
    let cfg = Config::decode(&node, &mut cx);
    let mut errors = cx.into_errors();
    if let Some(cfg) = cfg {
        // Validation also runs on a partly invalid file (invalid values fall back to their
        // defaults, invalid entries are left out but their names are known), so one pass
        // reports as much as possible.
        let partial = !errors.is_empty();
        errors.extend(validate::validate_with(&cfg, partial, opts));
        if errors.is_empty() {
            return Ok(cfg);
        }
    }
    if errors.is_empty() {
        errors.push(ConfigError::new(node.pos, "", "invalid configuration"));
    }
    errors.sort_by_key(|e| e.pos);
    Err(ConfigErrors(errors))
}

/// Reads a configuration file. One past [`limits::MAX_FILE_BYTES`] is refused without
/// being read whole.
pub fn read_file(path: &Path) -> Result<String, ConfigErrors> {
    read(path, &path.display().to_string())
}

fn read(path: &Path, name: &str) -> Result<String, ConfigErrors> {
    limits::read_bounded(path, limits::MAX_FILE_BYTES, "configuration file").map_err(|e| {
        let message = if e.ends_with("refused") {
            e
        } else {
            format!("cannot read configuration: {e}")
        };
        ConfigErrors(vec![ConfigError {
            file: Some(name.to_owned()),
            pos: Pos { line: 0, col: 0 },
            path: String::new(),
            message,
        }])
    })
}

/// Loads a configuration file, with the process environment for `${VAR}`.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    load_file_with(path, Load::default())
}

/// [`load_file`] with options.
pub fn load_file_with(path: &Path, opts: Load) -> Result<Config, ConfigErrors> {
    let text = read_file(path)?;
    load_text_with(&text, path, opts)
}

/// Loads `text`, read from the file `path` (see [`read_file`]): file names in it are
/// relative to that file's directory and errors name the file.
pub fn load_text_with(text: &str, path: &Path, opts: Load) -> Result<Config, ConfigErrors> {
    let name = path.display().to_string();
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    load_str_with(text, Some(&base), &yaml::ProcessEnv, opts).map_err(|e| e.in_file(&name))
}

/// Only the `admin` section of a configuration file, even when the rest has errors (so
/// that tools can reach the runtime API of a proxy whose file is being edited).
pub fn load_admin(path: &Path) -> Result<Admin, ConfigErrors> {
    let name = path.display().to_string();
    let text = read(path, &name)?;
    let node = yaml::parse(&text, &yaml::ProcessEnv).map_err(|e| ConfigErrors(e).in_file(&name))?;
    let mut cx = Cx::new();
    let admin = match &node.kind {
        yaml::NodeKind::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.as_str() == Some("admin"))
            .and_then(|(_, v)| cx.within("admin", |cx| Admin::decode(v, cx))),
        _ => None,
    };
    let errors = cx.into_errors();
    match admin {
        Some(a) if errors.is_empty() => Ok(a),
        _ if !errors.is_empty() => Err(ConfigErrors(errors).in_file(&name)),
        _ => Err(ConfigErrors(vec![ConfigError::new(
            node.pos,
            "admin",
            "no admin section",
        )])
        .in_file(&name)),
    }
}

/// Every key path of the configuration model, like `frontends.<name>.bind[].address`.
pub fn key_paths() -> Vec<String> {
    let mut out = Vec::new();
    Config::schema().key_paths("", &mut out);
    out
}
