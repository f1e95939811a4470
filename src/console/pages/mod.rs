//! One module per page of the console. Handlers take the request context
//! ([`Ctx`](super::auth::Ctx)) put there by the session middleware.

pub mod actions;
pub mod activity;
pub mod dashboard;
pub mod employees;
pub mod journal;
pub mod settings;
pub mod todo;

use axum::http::StatusCode;
use axum::response::Response;

use super::auth::Ctx;
use super::layout;

/// The page shown when the database cannot answer: what happened and what to do.
pub(crate) fn database_error(ctx: &Ctx, error: &sqlx::Error) -> Response {
    tracing::warn!(%error, "console page: database query failed");
    layout::error_page(
        ctx.lang,
        StatusCode::SERVICE_UNAVAILABLE,
        ctx.lang.t(
            "PostgreSQL ne répond pas : vérifiez le voyant PostgreSQL et réessayez dans un instant.",
            "PostgreSQL does not answer: check the PostgreSQL light and try again in a moment.",
        ),
    )
}

/// The first `max` characters of a text, with an ellipsis when cut.
pub(crate) fn cut(text: &str, max: usize) -> String {
    let mut out: String = text.chars().take(max).collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out
}
