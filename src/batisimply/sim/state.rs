//! Simulator state: data, tokens, faults and counters.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

use super::faults::Faults;
use crate::batisimply::api::{WireProject, WireTimeSlot};

/// Locks a mutex, ignoring poisoning (the simulator state stays usable).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Shape of list answers for projects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListShape {
    /// `{"elements": [...]}`.
    #[default]
    Elements,
    /// A bare JSON array.
    BareArray,
}

/// Fixed configuration of a simulator.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Keycloak realm served.
    pub realm: String,
    /// Accepted client id.
    pub client_id: String,
    /// Accepted client secret.
    pub client_secret: String,
    /// Accepted users (name, password).
    pub users: Vec<(String, String)>,
    /// Lifetime of refresh tokens, in seconds.
    pub refresh_lifetime_secs: u64,
    /// Shape of project list answers.
    pub list_shape: ListShape,
    /// Status of a duplicate `projectCode` on create (400 or 409).
    pub duplicate_status: u16,
    /// Query parameter filtering slots by modification instant, if any.
    pub modified_since_param: Option<String>,
    /// Largest time-slot window accepted, in days (larger: 400 "too large").
    pub max_window_days: Option<u32>,
    /// File the data is loaded from and saved to.
    pub state_file: Option<PathBuf>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            realm: "jhipster".to_owned(),
            client_id: "batisync".to_owned(),
            client_secret: "sim-secret".to_owned(),
            users: vec![("sim-user".to_owned(), "sim-password".to_owned())],
            refresh_lifetime_secs: 1800,
            list_shape: ListShape::Elements,
            duplicate_status: 409,
            modified_since_param: None,
            max_window_days: None,
            state_file: None,
        }
    }
}

/// Persistent data of the simulator.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct SimData {
    pub projects: BTreeMap<i64, WireProject>,
    pub slots: BTreeMap<i64, WireTimeSlot>,
    pub next_project_id: i64,
    pub next_slot_id: i64,
}

#[derive(Default)]
pub(crate) struct Tokens {
    pub access: HashMap<String, Instant>,
    pub refresh: HashMap<String, Instant>,
}

/// Whole simulator state, shared by handlers and the handle.
pub(crate) struct SimState {
    pub config: SimConfig,
    faults: Mutex<Faults>,
    limiter: Mutex<Option<DefaultDirectRateLimiter>>,
    rng: Mutex<fastrand::Rng>,
    pub data: Mutex<SimData>,
    pub tokens: Mutex<Tokens>,
    routes: Mutex<BTreeMap<String, u64>>,
    pub served_429: AtomicU64,
    pub served_401: AtomicU64,
    pub tokens_issued: AtomicU64,
    pub connections: AtomicU64,
}

impl SimState {
    pub(crate) fn new(config: SimConfig, faults: Faults, seed: u64, data: SimData) -> Self {
        let state = Self {
            config,
            faults: Mutex::new(Faults::default()),
            limiter: Mutex::new(None),
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            data: Mutex::new(data),
            tokens: Mutex::new(Tokens::default()),
            routes: Mutex::new(BTreeMap::new()),
            served_429: AtomicU64::new(0),
            served_401: AtomicU64::new(0),
            tokens_issued: AtomicU64::new(0),
            connections: AtomicU64::new(0),
        };
        state.set_faults(faults);
        state
    }

    pub(crate) fn faults(&self) -> Faults {
        lock(&self.faults).clone()
    }

    pub(crate) fn set_faults(&self, faults: Faults) {
        let limiter = faults
            .allowed_rate_per_sec
            .and_then(NonZeroU32::new)
            .map(|rate| RateLimiter::direct(Quota::per_second(rate)));
        *lock(&self.limiter) = limiter;
        *lock(&self.faults) = faults;
    }

    pub(crate) fn pop_forced_status(&self) -> Option<u16> {
        let mut faults = lock(&self.faults);
        if faults.fail_next.is_empty() {
            None
        } else {
            Some(faults.fail_next.remove(0))
        }
    }

    pub(crate) fn rate_allows(&self) -> bool {
        lock(&self.limiter)
            .as_ref()
            .is_none_or(|l| l.check().is_ok())
    }

    /// True with probability `share`.
    pub(crate) fn chance(&self, share: f64) -> bool {
        share > 0.0 && lock(&self.rng).f64() < share
    }

    /// A random opaque token.
    pub(crate) fn random_token(&self) -> String {
        let mut rng = lock(&self.rng);
        std::iter::repeat_with(|| rng.alphanumeric())
            .take(40)
            .collect()
    }

    pub(crate) fn count_route(&self, route: &str) {
        *lock(&self.routes).entry(route.to_owned()).or_default() += 1;
    }

    pub(crate) fn count_429(&self) {
        self.served_429.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn route_counts(&self) -> BTreeMap<String, u64> {
        lock(&self.routes).clone()
    }

    /// Issues an access token (and a refresh token) valid from now.
    pub(crate) fn issue_tokens(&self) -> (String, u64, String, u64) {
        let lifetime = self.faults().token_lifetime_secs;
        let refresh_lifetime = self.config.refresh_lifetime_secs;
        let (access, refresh) = (self.random_token(), self.random_token());
        let now = Instant::now();
        let mut tokens = lock(&self.tokens);
        tokens
            .access
            .insert(access.clone(), now + Duration::from_secs(lifetime));
        tokens
            .refresh
            .insert(refresh.clone(), now + Duration::from_secs(refresh_lifetime));
        self.tokens_issued.fetch_add(1, Ordering::Relaxed);
        (access, lifetime, refresh, refresh_lifetime)
    }

    pub(crate) fn access_valid(&self, token: &str) -> bool {
        lock(&self.tokens)
            .access
            .get(token)
            .is_some_and(|exp| Instant::now() < *exp)
    }

    /// Consumes a refresh token; true when it was valid.
    pub(crate) fn take_refresh(&self, token: &str) -> bool {
        lock(&self.tokens)
            .refresh
            .remove(token)
            .is_some_and(|exp| Instant::now() < exp)
    }

    /// Revokes every access and refresh token.
    pub(crate) fn revoke_tokens(&self) {
        let mut tokens = lock(&self.tokens);
        tokens.access.clear();
        tokens.refresh.clear();
    }

    /// Saves the data atomically (temporary file + rename) when a file is configured.
    pub(crate) fn persist(&self) {
        let Some(path) = &self.config.state_file else {
            return;
        };
        let json = match serde_json::to_vec_pretty(&*lock(&self.data)) {
            Ok(json) => json,
            Err(err) => return tracing::warn!(error = %err, "sim state not serialisable"),
        };
        let tmp = path.with_extension("tmp");
        if let Err(err) = std::fs::write(&tmp, json).and_then(|()| std::fs::rename(&tmp, path)) {
            tracing::warn!(error = %err, path = %path.display(), "sim state not saved");
        }
    }
}
