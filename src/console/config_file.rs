//! Edits of the settings file from the console: a fixed list of editable keys, typed
//! values, secrets written only when a new value is given (to their `*_file` when the
//! file uses one), comments and layout kept (`toml_edit`), validation by loading the
//! result, then an atomic replace (temporary file in the same folder, then rename).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use secrecy::ExposeSecret;
use toml_edit::{DocumentMut, Item, value};

use crate::settings::{Settings, SettingsError};

/// How a key is edited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Number,
    Bool,
    /// Write-only: never rendered back, only "set" or "not set".
    Secret,
    /// One of the listed values.
    Choice(&'static [&'static str]),
    /// Comma-separated list of strings.
    List,
}

/// One editable key.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// Dotted key, `section.key`.
    pub key: &'static str,
    pub kind: Kind,
    pub label_fr: &'static str,
    pub label_en: &'static str,
}

const fn f(key: &'static str, kind: Kind, label_fr: &'static str, label_en: &'static str) -> Field {
    Field {
        key,
        kind,
        label_fr,
        label_en,
    }
}

/// Editable keys, grouped by section (the page shows one fieldset per section).
pub const FIELDS: &[Field] = &[
    f("postgres.host", Kind::Text, "Serveur", "Host"),
    f("postgres.port", Kind::Number, "Port", "Port"),
    f("postgres.database", Kind::Text, "Base", "Database"),
    f("postgres.user", Kind::Text, "Utilisateur", "User"),
    f(
        "postgres.password",
        Kind::Secret,
        "Mot de passe",
        "Password",
    ),
    f(
        "batigest.host",
        Kind::Text,
        "Serveur SQL Server",
        "SQL Server host",
    ),
    f(
        "batigest.instance",
        Kind::Text,
        "Instance (ex. SAGEBAT)",
        "Instance (e.g. SAGEBAT)",
    ),
    f(
        "batigest.database",
        Kind::Text,
        "Dossier (base)",
        "Dossier (database)",
    ),
    f("batigest.user", Kind::Text, "Utilisateur", "User"),
    f(
        "batigest.password",
        Kind::Secret,
        "Mot de passe",
        "Password",
    ),
    f(
        "batigest.encryption",
        Kind::Choice(&["strict", "required", "off"]),
        "Chiffrement",
        "Encryption",
    ),
    f(
        "batigest.trust_server_certificate",
        Kind::Bool,
        "Accepter le certificat du serveur",
        "Trust the server certificate",
    ),
    f(
        "batisimply.api_base_url",
        Kind::Text,
        "Adresse de l'API",
        "API URL",
    ),
    f(
        "batisimply.sso_base_url",
        Kind::Text,
        "Adresse de connexion (SSO)",
        "SSO URL",
    ),
    f("batisimply.realm", Kind::Text, "Royaume (realm)", "Realm"),
    f(
        "batisimply.client_id",
        Kind::Text,
        "Identifiant client",
        "Client id",
    ),
    f(
        "batisimply.client_secret",
        Kind::Secret,
        "Secret client",
        "Client secret",
    ),
    f(
        "batisimply.grant",
        Kind::Choice(&["password", "client_credentials"]),
        "Type d'accès",
        "Grant",
    ),
    f("batisimply.username", Kind::Text, "Compte", "Account"),
    f(
        "batisimply.password",
        Kind::Secret,
        "Mot de passe",
        "Password",
    ),
    f(
        "chantiers.enabled",
        Kind::Bool,
        "Flux chantiers actif",
        "Chantiers flow enabled",
    ),
    f(
        "chantiers.poll_interval_ms",
        Kind::Number,
        "Intervalle de lecture (ms)",
        "Poll interval (ms)",
    ),
    f(
        "chantiers.states",
        Kind::List,
        "États à envoyer (lettres, séparées par des virgules)",
        "States to send (letters, comma-separated)",
    ),
    f("heures.enabled", Kind::Bool, "Flux actif", "Flow enabled"),
    f(
        "heures.poll_interval_ms",
        Kind::Number,
        "Lecture des heures toutes les (ms)",
        "Read time slots every (ms)",
    ),
    f(
        "heures.days_back",
        Kind::Number,
        "Jours surveillés avant aujourd'hui",
        "Days watched before today",
    ),
    f(
        "heures.days_ahead",
        Kind::Number,
        "Jours surveillés après aujourd'hui",
        "Days watched after today",
    ),
    f(
        "heures.timezone",
        Kind::Text,
        "Fuseau horaire de SuiviMO.Date",
        "Time zone of SuiviMO.Date",
    ),
    f(
        "heures.on_unvalidated",
        Kind::Choice(&["remove", "keep"]),
        "Heure plus validée ou supprimée : retirer la ligne (remove) ou la garder (keep)",
        "Slot no longer validated or deleted: remove the row or keep it",
    ),
    f(
        "heures.batisimply_always_wins",
        Kind::Bool,
        "BatiSimply l'emporte toujours sur une modification faite dans Batigest",
        "BatiSimply always wins over an edit made in Batigest",
    ),
];

/// Keys applied at once when saved (the rest need a restart).
pub const LIVE: &[(&str, &str)] = &[
    ("chantiers.poll_interval_ms", "chantiers"),
    ("heures.poll_interval_ms", "heures"),
];

/// Sections of [`FIELDS`], in order, with their titles.
pub const SECTIONS: &[(&str, &str, &str)] = &[
    (
        "postgres",
        "PostgreSQL (base de batisync)",
        "PostgreSQL (batisync's database)",
    ),
    ("batigest", "SQL Server (Batigest)", "SQL Server (Batigest)"),
    ("batisimply", "BatiSimply", "BatiSimply"),
    ("chantiers", "Flux chantiers", "Chantiers flow"),
    ("heures", "Flux heures", "Heures flow"),
];

/// The value a field has in running settings (secrets: "set" or empty, never the value).
#[must_use]
pub fn current(settings: &Settings, key: &str) -> String {
    let set = |secret: &secrecy::SecretString| {
        if secret.expose_secret().is_empty() {
            ""
        } else {
            "set"
        }
        .to_owned()
    };
    let (p, g, b, c, h) = (
        &settings.postgres,
        &settings.batigest,
        &settings.batisimply,
        &settings.chantiers,
        &settings.heures,
    );
    match key {
        "postgres.host" => p.host.clone(),
        "postgres.port" => p.port.to_string(),
        "postgres.database" => p.database.clone(),
        "postgres.user" => p.user.clone(),
        "postgres.password" => p.password.as_ref().map(set).unwrap_or_default(),
        "batigest.host" => g.host.clone(),
        "batigest.instance" => g.instance.clone().unwrap_or_default(),
        "batigest.database" => g.database.clone(),
        "batigest.user" => g.user.clone(),
        "batigest.password" => set(&g.password),
        "batigest.encryption" => format!("{:?}", g.encryption).to_lowercase(),
        "batigest.trust_server_certificate" => g.trust_server_certificate.to_string(),
        "batisimply.api_base_url" => b.api_base_url.clone(),
        "batisimply.sso_base_url" => b.sso_base_url.clone(),
        "batisimply.realm" => b.realm.clone(),
        "batisimply.client_id" => b.client_id.clone(),
        "batisimply.client_secret" => set(&b.client_secret),
        "batisimply.grant" => match format!("{:?}", b.grant).as_str() {
            "ClientCredentials" => "client_credentials".to_owned(),
            _ => "password".to_owned(),
        },
        "batisimply.username" => b.username.clone(),
        "batisimply.password" => set(&b.password),
        "chantiers.enabled" => c.enabled.to_string(),
        "chantiers.poll_interval_ms" => c.poll_interval_ms.to_string(),
        "chantiers.states" => c.states.join(", "),
        "heures.enabled" => h.enabled.to_string(),
        "heures.poll_interval_ms" => h.poll_interval_ms.to_string(),
        "heures.days_back" => h.days_back.to_string(),
        "heures.days_ahead" => h.days_ahead.to_string(),
        "heures.timezone" => h.timezone.clone(),
        "heures.on_unvalidated" => match h.on_unvalidated {
            crate::flows::heures::OnUnvalidated::Remove => "remove".to_owned(),
            crate::flows::heures::OnUnvalidated::Keep => "keep".to_owned(),
        },
        "heures.batisimply_always_wins" => h.batisimply_always_wins.to_string(),
        _ => String::new(),
    }
}

/// Why an edit was refused.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error(
        "batisync a démarré sans fichier de configuration (--config) : rien à enregistrer / \
         batisync was started without a settings file (--config): nothing to save to"
    )]
    NoFile,
    #[error("fichier de configuration / settings file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(#[from] SettingsError),
    #[error("`{key}` : {message}")]
    Value { key: String, message: String },
}

/// What a save changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EditReport {
    /// Keys whose value changed (secrets included, by name only).
    pub changed: Vec<String>,
    /// Keys overridden by an environment variable: the file value has no effect.
    pub overridden_by_env: Vec<String>,
}

/// Secrets to write to their own files: (path, new value).
pub type SecretFiles = Vec<(PathBuf, String)>;

/// The submitted form: every value of every name (checkboxes send several).
pub type Submitted = BTreeMap<String, Vec<String>>;

fn last<'a>(form: &'a Submitted, key: &str) -> Option<&'a str> {
    form.get(key).and_then(|v| v.last()).map(String::as_str)
}

/// Applies the form to the document; returns changed keys and the secrets that go to
/// `*_file` files (path, new value).
fn apply(
    doc: &mut DocumentMut,
    settings: &Settings,
    form: &Submitted,
) -> Result<(Vec<String>, SecretFiles), EditError> {
    let mut changed = Vec::new();
    let mut secret_files = Vec::new();
    for field in FIELDS {
        let Some((section, key)) = field.key.split_once('.') else {
            continue;
        };
        let new = match field.kind {
            Kind::Bool => form
                .get(field.key)
                .map(|values| values.iter().any(|v| v == "true"))
                .map(|b| b.to_string()),
            _ => last(form, field.key).map(|v| v.trim().to_owned()),
        };
        let Some(new) = new else { continue };
        if field.kind == Kind::Secret {
            if new.is_empty() {
                continue;
            }
            let file_key = format!("{key}_file");
            let secret_file = doc
                .get(section)
                .and_then(|s| s.get(&file_key))
                .and_then(Item::as_str)
                .map(PathBuf::from);
            match secret_file {
                Some(path) => secret_files.push((path, new)),
                None => {
                    table(doc, section)?[key] = value(new);
                }
            }
            changed.push(field.key.to_owned());
            continue;
        }
        if new == current(settings, field.key) {
            continue;
        }
        let item = typed(field, &new)?;
        let section_table = table(doc, section)?;
        if new.is_empty() && matches!(field.kind, Kind::Text) && key == "instance" {
            section_table.remove(key);
        } else {
            section_table[key] = item;
        }
        changed.push(field.key.to_owned());
    }
    Ok((changed, secret_files))
}

fn table<'a>(
    doc: &'a mut DocumentMut,
    section: &str,
) -> Result<&'a mut toml_edit::Table, EditError> {
    if doc.get(section).is_none() {
        doc[section] = toml_edit::table();
    }
    doc[section].as_table_mut().ok_or_else(|| EditError::Value {
        key: section.to_owned(),
        message: "is not a section".to_owned(),
    })
}

fn typed(field: &Field, text: &str) -> Result<Item, EditError> {
    let bad = |message: &str| EditError::Value {
        key: field.key.to_owned(),
        message: message.to_owned(),
    };
    Ok(match field.kind {
        Kind::Number => value(
            text.parse::<i64>()
                .map_err(|_| bad("nombre entier attendu / a whole number is expected"))?,
        ),
        Kind::Bool => value(text == "true"),
        Kind::Choice(allowed) => {
            if !allowed.contains(&text) {
                return Err(bad(&format!(
                    "valeurs possibles / allowed values: {allowed:?}"
                )));
            }
            value(text)
        }
        Kind::List => {
            let mut array = toml_edit::Array::new();
            for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                array.push(part);
            }
            value(array)
        }
        Kind::Text | Kind::Secret => value(text),
    })
}

/// Builds the new file from the form and checks it loads; returns its text and the
/// report, without writing anything.
///
/// # Errors
/// No file, unreadable file, a wrong value, or settings that do not load.
pub fn prepare(
    path: Option<&Path>,
    settings: &Settings,
    form: &Submitted,
    env: &[(String, String)],
) -> Result<(String, SecretFiles, EditReport), EditError> {
    let path = path.ok_or(EditError::NoFile)?;
    let text = std::fs::read_to_string(path).map_err(|e| EditError::File {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| EditError::File {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    let (changed, secret_files) = apply(&mut doc, settings, form)?;
    let new_text = doc.to_string();
    validate(path, &new_text, env)?;
    let overridden_by_env = changed
        .iter()
        .filter(|key| {
            let var = format!("BATISYNC__{}", key.replace('.', "__").to_uppercase());
            env.iter().any(|(name, _)| *name == var)
        })
        .cloned()
        .collect();
    Ok((
        new_text,
        secret_files,
        EditReport {
            changed,
            overridden_by_env,
        },
    ))
}

/// Loads `text` as the settings file would be loaded (from a scratch file beside it).
fn validate(path: &Path, text: &str, env: &[(String, String)]) -> Result<Settings, EditError> {
    let scratch = scratch_path(path);
    write_file(&scratch, text).map_err(|e| EditError::File {
        path: scratch.clone(),
        message: e.to_string(),
    })?;
    let loaded = crate::settings::load(Some(&scratch), env.iter().cloned());
    let _ = std::fs::remove_file(&scratch);
    Ok(loaded?)
}

fn scratch_path(path: &Path) -> PathBuf {
    let name = path.file_name().map_or_else(
        || "batisync.toml".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    path.with_file_name(format!(".{name}.{:08x}.tmp", fastrand::u32(..)))
}

fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// Replaces `path` with `text` atomically: a scratch file in the same folder, flushed,
/// then renamed over it (a reader sees the old file or the new one, never half).
///
/// # Errors
/// I/O errors; the original file is then untouched.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let scratch = scratch_path(path);
    if let Err(e) = write_file(&scratch, text) {
        let _ = std::fs::remove_file(&scratch);
        return Err(e);
    }
    std::fs::rename(&scratch, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&scratch);
    })
}

/// Sets one key of the settings file (used by `batisync admin set-password`).
///
/// # Errors
/// Unreadable file, invalid TOML, or the result does not load.
pub fn set_key(path: &Path, section: &str, key: &str, text: &str) -> Result<(), EditError> {
    let original = std::fs::read_to_string(path).map_err(|e| EditError::File {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let mut doc: DocumentMut =
        original
            .parse()
            .map_err(|e: toml_edit::TomlError| EditError::File {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
    table(&mut doc, section)?[key] = value(text);
    let new_text = doc.to_string();
    let env: Vec<(String, String)> = std::env::vars().collect();
    validate(path, &new_text, &env)?;
    write_atomically(path, &new_text).map_err(|e| EditError::File {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Prepares, then writes the secrets' files and the settings file.
///
/// # Errors
/// See [`prepare`]; I/O errors while writing.
pub fn save(
    path: Option<&Path>,
    settings: &Settings,
    form: &Submitted,
) -> Result<EditReport, EditError> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let (text, secret_files, report) = prepare(path, settings, form, &env)?;
    let path = path.ok_or(EditError::NoFile)?;
    for (secret_path, secret) in &secret_files {
        write_atomically(secret_path, secret).map_err(|e| EditError::File {
            path: secret_path.clone(),
            message: e.to_string(),
        })?;
    }
    write_atomically(path, &text).map_err(|e| EditError::File {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Submitted {
        let mut form = Submitted::new();
        for (k, v) in pairs {
            form.entry((*k).to_owned())
                .or_default()
                .push((*v).to_owned());
        }
        form
    }

    #[test]
    fn a_save_keeps_comments_types_and_never_writes_an_empty_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("batisync.toml");
        std::fs::write(
            &path,
            "# my comment\n[postgres]\n# host comment\nhost = \"old\"\n",
        )
        .unwrap();
        let settings = crate::settings::load(Some(&path), Vec::new()).unwrap();
        let report = save(
            Some(&path),
            &settings,
            &form(&[
                ("postgres.host", "db.local"),
                ("postgres.port", "6543"),
                ("postgres.password", ""),
                ("chantiers.enabled", "false"),
                ("chantiers.enabled", "true"),
                ("chantiers.states", "E, T"),
            ]),
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("# host comment"), "{text}");
        assert!(text.contains("host = \"db.local\""), "{text}");
        assert!(text.contains("port = 6543"), "{text}");
        assert!(!text.contains("password"), "{text}");
        assert!(text.contains("states = [\"E\", \"T\"]"), "{text}");
        assert_eq!(
            report.changed,
            [
                "postgres.host",
                "postgres.port",
                "chantiers.enabled",
                "chantiers.states"
            ]
        );
        let reloaded = crate::settings::load(Some(&path), Vec::new()).unwrap();
        assert!(reloaded.chantiers.enabled);
    }

    #[test]
    fn a_secret_goes_to_its_file_when_the_settings_use_one() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("pg-password");
        std::fs::write(&secret, "old-secret").unwrap();
        let path = dir.path().join("batisync.toml");
        std::fs::write(
            &path,
            format!(
                "[postgres]\npassword_file = {:?}\n",
                secret.to_string_lossy()
            ),
        )
        .unwrap();
        let settings = crate::settings::load(Some(&path), Vec::new()).unwrap();
        save(
            Some(&path),
            &settings,
            &form(&[("postgres.password", "new-secret")]),
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "new-secret");
        assert!(
            !std::fs::read_to_string(&path)
                .unwrap()
                .contains("new-secret")
        );
    }

    #[test]
    fn an_invalid_value_is_refused_and_the_file_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("batisync.toml");
        std::fs::write(&path, "[postgres]\nhost = \"old\"\n").unwrap();
        let settings = crate::settings::load(Some(&path), Vec::new()).unwrap();
        let error = save(Some(&path), &settings, &form(&[("postgres.port", "99999")])).unwrap_err();
        assert!(error.to_string().contains("postgres.port"), "{error}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "[postgres]\nhost = \"old\"\n"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no scratch file left"
        );
    }
}
