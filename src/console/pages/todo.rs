//! À traiter: dead letters grouped by reason, with the fix in plain words, re-drive of
//! one, a group or all; conflicts with both versions side by side and the rule.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::{Markup, html};
use serde::Deserialize;
use sqlx::PgPool;

use super::{cut, database_error};
use crate::console::Console;
use crate::console::auth::Ctx;
use crate::console::data::{self, Conflict, DeadLetter};
use crate::console::i18n::Lang;
use crate::console::layout::{self, csrf_field, datetime, maybe_datetime};
use crate::console::reasons::{self, Explanation};
use crate::outbox::{Outbox, RedriveReport};

/// Dead letters read at most (the page says when there are more).
const MAX_DEAD: i64 = 5_000;
/// Events listed per group (the group's re-drive covers them all).
const SHOWN_PER_GROUP: usize = 20;

/// Dead letters of one flow sharing one reason.
#[derive(Debug, Clone)]
pub struct Group {
    pub flow: String,
    pub reason: Explanation,
    pub events: Vec<DeadLetter>,
}

/// Dead letters grouped by (flow, reason), biggest groups first.
///
/// # Errors
/// Database errors.
pub async fn groups(pool: &PgPool) -> Result<Vec<Group>, sqlx::Error> {
    let mut by_key: BTreeMap<(String, String), Group> = BTreeMap::new();
    for dead in data::dead_letters(pool, MAX_DEAD).await? {
        let reason = reasons::explain(
            &dead.reason(),
            dead.last_error.as_deref().unwrap_or_default(),
        );
        by_key
            .entry((dead.flow.clone(), reason.key.clone()))
            .or_insert_with(|| Group {
                flow: dead.flow.clone(),
                reason,
                events: Vec::new(),
            })
            .events
            .push(dead);
    }
    let mut groups: Vec<Group> = by_key.into_values().collect();
    groups.sort_by_key(|g| std::cmp::Reverse(g.events.len()));
    Ok(groups)
}

/// `GET /todo`.
pub async fn page(State(console): State<Console>, Extension(ctx): Extension<Ctx>) -> Response {
    let lang = ctx.lang;
    let (groups, conflicts) = match (
        groups(console.pool()).await,
        data::conflicts(console.pool(), None, 30).await,
    ) {
        (Ok(g), Ok(c)) => (g, c),
        (Err(e), _) | (_, Err(e)) => return database_error(&ctx, &e),
    };
    let total: usize = groups.iter().map(|g| g.events.len()).sum();
    let body = html! {
        h2 { (lang.t("Événements en échec", "Dead letters")) " (" (total) ")" }
        @if groups.is_empty() {
            p.alert.ok { (lang.t("Rien à traiter : aucun événement en échec.", "Nothing to fix: no dead letter.")) }
        } @else {
            form method="post" action="/todo/redrive"
                data-confirm=(lang.t("Relancer tous les événements en échec ?", "Re-drive every dead letter?")) {
                (csrf_field(&ctx))
                input type="hidden" name="all" value="1";
                button.secondary type="submit" { (lang.t("Tout relancer", "Re-drive all")) }
            }
            @for g in &groups { (group_view(&ctx, g)) }
        }
        h2 { (lang.t("Conflits récents", "Recent conflicts")) }
        p.muted.small { (lang.t(
            "La modification la plus récente l'emporte ; chaque décision est gardée ici.",
            "The latest modification wins; every decision is kept here.")) }
        @if conflicts.is_empty() {
            p.muted { (lang.t("Aucun conflit.", "No conflict.")) }
        }
        @for c in &conflicts { (conflict_view(lang, c)) }
    };
    layout::page(&ctx, "/todo", lang.t("À traiter", "To fix"), body)
}

fn group_view(ctx: &Ctx, g: &Group) -> Markup {
    let lang = ctx.lang;
    html! {
        section.group data-group=(g.reason.key) data-flow=(g.flow) {
            h2 { (g.reason.title(lang)) " — " (g.flow) " "
                 span.badge.dead { (g.events.len()) } }
            p.fix { strong { (lang.t("Que faire : ", "What to do: ")) } (g.reason.fix(lang)) }
            div.actions {
                form method="post" action="/todo/redrive" {
                    (csrf_field(ctx))
                    input type="hidden" name="flow" value=(g.flow);
                    input type="hidden" name="group" value=(g.reason.key);
                    button type="submit" { (lang.t("Relancer ce groupe", "Re-drive this group")) }
                }
                a href={"/activity?status=dead&flow=" (g.flow)} { (lang.t("voir dans l'activité", "see in activity")) }
            }
            table {
                thead { tr { th.num { "#" } th { (lang.t("Clé", "Key")) } th { (lang.t("En échec depuis", "Dead since")) }
                             th.num { (lang.t("Essais", "Attempts")) } th { (lang.t("Erreur", "Error")) } th {} } }
                tbody {
                    @for d in g.events.iter().take(SHOWN_PER_GROUP) {
                        tr data-event=(d.id) {
                            td.num { a href={"/activity/" (d.id)} { (d.id) } }
                            td { (d.entity_key) }
                            td { (datetime(d.dead_since)) }
                            td.num { (d.attempts) }
                            td.error { (cut(d.last_error.as_deref().unwrap_or_default(), 200)) }
                            td { form method="post" action="/todo/redrive" {
                                (csrf_field(ctx))
                                input type="hidden" name="id" value=(d.id);
                                button.secondary type="submit" { (lang.t("Relancer", "Re-drive")) }
                            } }
                        }
                    }
                }
            }
            @if g.events.len() > SHOWN_PER_GROUP {
                p.muted.small { (g.events.len() - SHOWN_PER_GROUP) " " (lang.t("autres dans ce groupe", "more in this group")) }
            }
        }
    }
}

/// One conflict: the rule, the winner and both versions side by side.
pub fn conflict_view(lang: Lang, c: &Conflict) -> Markup {
    let pretty = |v: &Option<serde_json::Value>| {
        v.as_ref().map_or_else(
            || "—".to_owned(),
            |v| serde_json::to_string_pretty(v).unwrap_or_default(),
        )
    };
    let winner = if c.winner == "source" {
        lang.t(
            "la source (Batigest pour les chantiers) l'emporte",
            "the source wins",
        )
    } else {
        lang.t(
            "la cible l'emporte : rien n'a été écrasé",
            "the target wins: nothing was overwritten",
        )
    };
    html! {
        section.group data-conflict=(c.id) {
            h2 { (c.flow) " / " (c.entity_key) }
            p { strong { (lang.t("Règle : ", "Rule: ")) } (c.rule) " — " (winner)
                " · " (datetime(c.decided_at))
                @if let Some(e) = c.event_id { " · " a href={"/activity/" (e)} { (lang.t("événement ", "event ")) (e) } } }
            div.side {
                div { h3 { (lang.t("Version source", "Source version")) " · " (maybe_datetime(c.source_modified_at)) }
                      pre { (pretty(&c.source_state)) } }
                div { h3 { (lang.t("Version cible", "Target version")) " · " (maybe_datetime(c.target_modified_at)) }
                      pre { (pretty(&c.target_state)) } }
            }
        }
    }
}

/// The re-drive form: one event (`id`), one group (`flow` + `group`), or `all`.
#[derive(Debug, Deserialize)]
pub struct RedriveForm {
    #[serde(default)]
    id: String,
    #[serde(default)]
    flow: String,
    #[serde(default)]
    group: String,
    #[serde(default)]
    all: String,
}

/// What to re-drive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedriveTarget {
    One(i64),
    Group { flow: String, group: String },
    All,
}

impl RedriveForm {
    fn target(&self) -> Option<RedriveTarget> {
        if let Ok(id) = self.id.trim().parse() {
            return Some(RedriveTarget::One(id));
        }
        if !self.group.is_empty() && !self.flow.is_empty() {
            return Some(RedriveTarget::Group {
                flow: self.flow.clone(),
                group: self.group.clone(),
            });
        }
        (self.all == "1").then_some(RedriveTarget::All)
    }
}

/// Re-drives what `target` names.
///
/// # Errors
/// Database errors.
pub async fn redrive_target(
    pool: &PgPool,
    target: &RedriveTarget,
) -> Result<RedriveReport, sqlx::Error> {
    let outbox = Outbox::new(pool.clone());
    let result = match target {
        RedriveTarget::One(id) => outbox.redrive(&[*id]).await,
        RedriveTarget::All => outbox.redrive_all_dead(None).await,
        RedriveTarget::Group { flow, group } => {
            let ids: Vec<i64> = groups(pool)
                .await?
                .into_iter()
                .filter(|g| g.flow == *flow && g.reason.key == *group)
                .flat_map(|g| g.events.into_iter().map(|e| e.id))
                .collect();
            if ids.is_empty() {
                return Ok(RedriveReport::default());
            }
            outbox.redrive(&ids).await
        }
    };
    result.map_err(|e| match e {
        crate::outbox::OutboxError::Database(e) => e,
        other => sqlx::Error::Protocol(other.to_string()),
    })
}

/// A sentence about a re-drive.
#[must_use]
pub fn report_sentence(lang: Lang, report: &RedriveReport) -> String {
    let mut text = format!(
        "{} {}",
        report.requeued.len(),
        lang.t("événement(s) relancé(s).", "event(s) re-driven.")
    );
    if !report.superseded.is_empty() {
        text.push_str(&format!(
            " {} {}",
            report.superseded.len(),
            lang.t(
                "remplacé(s) par un événement plus récent (non renvoyé(s)).",
                "superseded by a newer event (not sent again)."
            )
        ));
    }
    text
}

/// Re-drives what a form names; returns the sentence to show.
async fn redrive_form(
    console: &Console,
    ctx: &Ctx,
    form: &RedriveForm,
) -> Result<String, sqlx::Error> {
    let Some(target) = form.target() else {
        return Ok(ctx
            .lang
            .t("Rien à relancer.", "Nothing to re-drive.")
            .to_owned());
    };
    let report = redrive_target(console.pool(), &target).await?;
    tracing::info!(
        ?target,
        requeued = report.requeued.len(),
        superseded = report.superseded.len(),
        "dead letters re-driven from the console"
    );
    Ok(report_sentence(ctx.lang, &report))
}

/// `POST /todo/redrive`.
pub async fn redrive(
    State(console): State<Console>,
    Extension(ctx): Extension<Ctx>,
    Form(form): Form<RedriveForm>,
) -> Response {
    match redrive_form(&console, &ctx, &form).await {
        Ok(message) => {
            console.sessions().flash(&ctx, message);
            Redirect::to("/todo").into_response()
        }
        Err(error) => database_error(&ctx, &error),
    }
}
