//! Journal: recent log lines at warning and above, and per-hour summaries of what each
//! flow did (delivered, retried, dead, conflicts, delivery time), searchable.

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
use crate::console::layout::{self, datetime};
use crate::console::logring;

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

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct JournalQuery {
    q: String,
}

/// `GET /journal?q=`.
pub async fn page(
    State(console): State<Console>,
    Extension(ctx): Extension<Ctx>,
    Query(query): Query<JournalQuery>,
) -> Response {
    let lang = ctx.lang;
    let needle = query.q.trim().to_lowercase();
    let summaries = match hour_summaries(console.pool()).await {
        Ok(s) => s,
        Err(error) => return database_error(&ctx, &error),
    };
    let summaries: Vec<&HourSummary> = summaries
        .iter()
        .filter(|s| needle.is_empty() || s.flow.to_lowercase().contains(&needle))
        .collect();
    let lines = logring::recent(Some(&needle));
    let body = html! {
        form.filters method="get" action="/journal" {
            label { (lang.t("Rechercher", "Search")) input type="search" name="q" value=(query.q); }
            button type="submit" { (lang.t("Rechercher", "Search")) }
        }
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
