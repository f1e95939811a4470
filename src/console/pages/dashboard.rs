//! Tableau de bord: "is everything in?" in five seconds. Per flow: state, last
//! successful poll, backlog, oldest pending age, delivered today, dead letters,
//! conflicts, last error in plain words; the connection lights. The cards refresh in
//! place every five seconds (`/fragments/dashboard`).

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Serialize;

use super::{cut, database_error};
use crate::console::Console;
use crate::console::auth::Ctx;
use crate::console::data::{self, FlowFigures};
use crate::console::health::{ComponentHealth, Light};
use crate::console::i18n::Lang;
use crate::console::layout::{self, age, ago, maybe_datetime};

/// How long a delivery failure keeps a flow "failing" when nothing was delivered since.
const FAILING_WINDOW_SECS: i64 = 15 * 60;

/// State of a flow, as the dashboard shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowState {
    Running,
    Paused,
    Failing,
    /// Known from the outbox but not registered in this process.
    NotRunningHere,
}

impl FlowState {
    fn css(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Failing => "failing",
            Self::NotRunningHere => "idle",
        }
    }

    #[must_use]
    pub fn label(self, lang: Lang) -> &'static str {
        match self {
            Self::Running => lang.t("en marche", "running"),
            Self::Paused => lang.t("en pause", "paused"),
            Self::Failing => lang.t("en erreur", "failing"),
            Self::NotRunningHere => lang.t("arrêté ici", "not running here"),
        }
    }
}

/// Everything the dashboard shows about one flow.
#[derive(Debug, Clone, Serialize)]
pub struct FlowCard {
    pub flow: String,
    pub state: FlowState,
    pub last_successful_poll: Option<DateTime<Utc>>,
    pub sync_pending: bool,
    /// The last error, in plain words, and when it happened.
    pub last_error: Option<(DateTime<Utc>, String)>,
    pub figures: FlowFigures,
    /// A full load (first run, resync) still being delivered.
    pub load: Option<LoadCard>,
    /// How the source is read and why (Change Tracking or snapshot diff).
    pub capture: Option<String>,
}

/// Progress of a running full load, as the card shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LoadCard {
    pub done: i64,
    pub dead: i64,
    pub total: i64,
    /// Percentage finished (done or dead).
    pub percent: f64,
    pub rate_per_s: Option<f64>,
    pub eta_seconds: Option<u64>,
}

/// The cards of every flow: registered ones first, then those only the outbox knows.
///
/// # Errors
/// Database errors.
pub async fn flow_cards(console: &Console) -> Result<Vec<FlowCard>, sqlx::Error> {
    let mut figures = data::flow_figures(console.pool()).await?;
    let mut loads: std::collections::HashMap<String, LoadCard> =
        crate::outbox::loads::latest(console.pool())
            .await
            .map_err(|e| match e {
                crate::outbox::OutboxError::Database(e) => e,
                other => sqlx::Error::Protocol(other.to_string()),
            })?
            .into_iter()
            .filter(crate::outbox::loads::LoadProgress::is_running)
            .map(|l| {
                let card = LoadCard {
                    done: l.done,
                    dead: l.dead,
                    total: l.total,
                    percent: l.fraction() * 100.0,
                    rate_per_s: l.rate_per_s,
                    eta_seconds: l.eta.map(|d| d.as_secs()),
                };
                (l.flow, card)
            })
            .collect();
    let names = console.flow_names(figures.keys().cloned().collect::<Vec<_>>());
    Ok(names
        .into_iter()
        .map(|flow| {
            let f = figures.remove(&flow).unwrap_or_default();
            let control = console.controls().get(&flow);
            let poll = control.as_ref().map(|c| c.status()).unwrap_or_default();
            let delivery_failing = f.last_failure.as_ref().is_some_and(|(at, _)| {
                (Utc::now() - *at).num_seconds() < FAILING_WINDOW_SECS
                    && f.last_delivery_at.is_none_or(|done| done < *at)
            });
            let state = match &control {
                None => FlowState::NotRunningHere,
                Some(c) if c.is_paused() => FlowState::Paused,
                Some(_) if poll.is_failing() || delivery_failing => FlowState::Failing,
                Some(_) => FlowState::Running,
            };
            let last_error = match (&poll.last_error, &f.last_failure) {
                (Some(p), Some(d)) => Some(if p.0 > d.0 { p.clone() } else { d.clone() }),
                (p, d) => p.clone().or_else(|| d.clone()),
            };
            FlowCard {
                state,
                last_successful_poll: poll.last_ok_at,
                sync_pending: control.as_ref().is_some_and(|c| c.sync_pending()),
                last_error,
                figures: f,
                load: loads.remove(&flow),
                capture: poll.capture.clone(),
                flow,
            }
        })
        .collect())
}

/// `GET /`.
pub async fn page(State(console): State<Console>, Extension(ctx): Extension<Ctx>) -> Response {
    match body(&console, ctx.lang).await {
        Ok(body) => {
            let markup = html! {
                div #dashboard data-refresh="/fragments/dashboard" data-every="5000" { (body) }
                p.muted.small { (ctx.lang.t(
                    "Actualisé automatiquement toutes les 5 secondes.",
                    "Refreshed automatically every 5 seconds.")) }
            };
            layout::page(
                &ctx,
                "/",
                ctx.lang.t("Tableau de bord", "Dashboard"),
                markup,
            )
        }
        Err(error) => database_error(&ctx, &error),
    }
}

/// `GET /fragments/dashboard`: the inside of the page, for the live refresh.
pub async fn fragment(State(console): State<Console>, Extension(ctx): Extension<Ctx>) -> Response {
    match body(&console, ctx.lang).await {
        Ok(body) => body.into_response(),
        Err(error) => database_error(&ctx, &error),
    }
}

async fn body(console: &Console, lang: Lang) -> Result<Markup, sqlx::Error> {
    let cards = flow_cards(console).await?;
    let lights = console.health().lights();
    Ok(html! {
        (lights_bar(lang, &lights))
        @if cards.is_empty() {
            p.alert.info { (lang.t(
                "Aucun flux n'est activé : voir la page Configuration.",
                "No flow is enabled: see the Settings page.")) }
        }
        div.cards {
            @for card in &cards { (flow_card(lang, card)) }
        }
    })
}

/// The connection lights.
pub fn lights_bar(lang: Lang, lights: &[ComponentHealth]) -> Markup {
    html! {
        div.lights {
            @for l in lights {
                @let (css, word) = match l.light {
                    Light::Ok => ("ok", lang.t("connecté", "connected")),
                    Light::Failed => ("bad", lang.t("injoignable", "unreachable")),
                    Light::NotConfigured => ("off", lang.t("non configuré", "not configured")),
                    Light::Unknown => ("", lang.t("vérification…", "checking…")),
                };
                div.light title=(l.detail) data-component=(format!("{:?}", l.component)) {
                    span.dot.(css) {}
                    strong { (l.component.label()) }
                    span.muted.small { (word)
                        @if let Some(at) = l.checked_at { " · " (ago(lang, at)) }
                    }
                }
            }
        }
    }
}

fn flow_card(lang: Lang, c: &FlowCard) -> Markup {
    let f = &c.figures;
    html! {
        section.card data-flow=(c.flow) {
            h2 { span { (c.flow) } span.badge.(c.state.css()) { (c.state.label(lang)) } }
            dl.kv {
                dt { (lang.t("En attente", "Backlog")) }
                dd.big data-figure="backlog" { (f.backlog) }
                dt { (lang.t("Plus ancien en attente", "Oldest pending")) }
                dd data-figure="oldest" { (f.oldest_pending_age_seconds.map_or("—".to_owned(), |s| age(lang, s))) }
                dt { (lang.t("Livrés aujourd'hui", "Delivered today")) }
                dd.big data-figure="delivered_today" { (f.delivered_today) }
                dt { (lang.t("En échec (à traiter)", "Dead letters")) }
                dd data-figure="dead" {
                    @if f.dead_letters > 0 { a href="/todo" { span.badge.dead { (f.dead_letters) } } } @else { "0" }
                }
                dt { (lang.t("Conflits aujourd'hui", "Conflicts today")) }
                dd data-figure="conflicts" { (f.conflicts_today) }
                dt { (lang.t("Dernière lecture réussie", "Last successful poll")) }
                dd { (maybe_datetime(c.last_successful_poll))
                     @if c.sync_pending { " · " span.muted { (lang.t("synchronisation demandée", "sync requested")) } } }
                dt { (lang.t("Dernière livraison", "Last delivery")) }
                dd { (maybe_datetime(f.last_delivery_at)) }
                @if let Some(capture) = &c.capture {
                    dt { (lang.t("Lecture de la source", "Source capture")) }
                    dd data-figure="capture" { (capture) }
                }
            }
            @if let Some(load) = &c.load {
                p.alert.info.small data-figure="load" {
                    strong { (lang.t("Chargement complet", "Full load")) " : " }
                    (load.done) " / " (load.total) " (" (format!("{:.1}", load.percent)) " %)"
                    @if let Some(rate) = load.rate_per_s { ", " (format!("{rate:.1}")) "/s" }
                    @if let Some(eta) = load.eta_seconds { ", " (lang.t("fin dans", "ETA")) " " (age(lang, eta as f64)) }
                    @if load.dead > 0 { ", " (load.dead) " " (lang.t("en échec", "dead")) }
                    progress max=(load.total.max(1)) value=(load.done + load.dead) {}
                }
            }
            @if let Some((at, text)) = &c.last_error {
                p.alert.error.small {
                    strong { (lang.t("Dernière erreur", "Last error")) " (" (ago(lang, *at)) ") : " }
                    (cut(text, 200))
                }
            }
        }
    }
}
