//! batisync keeps Batigest (SQL Server) and BatiSimply (REST) in step.
//!
//! The pipeline, module by module:
//!
//! - sources (pollers, one per source) capture changes into the [`outbox`], moving their
//!   cursor in the same transaction;
//! - [`outbox`] stores events durably in PostgreSQL: capture, ordered claim with leases,
//!   ack/fail/retry, dead letters, re-drive;
//! - [`dispatch`] runs N workers per flow that claim events and apply them to a target
//!   through a [`dispatch::Handler`], deciding retry or dead in one place;
//! - [`app`] supervises everything under one shutdown signal, with the [`admin`] HTTP
//!   listener (health, readiness, metrics, the web [`console`]), [`maintenance`] (lease
//!   rescue, pruning) and [`control`] (pause, resume, "sync now" per flow).
//!
//! Targets and sources: [`batisimply`] (API client and simulator), [`batigest`] (SQL
//! Server capture and writes).
//!
//! Flows tie them together: [`flows`] (`chantiers`: job sites → projects, with its
//! poller, mapping, handler and simulated Batigest).
//!
//! Around them: [`settings`] (typed, layered configuration), [`db`] (pool, migrations),
//! [`metrics`] (every exported metric), [`telemetry`] (logs), [`cli`], [`demo`] (the
//! pipeline between simulated ends) and [`bench`](mod@bench).

pub mod admin;
pub mod app;
pub mod batigest;
pub mod batisimply;
pub mod bench;
pub mod cli;
pub mod console;
pub mod control;
pub mod db;
pub mod demo;
pub mod dispatch;
pub mod flows;
pub mod maintenance;
pub mod metrics;
pub mod outbox;
pub mod settings;
pub mod telemetry;
pub mod tls;
