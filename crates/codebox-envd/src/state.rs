//! What envd keeps in memory per sandbox: the configs of the processes it
//! started (for `List`), its terminals (input, resize, kill and their output
//! fan-out) and its polling watchers. Everything is bounded and forgotten once
//! the sandbox has ended (checked by a sweep at most once a minute).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use codebox_core::{Core, CoreError, PtyInput};
use tokio::sync::{broadcast, Notify};

use crate::proto::{End, FilesystemEvent, ProcessConfig};

/// Process configs remembered per sandbox.
pub const MAX_PROCESS_RECORDS: usize = 1024;
/// Open terminals per sandbox.
pub const MAX_TERMINALS: usize = 32;
/// Polling watchers per sandbox.
pub const MAX_WATCHERS: usize = 64;
/// Events a polling watcher keeps until they are fetched (oldest dropped).
pub const MAX_WATCHER_EVENTS: usize = 4096;
/// How often ended sandboxes are forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these small locks leaves consistent data.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The envd router's state.
pub struct EnvdState {
    pub core: Arc<Core>,
    sandboxes: Mutex<HashMap<String, Arc<SandboxState>>>,
    last_sweep: Mutex<Instant>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for EnvdState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvdState")
            .field("sandboxes", &lock(&self.sandboxes).len())
            .finish_non_exhaustive()
    }
}

impl EnvdState {
    pub fn new(core: Arc<Core>) -> Self {
        Self {
            core,
            sandboxes: Mutex::new(HashMap::new()),
            last_sweep: Mutex::new(Instant::now()),
            next_id: AtomicU64::new(1),
        }
    }

    /// A fresh identifier (watcher ids), unique in this process.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The state of a sandbox, created on first use.
    pub fn sandbox(self: &Arc<Self>, id: &str) -> Arc<SandboxState> {
        self.maybe_sweep();
        let mut sandboxes = lock(&self.sandboxes);
        Arc::clone(sandboxes.entry(id.to_owned()).or_default())
    }

    /// The state of a sandbox if it has any.
    pub fn existing(&self, id: &str) -> Option<Arc<SandboxState>> {
        lock(&self.sandboxes).get(id).cloned()
    }

    /// Forgets a sandbox's state (stops its watchers and terminals' fan-out).
    pub fn forget(&self, id: &str) {
        if lock(&self.sandboxes).remove(id).is_some() {
            tracing::debug!(sandbox_id = id, "envd state of an ended sandbox dropped");
        }
    }

    fn maybe_sweep(self: &Arc<Self>) {
        {
            let mut last = lock(&self.last_sweep);
            if last.elapsed() < SWEEP_EVERY {
                return;
            }
            *last = Instant::now();
        }
        let ids: Vec<String> = lock(&self.sandboxes).keys().cloned().collect();
        if ids.is_empty() {
            return;
        }
        let state = Arc::clone(self);
        tokio::spawn(async move {
            for id in ids {
                if let Err(CoreError::NotFound | CoreError::Gone { .. }) =
                    state.core.live_sandbox_owner(&id).await
                {
                    state.forget(&id);
                }
            }
        });
    }
}

/// One sandbox's envd state.
#[derive(Debug, Default)]
pub struct SandboxState {
    records: Mutex<HashMap<u32, ProcessRecord>>,
    terminals: Mutex<HashMap<u32, Terminal>>,
    watchers: Mutex<HashMap<String, Watcher>>,
    sequence: AtomicU64,
}

/// How envd started a process (the agent keeps only its argv).
#[derive(Debug, Clone)]
pub struct ProcessRecord {
    pub config: ProcessConfig,
    sequence: u64,
}

/// What a terminal's output fan-out carries.
#[derive(Debug, Clone)]
pub enum TerminalChunk {
    Data(Vec<u8>),
    End(End),
}

/// An open terminal.
#[derive(Debug, Clone)]
pub struct Terminal {
    pub input: PtyInput,
    pub output: broadcast::Sender<TerminalChunk>,
    pub kill: Arc<Notify>,
    pub config: ProcessConfig,
    pub tag: Option<String>,
}

/// A polling watcher: a task fills `events`, `GetWatcherEvents` drains them.
#[derive(Debug)]
pub struct Watcher {
    pub events: Arc<Mutex<VecDeque<FilesystemEvent>>>,
    pub ended: Arc<AtomicBool>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Too many of something for one sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl SandboxState {
    pub fn remember(&self, pid: u32, config: ProcessConfig) {
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        let mut records = lock(&self.records);
        if records.len() >= MAX_PROCESS_RECORDS {
            if let Some(oldest) = records
                .iter()
                .min_by_key(|(_, record)| record.sequence)
                .map(|(pid, _)| *pid)
            {
                records.remove(&oldest);
            }
        }
        records.insert(pid, ProcessRecord { config, sequence });
    }

    pub fn record(&self, pid: u32) -> Option<ProcessRecord> {
        lock(&self.records).get(&pid).cloned()
    }

    /// Keeps the records of these pids only (the live ones).
    pub fn retain_records(&self, live: &[u32]) {
        lock(&self.records).retain(|pid, _| live.contains(pid));
    }

    pub fn add_terminal(&self, pid: u32, terminal: Terminal) -> Result<(), Full> {
        let mut terminals = lock(&self.terminals);
        if terminals.len() >= MAX_TERMINALS {
            return Err(Full);
        }
        terminals.insert(pid, terminal);
        Ok(())
    }

    pub fn terminal(&self, pid: u32) -> Option<Terminal> {
        lock(&self.terminals).get(&pid).cloned()
    }

    pub fn terminal_by_tag(&self, tag: &str) -> Option<u32> {
        lock(&self.terminals)
            .iter()
            .find(|(_, terminal)| terminal.tag.as_deref() == Some(tag))
            .map(|(pid, _)| *pid)
    }

    pub fn terminals(&self) -> Vec<(u32, Terminal)> {
        lock(&self.terminals)
            .iter()
            .map(|(pid, terminal)| (*pid, terminal.clone()))
            .collect()
    }

    pub fn remove_terminal(&self, pid: u32) {
        lock(&self.terminals).remove(&pid);
    }

    pub fn terminal_count(&self) -> usize {
        lock(&self.terminals).len()
    }

    pub fn add_watcher(&self, id: String, watcher: Watcher) -> Result<(), Full> {
        let mut watchers = lock(&self.watchers);
        // Watchers whose watch ended and whose events were all fetched are gone.
        watchers.retain(|_, watcher| {
            !(watcher.ended.load(Ordering::Acquire) && lock(&watcher.events).is_empty())
        });
        if watchers.len() >= MAX_WATCHERS {
            return Err(Full);
        }
        watchers.insert(id, watcher);
        Ok(())
    }

    /// Drains a watcher's events; `None` for an unknown watcher, `Some(Err)`
    /// once its watch ended and every event was fetched (it is then removed).
    pub fn drain_watcher(&self, id: &str) -> Option<Result<Vec<FilesystemEvent>, ()>> {
        let mut watchers = lock(&self.watchers);
        let watcher = watchers.get(id)?;
        let events: Vec<FilesystemEvent> = lock(&watcher.events).drain(..).collect();
        if events.is_empty() && watcher.ended.load(Ordering::Acquire) {
            watchers.remove(id);
            return Some(Err(()));
        }
        Some(Ok(events))
    }

    pub fn remove_watcher(&self, id: &str) -> bool {
        lock(&self.watchers).remove(id).is_some()
    }
}

/// Pushes an event into a bounded watcher queue, dropping the oldest.
pub fn push_event(queue: &Mutex<VecDeque<FilesystemEvent>>, event: FilesystemEvent) {
    let mut queue = lock(queue);
    if queue.len() >= MAX_WATCHER_EVENTS {
        queue.pop_front();
    }
    queue.push_back(event);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::EventType;

    fn event(name: &str) -> FilesystemEvent {
        FilesystemEvent {
            name: name.into(),
            kind: EventType::Create,
            entry: None,
        }
    }

    #[test]
    fn records_are_bounded_and_pruned() {
        let state = SandboxState::default();
        for pid in 0..(MAX_PROCESS_RECORDS as u32 + 10) {
            state.remember(pid, ProcessConfig::default());
        }
        assert_eq!(lock(&state.records).len(), MAX_PROCESS_RECORDS);
        assert!(state.record(0).is_none(), "the oldest went first");
        assert!(state.record(MAX_PROCESS_RECORDS as u32 + 9).is_some());
        state.retain_records(&[MAX_PROCESS_RECORDS as u32 + 9]);
        assert_eq!(lock(&state.records).len(), 1);
    }

    #[tokio::test]
    async fn watcher_queues_are_bounded_and_watchers_capped() {
        let queue = Mutex::new(VecDeque::new());
        for index in 0..(MAX_WATCHER_EVENTS + 5) {
            push_event(&queue, event(&index.to_string()));
        }
        let queue = queue
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        assert_eq!(queue.len(), MAX_WATCHER_EVENTS);
        assert_eq!(queue.front().map(|event| event.name.as_str()), Some("5"));

        let state = SandboxState::default();
        for index in 0..MAX_WATCHERS {
            let watcher = Watcher {
                events: Arc::default(),
                ended: Arc::default(),
                task: tokio::spawn(std::future::pending()),
            };
            assert_eq!(state.add_watcher(index.to_string(), watcher), Ok(()));
        }
        let extra = Watcher {
            events: Arc::default(),
            ended: Arc::default(),
            task: tokio::spawn(std::future::pending()),
        };
        assert_eq!(state.add_watcher("extra".into(), extra), Err(Full));
        assert!(matches!(state.drain_watcher("0"), Some(Ok(events)) if events.is_empty()));
        assert!(state.drain_watcher("nope").is_none());
        assert!(state.remove_watcher("0"));
    }
}
