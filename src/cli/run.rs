//! `layerfs run [--rm] [--name NAME] [-e K=V] [-w DIR] [-u USER]
//! [-v HOST:CONTAINER[:ro]] IMAGE [CMD...]`: the command's exit code is ours.

use super::{Ctx, ExitCode, UsageError};
use anyhow::{Context, Result};
use layerfs::run::{self, Command, RunSpec};

#[derive(clap::Args)]
pub struct Args {
    /// Remove the container when the command ends (else it stays for commit, ps, rm)
    #[arg(long)]
    rm: bool,
    /// Name of the container
    #[arg(long)]
    name: Option<String>,
    /// Set an environment variable (KEY=VALUE, or KEY to pass ours on)
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    workdir: Option<String>,
    /// User (name or uid, with :group or :gid) from the image's /etc/passwd
    #[arg(short, long)]
    user: Option<String>,
    /// Bind a host path into the container
    #[arg(short, long = "volume", value_name = "HOST:CONTAINER[:ro]")]
    volume: Vec<String>,
    /// Mount a fresh /proc for the container's PID namespace (always done;
    /// accepted as unshare(1) spells it)
    #[arg(long)]
    mount_proc: bool,
    /// The image to run
    image: String,
    /// The command and its arguments (default: the image's Entrypoint and Cmd)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    // While this process has one thread: a private mount namespace.
    run::init_process()?;
    layerfs::mount::ignore_sigpipe();
    let _ = a.mount_proc;
    for kv in &a.env {
        run::check_env(kv).map_err(|e| UsageError(e.to_string()))?;
    }
    let volumes = a
        .volume
        .iter()
        .map(|v| run::parse_volume(v).map_err(|e| UsageError(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let store = ctx.store()?;
    let image = match store.resolve(&a.image) {
        // As docker run: an image the store lacks is pulled first.
        Err(layerfs::store::StoreError::ImageNotFound(_)) => {
            // Said in the error, if the pull fails: one line, not two.
            log::info!("unable to find image '{}' locally; pulling it", a.image);
            layerfs::registry::pull_missing(&store, &a.image).with_context(|| {
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
    let spec = RunSpec {
        command: Command::Image(a.command),
        env: a.env,
        workdir: a.workdir,
        user: a.user,
        volumes,
        stdin_null: false,
    };
    let config = image.config.config.unwrap_or_default();
    let result = run::run(&store, &c, &config, &spec);
    if a.rm {
        layerfs::container::remove(&store, &c)
            .with_context(|| format!("removing container {}", c.name))?;
    }
    match result {
        Ok(0) => Ok(()),
        Ok(code) => Err(ExitCode(code).into()),
        Err(e) => {
            let code = e.exit_code();
            eprintln!("layerfs: run {}: {e}", a.image);
            Err(ExitCode(code).into())
        }
    }
}
