//! Commands for a running container, through the runtime its monitor
//! started it with: signals (`kill`, `stop`), a further process (`exec`,
//! with the container's own process config as the template), and waiting
//! for its end.

use super::state::{self, State};
use super::{RunError, io, rules, runtime::Runtime};
use crate::container::Container;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn runtime_of(st: &State) -> Runtime {
    Runtime {
        path: st.runtime.clone(),
        root: st.runtime_root.clone(),
        userns_of: Some(st.monitor),
    }
}

/// The state of a running container, or an error saying it is not.
pub fn running(c: &Container) -> Result<State, RunError> {
    match state::load(c) {
        Some(st) if st.running() => Ok(st),
        _ => Err(RunError::Runtime(format!(
            "container {} is not running",
            c.name
        ))),
    }
}

/// Removes what the runtime may still keep of a container whose monitor
/// was killed before it could (its state, its cgroup).
pub fn forget(c: &Container) {
    if let Some(st) = state::load(c)
        && !crate::store::process_alive(st.monitor)
    {
        let _ = runtime_of(&st).delete(&c.name);
    }
}

/// Sends `signal` (a name as `kill -l` gives it, or a number) to the container's init.
pub fn kill(c: &Container, signal: &str) -> Result<(), RunError> {
    let st = running(c)?;
    runtime_of(&st).kill(&c.name, signal)
}

/// Waits until the container's monitor has ended (it records the exit code
/// and unmounts first), up to `limit`; true if it has.
pub fn wait_monitor(c: &Container, limit: Option<Duration>) -> bool {
    let start = Instant::now();
    loop {
        match state::load(c) {
            Some(st) if crate::store::process_alive(st.monitor) => {}
            _ => return true,
        }
        if limit.is_some_and(|l| start.elapsed() >= l) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM, then SIGKILL if it still runs after `timeout`; returns once the
/// container has ended and its monitor is gone.
pub fn stop(c: &Container, timeout: Duration) -> Result<(), RunError> {
    let st = running(c)?;
    let rt = runtime_of(&st);
    rt.kill(&c.name, "TERM")?;
    if !wait_monitor(c, Some(timeout)) {
        let _ = rt.kill(&c.name, "KILL");
        wait_monitor(c, None);
    }
    Ok(())
}

/// What `exec` runs.
#[derive(Clone, Debug, Default)]
pub struct Exec {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub interactive: bool,
}

/// Runs a further process in the running container; returns its exit code.
pub fn exec(c: &Container, e: &Exec) -> Result<i32, RunError> {
    let st = running(c)?;
    if e.argv.is_empty() {
        return Err(RunError::NoCommand);
    }
    // A rootless container's files are readable in its namespace only.
    super::rootless::join(st.monitor)?;
    let config_path = st.bundle.join("config.json");
    let text = std::fs::read(&config_path).map_err(|err| io(&config_path, err))?;
    let config: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|err| RunError::Runtime(format!("{}: {err}", config_path.display())))?;
    let mut process = config["process"].clone();
    process["args"] = serde_json::json!(e.argv);
    process["terminal"] = serde_json::json!(false);
    if let Some(env) = process["env"].as_array().cloned() {
        let mut env: Vec<String> = env
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        for kv in &e.env {
            let key = kv.split('=').next().unwrap_or_default();
            env.retain(|x| x.split('=').next() != Some(key));
            env.push(kv.clone());
        }
        process["env"] = serde_json::json!(env);
    }
    if let Some(w) = &e.workdir {
        process["cwd"] = serde_json::json!(rules::workdir(Some(w), None)?);
    }
    if let Some(u) = &e.user {
        // The container's own /etc/passwd, seen through its init; its
        // symlinks resolved inside the container, never on the host.
        let root = std::path::PathBuf::from(format!("/proc/{}/root", st.pid));
        let passwd = super::read_in_root(&root, "/etc/passwd")?.unwrap_or_default();
        let group = super::read_in_root(&root, "/etc/group")?.unwrap_or_default();
        let ids = rules::user_ids(u, &passwd, &group)?;
        process["user"] =
            serde_json::json!({"uid": ids.uid, "gid": ids.gid, "additionalGids": ids.groups});
        if ids.uid != 0 {
            process["capabilities"]["effective"] = serde_json::json!([]);
            process["capabilities"]["permitted"] = serde_json::json!([]);
        }
    }
    let p = st.bundle.join(format!("exec-{}.json", std::process::id()));
    std::fs::write(&p, serde_json::to_vec(&process).unwrap_or_default())
        .map_err(|err| io(&p, err))?;
    let rt = runtime_of(&st);
    let status = rt
        .command()
        .arg("exec")
        .arg("--process")
        .arg(&p)
        .arg(&c.name)
        .stdin(if e.interactive {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .status();
    let _ = std::fs::remove_file(&p);
    let status = status.map_err(|err| io(&rt.path, err))?;
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(125))
}
