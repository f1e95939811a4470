//! Actions: what the original's buttons did, done right. "Sync now" wakes the flow's
//! poller (never runs inside the request; repeated clicks coalesce), pause/resume,
//! full re-read with a confirmation and live progress, and a connection test.

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::html;
use serde::Deserialize;

use super::dashboard::{FlowState, flow_cards, lights_bar};
use super::database_error;
use crate::console::Console;
use crate::console::auth::Ctx;
use crate::console::data::{self, ResyncProgress};
use crate::console::i18n::Lang;
use crate::console::layout::{self, csrf_field, maybe_datetime};
use crate::control::SyncRequest;

/// `GET /actions`.
pub async fn page(State(console): State<Console>, Extension(ctx): Extension<Ctx>) -> Response {
    let lang = ctx.lang;
    let cards = match flow_cards(&console).await {
        Ok(cards) => cards,
        Err(error) => return database_error(&ctx, &error),
    };
    let body = html! {
        h2 { (lang.t("Flux", "Flows")) }
        table #flows {
            thead { tr { th { (lang.t("Flux", "Flow")) } th { (lang.t("État", "State")) }
                         th { (lang.t("Dernière lecture réussie", "Last successful poll")) } th { "Actions" } } }
            tbody {
                @for card in cards.iter().filter(|c| c.state != FlowState::NotRunningHere) {
                    @let flow = &card.flow;
                    @let control = console.controls().get(flow);
                    tr data-flow=(flow) {
                        td { strong { (flow) } }
                        td { span.badge.(state_css(card.state)) { (card.state.label(lang)) } }
                        td { (maybe_datetime(card.last_successful_poll)) }
                        td { div.actions {
                            form method="post" action="/actions/sync" {
                                (csrf_field(&ctx)) input type="hidden" name="flow" value=(flow);
                                button type="submit" disabled[card.state == FlowState::Paused] {
                                    (lang.t("Synchroniser maintenant", "Sync now")) }
                            }
                            @if card.state == FlowState::Paused {
                                form method="post" action="/actions/resume" {
                                    (csrf_field(&ctx)) input type="hidden" name="flow" value=(flow);
                                    button.secondary type="submit" { (lang.t("Reprendre", "Resume")) }
                                }
                            } @else {
                                form method="post" action="/actions/pause" {
                                    (csrf_field(&ctx)) input type="hidden" name="flow" value=(flow);
                                    button.secondary type="submit" { (lang.t("Mettre en pause", "Pause")) }
                                }
                            }
                            @if control.as_ref().is_some_and(|c| c.can_resync()) {
                                form method="post" action="/actions/resync"
                                    data-confirm=(lang.t(
                                        "Relire toute la source de ce flux et renvoyer ce qui diffère ? Cela peut prendre plusieurs minutes.",
                                        "Re-read this flow's whole source and send what differs? This can take several minutes.")) {
                                    (csrf_field(&ctx)) input type="hidden" name="flow" value=(flow);
                                    button.danger type="submit" { (lang.t("Tout resynchroniser", "Full resync")) }
                                }
                            }
                        } }
                    }
                    @if control.as_ref().is_some_and(|c| c.status().resync_requested_at.is_some()) {
                        tr { td colspan="4" {
                            div.resync data-progress={"/api/v1/flows/" (flow) "/resync"} {
                                (lang.t("Resynchronisation complète", "Full resync")) " — " (flow)
                                progress max="1" value="0" {}
                                span.progress-text.muted.small { (lang.t("calcul…", "computing…")) }
                            }
                        } }
                    }
                }
            }
        }
        p.muted.small { (lang.t(
            "La pause arrête la lecture et les envois du flux dans ce processus (les envois en cours se terminent). Un redémarrage de batisync relance tous les flux.",
            "Pause stops the flow's reads and deliveries in this process (deliveries under way finish). Restarting batisync resumes every flow.")) }
        h2 { (lang.t("Connexions", "Connections")) }
        (lights_bar(lang, &console.health().lights()))
        form method="post" action="/actions/test" {
            (csrf_field(&ctx))
            button type="submit" { (lang.t("Tester les connexions", "Test the connections")) }
        }
        ul.small {
            @for l in console.health().lights() {
                li { strong { (l.component.label()) } " : " (l.detail) }
            }
        }
    };
    layout::page(&ctx, "/actions", lang.t("Actions", "Actions"), body)
}

fn state_css(state: FlowState) -> &'static str {
    match state {
        FlowState::Running => "running",
        FlowState::Paused => "paused",
        FlowState::Failing => "failing",
        FlowState::NotRunningHere => "idle",
    }
}

#[derive(Debug, Deserialize)]
pub struct FlowForm {
    flow: String,
}

fn back(console: &Console, ctx: &Ctx, message: String) -> Response {
    console.sessions().flash(ctx, message);
    Redirect::to("/actions").into_response()
}

fn unknown_flow(lang: Lang, flow: &str) -> String {
    format!(
        "{} {flow} {}",
        lang.t("Le flux", "Flow"),
        lang.t(
            "ne tourne pas dans ce processus (activez-le dans la configuration).",
            "does not run in this process (enable it in the settings)."
        )
    )
}

/// `POST /actions/sync`.
pub async fn sync_now(
    State(console): State<Console>,
    Extension(ctx): Extension<Ctx>,
    Form(form): Form<FlowForm>,
) -> Response {
    let lang = ctx.lang;
    let message = match console.controls().get(&form.flow) {
        None => unknown_flow(lang, &form.flow),
        Some(c) if c.is_paused() => lang
            .t(
                "Le flux est en pause : reprenez-le d'abord.",
                "The flow is paused: resume it first.",
            )
            .to_owned(),
        Some(c) => match c.request_sync() {
            SyncRequest::Queued => lang
                .t(
                    "Synchronisation demandée : le flux lit sa source maintenant.",
                    "Sync requested: the flow reads its source now.",
                )
                .to_owned(),
            SyncRequest::AlreadyQueued => lang
                .t(
                    "Une synchronisation est déjà demandée : rien de plus à faire.",
                    "A sync is already requested: nothing more to do.",
                )
                .to_owned(),
        },
    };
    back(&console, &ctx, message)
}

/// `POST /actions/pause`.
pub async fn pause(
    State(console): State<Console>,
    Extension(ctx): Extension<Ctx>,
    Form(form): Form<FlowForm>,
) -> Response {
    set_paused(&console, &ctx, &form.flow, true)
}

/// `POST /actions/resume`.
pub async fn resume(
    State(console): State<Console>,
    Extension(ctx): Extension<Ctx>,
    Form(form): Form<FlowForm>,
) -> Response {
    set_paused(&console, &ctx, &form.flow, false)
}

/// Pauses or resumes a flow, then goes back with a message.
fn set_paused(console: &Console, ctx: &Ctx, flow: &str, paused: bool) -> Response {
    let message = match console.controls().get(flow) {
        None => unknown_flow(ctx.lang, flow),
        Some(c) if paused => {
            c.pause();
            format!("{flow} : {}", ctx.lang.t("en pause.", "paused."))
        }
        Some(c) => {
            c.resume();
            format!("{flow} : {}", ctx.lang.t("repris.", "resumed."))
        }
    };
    back(console, ctx, message)
}

/// `POST /actions/resync`.
pub async fn resync(
    State(console): State<Console>,
    Extension(ctx): Extension<Ctx>,
    Form(form): Form<FlowForm>,
) -> Response {
    let lang = ctx.lang;
    let message = match console.controls().get(&form.flow) {
        None => unknown_flow(lang, &form.flow),
        Some(c) => match c.request_resync().await {
            Ok(text) => {
                tracing::info!(flow = %form.flow, "full resync requested from the console");
                format!("{} : {text}", form.flow)
            }
            Err(text) => format!("{} : {text}", form.flow),
        },
    };
    back(&console, &ctx, message)
}

/// `POST /actions/test`: the background monitor checks everything now.
pub async fn test_connections(
    State(console): State<Console>,
    Extension(ctx): Extension<Ctx>,
) -> Response {
    console.health().request_test();
    let message = ctx
        .lang
        .t(
            "Test lancé : les voyants se mettent à jour dans quelques secondes (rechargez la page).",
            "Test started: the lights update within a few seconds (reload the page).",
        )
        .to_owned();
    back(&console, &ctx, message)
}

/// Progress of the last full resync of `flow` requested from this process.
///
/// # Errors
/// Database errors.
pub async fn resync_progress(
    console: &Console,
    flow: &str,
    lang: Lang,
) -> Result<ResyncProgress, sqlx::Error> {
    let requested_at = console
        .controls()
        .get(flow)
        .and_then(|c| c.status().resync_requested_at);
    let Some(since) = requested_at else {
        return Ok(ResyncProgress {
            requested_at: None,
            total: 0,
            finished: 0,
            dead: 0,
            complete: true,
            summary: lang
                .t("Aucune resynchronisation demandée.", "No resync requested.")
                .to_owned(),
        });
    };
    let (total, finished, dead) = data::resync_progress(console.pool(), flow, since).await?;
    let complete = total > 0 && finished >= total;
    let summary = if total == 0 {
        lang.t(
            "En attente de la lecture de la source…",
            "Waiting for the source to be read…",
        )
        .to_owned()
    } else {
        format!(
            "{finished} / {total} {}{}",
            lang.t("traités", "processed"),
            if dead > 0 {
                format!(", {dead} {}", lang.t("en échec", "dead"))
            } else {
                String::new()
            }
        ) + if complete {
            lang.t(" — terminé.", " — done.")
        } else {
            ""
        }
    };
    Ok(ResyncProgress {
        requested_at,
        total,
        finished,
        dead,
        complete,
        summary,
    })
}
