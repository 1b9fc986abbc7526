//! `layerfs unshare [CMD...]`: CMD (default $SHELL) as root of a user
//! namespace of the user's ids plus a mount namespace, as `podman unshare`.
//! layerfs commands run inside use the user's store.

use super::{Ctx, ExitCode};
use anyhow::Result;
use layerfs::userns::{self, Map};
use std::process::Command;

#[derive(clap::Args)]
pub struct Args {
    /// The command and its arguments (default: $SHELL, else /bin/sh)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let mut argv = a.command.into_iter();
    let program = argv.next().unwrap_or_else(|| {
        std::env::var("SHELL")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "/bin/sh".into())
    });
    let mut cmd = Command::new(program);
    cmd.args(argv);
    cmd.env("LAYERFS_ROOT", &ctx.root);
    let map = Map::for_current_user();
    if !nix::unistd::geteuid().is_root() && !map.has_subordinate_ids() {
        eprintln!("layerfs: note: {}", userns::no_subordinate_ids_note());
    }
    let code = userns::run_in_namespace(&map, &mut cmd)?;
    if code != 0 {
        return Err(ExitCode(code).into());
    }
    Ok(())
}
