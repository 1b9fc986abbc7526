//! What a container is doing, kept beside its record while a run has it:
//! `run.json` (which runtime, the monitor's pid, running or exited, the exit
//! code) and `container.log` (the output of a detached run).
//!
//! ```text
//! ROOT/layerfs/containers/<name>/
//!   run.json        {"status": "running"|"exited", "monitor": PID, "exit_code": N, ...}
//!   container.log   stdout and stderr of `run -d`
//! ```

use super::{RunError, io};
use crate::container::Container;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Created,
    Running,
    Exited,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub status: Status,
    /// The process that serves the mount and waits for the container.
    pub monitor: u32,
    /// The container's init, in our PID namespace.
    pub pid: u32,
    pub exit_code: Option<i32>,
    /// The runtime and its state root, for exec, kill and stop.
    pub runtime: PathBuf,
    pub runtime_root: PathBuf,
    /// The bundle (its config.json is the template of `exec`'s process).
    pub bundle: PathBuf,
    pub started: String,
    pub finished: Option<String>,
}

pub fn log_path(c: &Container) -> PathBuf {
    c.dir().join("container.log")
}

fn path(c: &Container) -> PathBuf {
    c.dir().join("run.json")
}

pub fn load(c: &Container) -> Option<State> {
    let bytes = std::fs::read(path(c)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn save(c: &Container, s: &State) -> Result<(), RunError> {
    let p = path(c);
    let tmp = p.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(s).unwrap_or_default();
    std::fs::write(&tmp, bytes).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, &p).map_err(|e| io(&p, e))
}

impl State {
    /// Running, and its monitor still alive (a killed monitor's container
    /// died with it).
    pub fn running(&self) -> bool {
        self.status == Status::Running && crate::store::process_alive(self.monitor)
    }

    /// As `ps` shows it: `running`, `exited (N)`, `created`.
    pub fn describe(&self) -> String {
        match (&self.status, self.running(), self.exit_code) {
            (Status::Running, true, _) => "running".into(),
            (_, _, Some(code)) => format!("exited ({code})"),
            (Status::Created, _, None) => "created".into(),
            _ => "exited".into(),
        }
    }
}
