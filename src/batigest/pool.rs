//! Connections to SQL Server: configuration, a small pool with health checks, and
//! retries of work whose connection was lost (never fatal).
//!
//! Why our own pool rather than `bb8`: the needs are tiny (a handful of connections, one
//! poller and a few ledger writers), the health check is one statement, and the rule
//! "a connection that saw an error is never reused" is easiest to see in 100 lines
//! without another dependency and its tiberius adapter.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use secrecy::ExposeSecret;
use tiberius::{AuthMethod, Config, EncryptionLevel, SqlBrowser};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

use super::error::{BatigestError, ErrorContext, Phase};
use super::settings::{BatigestSettings, Encryption};
use super::tsql;

/// An open connection.
pub type Client = tiberius::Client<Compat<TcpStream>>;

/// The tiberius configuration of the settings (the password goes only here).
#[must_use]
pub fn tiberius_config(s: &BatigestSettings) -> Config {
    let mut config = Config::new();
    config.host(&s.host);
    if let Some(port) = s.port {
        config.port(port);
    }
    if let Some(instance) = &s.instance {
        config.instance_name(instance);
    }
    config.database(&s.database);
    config.application_name(&s.application_name);
    config.authentication(auth_method(s));
    config.encryption(match s.encryption {
        Encryption::Strict => EncryptionLevel::Strict,
        Encryption::Required => EncryptionLevel::Required,
        Encryption::Off => EncryptionLevel::Off,
    });
    if let Some(ca) = &s.trust_ca_path {
        config.trust_cert_ca(ca.display());
    } else if s.trust_server_certificate {
        config.trust_cert();
    }
    config.handshake_timeout(Some(Duration::from_millis(s.connect_timeout_ms)));
    config.command_timeout(Some(Duration::from_millis(s.query_timeout_ms)));
    config
}

/// The login method. Windows methods exist only in Windows builds (tiberius' `winauth`,
/// SSPI); elsewhere [`BatigestSettings::validate`] refuses them, and SQL Server
/// authentication is used.
fn auth_method(s: &BatigestSettings) -> AuthMethod {
    match s.authentication {
        #[cfg(windows)]
        super::settings::Authentication::Windows => {
            AuthMethod::windows(&s.user, s.password.expose_secret())
        }
        #[cfg(windows)]
        super::settings::Authentication::Integrated => AuthMethod::Integrated,
        _ => AuthMethod::sql_server(&s.user, s.password.expose_secret()),
    }
}

/// `host\instance:port` for messages.
#[must_use]
pub fn server_label(s: &BatigestSettings) -> String {
    let mut label = s.host.clone();
    if let Some(instance) = &s.instance {
        label = format!("{label}\\{instance}");
    }
    if let Some(port) = s.port {
        label = format!("{label}:{port}");
    }
    label
}

/// What error messages may name.
#[must_use]
pub fn error_context(s: &BatigestSettings) -> ErrorContext {
    ErrorContext {
        server: server_label(s),
        user: s.user.clone(),
        database: s.database.clone(),
        timeout_ms: s.query_timeout_ms,
    }
}

/// Opens one connection (TCP, TLS, login), bounded by `connect_timeout_ms`.
///
/// # Errors
/// Unreachable, TLS, login (18456), database (4060) or timeout, classified.
pub async fn connect(s: &BatigestSettings) -> Result<Client, BatigestError> {
    let config = tiberius_config(s);
    let mut ctx = error_context(s);
    ctx.timeout_ms = s.connect_timeout_ms;
    let classify = |e| BatigestError::from_tiberius(e, Phase::Connect, &ctx);
    let attempt = async {
        let tcp = if s.instance.is_some() && s.port.is_none() {
            TcpStream::connect_named(&config).await.map_err(classify)?
        } else {
            TcpStream::connect(config.get_addr())
                .await
                .map_err(|e| classify(e.into()))?
        };
        tcp.set_nodelay(true).map_err(|e| classify(e.into()))?;
        tiberius::Client::connect(config, tcp.compat_write())
            .await
            .map_err(|e| match e {
                // TCP is up but the TLS-first handshake of TDS 8 failed: a server that
                // does not speak strict encryption (before SQL Server 2022, or not
                // configured for it) just closes or answers a prelogin.
                tiberius::error::Error::Io { .. }
                | tiberius::error::Error::Tls(_)
                | tiberius::error::Error::Protocol(_)
                    if s.encryption == Encryption::Strict =>
                {
                    BatigestError::Tls {
                        server: server_label(s),
                        detail: format!("TDS 8 strict: {e}"),
                    }
                }
                other => classify(other),
            })
    };
    tokio::time::timeout(Duration::from_millis(s.connect_timeout_ms), attempt)
        .await
        .map_err(|_| BatigestError::Timeout {
            phase: Phase::Connect,
            timeout_ms: s.connect_timeout_ms,
        })?
}

/// A few connections, reused after a `SELECT 1`.
pub struct Pool {
    settings: Arc<BatigestSettings>,
    ctx: ErrorContext,
    /// Bounds open connections to `pool_size`; held while a connection is lent.
    permits: Semaphore,
    /// Idle healthy connections. A std mutex: held only to push or pop, never across await.
    idle: Mutex<Vec<Client>>,
}

/// A lent connection. Dropped, it is closed; [`Conn::release`] returns it to the pool.
pub struct Conn<'a> {
    pool: &'a Pool,
    client: Client,
    _permit: SemaphorePermit<'a>,
}

impl Conn<'_> {
    /// The connection.
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// Gives a connection that did only successful work back to the pool.
    pub fn release(self) {
        let mut idle = self
            .pool
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        idle.push(self.client);
    }
}

impl Pool {
    /// A pool; connections are opened on demand.
    #[must_use]
    pub fn new(settings: BatigestSettings) -> Self {
        let size = usize::try_from(settings.pool_size.max(1)).unwrap_or(1);
        Self {
            ctx: error_context(&settings),
            settings: Arc::new(settings),
            permits: Semaphore::new(size),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The settings the pool connects with.
    #[must_use]
    pub fn settings(&self) -> &BatigestSettings {
        &self.settings
    }

    /// Classifies an error of work on a lent connection.
    #[must_use]
    pub fn work_error(&self, e: tiberius::error::Error) -> BatigestError {
        BatigestError::from_tiberius(e, Phase::Work, &self.ctx)
    }

    /// Lends a healthy connection (an idle one that answers `SELECT 1`, or a new one).
    ///
    /// # Errors
    /// Opening a new connection failed.
    pub async fn get(&self) -> Result<Conn<'_>, BatigestError> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| BatigestError::Config("pool closed".into()))?;
        loop {
            let idle = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let Some(mut client) = idle else { break };
            if ping(&mut client).await {
                return Ok(Conn {
                    pool: self,
                    client,
                    _permit: permit,
                });
            }
            tracing::debug!("dropping a Batigest connection that failed its health check");
        }
        let client = connect(&self.settings).await?;
        Ok(Conn {
            pool: self,
            client,
            _permit: permit,
        })
    }

    /// Runs `work` on a lent connection; when the connection is lost (or another transient
    /// failure happens) the work is retried on a new connection, up to `max_attempts`.
    ///
    /// # Errors
    /// The last error, or the first permanent one.
    pub async fn run<T, F>(&self, what: &'static str, mut work: F) -> Result<T, BatigestError>
    where
        F: for<'c> FnMut(&'c mut Client, &'c Pool) -> BoxFuture<'c, Result<T, BatigestError>>,
    {
        let mut attempt = 1;
        loop {
            let result = match self.get().await {
                Ok(mut conn) => {
                    let result = work(conn.client(), self).await;
                    if result.is_ok() {
                        conn.release();
                    }
                    result
                }
                Err(e) => Err(e),
            };
            match result {
                Err(e) if self.should_retry(what, &mut attempt, &e).await => {}
                other => return other,
            }
        }
    }

    /// After a failed attempt: when the error is transient and attempts remain, waits
    /// (backoff with jitter), counts the attempt and returns true.
    pub async fn should_retry(
        &self,
        what: &'static str,
        attempt: &mut u32,
        e: &BatigestError,
    ) -> bool {
        if !e.is_transient() || *attempt >= self.settings.max_attempts {
            return false;
        }
        let delay = backoff(*attempt);
        tracing::warn!(what, attempt = *attempt, error = %e, ?delay, "Batigest work failed, retrying");
        tokio::time::sleep(delay).await;
        *attempt += 1;
        true
    }

    /// Runs a parameterised statement and returns the rows of its first result set.
    ///
    /// # Errors
    /// The classified server or connection error.
    pub async fn fetch(
        &self,
        client: &mut Client,
        sql: &str,
        params: &[&dyn tiberius::ToSql],
    ) -> Result<Vec<tiberius::Row>, BatigestError> {
        let stream = client
            .query(sql, params)
            .await
            .map_err(|e| self.work_error(e))?;
        stream
            .into_first_result()
            .await
            .map_err(|e| self.work_error(e))
    }

    /// Runs a parameterised statement that returns no rows; gives the rows affected by
    /// its LAST statement. Triggers report their own writes before the statement that
    /// fired them ends, so a trigger on the table never inflates the count (a sum would).
    ///
    /// # Errors
    /// The classified server or connection error.
    pub async fn execute(
        &self,
        client: &mut Client,
        sql: &str,
        params: &[&dyn tiberius::ToSql],
    ) -> Result<u64, BatigestError> {
        let result = client
            .execute(sql, params)
            .await
            .map_err(|e| self.work_error(e))?;
        Ok(result.rows_affected().last().copied().unwrap_or(0))
    }

    /// Runs a parameter-less batch (transaction control).
    ///
    /// # Errors
    /// The classified server or connection error.
    pub async fn batch(&self, client: &mut Client, sql: &'static str) -> Result<(), BatigestError> {
        let stream = client
            .simple_query(sql)
            .await
            .map_err(|e| self.work_error(e))?;
        stream
            .into_results()
            .await
            .map_err(|e| self.work_error(e))?;
        Ok(())
    }
}

async fn ping(client: &mut Client) -> bool {
    match client.simple_query(tsql::PING).await {
        Ok(stream) => stream.into_results().await.is_ok(),
        Err(_) => false,
    }
}

/// 200 ms, 400 ms, 800 ms... capped at 5 s, with up to 50 % jitter.
fn backoff(attempt: u32) -> Duration {
    let base = 200u64
        .saturating_mul(1 << attempt.saturating_sub(1).min(5))
        .min(5_000);
    Duration::from_millis(base + fastrand::u64(0..=base / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_carries_every_setting_but_never_shows_the_password() {
        let s = BatigestSettings {
            host: "srv".into(),
            port: Some(1500),
            database: "BTG".into(),
            password: "s3cret-pw".to_owned().into(),
            ..BatigestSettings::default()
        };
        let config = tiberius_config(&s);
        assert_eq!(config.get_addr(), "srv:1500");
        assert_eq!(
            config.get_command_timeout(),
            Some(Duration::from_millis(30_000))
        );
        let ctx = error_context(&s);
        assert!(!format!("{ctx:?}").contains("s3cret"));
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn server_labels_show_instance_and_port() {
        let s = BatigestSettings {
            host: "srv".into(),
            instance: Some("SAGEBAT".into()),
            ..BatigestSettings::default()
        };
        assert_eq!(server_label(&s), "srv\\SAGEBAT");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(
            backoff(1) >= Duration::from_millis(200) && backoff(1) <= Duration::from_millis(300)
        );
        assert!(backoff(30) <= Duration::from_millis(7_500));
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_classified_error() {
        // Port 9 on loopback: connection refused immediately, no network needed.
        let s = BatigestSettings {
            host: "127.0.0.1".into(),
            port: Some(9),
            database: "BTG".into(),
            connect_timeout_ms: 2_000,
            ..BatigestSettings::default()
        };
        let Err(err) = connect(&s).await else {
            panic!("nothing listens on port 9")
        };
        assert!(
            matches!(
                err,
                BatigestError::Unreachable { .. } | BatigestError::Timeout { .. }
            ),
            "{err}"
        );
        assert!(err.is_transient());
    }
}
