//! Salariés: the employee link table (Batigest employees with their BatiSimply id),
//! duplicates, employees without an id, and BatiSimply users seen in time slots
//! without a link (the `heures` flow's dead letters naming an unmapped user).
//!
//! The employee list is read from SQL Server only when someone clicks "refresh" (in
//! a background task), then kept in memory with its time: opening the page never
//! opens a connection. The page is read-only: `codebs` is edited in Batigest.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use maud::html;
use sqlx::PgPool;

use super::database_error;
use crate::batigest::spec::salarie_role as role;
use crate::batigest::{BatigestSettings, Cell, EmployeeMap, SourceRow};
use crate::console::Console;
use crate::console::auth::Ctx;
use crate::console::layout::{self, ago, csrf_field, datetime};
use crate::console::reasons;

/// Flow whose dead letters name unmapped BatiSimply users.
pub const HOURS_FLOW: &str = "heures";

/// Where the `Salarie` rows come from.
pub trait EmployeeSource: Send + Sync {
    /// Every employee row (code, name, BatiSimply id), or a sentence saying why not.
    fn load(&self) -> BoxFuture<'_, Result<Vec<SourceRow>, String>>;
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
        let error = dead.last_error.unwrap_or_default();
        if reasons::classify(&error).key == "employee-unmapped"
            && let Some(user) = reasons::unmapped_user_id(&error)
        {
            *users.entry(user).or_default() += 1;
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
    let body = html! {
        p.muted { (lang.t(
            "Lecture seule : le lien salarié ↔ BatiSimply se renseigne dans Batigest (Salarie.codebs).",
            "Read-only: the employee ↔ BatiSimply link is set in Batigest (Salarie.codebs).")) }
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
                    thead { tr { th { (lang.t("Code", "Code")) } th { (lang.t("Nom", "Name")) } th { (lang.t("Identifiant BatiSimply", "BatiSimply id")) } th { (lang.t("État", "State")) } } }
                    tbody { @for r in rows {
                        @let id = text(r.cell(role::BATISIMPLY_ID));
                        @let duplicate = duplicates.contains_key(id.to_lowercase().as_str());
                        tr { td { (r.key) } td { (text(r.cell(role::NAME))) } td { code { (id) } }
                             td { @if id.is_empty() { span.badge.warn { (lang.t("sans lien", "no link")) } }
                                  @else if duplicate { span.badge.bad { (lang.t("en double", "duplicate")) } }
                                  @else { span.badge.ok { "OK" } } } }
                    } }
                }
            }
        }
    };
    layout::page(&ctx, "/employees", lang.t("Salariés", "Employees"), body)
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
