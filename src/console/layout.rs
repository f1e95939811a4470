//! The page skeleton (navigation, language switch, flash message), the stylesheet and
//! the small script, security headers, and formatting helpers.
//!
//! Templates are `maud`: every value spliced into HTML is escaped unless wrapped in
//! `PreEscaped`, which this console never does with data.

use axum::extract::Request;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use super::auth::Ctx;
use super::i18n::Lang;

/// The pages of the navigation bar: path, French and English titles.
const NAV: [(&str, &str, &str); 7] = [
    ("/", "Tableau de bord", "Dashboard"),
    ("/activity", "Activité", "Activity"),
    ("/todo", "À traiter", "To fix"),
    ("/employees", "Salariés", "Employees"),
    ("/actions", "Actions", "Actions"),
    ("/settings", "Configuration", "Settings"),
    ("/journal", "Journal", "Log"),
];

/// A page of the console, with the navigation; `active` is the nav path to highlight.
pub fn page(ctx: &Ctx, active: &str, title: &str, body: Markup) -> Response {
    let lang = ctx.lang;
    let back = url::form_urlencoded::byte_serialize(ctx.path.as_bytes()).collect::<String>();
    let markup = html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            (head(title))
            body {
                header.top {
                    a.brand href="/" { "batisync" }
                    nav {
                        @for (path, fr, en) in NAV {
                            a.active[path == active] href=(path) { (lang.t(fr, en)) }
                        }
                    }
                    div.right {
                        a.lang href={"/lang?to=" (lang.other().code()) "&back=" (back)} {
                            (lang.t("English", "Français"))
                        }
                        form.inline method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(ctx.csrf);
                            button.link type="submit" { (lang.t("Se déconnecter", "Sign out")) }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    @if let Some(flash) = &ctx.flash {
                        p.alert.info role="status" { (flash) }
                    }
                    (body)
                }
            }
        }
    };
    markup.into_response()
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · batisync" }
            link rel="stylesheet" href="/assets/console.css";
            script src="/assets/console.js" defer {}
        }
    }
}

/// A page without navigation (sign-in, errors before sign-in).
pub fn bare(lang: Lang, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            (head(title))
            body { (body) }
        }
    }
}

/// A short error page with a way back.
pub fn error_page(lang: Lang, status: StatusCode, message: &str) -> Response {
    let body = html! {
        main.login {
            h1 { (status.as_u16()) }
            p.alert.error role="alert" { (message) }
            p { a href="/" { (lang.t("Retour au tableau de bord", "Back to the dashboard")) } }
        }
    };
    (status, bare(lang, lang.t("Erreur", "Error"), body)).into_response()
}

/// Headers on every console response: no framing, no sniffing, scripts from here only.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    response
}

/// `GET /assets/console.css`.
pub async fn stylesheet() -> Response {
    (
        [(CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("assets/console.css"),
    )
        .into_response()
}

/// `GET /assets/console.js`.
pub async fn script() -> Response {
    (
        [(CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("assets/console.js"),
    )
        .into_response()
}

/// A date and time in Paris local time, e.g. `27/11/2026 14:03:05`.
#[must_use]
pub fn datetime(at: DateTime<Utc>) -> String {
    // The console shows French local time; the offset is taken from the host's zone
    // only through chrono's Local, which matches the office on a Windows server.
    at.with_timezone(&chrono::Local)
        .format("%d/%m/%Y %H:%M:%S")
        .to_string()
}

/// `datetime` or a dash.
#[must_use]
pub fn maybe_datetime(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(|| "—".to_owned(), datetime)
}

/// A duration for people: `42 s`, `5 min`, `3 h`, `2 j` / `2 d`.
#[must_use]
pub fn age(lang: Lang, seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        s if s < 120 => format!("{s} s"),
        s if s < 7_200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3_600),
        s => format!("{} {}", s / 86_400, lang.t("j", "d")),
    }
}

/// How long ago `at` was.
#[must_use]
pub fn ago(lang: Lang, at: DateTime<Utc>) -> String {
    let seconds = (Utc::now() - at).num_milliseconds() as f64 / 1000.0;
    format!("{} {}", lang.t("il y a", ""), age(lang, seconds))
        .trim()
        .to_owned()
        + lang.t("", " ago")
}

/// A hidden CSRF field for a form.
#[must_use]
pub fn csrf_field(ctx: &Ctx) -> Markup {
    html! { input type="hidden" name="csrf" value=(ctx.csrf); }
}

/// The French / English label of an outbox status.
#[must_use]
pub fn status_label(lang: Lang, status: &str) -> String {
    let (fr, en) = match status {
        "waiting" => ("en file", "waiting"),
        "pending" => ("à envoyer", "pending"),
        "in_flight" => ("en cours", "in flight"),
        "done" => ("livré", "delivered"),
        "dead" => ("en échec", "dead letter"),
        "superseded" => ("remplacé", "superseded"),
        other => (other, other),
    };
    lang.t(fr, en).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_naturally_in_both_languages() {
        assert_eq!(age(Lang::Fr, 42.0), "42 s");
        assert_eq!(age(Lang::Fr, 600.0), "10 min");
        assert_eq!(age(Lang::En, 3.0 * 86_400.0), "3 d");
        assert_eq!(age(Lang::Fr, 3.0 * 86_400.0), "3 j");
        assert_eq!(
            ago(Lang::En, Utc::now() - chrono::Duration::seconds(90)),
            "90 s ago"
        );
        assert_eq!(
            ago(Lang::Fr, Utc::now() - chrono::Duration::seconds(90)),
            "il y a 90 s"
        );
    }

    #[test]
    fn spliced_text_is_escaped() {
        let evil = "<script>alert(1)</script>";
        let markup = html! { p { (evil) } }.into_string();
        assert!(!markup.contains("<script>"), "{markup}");
    }
}
