//! Who may use the console and its API.
//!
//! - Pages: a session cookie (`HttpOnly`, `SameSite=Strict`, `Secure` over TLS) issued
//!   after the password is checked against `admin.password_hash` (Argon2id). Sessions
//!   live in memory and end after `admin.session_idle_minutes` without a request.
//! - Forms: every POST carries the session's CSRF token in a `csrf` field, checked here
//!   for all of them at once (the middleware reads the form before the handler).
//! - Sign-in: rate-limited per client address; the form itself has a double-submit
//!   token.
//! - API: `Authorization: Bearer <token>` (its SHA-256 in `admin.api_token_sha256`), or
//!   a session with the CSRF token in `X-CSRF-Token` for anything but GET.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::body::{Body, to_bytes};
use axum::extract::{ConnectInfo, Form, FromRequest, Query, Request, State};
use axum::http::header::{AUTHORIZATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use maud::html;
use secrecy::ExposeSecret;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::Console;
use super::i18n::{Lang, cookie, local_path};
use super::layout;

/// Cookie carrying the session token.
pub const SESSION_COOKIE: &str = "batisync_session";
/// Cookie of the sign-in form's double-submit token.
const LOGIN_COOKIE: &str = "batisync_login";
/// Largest form body the console accepts (settings forms are the biggest).
const MAX_FORM_BYTES: usize = 256 * 1024;
/// Sessions kept at most; the oldest idle ones go first.
const MAX_SESSIONS: usize = 1_000;

/// What a page handler knows about the request: language, CSRF token, flash message.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub lang: Lang,
    /// To put in every form (`csrf` field) and in `X-CSRF-Token` for fetch calls.
    pub csrf: String,
    /// One message left by the previous action (shown once).
    pub flash: Option<String>,
    /// Path and query of this request, for the language switch.
    pub path: String,
    pub(crate) session: String,
}

struct Session {
    csrf: String,
    last_seen: Instant,
    flash: Option<String>,
}

/// Sessions by SHA-256 of their token (a memory dump does not give usable cookies).
pub struct Sessions {
    idle: Duration,
    /// Held only to read or change one entry, never across an await.
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    pub(crate) fn new(idle: Duration) -> Self {
        Self {
            idle,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// A new session; returns its token (for the cookie).
    fn create(&self) -> Result<String, getrandom::Error> {
        let token = random_token()?;
        let csrf = random_token()?;
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let idle = self.idle;
        map.retain(|_, s| s.last_seen.elapsed() < idle);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            digest(&token),
            Session {
                csrf,
                last_seen: Instant::now(),
                flash: None,
            },
        );
        Ok(token)
    }

    /// The session of `token` if it is alive: its key, CSRF token and flash (taken).
    fn touch(&self, token: &str) -> Option<(String, String, Option<String>)> {
        let key = digest(token);
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let alive = map.get(&key)?.last_seen.elapsed() < self.idle;
        if !alive {
            map.remove(&key);
            return None;
        }
        let session = map.get_mut(&key)?;
        session.last_seen = Instant::now();
        Some((key, session.csrf.clone(), session.flash.take()))
    }

    /// Leaves a message for the next page of this session.
    pub(crate) fn flash(&self, ctx: &Ctx, message: impl Into<String>) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(session) = map.get_mut(&ctx.session) {
            session.flash = Some(message.into());
        }
    }

    fn remove(&self, key: &str) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.remove(key);
    }
}

/// Sign-in attempts per client address.
pub struct LoginLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl LoginLimiter {
    pub(crate) fn new(per_minute: u32) -> Self {
        let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
        }
    }

    fn allow(&self, client: IpAddr) -> bool {
        self.limiter.retain_recent();
        self.limiter.check_key(&client).is_ok()
    }
}

/// A random 256-bit token, hex.
///
/// # Errors
/// The operating system has no randomness to give.
pub fn random_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(hex(&bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex SHA-256 of a token.
#[must_use]
pub fn digest(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// Compares without stopping at the first difference.
#[must_use]
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The Argon2id PHC string of a password (for `batisync admin set-password`).
///
/// # Errors
/// No randomness for the salt, or the hasher refused the input.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("no randomness for the salt: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    let hash = argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))?;
    Ok(hash.to_string())
}

/// True when `password` matches the PHC string `hash`.
#[must_use]
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

fn cookie_header(console: &Console, name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
    let secure = if console.settings().admin.tls_enabled() {
        "; Secure"
    } else {
        ""
    };
    let age = max_age.map_or(String::new(), |s| format!("; Max-Age={s}"));
    let text = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict{age}{secure}");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn client_ip(request: &Request) -> IpAddr {
    request
        .extensions()
        .get::<ConnectInfo<crate::tls::ClientAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.0.ip())
}

/// Pages: a live session, and the CSRF token on every POST.
pub async fn require_session(
    State(console): State<Console>,
    request: Request,
    next: Next,
) -> Response {
    let lang = Lang::of(request.headers(), console.settings().admin.language);
    let path = request
        .uri()
        .path_and_query()
        .map_or("/".to_owned(), |p| p.as_str().to_owned());
    let session =
        cookie(request.headers(), SESSION_COOKIE).and_then(|t| console.sessions().touch(t));
    let Some((key, csrf, flash)) = session else {
        if request.method() == Method::GET {
            let next_path =
                url::form_urlencoded::byte_serialize(path.as_bytes()).collect::<String>();
            return Redirect::to(&format!("/login?next={next_path}")).into_response();
        }
        return layout::error_page(
            lang,
            StatusCode::UNAUTHORIZED,
            lang.t(
                "Session expirée : reconnectez-vous.",
                "Session expired: sign in again.",
            ),
        );
    };
    let mut request = request;
    if request.method() != Method::GET && request.method() != Method::HEAD {
        match check_form_csrf(request, &csrf).await {
            Ok(checked) => request = checked,
            Err(status) => {
                tracing::warn!("console form refused: missing or wrong CSRF token");
                return layout::error_page(
                    lang,
                    status,
                    lang.t(
                        "Formulaire refusé (jeton de sécurité absent ou périmé) : rechargez la page et recommencez.",
                        "Form refused (security token missing or stale): reload the page and try again.",
                    ),
                );
            }
        }
    }
    request.extensions_mut().insert(Ctx {
        lang,
        csrf,
        flash,
        path,
        session: key,
    });
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    response
}

/// Reads the form, checks its `csrf` field, and rebuilds the request.
async fn check_form_csrf(request: Request, expected: &str) -> Result<Request, StatusCode> {
    let (parts, body) = request.into_parts();
    let bytes = to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| StatusCode::PAYLOAD_TOO_LARGE)?;
    let given = url::form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.into_owned());
    match given {
        Some(token) if constant_time_eq(&token, expected) => {
            Ok(Request::from_parts(parts, Body::from(bytes)))
        }
        _ => Err(StatusCode::FORBIDDEN),
    }
}

/// API: a bearer token, or a session (with `X-CSRF-Token` for changes).
pub async fn require_api_caller(
    State(console): State<Console>,
    mut request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    if let Some(bearer) = bearer_token(headers) {
        let allowed = console
            .settings()
            .admin
            .api_token_sha256
            .as_deref()
            .is_some_and(|expected| {
                constant_time_eq(&digest(bearer), &expected.to_ascii_lowercase())
            });
        if !allowed {
            tracing::warn!("API call refused: unknown bearer token");
            return api_error(StatusCode::UNAUTHORIZED, "invalid bearer token");
        }
        return next.run(request).await;
    }
    let lang = Lang::of(headers, console.settings().admin.language);
    let Some((key, csrf, _)) =
        cookie(headers, SESSION_COOKIE).and_then(|t| console.sessions().touch(t))
    else {
        return api_error(
            StatusCode::UNAUTHORIZED,
            "sign in or send Authorization: Bearer <token>",
        );
    };
    if request.method() != Method::GET {
        let given = headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !constant_time_eq(given, &csrf) {
            return api_error(StatusCode::FORBIDDEN, "missing or wrong X-CSRF-Token");
        }
    }
    request.extensions_mut().insert(Ctx {
        lang,
        csrf,
        flash: None,
        path: String::new(),
        session: key,
    });
    next.run(request).await
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn api_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    next: String,
}

/// `GET /login`.
pub async fn login_page(
    State(console): State<Console>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    let lang = Lang::of(&headers, console.settings().admin.language);
    let existing = cookie(&headers, LOGIN_COOKIE);
    render_login(&console, lang, &q.next, existing, None, StatusCode::OK)
}

/// The sign-in page. The form token is reused while the browser still has it, so a
/// second load of the page (a prefetch, another tab) does not invalidate the first.
fn render_login(
    console: &Console,
    lang: Lang,
    next: &str,
    existing_token: Option<&str>,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let reusable = existing_token
        .filter(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned);
    let Some(form_token) = reusable.or_else(|| random_token().ok()) else {
        return layout::error_page(lang, StatusCode::INTERNAL_SERVER_ERROR, "no randomness");
    };
    let configured = console.settings().admin.password_hash.is_some();
    let body = html! {
        main.login {
            h1 { "batisync" }
            p.muted { (lang.t("Console de suivi de la synchronisation Batigest ⇄ BatiSimply",
                              "Batigest ⇄ BatiSimply synchronisation console")) }
            @if !configured {
                p.alert.error { (lang.t(
                    "Aucun mot de passe n'est défini : sur le serveur, lancez « batisync admin set-password ».",
                    "No password is set: on the server, run `batisync admin set-password`.")) }
            }
            @if let Some(error) = error { p.alert.error role="alert" { (error) } }
            form method="post" action="/login" {
                input type="hidden" name="login_token" value=(form_token);
                input type="hidden" name="next" value=(next);
                label for="password" { (lang.t("Mot de passe", "Password")) }
                input #password type="password" name="password" autocomplete="current-password" required autofocus;
                button type="submit" { (lang.t("Se connecter", "Sign in")) }
            }
            p { a href={"/lang?to=" (lang.other().code()) "&back=/login"} { (lang.t("English", "Français")) } }
        }
    };
    let mut response = (
        status,
        layout::bare(lang, lang.t("Connexion", "Sign in"), body),
    )
        .into_response();
    response.headers_mut().insert(
        SET_COOKIE,
        cookie_header(console, LOGIN_COOKIE, &form_token, Some(600)),
    );
    response
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    login_token: String,
    #[serde(default)]
    next: String,
    password: String,
}

/// `POST /login`: rate limit, form token, password; then a fresh session.
pub async fn login(State(console): State<Console>, request: Request) -> Response {
    let client = client_ip(&request);
    let lang = Lang::of(request.headers(), console.settings().admin.language);
    let form_cookie = cookie(request.headers(), LOGIN_COOKIE).map(str::to_owned);
    if !console.login_limiter().allow(client) {
        tracing::warn!(%client, "console sign-in refused: too many attempts");
        let mut response = layout::error_page(
            lang,
            StatusCode::TOO_MANY_REQUESTS,
            lang.t(
                "Trop d'essais de connexion : patientez une minute.",
                "Too many sign-in attempts: wait a minute.",
            ),
        );
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from_static("60"));
        return response;
    }
    let Ok(Form(form)) = Form::<LoginForm>::from_request(request, &console).await else {
        return layout::error_page(lang, StatusCode::BAD_REQUEST, "malformed form");
    };
    let token_ok = form_cookie
        .as_deref()
        .is_some_and(|c| !c.is_empty() && constant_time_eq(c, &form.login_token));
    if !token_ok {
        return render_login(
            &console,
            lang,
            &form.next,
            None,
            Some(lang.t("Formulaire périmé : recommencez.", "Stale form: try again.")),
            StatusCode::FORBIDDEN,
        );
    }
    let Some(hash) = console.settings().admin.password_hash.clone() else {
        return render_login(
            &console,
            lang,
            &form.next,
            form_cookie.as_deref(),
            None,
            StatusCode::UNAUTHORIZED,
        );
    };
    let password = form.password;
    let matches =
        tokio::task::spawn_blocking(move || verify_password(hash.expose_secret(), &password))
            .await
            .unwrap_or(false);
    if !matches {
        tracing::warn!(%client, "console sign-in failed: wrong password");
        return render_login(
            &console,
            lang,
            &form.next,
            form_cookie.as_deref(),
            Some(lang.t("Mot de passe incorrect.", "Wrong password.")),
            StatusCode::UNAUTHORIZED,
        );
    }
    let Ok(token) = console.sessions().create() else {
        return layout::error_page(lang, StatusCode::INTERNAL_SERVER_ERROR, "no randomness");
    };
    tracing::info!(%client, "console sign-in");
    let target = local_path(&form.next).unwrap_or("/");
    let mut response = Redirect::to(target).into_response();
    let headers = response.headers_mut();
    headers.append(
        SET_COOKIE,
        cookie_header(&console, SESSION_COOKIE, &token, None),
    );
    headers.append(
        SET_COOKIE,
        cookie_header(&console, LOGIN_COOKIE, "", Some(0)),
    );
    response
}

/// `POST /logout`.
pub async fn logout(
    State(console): State<Console>,
    axum::Extension(ctx): axum::Extension<Ctx>,
) -> Response {
    console.sessions().remove(&ctx.session);
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        SET_COOKIE,
        cookie_header(&console, SESSION_COOKIE, "", Some(0)),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_against_its_own_hash_only() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&hash, "correct horse"));
        assert!(!verify_password(&hash, "wrong horse"));
        assert!(!verify_password("not a hash", "correct horse"));
    }

    #[test]
    fn sessions_expire_when_idle() {
        let sessions = Sessions::new(Duration::from_millis(30));
        let token = sessions.create().unwrap();
        assert!(sessions.touch(&token).is_some());
        assert!(sessions.touch("not-a-token").is_none());
        std::thread::sleep(Duration::from_millis(40));
        assert!(sessions.touch(&token).is_none());
    }

    #[test]
    fn the_login_limiter_refuses_after_the_quota() {
        let limiter = LoginLimiter::new(2);
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert!(limiter.allow(ip));
        assert!(limiter.allow(ip));
        assert!(!limiter.allow(ip));
        assert!(limiter.allow(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))));
    }
}
