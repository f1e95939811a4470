//! Configuration: connections and flow settings, with validation and a "test" button
//! that tries the typed values before anything is saved. Secrets are write-only
//! (shown as "set", never rendered back). Saving rewrites the settings file
//! atomically; poll intervals apply at once, connection and other flow settings at the
//! next restart, which the page says.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};

use crate::console::Console;
use crate::console::auth::Ctx;
use crate::console::config_file::{self, FIELDS, Kind, SECTIONS, Submitted};
use crate::console::health::{self, Light, ProbeResult};
use crate::console::i18n::Lang;
use crate::console::layout::{self, csrf_field};

fn parse_form(body: &[u8]) -> Submitted {
    let mut form = Submitted::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        form.entry(k.into_owned()).or_default().push(v.into_owned());
    }
    form
}

/// `GET /settings`.
pub async fn page(State(console): State<Console>, Extension(ctx): Extension<Ctx>) -> Response {
    render(&console, &ctx, &BTreeMap::new(), None)
}

fn render(
    console: &Console,
    ctx: &Ctx,
    typed: &BTreeMap<String, String>,
    results: Option<Markup>,
) -> Response {
    let lang = ctx.lang;
    let settings = console.settings();
    let body = html! {
        @match console.settings_path() {
            Some(path) => p.muted { (lang.t("Fichier : ", "File: ")) code { (path.display().to_string()) } },
            None => p.alert.info { (lang.t(
                "batisync a démarré sans fichier de configuration (--config) : les réglages sont visibles mais ne peuvent pas être enregistrés.",
                "batisync was started without a settings file (--config): settings are shown but cannot be saved.")) },
        }
        p.muted.small { (lang.t(
            "Les mots de passe et secrets ne sont jamais affichés : laissez le champ vide pour garder la valeur actuelle. Les intervalles de lecture s'appliquent tout de suite ; les connexions et les autres réglages des flux au prochain redémarrage de batisync.",
            "Passwords and secrets are never shown: leave the field empty to keep the current value. Read intervals apply at once; connections and the other flow settings at the next restart of batisync.")) }
        @if let Some(results) = results { (results) }
        form #settings method="post" action="/settings" {
            (csrf_field(ctx))
            @for (section, fr, en) in SECTIONS {
                fieldset {
                    legend { (lang.t(fr, en)) }
                    @for field in FIELDS.iter().filter(|f| f.key.starts_with(&format!("{section}."))) {
                        @let running = config_file::current(settings, field.key);
                        @let value = typed.get(field.key).cloned().unwrap_or(running.clone());
                        (field_input(lang, field, &value, &running))
                    }
                }
            }
            div.actions {
                button.secondary type="submit" formaction="/settings/test" { (lang.t("Tester sans enregistrer", "Test without saving")) }
                button type="submit" disabled[console.settings_path().is_none()] { (lang.t("Enregistrer", "Save")) }
            }
        }
    };
    layout::page(ctx, "/settings", lang.t("Configuration", "Settings"), body)
}

fn field_input(lang: Lang, field: &config_file::Field, value: &str, running: &str) -> Markup {
    let id = field.key.replace('.', "-");
    html! {
        div.field {
            label for=(id) { (lang.t(field.label_fr, field.label_en)) br; span.muted.small { (field.key) } }
            @match field.kind {
                Kind::Secret => {
                    input #(id) type="password" name=(field.key) value="" autocomplete="new-password"
                        placeholder=(if running.is_empty() { lang.t("non défini", "not set") } else { lang.t("défini — vide : inchangé", "set — empty: unchanged") });
                }
                Kind::Bool => {
                    span {
                        input type="hidden" name=(field.key) value="false";
                        input #(id) type="checkbox" name=(field.key) value="true" checked[value == "true"];
                    }
                }
                Kind::Choice(options) => {
                    select #(id) name=(field.key) {
                        @for o in options { option value=(o) selected[*o == value] { (o) } }
                    }
                }
                Kind::Number => { input #(id) type="number" name=(field.key) value=(value); }
                Kind::Text | Kind::List => { input #(id) type="text" name=(field.key) value=(value) size="40"; }
            }
            @if field.kind == Kind::Secret {
                span.hint { (if running.is_empty() { lang.t("non défini", "not set") } else { lang.t("défini", "set") }) }
            }
        }
    }
}

fn typed_values(form: &Submitted) -> BTreeMap<String, String> {
    FIELDS
        .iter()
        .filter(|f| f.kind != Kind::Secret)
        .filter_map(|f| {
            let values = form.get(f.key)?;
            let value = if f.kind == Kind::Bool {
                values.iter().any(|v| v == "true").to_string()
            } else {
                values.last()?.clone()
            };
            Some((f.key.to_owned(), value))
        })
        .collect()
}

/// `POST /settings`: validate, write atomically, say what needs a restart.
pub async fn save(
    State(console): State<Console>,
    Extension(ctx): Extension<Ctx>,
    body: Bytes,
) -> Response {
    let lang = ctx.lang;
    let form = parse_form(&body);
    match config_file::save(console.settings_path(), console.settings(), &form) {
        Ok(report) => {
            tracing::info!(changed = ?report.changed, "settings file saved from the console");
            let (live, restart) = apply_live(console.controls(), &form, &report.changed);
            let mut message = if report.changed.is_empty() {
                lang.t("Rien n'a changé.", "Nothing changed.").to_owned()
            } else {
                let mut text = format!(
                    "{} {}.",
                    lang.t("Enregistré :", "Saved:"),
                    report.changed.join(", ")
                );
                if !live.is_empty() {
                    text.push_str(&format!(
                        " {} {}.",
                        lang.t("Appliqué tout de suite :", "Applied at once:"),
                        live.join(", ")
                    ));
                }
                if !restart.is_empty() {
                    text.push_str(&format!(
                        " {} {}.",
                        lang.t(
                            "Redémarrez batisync pour appliquer :",
                            "Restart batisync to apply:"
                        ),
                        restart.join(", ")
                    ));
                }
                text
            };
            if !report.overridden_by_env.is_empty() {
                message.push_str(&format!(
                    " {} {}",
                    lang.t(
                        "Attention, une variable d'environnement remplace :",
                        "Beware, an environment variable overrides:"
                    ),
                    report.overridden_by_env.join(", ")
                ));
            }
            console.sessions().flash(&ctx, message);
            Redirect::to("/settings").into_response()
        }
        Err(error) => {
            let results = html! { p.alert.error role="alert" { (lang.t("Non enregistré : ", "Not saved: ")) (error.to_string()) } };
            let mut response = render(&console, &ctx, &typed_values(&form), Some(results));
            *response.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
            response
        }
    }
}

/// Applies the saved keys that need no restart (poll intervals of running flows);
/// returns (applied, needing a restart).
fn apply_live(
    controls: &crate::control::FlowControls,
    form: &config_file::Submitted,
    changed: &[String],
) -> (Vec<String>, Vec<String>) {
    let mut live = Vec::new();
    let mut restart = Vec::new();
    for key in changed {
        let applied = config_file::LIVE
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, flow)| controls.get(flow))
            .zip(
                form.get(key.as_str())
                    .and_then(|v| v.last())
                    .and_then(|v| v.trim().parse::<u64>().ok()),
            )
            .map(|(control, ms)| control.set_interval(Duration::from_millis(ms)));
        match applied {
            Some(()) => live.push(key.clone()),
            None => restart.push(key.clone()),
        }
    }
    (live, restart)
}

/// `POST /settings/test`: loads the typed values (validation), then tries each
/// connection with them; nothing is saved.
pub async fn test(
    State(console): State<Console>,
    Extension(ctx): Extension<Ctx>,
    body: Bytes,
) -> Response {
    let lang = ctx.lang;
    let form = parse_form(&body);
    let typed = typed_values(&form);
    let env: Vec<(String, String)> = std::env::vars().collect();
    let candidate = match console.settings_path() {
        Some(path) => config_file::prepare(Some(path), console.settings(), &form, &env)
            .and_then(|(text, _, _)| toml_load(&text, &env).map_err(config_file::EditError::from)),
        None => Ok(console.settings().clone()),
    };
    let results = match candidate {
        Err(error) => html! { p.alert.error role="alert" { (error.to_string()) } },
        Ok(settings) => {
            let (pg, sql, bs) = tokio::join!(
                test_postgres(&settings),
                health::probe_sqlserver(&settings.batigest),
                test_batisimply(&settings),
            );
            html! {
                div.alert.info #test-results {
                    strong { (lang.t("Résultat du test (rien n'est enregistré) :", "Test result (nothing saved):")) }
                    ul { @for (name, r) in [("PostgreSQL", pg), ("SQL Server", sql), ("BatiSimply", bs)] {
                        li { span.dot.(light_css(r.light)) {} " " strong { (name) } " : " (r.detail) }
                    } }
                    @if form.keys().any(|k| FIELDS.iter().any(|f| f.kind == Kind::Secret && f.key == k)) {
                        p.small.muted { (lang.t("Les secrets saisis ne sont pas réaffichés : ressaisissez-les avant d'enregistrer.",
                                                 "Typed secrets are not shown again: type them again before saving.")) }
                    }
                }
            }
        }
    };
    render(&console, &ctx, &typed, Some(results))
}

fn light_css(light: Light) -> &'static str {
    match light {
        Light::Ok => "ok",
        Light::Failed => "bad",
        Light::NotConfigured | Light::Unknown => "off",
    }
}

fn toml_load(
    text: &str,
    env: &[(String, String)],
) -> Result<crate::settings::Settings, crate::settings::SettingsError> {
    let dir = std::env::temp_dir().join(format!("batisync-test-{:08x}", fastrand::u32(..)));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("batisync.toml");
    let result = config_file::write_atomically(&path, text)
        .map_err(|e| crate::settings::SettingsError::invalid("settings", e.to_string()))
        .and_then(|()| crate::settings::load(Some(&path), env.iter().cloned()));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn test_postgres(settings: &crate::settings::Settings) -> ProbeResult {
    let mut pg = settings.postgres.clone();
    pg.connect_timeout_ms = pg.connect_timeout_ms.min(5_000);
    match tokio::time::timeout(Duration::from_secs(10), crate::db::connect(&pg)).await {
        Ok(Ok(pool)) => {
            pool.close().await;
            ProbeResult::ok("connexion réussie / connected")
        }
        Ok(Err(error)) => ProbeResult::failed(format!("{error:#}")),
        Err(_) => ProbeResult::failed("pas de réponse en 10 s / no answer within 10 s"),
    }
}

async fn test_batisimply(settings: &crate::settings::Settings) -> ProbeResult {
    if settings.batisimply.client_id.is_empty() {
        return ProbeResult::not_configured("non configuré / not configured");
    }
    match crate::batisimply::BatisimplyClient::new(settings.batisimply.clone()) {
        Ok(client) => health::probe_batisimply(&client).await,
        Err(error) => ProbeResult::failed(crate::batisimply::explain(&error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::FlowControls;

    #[test]
    fn poll_intervals_apply_at_once_and_the_rest_waits_for_a_restart() {
        let controls = FlowControls::default();
        let heures = controls.flow("heures");
        let mut form = config_file::Submitted::new();
        form.insert("heures.poll_interval_ms".into(), vec!["5000".into()]);
        form.insert("batigest.host".into(), vec!["sql.local".into()]);
        let changed = vec![
            "heures.poll_interval_ms".to_owned(),
            "batigest.host".to_owned(),
        ];

        let (live, restart) = apply_live(&controls, &form, &changed);

        assert_eq!(live, vec!["heures.poll_interval_ms".to_owned()]);
        assert_eq!(restart, vec!["batigest.host".to_owned()]);
        assert_eq!(
            heures.interval_or(Duration::from_secs(15)),
            Duration::from_secs(5)
        );
        let chantiers = controls.flow("chantiers");
        assert_eq!(
            chantiers.interval_or(Duration::from_secs(1)),
            Duration::from_secs(1)
        );
    }
}
