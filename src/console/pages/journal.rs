//! Journal: per-run summaries (each poll that captured events: delivered, superseded,
//! retried, dead, conflicts, open, duration), per-hour summaries of what each flow did,
//! and recent log lines at warning and above; searchable by flow and text.

use axum::Extension;
use axum::extract::{Query, State};
use axum::response::Response;
use chrono::{DateTime, Utc};
use maud::html;
use serde::Deserialize;
use sqlx::PgPool;

use super::{cut, database_error};
use crate::console::Console;
use crate::console::auth::Ctx;
use crate::console::i18n::Lang;
use crate::console::layout::{self, datetime};
use crate::console::logring;
use crate::outbox::OutboxError;
use crate::outbox::loads::format_duration;
use crate::outbox::runs::{self, RunFilter, RunSummary};

/// What each flow did in one hour.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct HourSummary {
    pub flow: String,
    pub hour: DateTime<Utc>,
    pub captured: i64,
    pub ok: i64,
    /// Events that needed more than one attempt.
    pub retried: i64,
    pub dead: i64,
    pub conflicts: i64,
    /// Median capture-to-delivery time of the delivered ones, in seconds.
    pub median_delivery_seconds: Option<f64>,
}

/// The last 24 hours, newest first, optionally of flows whose name contains `flow`.
///
/// # Errors
/// Database errors.
pub async fn hour_summaries(pool: &PgPool) -> Result<Vec<HourSummary>, sqlx::Error> {
    sqlx::query_as(
        "SELECT o.flow, date_trunc('hour', o.captured_at) AS hour, count(*) AS captured, \
                count(*) FILTER (WHERE o.status = 'done') AS ok, \
                count(*) FILTER (WHERE o.attempts > 1) AS retried, \
                count(*) FILTER (WHERE o.status = 'dead') AS dead, \
                count(c.id) AS conflicts, \
                percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM o.finished_at - o.captured_at)) \
                    FILTER (WHERE o.status = 'done') AS median_delivery_seconds \
         FROM batisync.outbox o \
         LEFT JOIN batisync.conflicts c ON c.event_id = o.id \
         WHERE o.captured_at > now() - interval '24 hours' \
         GROUP BY 1, 2 ORDER BY 2 DESC, 1",
    )
    .fetch_all(pool)
    .await
}

/// Runs listed on the page.
const RUNS_SHOWN: i64 = 100;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct JournalQuery {
    /// Text searched in flow names, event keys and errors, and log lines.
    q: String,
    /// Only this flow (empty: every flow).
    flow: String,
}

/// `GET /journal?q=`.
pub async fn page(
    State(console): State<Console>,
    Extension(ctx): Extension<Ctx>,
    Query(query): Query<JournalQuery>,
) -> Response {
    let lang = ctx.lang;
    let needle = query.q.trim().to_lowercase();
    let filter = RunFilter {
        flow: &query.flow,
        text: &query.q,
        limit: RUNS_SHOWN,
    };
    let runs = match runs::recent(console.pool(), &filter).await {
        Ok(r) => r,
        Err(OutboxError::Database(error)) => return database_error(&ctx, &error),
        Err(other) => return database_error(&ctx, &sqlx::Error::Protocol(other.to_string())),
    };
    let summaries = match hour_summaries(console.pool()).await {
        Ok(s) => s,
        Err(error) => return database_error(&ctx, &error),
    };
    let flow = query.flow.trim();
    let summaries: Vec<&HourSummary> = summaries
        .iter()
        .filter(|s| flow.is_empty() || s.flow == flow)
        .filter(|s| needle.is_empty() || s.flow.to_lowercase().contains(&needle))
        .collect();
    let flows = console.flow_names(summaries.iter().map(|s| s.flow.clone()));
    let lines = logring::recent(Some(&needle));
    let body = html! {
        form.filters method="get" action="/journal" {
            label { (lang.t("Flux", "Flow")) select name="flow" {
                option value="" { (lang.t("tous", "all")) }
                @for f in &flows { option value=(f) selected[f == flow] { (f) } }
            } }
            label { (lang.t("Rechercher", "Search")) input type="search" name="q" value=(query.q); }
            button type="submit" { (lang.t("Rechercher", "Search")) }
        }
        h2 { (lang.t("Exécutions récentes", "Recent runs")) }
        p.muted.small { (lang.t(
            "Une exécution = une lecture de la source qui a capturé au moins un événement. La recherche porte sur le flux, les clés et les erreurs de ses événements.",
            "A run = one read of the source that captured at least one event. Search looks at the flow, its events' keys and errors.")) }
        (runs_table(lang, &runs))
        h2 { (lang.t("Bilans par heure (24 h)", "Hourly summaries (24 h)")) }
        table #summaries {
            thead { tr { th { (lang.t("Heure", "Hour")) } th { (lang.t("Flux", "Flow")) }
                th.num { (lang.t("Capturés", "Captured")) } th.num { (lang.t("Livrés", "Delivered")) }
                th.num { (lang.t("Réessayés", "Retried")) } th.num { (lang.t("En échec", "Dead")) }
                th.num { (lang.t("Conflits", "Conflicts")) } th.num { (lang.t("Délai médian", "Median delay")) } } }
            tbody {
                @for s in &summaries {
                    tr { td { (datetime(s.hour)) } td { (s.flow) } td.num { (s.captured) } td.num { (s.ok) }
                         td.num { (s.retried) } td.num { (s.dead) } td.num { (s.conflicts) }
                         td.num { (s.median_delivery_seconds.map_or("—".to_owned(), |d| format!("{d:.1} s"))) } }
                }
                @if summaries.is_empty() { tr { td colspan="8" .muted { (lang.t("Rien sur les dernières 24 h.", "Nothing in the last 24 h.")) } } }
            }
        }
        h2 { (lang.t("Avertissements et erreurs récents", "Recent warnings and errors")) }
        table #log {
            thead { tr { th { (lang.t("Quand", "When")) } th { (lang.t("Niveau", "Level")) } th { "Message" } th { (lang.t("Détails", "Details")) } } }
            tbody {
                @for l in lines.iter().take(200) {
                    tr { td { (datetime(l.at)) } td { span.badge.(if l.level == "ERROR" { "bad" } else { "warn" }) { (l.level) } }
                         td { (l.message) } td.small.muted { (cut(&l.fields, 300)) } }
                }
                @if lines.is_empty() { tr { td colspan="4" .muted { (lang.t("Aucun avertissement depuis le démarrage.", "No warning since start-up.")) } } }
            }
        }
    };
    layout::page(&ctx, "/journal", lang.t("Journal", "Log"), body)
}

/// The runs table: one row per run, newest first.
fn runs_table(lang: Lang, runs: &[RunSummary]) -> maud::Markup {
    html! {
        table #runs {
            thead { tr { th { (lang.t("Début", "Started")) } th { (lang.t("Flux", "Flow")) } th.num { "N°" }
                th.num { (lang.t("Capturés", "Captured")) } th.num { (lang.t("Livrés", "Delivered")) }
                th.num { (lang.t("Remplacés", "Superseded")) } th.num { (lang.t("Réessais", "Retries")) }
                th.num { (lang.t("En échec", "Dead")) } th.num { (lang.t("Conflits", "Conflicts")) }
                th.num { (lang.t("En cours", "Open")) } th.num { (lang.t("Durée", "Duration")) } } }
            tbody {
                @for r in runs {
                    tr data-run=(r.id) {
                        td { (datetime(r.started_at)) } td { (r.flow) } td.num { (r.id) }
                        td.num { (r.total) } td.num { (r.ok) } td.num { (r.superseded) } td.num { (r.retried) }
                        td.num { @if r.dead > 0 { a href={ "/activity?status=dead&flow=" (r.flow) } { span.badge.bad { (r.dead) } } } @else { "0" } }
                        td.num { (r.conflicts) } td.num { (r.open) }
                        td.num { @match r.duration() {
                            Some(d) => { (format_duration(d)) }
                            None => { span.muted { (lang.t("en cours", "running")) } }
                        } }
                    }
                }
                @if runs.is_empty() { tr { td colspan="11" .muted { (lang.t("Aucune exécution trouvée.", "No run found.")) } } }
            }
        }
    }
}
