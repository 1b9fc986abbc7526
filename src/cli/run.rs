//! `layerfs run [OPTIONS] IMAGE [CMD...]`, as `docker run` spells its
//! options: the command's exit code is ours; as Docker's, ours are 125
//! when `run` itself fails (bad flags included), 126 when the command cannot
//! be invoked, 127 when it is not found. With `-d` the container runs
//! under a monitor process of its own (`layerfs container-monitor NAME`,
//! hidden), which serves its mount until it ends; its output goes to the
//! container's log.

use super::{Ctx, ExitCode, UsageError};
use anyhow::{Context, Result};
use layerfs::run::{self, Command, Network, RunSpec, Seccomp};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Remove the container when the command ends (else it stays for commit, ps, rm)
    #[arg(long)]
    rm: bool,
    /// Name of the container
    #[arg(long)]
    name: Option<String>,
    /// Run in the background; print the container's name (see logs, exec, stop)
    #[arg(short, long)]
    detach: bool,
    /// Keep stdin open for the command (else it reads /dev/null)
    #[arg(short, long)]
    interactive: bool,
    /// Give the command a terminal
    #[arg(short, long)]
    tty: bool,
    /// Set an environment variable (KEY=VALUE, or KEY to pass ours on)
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Read environment variables from a file: KEY=VALUE lines, KEY alone
    /// to pass ours on, # comments (before -e)
    #[arg(long, value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Working directory inside the container
    #[arg(short, long)]
    workdir: Option<String>,
    /// User (name or uid, with :group or :gid) from the image's /etc/passwd
    #[arg(short, long)]
    user: Option<String>,
    /// Bind a host path into the container
    #[arg(short, long = "volume", value_name = "HOST:CONTAINER[:ro]")]
    volume: Vec<String>,
    /// Replace the image's Entrypoint (its Cmd is dropped too)
    #[arg(long)]
    entrypoint: Option<String>,
    /// The container's hostname (default: its name)
    #[arg(long)]
    hostname: Option<String>,
    /// Add a capability to Docker's default set (or ALL)
    #[arg(long)]
    cap_add: Vec<String>,
    /// Drop a capability from the set (or ALL)
    #[arg(long)]
    cap_drop: Vec<String>,
    /// no-new-privileges, seccomp=unconfined or seccomp=PROFILE.json
    #[arg(long)]
    security_opt: Vec<String>,
    /// Mount the container's root filesystem read-only
    #[arg(long)]
    read_only: bool,
    /// Every capability, no seccomp filter, no masked paths
    #[arg(long)]
    privileged: bool,
    /// Memory limit (bytes, or with b, k, m, g)
    #[arg(short, long)]
    memory: Option<String>,
    /// CPUs the container may use (e.g. 1.5)
    #[arg(long)]
    cpus: Option<f64>,
    /// Most processes the container may have
    #[arg(long)]
    pids_limit: Option<i64>,
    /// default (own namespace, outbound through slirp4netns), none (loopback only) or host
    #[arg(long, alias = "net", default_value = "default")]
    network: String,
    /// The OCI runtime: a name on PATH (runc, crun) or a path
    #[arg(long)]
    runtime: Option<String>,
    /// Say which runtime runs the container
    #[arg(long)]
    debug: bool,
    /// Mount a fresh /proc for the container's PID namespace (always done;
    /// accepted as unshare(1) spells it)
    #[arg(long)]
    mount_proc: bool,
    #[command(flatten)]
    transport: super::transfer::TransportArgs,
    /// The image to run
    image: String,
    /// The command and its arguments (default: the image's Entrypoint and Cmd)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// What a detached container's monitor reads: the spec and what to do after.
#[derive(serde::Serialize, serde::Deserialize)]
struct Detached {
    spec: RunSpec,
    config: layerfs::oci::ContainerConfig,
    rm: bool,
    /// A lazy image's data is fetched as `run` was told (`--insecure`, `--ca-cert`).
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    ca_cert: Option<PathBuf>,
}

fn spec_of(a: &Args) -> Result<RunSpec> {
    let usage = |m: String| -> anyhow::Error { UsageError(m).into() };
    let mut env = Vec::new();
    for f in &a.env_file {
        let text = std::fs::read(f).with_context(|| format!("--env-file {}", f.display()))?;
        let vars = env_file(&text, |k| std::env::var(k).ok())
            .map_err(|e| usage(format!("--env-file {}: {e}", f.display())))?;
        env.extend(vars);
    }
    env.extend(a.env.iter().cloned());
    for kv in &env {
        run::check_env(kv).map_err(|e| usage(e.to_string()))?;
    }
    let volumes = a
        .volume
        .iter()
        .map(|v| run::parse_volume(v).map_err(|e| usage(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let mut seccomp = Seccomp::Default;
    let mut no_new_privileges = false;
    for o in &a.security_opt {
        match o.split_once(['=', ':']) {
            _ if o == "no-new-privileges" || o == "no-new-privileges=true" => {
                no_new_privileges = true
            }
            Some(("seccomp", "unconfined")) => seccomp = Seccomp::Unconfined,
            Some(("seccomp", p)) => seccomp = Seccomp::Profile(PathBuf::from(p)),
            _ => {
                return Err(usage(format!(
                    "--security-opt {o}: expected no-new-privileges, seccomp=unconfined or seccomp=PROFILE"
                )));
            }
        }
    }
    let memory = match &a.memory {
        Some(m) => Some(
            run::spec::parse_memory(m)
                .ok_or_else(|| usage(format!("--memory {m}: expected a size such as 64m")))?,
        ),
        None => None,
    };
    if a.cpus.is_some_and(|c| c.is_nan() || c <= 0.0) {
        return Err(usage("--cpus: expected a positive number".into()));
    }
    let network = match a.network.as_str() {
        "default" | "bridge" | "slirp4netns" => Network::Default,
        "none" => Network::None,
        "host" => Network::Host,
        n => {
            return Err(usage(format!(
                "--network {n}: expected default, none or host"
            )));
        }
    };
    run::spec::capabilities(&a.cap_add, &a.cap_drop, a.privileged).map_err(usage)?;
    Ok(RunSpec {
        command: Command::Image(a.command.clone()),
        entrypoint: a.entrypoint.clone(),
        env,
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        volumes,
        stdin_null: !a.interactive,
        tty: a.tty,
        hostname: a.hostname.clone(),
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        no_new_privileges,
        seccomp,
        read_only: a.read_only,
        privileged: a.privileged,
        memory,
        cpus: a.cpus,
        pids_limit: a.pids_limit,
        network,
        runtime: a.runtime.clone(),
        debug: a.debug,
    })
}

/// Docker's env-file format: one `KEY=VALUE` per line (the value as it
/// stands, quotes and spaces kept), `KEY` alone for `host`'s value (dropped
/// when unset there), blank lines and `#` comments skipped.
fn env_file(text: &[u8], host: impl Fn(&str) -> Option<String>) -> Result<Vec<String>, String> {
    let text = std::str::from_utf8(text).map_err(|_| "not UTF-8 text".to_string())?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (line, None),
        };
        if key.is_empty() {
            return Err(format!("line {}: no variable name", n + 1));
        }
        if key.contains(char::is_whitespace) {
            return Err(format!(
                "line {}: variable {key:?} contains whitespace",
                n + 1
            ));
        }
        match value {
            Some(v) => out.push(format!("{key}={v}")),
            None => out.extend(host(key).map(|v| format!("{key}={v}"))),
        }
    }
    Ok(out)
}

/// `run`'s own failures, flags included, exit 125 as `docker run`'s do;
/// the command's own code passes through.
pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    run_container(ctx, a).map_err(|e| {
        if e.downcast_ref::<ExitCode>().is_some() {
            return e;
        }
        eprintln!("layerfs: {}", super::one_line(&e));
        ExitCode(RUN_FAILED).into()
    })
}

/// `docker run`'s code for its own failures.
const RUN_FAILED: i32 = 125;

/// The exit code of a command line clap refused: 125 for `run`, as
/// `docker run` exits on a bad flag; clap's own for the rest.
pub fn parse_error_code(e: &clap::Error, argv: &[String]) -> i32 {
    let code = e.exit_code();
    if code == 0 {
        return code;
    }
    let mut args = argv.iter().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--root" => {
                args.next();
            }
            a if a.starts_with('-') => {}
            "run" => return RUN_FAILED,
            _ => break,
        }
    }
    code
}

fn run_container(ctx: &Ctx, a: Args) -> Result<()> {
    // An ordinary user runs as root of a user namespace of their ids.
    if let Some(code) = layerfs::userns::enter_or_reexec(&ctx.root)? {
        return super::exit_with(code);
    }
    let _ = a.mount_proc;
    let spec = spec_of(&a)?;
    if a.detach && a.tty {
        return Err(UsageError("run: -d with -t is not supported".into()).into());
    }
    if !a.detach {
        // While this process has one thread: a private mount namespace.
        run::init_process()?;
        layerfs::mount::ignore_sigpipe();
    }
    // A lazy image's data comes over the transport its pull was given.
    super::lazy::install_fetcher_with(a.transport.client_options());
    let store = ctx.store()?;
    let image = match store.resolve(&a.image) {
        // As docker run: an image the store lacks is pulled first.
        Err(layerfs::store::StoreError::ImageNotFound(_)) => {
            // Said in the error, if the pull fails: one line, not two.
            log::info!("unable to find image '{}' locally; pulling it", a.image);
            let client = a.transport.client_options();
            layerfs::registry::pull_missing_with(&store, &a.image, client).with_context(|| {
                format!("run {}: no such image here, and pulling it failed", a.image)
            })?;
            store.resolve(&a.image)
        }
        r => r,
    }
    .with_context(|| format!("run {}", a.image))?;
    let c = run::create_container(
        &store,
        a.name.as_deref(),
        &a.image,
        image.top.digest,
        &image.layer_digests(),
        None,
    )
    .with_context(|| format!("run {}", a.image))?;
    let config = image.config.config.unwrap_or_default();
    if a.detach {
        let job = Detached {
            spec,
            config,
            rm: a.rm,
            insecure: a.transport.insecure,
            ca_cert: a.transport.ca_cert.clone(),
        };
        return detach(ctx, &c, job);
    }
    let result = run::run(&store, &c, &config, &spec);
    finish(&store, &c, result, a.rm, &a.image)
}

/// The command's exit code becomes ours; `--rm` removes the container.
fn finish(
    store: &layerfs::store::Store,
    c: &layerfs::container::Container,
    result: Result<i32, run::RunError>,
    rm: bool,
    what: &str,
) -> Result<()> {
    if rm {
        layerfs::container::remove(store, c)
            .with_context(|| format!("removing container {}", c.name))?;
    }
    match result {
        Ok(0) => Ok(()),
        Ok(code) => Err(ExitCode(code).into()),
        Err(e) => {
            // 126/127 for a command that cannot run, else 125.
            let code = match e.exit_code() {
                2 => RUN_FAILED,
                c => c,
            };
            eprintln!("layerfs: run {what}: {e}");
            Err(ExitCode(code).into())
        }
    }
}

/// Starts the container's monitor in the background and waits until the
/// container runs (or has already ended); prints its name.
fn detach(ctx: &Ctx, c: &layerfs::container::Container, job: Detached) -> Result<()> {
    let rm = job.rm;
    let path = c.dir().join("detached.json");
    std::fs::write(&path, serde_json::to_vec(&job)?)
        .with_context(|| format!("writing {}", path.display()))?;
    let log_path = run::state::log_path(c);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut child = std::process::Command::new("/proc/self/exe")
        .arg("container-monitor")
        .arg(&c.name)
        .env("LAYERFS_ROOT", &ctx.root)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Out of our terminal's process group: its ^C is not for it.
        .process_group(0)
        .spawn()
        .context("starting the container's monitor")?;
    loop {
        if let Some(st) = run::state::load(c)
            && st.status != run::state::Status::Created
        {
            println!("{}", c.name);
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let last = log.lines().last().unwrap_or("").to_string();
            if status.success() && rm {
                println!("{}", c.name);
                return Ok(());
            }
            anyhow::bail!("run -d {}: the container did not start: {last}", c.name);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[derive(clap::Args)]
pub struct MonitorArgs {
    container: String,
}

/// The monitor of a detached container (started by `run -d`).
pub fn monitor(ctx: &Ctx, a: MonitorArgs) -> Result<()> {
    run::init_process()?;
    layerfs::mount::ignore_sigpipe();
    let store = ctx.store()?;
    let c = layerfs::container::load(&store, &a.container)?;
    let job_path = c.dir().join("detached.json");
    let job: Detached = serde_json::from_slice(
        &std::fs::read(&job_path).with_context(|| format!("reading {}", job_path.display()))?,
    )?;
    let transport = super::transfer::TransportArgs {
        insecure: job.insecure,
        ca_cert: job.ca_cert.clone(),
    };
    super::lazy::install_fetcher_with(transport.client_options());
    let result = run::run(&store, &c, &job.config, &job.spec);
    finish(&store, &c, result, job.rm, &c.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_as_docker_reads_it() {
        let text =
            b"# comment\n\n  A=1\nB= spaced value \nC=\"quoted\"\nD=x=y\nFROM_HOST\nUNSET\nE=\n";
        let host = |k: &str| (k == "FROM_HOST").then(|| "h".to_string());
        assert_eq!(
            env_file(text, host).unwrap(),
            [
                "A=1",
                "B= spaced value ",
                "C=\"quoted\"",
                "D=x=y",
                "FROM_HOST=h",
                "E="
            ]
        );
        for bad in [&b"=x\n"[..], b"A B=1\n", b"B =1\n", b"A=\xff\n"] {
            assert!(env_file(bad, |_| None).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_run_flags_exit_125_and_other_commands_keep_2() {
        use clap::Parser;
        let code = |line: &str| {
            let argv: Vec<String> = line.split(' ').map(String::from).collect();
            match super::super::Cli::try_parse_from(&argv) {
                Ok(_) => 0,
                Err(e) => parse_error_code(&e, &argv),
            }
        };
        assert_eq!(code("layerfs run --no-such-flag img"), 125);
        assert_eq!(code("layerfs --root /x run --memory"), 125);
        assert_eq!(code("layerfs run"), 125);
        assert_eq!(code("layerfs images --no-such-flag"), 2);
        assert_eq!(code("layerfs run --help"), 0);
        assert_eq!(code("layerfs no-such-command"), 2);
    }
}
