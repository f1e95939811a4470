//! Reading the layers (file, environment, `_file` indirections) into a [`Settings`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::Settings;

/// Prefix of environment overrides: `BATISYNC__POSTGRES__HOST=db.local`.
const ENV_PREFIX: &str = "BATISYNC__";
/// Suffix of keys whose value is read from a file.
const FILE_SUFFIX: &str = "_file";

/// Why the settings could not be loaded. Every variant names the file or the key.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("fichier de configuration illisible / cannot read settings file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "fichier de configuration invalide / settings file {path} is not valid TOML: {message}"
    )]
    Syntax { path: PathBuf, message: String },
    #[error("paramètre `{key}` invalide / invalid setting `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl SettingsError {
    pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The dotted name of the offending key, when the error is about one key.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// Loads settings from an optional TOML file and the given environment variables.
///
/// Pass `std::env::vars()` in production; tests pass their own list.
///
/// # Errors
/// [`SettingsError`] naming the file or key when a layer cannot be read, a key is
/// unknown, a value has the wrong type, or cross-field validation fails.
pub fn load(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, SettingsError> {
    let mut table = match path {
        Some(path) => read_file(path)?,
        None => Table::new(),
    };
    let coerced = apply_env(&mut table, env)?;
    resolve_file_keys(&mut table, "")?;
    let settings = deserialize(table, &coerced)?;
    settings.validate()?;
    Ok(settings)
}

fn read_file(path: &Path) -> Result<Table, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    text.parse::<Table>().map_err(|e| SettingsError::Syntax {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Applies `BATISYNC__A__B=value` overrides. Values that read as TOML scalars (numbers,
/// booleans) or arrays are typed; the returned set lists those keys so that
/// [`deserialize`] can fall back to the raw string where the field wants a string
/// (a numeric password must stay a string).
fn apply_env(
    table: &mut Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<BTreeSet<String>, SettingsError> {
    let mut coerced = BTreeSet::new();
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX))
        .collect();
    vars.sort();
    for (name, raw) in vars {
        let path: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if path.iter().any(String::is_empty) {
            return Err(SettingsError::invalid(
                name,
                "malformed environment override (expected BATISYNC__SECTION__KEY)",
            ));
        }
        let value = typed_value(&raw);
        if !value.is_str() {
            coerced.insert(path.join("."));
        }
        set_path(table, &path, value).map_err(|message| SettingsError::invalid(&name, message))?;
    }
    Ok(coerced)
}

fn typed_value(raw: &str) -> Value {
    format!("v = {raw}")
        .parse::<Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .filter(|v| !v.is_table() && !v.is_datetime())
        .unwrap_or_else(|| Value::String(raw.to_owned()))
}

fn set_path(table: &mut Table, path: &[String], value: Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Err("empty key".into());
    };
    let mut current = table;
    for part in parents {
        let entry = current
            .entry(part.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{part}` is a value, not a section"))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

/// Replaces every `name_file = "path"` by `name = <content of path>` (trailing newline
/// removed), recursively.
fn resolve_file_keys(table: &mut Table, prefix: &str) -> Result<(), SettingsError> {
    let file_keys: Vec<String> = table
        .keys()
        .filter(|k| k.ends_with(FILE_SUFFIX) && k.len() > FILE_SUFFIX.len())
        .cloned()
        .collect();
    for key in file_keys {
        let full = format!("{prefix}{key}");
        let target = key[..key.len() - FILE_SUFFIX.len()].to_owned();
        if table.contains_key(&target) {
            return Err(SettingsError::invalid(
                &full,
                format!("set either `{prefix}{target}` or `{full}`, not both"),
            ));
        }
        let Some(Value::String(path)) = table.remove(&key) else {
            return Err(SettingsError::invalid(
                &full,
                "expected a file path (string)",
            ));
        };
        let content = std::fs::read_to_string(&path)
            .map_err(|e| SettingsError::invalid(&full, format!("cannot read {path}: {e}")))?;
        let content = content.trim_end_matches(['\r', '\n']).to_owned();
        table.insert(target, Value::String(content));
    }
    for (key, value) in table.iter_mut() {
        if let Value::Table(inner) = value {
            resolve_file_keys(inner, &format!("{prefix}{key}."))?;
        }
    }
    Ok(())
}

/// Deserializes with the failing key's path in every error. When a value typed from the
/// environment is refused, it is retried once as the raw string.
fn deserialize(mut table: Table, coerced: &BTreeSet<String>) -> Result<Settings, SettingsError> {
    let mut retried = BTreeSet::new();
    loop {
        let result: Result<Settings, _> = serde_path_to_error::deserialize(table.clone());
        let err = match result {
            Ok(settings) => return Ok(settings),
            Err(err) => err,
        };
        let key = err.path().to_string();
        if coerced.contains(&key) && retried.insert(key.clone()) {
            let parts: Vec<String> = key.split('.').map(str::to_owned).collect();
            if let Some(text) = lookup(&table, &parts).map(value_as_raw_string) {
                set_path(&mut table, &parts, Value::String(text))
                    .map_err(|m| SettingsError::invalid(&key, m))?;
                continue;
            }
        }
        return Err(SettingsError::invalid(key, err.into_inner().message()));
    }
}

fn lookup<'a>(table: &'a Table, path: &[String]) -> Option<&'a Value> {
    let (last, parents) = path.split_last()?;
    let mut current = table;
    for part in parents {
        current = current.get(part)?.as_table()?;
    }
    current.get(last)
}

fn value_as_raw_string(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn file_with(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn defaults_load_without_a_file() {
        let s = load(None, env(&[])).unwrap();
        assert_eq!(s.postgres.port, 5432);
        assert_eq!(s.admin.listen.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn an_unknown_key_is_rejected_with_its_name() {
        let f = file_with("[outbox]\nretention_dayz = 3\n");
        let err = load(Some(f.path()), env(&[])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("retention_dayz"), "{text}");
    }

    #[test]
    fn a_wrong_type_names_the_key_and_the_expectation() {
        let f = file_with("[postgres]\nport = \"five\"\n");
        let err = load(Some(f.path()), env(&[])).unwrap_err();
        assert_eq!(err.key(), Some("postgres.port"));
        assert!(err.to_string().contains("u16"), "{err}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let f = file_with("[postgres]\nport = 5433\nhost = \"a\"\n");
        let s = load(
            Some(f.path()),
            env(&[("BATISYNC__POSTGRES__PORT", "6000"), ("OTHER", "x")]),
        )
        .unwrap();
        assert_eq!(s.postgres.port, 6000);
        assert_eq!(s.postgres.host, "a");
    }

    #[test]
    fn a_numeric_password_from_the_environment_stays_a_string() {
        let s = load(None, env(&[("BATISYNC__POSTGRES__PASSWORD", "123456")])).unwrap();
        assert_eq!(s.postgres.password.unwrap().expose_secret(), "123456");
    }

    #[test]
    fn a_secret_can_come_from_a_file() {
        let secret = file_with("s3cr3t\n");
        let path = secret.path().display().to_string();
        let s = load(None, env(&[("BATISYNC__POSTGRES__PASSWORD_FILE", &path)])).unwrap();
        assert_eq!(s.postgres.password.unwrap().expose_secret(), "s3cr3t");
    }

    #[test]
    fn a_missing_secret_file_names_the_key() {
        let err = load(
            None,
            env(&[("BATISYNC__POSTGRES__PASSWORD_FILE", "/nonexistent/pw")]),
        )
        .unwrap_err();
        assert_eq!(err.key(), Some("postgres.password_file"));
    }

    #[test]
    fn secrets_never_print() {
        let s = load(
            None,
            env(&[("BATISYNC__POSTGRES__PASSWORD", "hunter2-xyz")]),
        )
        .unwrap();
        assert!(!format!("{s:?}").contains("hunter2-xyz"));
    }

    #[test]
    fn an_unknown_environment_key_is_rejected_with_its_name() {
        let err = load(None, env(&[("BATISYNC__POSTGRES__HOSTNAME", "x")])).unwrap_err();
        assert!(err.to_string().contains("hostname"), "{err}");
    }

    #[test]
    fn the_example_file_is_valid_and_complete() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/batisync.example.toml");
        load(Some(&path), env(&[])).unwrap();
    }

    #[test]
    fn a_network_address_needs_tls_or_an_acknowledgement() {
        let f = file_with("[admin]\nlisten = \"0.0.0.0:8080\"\n");
        let err = load(Some(f.path()), env(&[])).unwrap_err();
        assert_eq!(err.key(), Some("admin.listen"));
        let acknowledged = env(&[("BATISYNC__ADMIN__ALLOW_PLAIN_HTTP_ON_NETWORK", "true")]);
        assert!(load(Some(f.path()), acknowledged).is_ok());
        let half_tls = file_with("[admin]\ntls_cert_path = \"cert.pem\"\n");
        let err = load(Some(half_tls.path()), env(&[])).unwrap_err();
        assert_eq!(err.key(), Some("admin.tls_key_path"));
    }

    #[test]
    fn cross_field_validation_names_the_key() {
        let f = file_with("[dispatch]\nworkers = 0\n");
        let err = load(Some(f.path()), env(&[])).unwrap_err();
        assert_eq!(err.key(), Some("dispatch.workers"));
    }
}
