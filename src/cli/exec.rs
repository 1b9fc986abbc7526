//! `layerfs exec [-i] [-e K=V] [-u USER] [-w DIR] CONTAINER CMD...`: a
//! further command in a running container; its exit code is ours.

use super::{Ctx, ExitCode};
use anyhow::Result;
use layerfs::run::control;

#[derive(clap::Args)]
pub struct Args {
    /// Keep stdin open for the command
    #[arg(short, long)]
    interactive: bool,
    /// Set an environment variable
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// User (name or uid, with :group or :gid)
    #[arg(short, long)]
    user: Option<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    workdir: Option<String>,
    container: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let store = ctx.store()?;
    let c = layerfs::container::load(&store, &a.container)?;
    let e = control::Exec {
        argv: a.command,
        env: a.env,
        user: a.user,
        workdir: a.workdir,
        interactive: a.interactive,
    };
    match control::exec(&c, &e) {
        Ok(0) => Ok(()),
        Ok(code) => Err(ExitCode(code).into()),
        Err(err) => {
            eprintln!("layerfs: exec {}: {err}", a.container);
            Err(ExitCode(err.exit_code()).into())
        }
    }
}
