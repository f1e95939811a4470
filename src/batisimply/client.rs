//! The BatiSimply client: authenticated calls and project operations.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use reqwest::Method;
use secrecy::ExposeSecret;
use tokio::sync::RwLock;

use super::api::{self, WireProject};
use super::auth::{Auth, Bearer};
use super::error::{BatisimplyError, RawResponse};
use super::model::{Listing, NewProject, Project, ProjectId};
use super::parse::{parse_list, parse_one};
use super::settings::BatisimplySettings;
use super::transport::{ClientStats, Counters, Transport};

/// Client of the BatiSimply API. Cheap to clone; clones share the token,
/// the rate limit, the connection pool and the counters.
#[derive(Clone)]
pub struct BatisimplyClient {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) settings: BatisimplySettings,
    api_base: String,
    pub(crate) transport: Transport,
    pub(crate) auth: Auth,
    projects_by_code: RwLock<HashMap<String, Project>>,
    /// When the last full refresh of `projects_by_code` started. The mutex also makes
    /// concurrent cache misses share one refresh instead of each listing every page.
    cache_refreshed_at: tokio::sync::Mutex<Option<std::time::Instant>>,
}

/// One API call: method, path, query and optional JSON body.
pub(crate) struct Call<'a> {
    pub method: Method,
    pub path: String,
    pub query: Vec<(&'a str, String)>,
    pub body: Option<&'a WireProject>,
}

impl Call<'_> {
    pub(crate) fn get(path: String) -> Self {
        Self {
            method: Method::GET,
            path,
            query: Vec::new(),
            body: None,
        }
    }
}

impl std::fmt::Debug for BatisimplyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatisimplyClient")
            .field("api_base_url", &self.inner.api_base)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl BatisimplyClient {
    /// Creates a client; no request is sent until the first call.
    ///
    /// # Errors
    /// [`BatisimplyError::Config`] when a URL is invalid or the HTTP client cannot be built.
    pub fn new(settings: BatisimplySettings) -> Result<Self, BatisimplyError> {
        for (name, value) in [
            ("api_base_url", &settings.api_base_url),
            ("sso_base_url", &settings.sso_base_url),
        ] {
            url::Url::parse(value).map_err(|e| {
                BatisimplyError::config(format!("{name} `{value}` is not a URL: {e}"))
            })?;
        }
        let inner = Inner {
            api_base: settings.api_base_url.trim_end_matches('/').to_owned(),
            transport: Transport::new(&settings)?,
            auth: Auth::new(&settings),
            projects_by_code: RwLock::new(HashMap::new()),
            cache_refreshed_at: tokio::sync::Mutex::new(None),
            settings,
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Counters since the client was created.
    #[must_use]
    pub fn stats(&self) -> ClientStats {
        self.inner.transport.counters.snapshot()
    }

    /// Obtains a token now (or reuses the cached one).
    ///
    /// # Errors
    /// [`BatisimplyError::Auth`] when credentials are rejected; transport errors otherwise.
    pub async fn authenticate(&self) -> Result<(), BatisimplyError> {
        self.inner
            .auth
            .bearer(&self.inner.transport)
            .await
            .map(|_| ())
    }

    /// Sends an authenticated call; a 401 triggers one renewal and one retry.
    #[tracing::instrument(skip_all, fields(method = %call.method, path = %call.path), err(level = "debug"))]
    pub(crate) async fn call(&self, call: &Call<'_>) -> Result<RawResponse, BatisimplyError> {
        let inner = &self.inner;
        let bearer = inner.auth.bearer(&inner.transport).await?;
        match self.send_as(&bearer, call).await {
            Err(BatisimplyError::Auth {
                status: Some(401), ..
            }) => {
                tracing::debug!("token rejected by the API, renewing once");
                Counters::bump(&inner.transport.counters.renewals_after_401);
                let renewed = inner
                    .auth
                    .renew_after_rejection(&inner.transport, bearer.generation)
                    .await?;
                self.send_as(&renewed, call).await
            }
            other => other,
        }
    }

    async fn send_as(
        &self,
        bearer: &Bearer,
        call: &Call<'_>,
    ) -> Result<RawResponse, BatisimplyError> {
        let url = format!("{}{}", self.inner.api_base, call.path);
        let http = self.inner.transport.http();
        self.inner
            .transport
            .send(
                || {
                    let mut request = http
                        .request(call.method.clone(), &url)
                        .bearer_auth(bearer.token.expose_secret())
                        .query(&call.query);
                    if let Some(body) = call.body {
                        request = request.json(body);
                    }
                    request
                },
                call.method != Method::POST,
            )
            .await
    }

    /// Lists every project, following pagination; each project appears once.
    ///
    /// # Errors
    /// Any [`BatisimplyError`] of the underlying calls; unreadable records are
    /// reported in [`Listing::rejected`] instead.
    #[tracing::instrument(skip_all, err)]
    pub async fn list_projects(&self) -> Result<Listing<Project>, BatisimplyError> {
        let size = self.inner.settings.page_size.clamp(1, api::MAX_PAGE_SIZE);
        let mut all = Listing::default();
        let mut seen = HashSet::new();
        for page in 0.. {
            let (listing, has_next) = self.project_page(page, size).await?;
            all.rejected.extend(listing.rejected);
            all.records
                .extend(listing.records.into_iter().filter(|p| seen.insert(p.id)));
            if !has_next {
                break;
            }
        }
        self.refill_cache(&all.records).await;
        Ok(all)
    }

    /// Reads one page of projects; the flag tells whether a next page exists.
    pub(crate) async fn project_page(
        &self,
        page: u32,
        size: u32,
    ) -> Result<(Listing<Project>, bool), BatisimplyError> {
        let mut call = Call::get(api::PROJECTS_PATH.to_owned());
        call.query = vec![
            (api::PARAM_PAGE, page.to_string()),
            (api::PARAM_SIZE, size.to_string()),
        ];
        let raw = self.call(&call).await?;
        let listing: Listing<Project> = parse_list(&raw.body)?;
        let count = listing.records.len() + listing.rejected.len();
        let has_next = page_has_next(&raw, page, size, count);
        Ok((listing, has_next))
    }

    /// Reads one project.
    ///
    /// # Errors
    /// [`BatisimplyError::Permanent`] with status 404 when it does not exist.
    #[tracing::instrument(skip_all, fields(id = id), err)]
    pub async fn get_project(&self, id: ProjectId) -> Result<Project, BatisimplyError> {
        let raw = self.call(&Call::get(api::project_path(id))).await?;
        parse_one(&raw.body)
    }

    /// Finds a project by code through a cache. On a miss the cache is refreshed from
    /// the full list, unless a refresh started less than `project_cache_max_age_secs`
    /// ago: then the miss is trusted (projects this client creates or updates enter the
    /// cache at once), so a load of new codes does not re-list every page per code.
    ///
    /// # Errors
    /// Errors of [`Self::list_projects`] when the cache must be refreshed.
    #[tracing::instrument(skip_all, fields(code = code), err)]
    pub async fn find_project_by_code(
        &self,
        code: &str,
    ) -> Result<Option<Project>, BatisimplyError> {
        let max_age =
            std::time::Duration::from_secs(self.inner.settings.project_cache_max_age_secs);
        self.find_in_cache_or_list(code, |refreshed| refreshed.elapsed() < max_age)
            .await
    }

    /// Like [`Self::find_project_by_code`], but a miss always re-reads the list, unless
    /// a refresh started after this call did (for "duplicate code" answers).
    ///
    /// # Errors
    /// Errors of [`Self::list_projects`].
    #[tracing::instrument(skip_all, fields(code = code), err)]
    pub async fn find_project_by_code_fresh(
        &self,
        code: &str,
    ) -> Result<Option<Project>, BatisimplyError> {
        let asked = std::time::Instant::now();
        self.find_in_cache_or_list(code, |refreshed| refreshed >= asked)
            .await
    }

    async fn find_in_cache_or_list(
        &self,
        code: &str,
        recent_enough: impl Fn(std::time::Instant) -> bool,
    ) -> Result<Option<Project>, BatisimplyError> {
        if let Some(found) = self.cached(code).await {
            return Ok(Some(found));
        }
        let mut refreshed_at = self.inner.cache_refreshed_at.lock().await;
        if let Some(found) = self.cached(code).await {
            return Ok(Some(found));
        }
        if refreshed_at.is_some_and(&recent_enough) {
            return Ok(None);
        }
        let started = std::time::Instant::now();
        let listing = self.list_projects().await?;
        *refreshed_at = Some(started);
        Ok(listing.records.into_iter().find(|p| p.data.code == code))
    }

    async fn cached(&self, code: &str) -> Option<Project> {
        self.inner.projects_by_code.read().await.get(code).cloned()
    }

    /// Creates a project and returns it as stored.
    ///
    /// # Errors
    /// [`BatisimplyError::Permanent`] with the API message on validation or duplicates.
    #[tracing::instrument(skip_all, fields(code = %project.code), err)]
    pub async fn create_project(&self, project: &NewProject) -> Result<Project, BatisimplyError> {
        let body = project.to_wire(None);
        self.write_project(Method::POST, &body).await
    }

    /// Replaces a project's data (`id` sent in the body).
    ///
    /// # Errors
    /// [`BatisimplyError::Permanent`] (404 unknown id, 422 validation…).
    #[tracing::instrument(skip_all, fields(id = id, code = %project.code), err)]
    pub async fn update_project(
        &self,
        id: ProjectId,
        project: &NewProject,
    ) -> Result<Project, BatisimplyError> {
        let body = project.to_wire(Some(id));
        self.write_project(Method::PUT, &body).await
    }

    async fn write_project(
        &self,
        method: Method,
        body: &WireProject,
    ) -> Result<Project, BatisimplyError> {
        let call = Call {
            method,
            path: api::PROJECTS_PATH.to_owned(),
            query: Vec::new(),
            body: Some(body),
        };
        let raw = self.call(&call).await?;
        let project: Project = parse_one(&raw.body)?;
        let mut cache = self.inner.projects_by_code.write().await;
        cache.retain(|_, cached| cached.id != project.id);
        cache.insert(project.data.code.clone(), project.clone());
        Ok(project)
    }

    async fn refill_cache(&self, projects: &[Project]) {
        let mut cache = self.inner.projects_by_code.write().await;
        cache.clear();
        cache.extend(projects.iter().map(|p| (p.data.code.clone(), p.clone())));
    }
}

/// Next page exists per `Link: rel="next"`, else `X-Total-Count`, else a full page.
fn page_has_next(raw: &RawResponse, page: u32, size: u32, count: usize) -> bool {
    if let Some(link) = raw
        .headers
        .get(reqwest::header::LINK)
        .and_then(|v| v.to_str().ok())
    {
        return link.split(',').any(|part| part.contains("rel=\"next\""));
    }
    let fetched = u64::from(page) * u64::from(size) + count as u64;
    let total = raw
        .headers
        .get(api::HEADER_TOTAL_COUNT)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match total {
        Some(total) => fetched < total && count > 0,
        None => count as u64 >= u64::from(size),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(headers: &[(&'static str, &str)]) -> RawResponse {
        let mut map = reqwest::header::HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, value.parse().expect("header value"));
        }
        RawResponse {
            status: reqwest::StatusCode::OK,
            headers: map,
            body: Vec::new(),
        }
    }

    #[test]
    fn next_page_follows_the_link_header_first() {
        let with_next = raw(&[(
            "link",
            "</api/project?page=1&size=20>; rel=\"next\",</api/project?page=4&size=20>; rel=\"last\"",
        )]);
        let last = raw(&[("link", "</api/project?page=0&size=20>; rel=\"first\"")]);
        assert!(page_has_next(&with_next, 0, 20, 20));
        assert!(!page_has_next(&last, 4, 20, 20));
    }

    #[test]
    fn next_page_uses_total_count_then_page_fullness() {
        assert!(page_has_next(&raw(&[("x-total-count", "41")]), 1, 20, 20));
        assert!(!page_has_next(&raw(&[("x-total-count", "40")]), 1, 20, 20));
        assert!(page_has_next(&raw(&[]), 0, 20, 20));
        assert!(!page_has_next(&raw(&[]), 0, 20, 19));
    }
}
