//! BatiSimply API client and simulator.
//!
//! Module map:
//! - `api` holds every path, parameter and JSON field name (wire structures);
//! - `settings` holds [`BatisimplySettings`];
//! - `client` (with `timeslots` and `check`) holds [`BatisimplyClient`] and its operations;
//! - `auth` caches and renews tokens; `transport` applies rate limit, retries, counters;
//! - `model` (with `parse`) holds typed records and [`Listing`]; `error` holds [`BatisimplyError`];
//! - [`sim`] is the in-memory HTTP simulator of the API and its token endpoint;
//! - [`bench`](mod@bench) measures the client against the simulator.

mod api;
mod auth;
pub mod bench;
mod check;
mod client;
mod error;
mod model;
mod parse;
mod settings;
pub mod sim;
mod timeslots;
mod transport;

pub use check::{CheckReport, CheckStep, StepResult, explain};
pub use client::BatisimplyClient;
pub use error::{BatisimplyError, RecordError, TransientKind};
pub use model::{
    Address, GeoPoint, Listing, ManagementStatus, Money, NewProject, Project, ProjectId, TimeSlot,
};
pub use settings::{BatisimplySettings, Grant};
pub use transport::ClientStats;
