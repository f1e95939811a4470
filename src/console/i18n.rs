//! French by default, English on request: the language comes from a cookie set by
//! `/lang?to=en`, else from `admin.language`. Texts sit in the code as (fr, en) pairs.

use axum::extract::{Query, State};
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::Console;
use crate::settings::ConsoleLanguage;

/// Name of the language cookie (a preference, not a secret).
pub const LANG_COOKIE: &str = "batisync_lang";

/// The language of one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Fr,
    En,
}

impl Lang {
    /// The text in this language.
    #[must_use]
    pub fn t<'a>(self, fr: &'a str, en: &'a str) -> &'a str {
        match self {
            Self::Fr => fr,
            Self::En => en,
        }
    }

    #[must_use]
    pub fn code(self) -> &'static str {
        match self {
            Self::Fr => "fr",
            Self::En => "en",
        }
    }

    #[must_use]
    pub fn other(self) -> Self {
        match self {
            Self::Fr => Self::En,
            Self::En => Self::Fr,
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "fr" => Some(Self::Fr),
            "en" => Some(Self::En),
            _ => None,
        }
    }

    /// The language of a request: cookie, else the configured default.
    #[must_use]
    pub fn of(headers: &HeaderMap, default: ConsoleLanguage) -> Self {
        cookie(headers, LANG_COOKIE)
            .and_then(Self::parse)
            .unwrap_or(match default {
                ConsoleLanguage::Fr => Self::Fr,
                ConsoleLanguage::En => Self::En,
            })
    }
}

/// The value of cookie `name`, if the request carries it.
#[must_use]
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[derive(Debug, Deserialize)]
pub struct Switch {
    to: String,
    #[serde(default)]
    back: String,
}

/// `GET /lang?to=en&back=/activity`: stores the choice and goes back (local paths only).
pub async fn switch(State(console): State<Console>, Query(q): Query<Switch>) -> Response {
    let lang = Lang::parse(&q.to).unwrap_or(Lang::Fr);
    let back = local_path(&q.back).unwrap_or("/");
    let secure = if console.settings().admin.tls_enabled() {
        "; Secure"
    } else {
        ""
    };
    let value = format!(
        "{LANG_COOKIE}={}; Path=/; Max-Age=31536000; SameSite=Strict; HttpOnly{secure}",
        lang.code()
    );
    let mut response = Redirect::to(back).into_response();
    if let Ok(value) = HeaderValue::from_str(&value) {
        response.headers_mut().insert(SET_COOKIE, value);
    }
    response
}

/// `path` if it is a path on this site (no scheme, no `//host`), for redirects.
#[must_use]
pub fn local_path(path: &str) -> Option<&str> {
    let ok = path.starts_with('/')
        && !path.starts_with("//")
        && !path.contains('\\')
        && !path.contains("://")
        && path.chars().all(|c| !c.is_control());
    ok.then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed() {
        assert_eq!(local_path("/activity?flow=x"), Some("/activity?flow=x"));
        assert_eq!(local_path("//evil.example"), None);
        assert_eq!(local_path("https://evil.example"), None);
        assert_eq!(local_path("/\\evil.example"), None);
        assert_eq!(local_path(""), None);
    }

    #[test]
    fn the_cookie_wins_over_the_default() {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_static("a=b; batisync_lang=en"));
        assert_eq!(Lang::of(&headers, ConsoleLanguage::Fr), Lang::En);
        assert_eq!(Lang::of(&HeaderMap::new(), ConsoleLanguage::Fr), Lang::Fr);
    }
}
