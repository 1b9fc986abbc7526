//! `layerfs build -t NAME[:TAG] [-f Dockerfile] [--build-arg K=V]
//! [--no-cache] [--compression gzip|estargz] CONTEXT`: prints each step, then the image ID on stdout's
//! last line.

use super::{Ctx, UsageError};
use anyhow::{Context, Result};
use layerfs::dockerfile::{BuildOptions, build};
use layerfs::oci::Reference;

#[derive(clap::Args)]
pub struct Args {
    /// Name of the image to build
    #[arg(short, long, value_name = "NAME[:TAG]")]
    tag: Option<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile)
    #[arg(short, long, value_name = "PATH")]
    file: Option<std::path::PathBuf>,
    /// A value for an ARG (KEY=VALUE, or KEY to pass ours on)
    #[arg(long, value_name = "KEY=VALUE")]
    build_arg: Vec<String>,
    /// Run every step again instead of using the build cache
    #[arg(long)]
    no_cache: bool,
    /// Layer format of the image: gzip, or estargz (every layer rewritten
    /// as eStargz once the build is done; the tag names that image)
    #[arg(long, default_value = "gzip", value_parser = ["gzip", "estargz"])]
    compression: String,
    /// The build context: the directory COPY and ADD read from
    context: std::path::PathBuf,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    // RUN steps need the run machinery (root); a build without RUN does not.
    if nix::unistd::geteuid().is_root() {
        layerfs::run::init_process()?;
    }
    let tag = a.tag.as_deref().map(Reference::parse).transpose()?;
    if tag.as_ref().is_some_and(|t| t.digest().is_some()) {
        return Err(UsageError("build -t: give NAME[:TAG], not a digest".into()).into());
    }
    let mut build_args = Vec::new();
    for kv in &a.build_arg {
        match kv.split_once('=') {
            Some((k, v)) => build_args.push((k.to_string(), v.to_string())),
            None => {
                if let Ok(v) = std::env::var(kv) {
                    build_args.push((kv.clone(), v));
                }
            }
        }
    }
    if !a.context.is_dir() {
        return Err(UsageError(format!(
            "build: the context {} is not a directory",
            a.context.display()
        ))
        .into());
    }
    let store = ctx.store()?;
    let opts = BuildOptions {
        context: a.context.clone(),
        dockerfile: a.file,
        tag,
        build_args,
        no_cache: a.no_cache,
    };
    let mut out = std::io::stdout();
    let built = build(&store, &opts, &mut out).context("build")?;
    if a.compression == "estargz" {
        let converted = layerfs::image::to_estargz(&store, &built.manifest.digest.hex())
            .context("build: eStargz layers")?;
        layerfs::image::name_image(&store, &converted.manifest, opts.tag.as_ref())
            .context("build: naming the eStargz image")?;
        println!("{}", converted.id);
        return Ok(());
    }
    println!("{}", built.id);
    Ok(())
}
