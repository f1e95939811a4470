//! Activité: the outbox as a filterable, paginated table, and each event in full
//! (payload, attempts, every error, timings, the target identity it maps to).

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};

use super::{cut, database_error};
use crate::console::Console;
use crate::console::auth::Ctx;
use crate::console::data::{self, ActivityFilter, PAGE_SIZE};
use crate::console::i18n::Lang;
use crate::console::layout::{self, csrf_field, datetime, maybe_datetime, status_label};
use crate::outbox::inspect;

const STATUSES: [&str; 6] = [
    "pending",
    "waiting",
    "in_flight",
    "done",
    "dead",
    "superseded",
];

/// `GET /activity?flow=&status=&key=&from=&to=&q=&before=`.
pub async fn list(
    State(console): State<Console>,
    Extension(ctx): Extension<Ctx>,
    Query(filter): Query<ActivityFilter>,
) -> Response {
    let mut rows = match data::activity(console.pool(), &filter).await {
        Ok(rows) => rows,
        Err(error) => return database_error(&ctx, &error),
    };
    let more = rows.len() as i64 > PAGE_SIZE;
    rows.truncate(PAGE_SIZE as usize);
    let lang = ctx.lang;
    let flows = console.flow_names(Vec::new());
    let next = rows.last().filter(|_| more).map(|last| {
        let query = serde_urlencoded_query(&ActivityFilter {
            before: Some(last.id),
            ..filter.clone()
        });
        format!("/activity?{query}")
    });
    let body = html! {
        (filters(lang, &filter, &flows))
        table #events {
            thead { tr {
                th.num { "#" } th { (lang.t("Flux", "Flow")) } th { (lang.t("Clé", "Key")) }
                th { (lang.t("Opération", "Operation")) } th { (lang.t("État", "Status")) }
                th.num { (lang.t("Essais", "Attempts")) } th { (lang.t("Capturé", "Captured")) }
                th { (lang.t("Résultat ou erreur", "Outcome or error")) }
            } }
            tbody {
                @for r in &rows {
                    tr data-status=(r.status) {
                        td.num { a href={"/activity/" (r.id)} { (r.id) } }
                        td { (r.flow) }
                        td { a href={"/activity?key=" (url_encode(&r.entity_key)) "&flow=" (url_encode(&r.flow))} { (r.entity_key) } }
                        td { (r.operation) }
                        td { span.badge.(badge(&r.status)) { (status_label(lang, &r.status)) } }
                        td.num { (r.attempts) }
                        td { (datetime(r.captured_at)) }
                        @if let Some(error) = &r.last_error {
                            td.error { (cut(error, 160)) }
                        } @else {
                            td.muted { (r.outcome.as_deref().unwrap_or("")) }
                        }
                    }
                }
                @if rows.is_empty() {
                    tr { td colspan="8" .muted { (lang.t("Aucun événement ne correspond.", "No event matches.")) } }
                }
            }
        }
        div.pager {
            @if filter.before.is_some() { a href="/activity" { (lang.t("← plus récents", "← newest")) } }
            @if let Some(next) = next { a href=(next) { (lang.t("plus anciens →", "older →")) } }
        }
    };
    layout::page(&ctx, "/activity", lang.t("Activité", "Activity"), body)
}

fn filters(lang: Lang, f: &ActivityFilter, flows: &[String]) -> Markup {
    html! {
        form.filters method="get" action="/activity" {
            label { (lang.t("Flux", "Flow"))
                select name="flow" {
                    option value="" { (lang.t("tous", "all")) }
                    @for flow in flows { option value=(flow) selected[*flow == f.flow] { (flow) } }
                }
            }
            label { (lang.t("État", "Status"))
                select name="status" {
                    option value="" { (lang.t("tous", "all")) }
                    @for s in STATUSES { option value=(s) selected[s == f.status] { (status_label(lang, s)) } }
                }
            }
            label { (lang.t("Clé", "Key")) input type="text" name="key" value=(f.key) size="12"; }
            label { (lang.t("Du", "From")) input type="date" name="from" value=(f.from); }
            label { (lang.t("Au", "To")) input type="date" name="to" value=(f.to); }
            label { (lang.t("Texte dans les erreurs", "Text in errors")) input type="search" name="q" value=(f.q); }
            button type="submit" { (lang.t("Filtrer", "Filter")) }
            a href="/activity" { (lang.t("Effacer", "Clear")) }
        }
    }
}

fn badge(status: &str) -> &'static str {
    match status {
        "done" => "ok",
        "dead" => "dead",
        "pending" | "in_flight" | "waiting" => "warn",
        _ => "idle",
    }
}

fn url_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn serde_urlencoded_query(f: &ActivityFilter) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in [
        ("flow", &f.flow),
        ("status", &f.status),
        ("key", &f.key),
        ("from", &f.from),
        ("to", &f.to),
        ("q", &f.q),
    ] {
        if !v.is_empty() {
            query.append_pair(k, v);
        }
    }
    if let Some(before) = f.before {
        query.append_pair("before", &before.to_string());
    }
    query.finish()
}

/// `GET /activity/{id}`.
pub async fn detail(
    State(console): State<Console>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<i64>,
) -> Response {
    let lang = ctx.lang;
    let detail = match inspect::show(console.pool(), id).await {
        Ok(Some(detail)) => detail,
        Ok(None) => {
            return layout::error_page(
                lang,
                StatusCode::NOT_FOUND,
                lang.t(
                    "Cet événement n'existe pas (ou a été purgé).",
                    "No such event (or it was pruned).",
                ),
            );
        }
        Err(crate::outbox::OutboxError::Database(error)) => return database_error(&ctx, &error),
        Err(other) => {
            return layout::error_page(lang, StatusCode::INTERNAL_SERVER_ERROR, &other.to_string());
        }
    };
    let s = &detail.summary;
    let link = data::target_link(console.pool(), &s.flow, &s.entity_key).await;
    let conflicts = data::conflicts(console.pool(), Some(id), 10).await;
    let (link, conflicts) = match (link, conflicts) {
        (Ok(l), Ok(c)) => (l, c),
        (Err(e), _) | (_, Err(e)) => return database_error(&ctx, &e),
    };
    let payload = serde_json::to_string_pretty(&detail.payload).unwrap_or_default();
    let latency = s
        .finished_at
        .map(|done| (done - s.captured_at).num_milliseconds() as f64 / 1000.0);
    let body = html! {
        div.side {
            section.card {
                h2 { (lang.t("Événement", "Event")) " " (s.id) }
                dl.kv {
                    dt { (lang.t("Flux / clé", "Flow / key")) } dd { (s.flow) " / " (s.entity_key) }
                    dt { (lang.t("Opération", "Operation")) } dd { (s.operation) " (version " (detail.source_version) ")" }
                    dt { (lang.t("État", "Status")) } dd #status { span.badge.(badge(&s.status)) { (status_label(lang, &s.status)) } }
                    dt { (lang.t("Essais", "Attempts")) } dd { (s.attempts) }
                    dt { (lang.t("Modifié à la source", "Modified at the source")) } dd { (maybe_datetime(detail.source_modified_at)) }
                    dt { (lang.t("Capturé", "Captured")) } dd { (datetime(s.captured_at)) }
                    dt { (lang.t("Premier essai", "First attempt")) } dd { (maybe_datetime(detail.first_attempt_at)) }
                    dt { (lang.t("Terminé", "Finished")) } dd { (maybe_datetime(s.finished_at))
                        @if let Some(l) = latency { " (" (format!("{l:.1}")) " s)" } }
                    dt { (lang.t("Prochain essai", "Next attempt")) } dd { (datetime(s.next_attempt_at)) }
                    @if let Some(by) = &detail.locked_by { dt { (lang.t("Pris par", "Claimed by")) } dd { (by) } }
                    @if let Some(newer) = detail.superseded_by {
                        dt { (lang.t("Remplacé par", "Superseded by")) } dd { a href={"/activity/" (newer)} { (newer) } }
                    }
                    @if let Some(outcome) = &s.outcome { dt { (lang.t("Résultat", "Outcome")) } dd { (outcome) } }
                }
                @if s.status == "dead" {
                    form method="post" action="/todo/redrive" {
                        (csrf_field(&ctx))
                        input type="hidden" name="id" value=(s.id);
                        button type="submit" { (lang.t("Relancer cet événement", "Re-drive this event")) }
                    }
                }
            }
            section.card {
                h2 { (lang.t("Identité dans la cible", "Target identity")) }
                @if let Some(l) = &link {
                    dl.kv {
                        dt { (lang.t("Identifiant cible", "Target id")) } dd #target-id { (l.target_id.as_deref().unwrap_or("—")) }
                        dt { (lang.t("Dernier événement appliqué", "Last applied event")) }
                        dd { @if let Some(e) = l.last_event_id { a href={"/activity/" (e)} { (e) } } @else { "—" } }
                        dt { (lang.t("Modifié dans la cible", "Modified in the target")) } dd { (maybe_datetime(l.target_modified_at)) }
                        dt { (lang.t("Lien mis à jour", "Link updated")) } dd { (datetime(l.updated_at)) }
                    }
                } @else {
                    p.muted { (lang.t("Jamais écrit dans la cible.", "Never written to the target.")) }
                }
            }
        }
        h2 { (lang.t("Erreurs, essai par essai", "Errors, attempt by attempt")) }
        @if detail.failures.is_empty() {
            p.muted { (lang.t("Aucune erreur.", "No error.")) }
        } @else {
            table {
                thead { tr { th.num { (lang.t("Essai", "Attempt")) } th { (lang.t("Quand", "When")) } th { (lang.t("Type", "Kind")) } th { "Message" } } }
                tbody { @for f in &detail.failures {
                    tr { td.num { (f.attempt) } td { (datetime(f.failed_at)) } td { (f.kind) } td.error { (f.message) } }
                } }
            }
        }
        @if !conflicts.is_empty() {
            h2 { (lang.t("Conflits", "Conflicts")) }
            @for c in &conflicts { (super::todo::conflict_view(lang, c)) }
        }
        h2 { (lang.t("Contenu", "Payload")) }
        pre { (payload) }
    };
    layout::page(
        &ctx,
        "/activity",
        &format!("{} {id}", lang.t("Événement", "Event")),
        body,
    )
}
