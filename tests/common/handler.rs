//! A test handler that does what a script says and records what it saw.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use batisync::dispatch::{Applied, DispatchError, Handler};
use batisync::outbox::{Event, Reason, ReasonCode};

/// What the handler does with one event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Behavior {
    Apply,
    Transient,
    Permanent,
    RateLimited(Duration),
    Panic,
    /// Sleeps this long, then applies.
    Hang(Duration),
}

type Script = Box<dyn Fn(&Event) -> Behavior + Send + Sync>;

pub struct Recorder {
    script: Script,
    /// (key, source version) in the order applications started.
    pub seen: Mutex<Vec<(String, String)>>,
    /// Keys being applied right now, to detect two events of one key at once.
    in_flight: Mutex<HashSet<String>>,
    pub overlaps: AtomicU64,
    pub applied: AtomicU64,
}

impl Recorder {
    pub fn new(script: impl Fn(&Event) -> Behavior + Send + Sync + 'static) -> Self {
        Self {
            script: Box::new(script),
            seen: Mutex::default(),
            in_flight: Mutex::default(),
            overlaps: AtomicU64::new(0),
            applied: AtomicU64::new(0),
        }
    }

    pub fn always(behavior: Behavior) -> Self {
        Self::new(move |_| behavior)
    }

    pub fn seen_by_key(&self) -> HashMap<String, Vec<String>> {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for (key, version) in self.seen.lock().unwrap().iter() {
            map.entry(key.clone()).or_default().push(version.clone());
        }
        map
    }

    fn leave(&self, key: &str) {
        self.in_flight.lock().unwrap().remove(key);
    }
}

impl Handler for Recorder {
    async fn apply(&self, event: &Event) -> Result<Applied, DispatchError> {
        if !self
            .in_flight
            .lock()
            .unwrap()
            .insert(event.entity_key.clone())
        {
            self.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        self.seen
            .lock()
            .unwrap()
            .push((event.entity_key.clone(), event.source_version.clone()));
        let behavior = (self.script)(event);
        if let Behavior::Hang(duration) = behavior {
            tokio::time::sleep(duration).await;
        }
        self.leave(&event.entity_key);
        match behavior {
            Behavior::Apply | Behavior::Hang(_) => {
                self.applied.fetch_add(1, Ordering::SeqCst);
                Ok(Applied::new("applied"))
            }
            Behavior::Transient => Err(DispatchError::Transient("target unavailable".into())),
            Behavior::Permanent => Err(DispatchError::permanent(
                Reason::new(ReasonCode::TooLong)
                    .with("key", event.entity_key.as_str())
                    .with("max_chars", 8),
                "code too long",
            )),
            Behavior::RateLimited(retry_after) => Err(DispatchError::RateLimited {
                retry_after: Some(retry_after),
                message: "429".into(),
            }),
            Behavior::Panic => panic!("handler bug"),
        }
    }
}
