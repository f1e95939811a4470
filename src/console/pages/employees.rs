//! Salariés: the employee link table (Batigest employees with their BatiSimply id),
//! duplicates, employees without an id, and BatiSimply users seen in time slots
//! without a link (the `heures` flow's dead letters naming an unmapped user).
//!
//! The employee list is read from SQL Server only when someone clicks "refresh" (in
//! a background task), then kept in memory with its time: opening the page never
//! opens a connection. The page is read-only unless `admin.allow_codebs_write` is on:
//! each employee row then has a small form that sets or clears its BatiSimply id in
//! Batigest (`POST /employees/codebs`), after which the list is read again.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use maud::html;
use serde::Deserialize;
use sqlx::PgPool;

use super::database_error;
use crate::batigest::spec::salarie_role as role;
use crate::batigest::{BatigestSettings, Cell, EmployeeMap, SourceRow};
use crate::console::Console;
use crate::console::auth::Ctx;
use crate::console::layout::{self, ago, csrf_field, datetime};
use crate::outbox::ReasonCode;
use crate::tls::ClientAddr;

/// Flow whose dead letters name unmapped BatiSimply users.
pub const HOURS_FLOW: &str = "heures";

/// Where the `Salarie` rows come from.
pub trait EmployeeSource: Send + Sync {
    /// Every employee row (code, name, BatiSimply id), or a sentence saying why not.
    fn load(&self) -> BoxFuture<'_, Result<Vec<SourceRow>, String>>;

    /// Sets (`Some`) or clears (`None`) the BatiSimply id of employee `code`, or a
    /// sentence saying why not (no such employee included).
    fn set_batisimply_id<'a>(
        &'a self,
        code: &'a str,
        id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// The real `Salarie` table, through the configured column mapping.
pub struct SqlServerEmployees {
    pub settings: BatigestSettings,
}

impl EmployeeSource for SqlServerEmployees {
    fn load(&self) -> BoxFuture<'_, Result<Vec<SourceRow>, String>> {
        Box::pin(async move {
            let pool = crate::batigest::pool::Pool::new(self.settings.clone());
            let mapping = crate::batigest::schema::load_mapping(&pool)
                .await
                .map_err(|e| e.to_string())?;
            crate::batigest::read::read_table(&pool, &mapping.salarie)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn set_batisimply_id<'a>(
        &'a self,
        code: &'a str,
        id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let pool = crate::batigest::pool::Pool::new(self.settings.clone());
            let mapping = crate::batigest::schema::load_mapping(&pool)
                .await
                .map_err(|e| e.to_string())?;
            let changed = crate::batigest::employee_write::set_batisimply_id(
                &pool,
                &mapping.salarie,
                code,
                id,
            )
            .await
            .map_err(|e| e.to_string())?;
            if changed == 0 {
                return Err(no_such_employee(code));
            }
            Ok(())
        })
    }
}

/// The error of a write to an employee code that does not exist.
#[must_use]
pub fn no_such_employee(code: &str) -> String {
    format!("aucun salarié de code « {code} » / no employee with code \"{code}\"")
}

/// Longest BatiSimply id accepted from the console.
pub const MAX_ID_CHARS: usize = 64;

/// A BatiSimply id typed in the console: hex digits and dashes (a UUID), at most
/// [`MAX_ID_CHARS`]; blank means "clear". Surrounding spaces are ignored.
///
/// # Errors
/// A sentence (French / English) saying what is wrong.
pub fn parse_batisimply_id(text: &str) -> Result<Option<String>, String> {
    let id = text.trim();
    if id.is_empty() {
        return Ok(None);
    }
    if id.chars().count() > MAX_ID_CHARS {
        return Err(format!(
            "identifiant trop long (plus de {MAX_ID_CHARS} caractères) / id too long (over {MAX_ID_CHARS} characters)"
        ));
    }
    if !id.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        || !id.chars().any(|c| c.is_ascii_hexdigit())
    {
        return Err(
            "identifiant invalide : chiffres hexadécimaux et tirets seulement (un UUID BatiSimply) / \
             invalid id: hex digits and dashes only (a BatiSimply UUID)"
                .to_owned(),
        );
    }
    Ok(Some(id.to_owned()))
}

/// The last load of the employee list.
struct Loaded {
    at: DateTime<Utc>,
    rows: Result<Vec<SourceRow>, String>,
}

/// The employee list, loaded on request in the background.
pub struct EmployeeCache {
    source: Option<Arc<dyn EmployeeSource>>,
    /// Held for a copy or an assignment, never across an await.
    last: Arc<Mutex<Option<Loaded>>>,
    /// One load at a time: repeated clicks do not open more connections.
    loading: Arc<AtomicBool>,
}

impl EmployeeCache {
    pub(crate) fn new(source: Option<Arc<dyn EmployeeSource>>) -> Self {
        Self {
            source,
            last: Arc::new(Mutex::new(None)),
            loading: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Starts a load unless one is running; false when there is no source.
    pub fn refresh(&self) -> bool {
        let Some(source) = self.source.clone() else {
            return false;
        };
        if self.loading.swap(true, Ordering::AcqRel) {
            return true;
        }
        let (last, loading) = (self.last.clone(), self.loading.clone());
        tokio::spawn(async move {
            let rows = source.load().await;
            *last.lock().unwrap_or_else(PoisonError::into_inner) = Some(Loaded {
                at: Utc::now(),
                rows,
            });
            loading.store(false, Ordering::Release);
        });
        true
    }

    fn snapshot(&self) -> Option<Loaded> {
        let last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        last.as_ref().map(|l| Loaded {
            at: l.at,
            rows: l.rows.clone(),
        })
    }

    /// Writes an employee's BatiSimply id through the source, then reads the list again
    /// (awaited, so the next page shows the new value).
    async fn write_and_reload(&self, code: &str, id: Option<&str>) -> Result<(), String> {
        let Some(source) = self.source.clone() else {
            return Err(not_configured().to_owned());
        };
        source.set_batisimply_id(code, id).await?;
        let rows = source.load().await;
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(Loaded {
            at: Utc::now(),
            rows,
        });
        Ok(())
    }

    fn is_loading(&self) -> bool {
        self.loading.load(Ordering::Acquire)
    }
}

fn text(cell: &Cell) -> String {
    match cell {
        Cell::Text(s) => s.trim().to_owned(),
        Cell::Null => String::new(),
        other => format!("{other:?}"),
    }
}

/// BatiSimply users named by unmapped-user dead letters of the hours flow, with how
/// many time slots wait for each.
///
/// # Errors
/// Database errors.
pub async fn unlinked_users(pool: &PgPool) -> Result<BTreeMap<String, usize>, sqlx::Error> {
    let mut users: BTreeMap<String, usize> = BTreeMap::new();
    for dead in super::super::data::dead_letters(pool, 5_000).await? {
        if dead.flow != HOURS_FLOW {
            continue;
        }
        let reason = dead.reason();
        if reason.code == ReasonCode::EmployeeUnmapped
            && let Some(user) = reason.text("user_id")
        {
            *users.entry(user.to_owned()).or_default() += 1;
        }
    }
    Ok(users)
}

/// `GET /employees`.
pub async fn page(State(console): State<Console>, Extension(ctx): Extension<Ctx>) -> Response {
    let lang = ctx.lang;
    let unlinked = match unlinked_users(console.pool()).await {
        Ok(u) => u,
        Err(error) => return database_error(&ctx, &error),
    };
    let cache = console.employees();
    let snapshot = cache.snapshot();
    let writable = console.settings().admin.allow_codebs_write;
    let body = html! {
        @if writable {
            p.muted { (lang.t(
                "Le lien salarié ↔ BatiSimply (Salarie.codebs) peut être modifié ici : il est écrit dans Batigest. Laisser vide pour l'effacer.",
                "The employee ↔ BatiSimply link (Salarie.codebs) can be changed here: it is written to Batigest. Leave empty to clear it.")) }
        } @else {
            p.muted { (lang.t(
                "Lecture seule : le lien salarié ↔ BatiSimply se renseigne dans Batigest (Salarie.codebs).",
                "Read-only: the employee ↔ BatiSimply link is set in Batigest (Salarie.codebs).")) }
        }
        @if cache.source.is_none() {
            p.alert.info { (lang.t(
                "SQL Server n'est pas configuré : la liste des salariés n'est pas disponible.",
                "SQL Server is not configured: the employee list is not available.")) }
        } @else {
            form method="post" action="/employees/refresh" {
                (csrf_field(&ctx))
                button type="submit" { (lang.t("Relire les salariés dans Batigest", "Read the employees from Batigest")) }
                @if cache.is_loading() { " " span.muted { (lang.t("lecture en cours…", "reading…")) } }
            }
        }
        h2 { (lang.t("Utilisateurs BatiSimply sans salarié", "BatiSimply users without an employee")) }
        @if unlinked.is_empty() {
            p.muted { (lang.t("Aucune heure n'attend un salarié.", "No hours wait for an employee.")) }
        } @else {
            table #unlinked {
                thead { tr { th { (lang.t("Identifiant BatiSimply", "BatiSimply id")) } th.num { (lang.t("Heures en attente", "Hours waiting")) } } }
                tbody { @for (user, n) in &unlinked { tr { td { code { (user) } } td.num { (n) } } } }
            }
            p.fix { (lang.t(
                "Renseigner cet identifiant dans Salarie.codebs du bon salarié, puis relancer le groupe dans « À traiter ».",
                "Put this id in Salarie.codebs of the right employee, then re-drive the group in \"To fix\".")) }
        }
        @match &snapshot {
            None => {}
            Some(Loaded { rows: Err(error), .. }) => { p.alert.error { (error) } }
            Some(Loaded { at, rows: Ok(rows) }) => {
                @let map = EmployeeMap::from_rows(rows);
                @let duplicates = map.duplicate_ids();
                @let without = map.employees_without_id();
                h2 { (lang.t("Salariés Batigest", "Batigest employees")) " (" (rows.len()) ") · " span.muted.small { (lang.t("lus ", "read ")) (ago(lang, *at)) " — " (datetime(*at)) } }
                @if !duplicates.is_empty() {
                    p.alert.error { (lang.t("Identifiants en double : ", "Duplicate ids: "))
                        @for (id, codes) in &duplicates { code { (id) } " → " (codes.join(", ")) "; " } }
                }
                @if !without.is_empty() {
                    p.alert.info { (without.len()) " " (lang.t("salarié(s) sans identifiant BatiSimply : ", "employee(s) without a BatiSimply id: ")) (without.join(", ")) }
                }
                table #employees {
                    thead { tr { th { (lang.t("Code", "Code")) } th { (lang.t("Nom", "Name")) } th { (lang.t("Identifiant BatiSimply", "BatiSimply id")) } th { (lang.t("État", "State")) }
                        @if writable { th { (lang.t("Modifier l'identifiant", "Change the id")) } } } }
                    tbody { @for r in rows {
                        @let id = text(r.cell(role::BATISIMPLY_ID));
                        @let duplicate = duplicates.contains_key(id.to_lowercase().as_str());
                        tr { td { (r.key) } td { (text(r.cell(role::NAME))) } td { code { (id) } }
                             td { @if id.is_empty() { span.badge.warn { (lang.t("sans lien", "no link")) } }
                                  @else if duplicate { span.badge.bad { (lang.t("en double", "duplicate")) } }
                                  @else { span.badge.ok { "OK" } } }
                             @if writable { td { (codebs_form(&ctx, &r.key, &id)) } } }
                    } }
                }
            }
        }
    };
    layout::page(&ctx, "/employees", lang.t("Salariés", "Employees"), body)
}

/// The small form of one employee row that sets or clears its BatiSimply id.
fn codebs_form(ctx: &Ctx, code: &str, id: &str) -> maud::Markup {
    let lang = ctx.lang;
    html! {
        form.inline method="post" action="/employees/codebs" {
            (csrf_field(ctx))
            input type="hidden" name="code" value=(code);
            input type="text" name="batisimply_id" value=(id) maxlength=(MAX_ID_CHARS)
                pattern="[0-9A-Fa-f-]*" size="38" aria-label=(lang.t("Identifiant BatiSimply", "BatiSimply id"));
            " "
            button type="submit" { (lang.t("Enregistrer", "Save")) }
        }
    }
}

fn not_configured() -> &'static str {
    "SQL Server n'est pas configuré / SQL Server is not configured"
}

/// The form of `POST /employees/codebs`.
#[derive(Debug, Deserialize)]
pub struct CodebsForm {
    /// Employee code (`Salarie` key).
    code: String,
    /// The new BatiSimply id; blank clears it.
    #[serde(default)]
    batisimply_id: String,
}

/// `POST /employees/codebs`: writes one employee's BatiSimply id in Batigest, when
/// `admin.allow_codebs_write` is on.
pub async fn set_codebs(
    State(console): State<Console>,
    Extension(ctx): Extension<Ctx>,
    client: Option<Extension<ConnectInfo<ClientAddr>>>,
    Form(form): Form<CodebsForm>,
) -> Response {
    let lang = ctx.lang;
    if !console.settings().admin.allow_codebs_write {
        return layout::error_page(
            lang,
            StatusCode::FORBIDDEN,
            lang.t(
                "La modification des identifiants BatiSimply est désactivée (admin.allow_codebs_write = false) : renseignez Salarie.codebs dans Batigest.",
                "Changing BatiSimply ids is disabled (admin.allow_codebs_write = false): set Salarie.codebs in Batigest.",
            ),
        );
    }
    let code = form.code.trim();
    if code.is_empty() || code.chars().count() > 64 {
        let message = lang.t(
            "Code salarié absent ou invalide.",
            "Missing or invalid employee code.",
        );
        return layout::error_page(lang, StatusCode::BAD_REQUEST, message);
    }
    let id = match parse_batisimply_id(&form.batisimply_id) {
        Ok(id) => id,
        Err(message) => return layout::error_page(lang, StatusCode::BAD_REQUEST, &message),
    };
    let client = client.map(|Extension(ConnectInfo(ClientAddr(addr)))| addr.ip().to_string());
    let client = client.as_deref().unwrap_or("unknown");
    let message = match console
        .employees()
        .write_and_reload(code, id.as_deref())
        .await
    {
        Ok(()) => {
            tracing::info!(
                code,
                batisimply_id = id.as_deref().unwrap_or(""),
                client,
                "employee BatiSimply id written from the console"
            );
            match &id {
                Some(id) => format!(
                    "{} {code} → {id}",
                    lang.t(
                        "Identifiant BatiSimply enregistré :",
                        "BatiSimply id saved:"
                    )
                ),
                None => format!(
                    "{} {code}",
                    lang.t("Identifiant BatiSimply effacé :", "BatiSimply id cleared:")
                ),
            }
        }
        Err(error) => {
            tracing::warn!(code, client, %error, "employee BatiSimply id not written");
            format!(
                "{} {error}",
                lang.t("Identifiant non enregistré :", "Id not saved:")
            )
        }
    };
    console.sessions().flash(&ctx, message);
    Redirect::to("/employees").into_response()
}

/// `POST /employees/refresh`.
pub async fn refresh(State(console): State<Console>, Extension(ctx): Extension<Ctx>) -> Response {
    let message = if console.employees().refresh() {
        ctx.lang.t(
            "Lecture des salariés lancée : rechargez la page dans quelques secondes.",
            "Reading the employees: reload the page in a few seconds.",
        )
    } else {
        ctx.lang.t(
            "SQL Server n'est pas configuré.",
            "SQL Server is not configured.",
        )
    };
    console.sessions().flash(&ctx, message);
    Redirect::to("/employees").into_response()
}
