//! `layerfs build [-t NAME[:TAG]]... [-f Dockerfile] [--build-arg K=V]...
//! [--label K=V]... [--secret id=ID,src=PATH]... [--iidfile PATH]
//! [--no-cache] [--pull] [-q] [--compression gzip|estargz] [--insecure] [--ca-cert FILE]
//! CONTEXT|-`: prints each step, then the image
//! ID on stdout's last line (with -q, only the ID). `layerfs build prune
//! [--all]` drops the build cache.

use super::format::human_size;
use super::{Ctx, UsageError};
use anyhow::{Context, Result};
use layerfs::dockerfile::secrets::parse_secret;
use layerfs::dockerfile::stdin::{StdinContext, unpack_stdin};
use layerfs::dockerfile::{BuildOptions, build, mounts, prune};
use layerfs::oci::Reference;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    sub: Option<Sub>,
    /// Name of the image to build (may be given several times)
    #[arg(short, long, value_name = "NAME[:TAG]")]
    tag: Vec<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile; `-`: stdin)
    #[arg(short, long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// A value for an ARG (KEY=VALUE, or KEY to pass ours on); the proxy
    /// args (HTTP_PROXY, ...) reach RUN without an ARG, kept out of history
    #[arg(long, value_name = "KEY=VALUE")]
    build_arg: Vec<String>,
    /// A label on the image (KEY=VALUE)
    #[arg(long, value_name = "KEY=VALUE")]
    label: Vec<String>,
    /// A secret RUN --mount=type=secret can mount (id=ID,src=PATH or id=ID,env=VAR)
    #[arg(long, value_name = "id=ID,src=PATH")]
    secret: Vec<String>,
    /// Write the image ID to this file
    #[arg(long, value_name = "PATH")]
    iidfile: Option<PathBuf>,
    /// Run every step again instead of using the build cache
    #[arg(long)]
    no_cache: bool,
    /// Pull the FROM images even when the store has them
    #[arg(long)]
    pull: bool,
    /// The stage to build (its AS name or index); default: the last
    #[arg(long, value_name = "STAGE")]
    target: Option<String>,
    /// Print only the image ID
    #[arg(short, long)]
    quiet: bool,
    /// Layer format of the image: gzip, or estargz (every layer rewritten
    /// as eStargz once the build is done; the tags name that image)
    #[arg(long, default_value = "gzip", value_parser = ["gzip", "estargz"])]
    compression: String,
    #[command(flatten)]
    transport: super::transfer::TransportArgs,
    /// The build context: the directory COPY and ADD read from; `-`: a tar
    /// (or a Dockerfile alone) on stdin
    context: Option<String>,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Drop the build cache: intermediate steps' records, cache mounts, and
    /// what dead builds left (a context named `prune` is `./prune`)
    Prune {
        /// Also the records of tagged results (their images stay)
        #[arg(short, long)]
        all: bool,
    },
}

fn key_value(flag: &str, kv: &str) -> Result<(String, String)> {
    match kv.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(UsageError(format!("{flag} {kv}: expected KEY=VALUE")).into()),
    }
}

/// Removes the directory a stdin context was unpacked into.
struct TempContext(PathBuf);

impl Drop for TempContext {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    if let Some(Sub::Prune { all }) = a.sub {
        let store = ctx.store()?;
        let r = prune(&store, all).context("build prune")?;
        println!(
            "Deleted {} build cache records; total reclaimed space: {}",
            r.records,
            human_size(r.freed)
        );
        return Ok(());
    }
    let Some(context_arg) = a.context.clone() else {
        return Err(UsageError("build: give the context directory (or -)".into()).into());
    };
    // An ordinary user builds as root of a user namespace of their ids.
    if let Some(code) = layerfs::userns::enter_or_reexec(&ctx.root)? {
        return super::exit_with(code);
    }
    layerfs::run::init_process()?;
    let mut tags = Vec::new();
    for t in &a.tag {
        let r = Reference::parse(t)?;
        if r.digest().is_some() {
            return Err(UsageError("build -t: give NAME[:TAG], not a digest".into()).into());
        }
        tags.push(r);
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
    let labels = a
        .label
        .iter()
        .map(|kv| key_value("--label", kv))
        .collect::<Result<Vec<_>>>()?;
    let secrets = a
        .secret
        .iter()
        .map(|s| parse_secret(s).map_err(|e| anyhow::Error::new(UsageError(e))))
        .collect::<Result<Vec<_>>>()?;
    // As Docker: a secret file that is not there fails the build at once.
    for s in &secrets {
        if let layerfs::dockerfile::secrets::SecretSource::File(p) = &s.source {
            std::fs::metadata(p)
                .with_context(|| format!("--secret id={}: {}", s.id, p.display()))?;
        }
    }
    let store = ctx.store()?;
    let stdin_file = a.file.as_ref().is_some_and(|f| f.as_os_str() == "-");
    let mut temp = None;
    let (context, mut dockerfile) = if context_arg == "-" {
        if stdin_file {
            return Err(
                UsageError("build: stdin can be the context or -f, not both".into()).into(),
            );
        }
        let dir = mounts::run_root(&store)?.join(format!("{}-stdin", std::process::id()));
        std::fs::create_dir(&dir).with_context(|| dir.display().to_string())?;
        temp = Some(TempContext(dir.clone()));
        let kind = unpack_stdin(&mut std::io::stdin().lock(), &dir).context("build -")?;
        if kind == StdinContext::Dockerfile && a.file.is_some() {
            return Err(UsageError(
                "build -: stdin is a Dockerfile, not a tar: -f has nothing to name".into(),
            )
            .into());
        }
        (dir, a.file.clone())
    } else {
        (PathBuf::from(&context_arg), a.file.clone())
    };
    if !context.is_dir() {
        return Err(UsageError(format!(
            "build: the context {} is not a directory",
            context.display()
        ))
        .into());
    }
    if stdin_file {
        let dir = mounts::run_root(&store)?.join(format!("{}-dockerfile", std::process::id()));
        std::fs::create_dir(&dir).with_context(|| dir.display().to_string())?;
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut text)?;
        let f = dir.join("Dockerfile");
        std::fs::write(&f, text)?;
        dockerfile = Some(f);
        temp = Some(TempContext(dir));
    }
    let mut tags = tags.into_iter();
    let opts = BuildOptions {
        context,
        dockerfile,
        tag: tags.next(),
        more_tags: tags.collect(),
        build_args,
        no_cache: a.no_cache,
        labels,
        pull: a.pull,
        secrets,
        target: a.target,
        insecure: a.transport.insecure,
        ca_cert: a.transport.ca_cert.clone(),
    };
    // A lazily pulled FROM image's data comes over the same transport.
    super::lazy::install_fetcher_with(a.transport.client_options());
    let built = if a.quiet {
        // What RUN commands print goes with the progress: stdout is the ID's.
        let saved = nix::unistd::dup(std::io::stdout().as_fd())?;
        let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
        std::io::stdout().flush()?;
        nix::unistd::dup2_stdout(&null)?;
        let built = build(&store, &opts, &mut std::io::sink());
        nix::unistd::dup2_stdout(&saved)?;
        built
    } else {
        build(&store, &opts, &mut std::io::stdout())
    }
    .context("build")?;
    drop(temp);
    let id = if a.compression == "estargz" {
        let converted = layerfs::image::to_estargz(&store, &built.manifest.digest.hex())
            .context("build: eStargz layers")?;
        let tags: Vec<_> = opts.tag.iter().chain(&opts.more_tags).map(Some).collect();
        for t in if tags.is_empty() { vec![None] } else { tags } {
            layerfs::image::name_image(&store, &converted.manifest, t)
                .context("build: naming the eStargz image")?;
        }
        converted.id
    } else {
        built.id
    };
    if let Some(p) = &a.iidfile {
        std::fs::write(p, id.to_string()).with_context(|| p.display().to_string())?;
    }
    println!("{id}");
    Ok(())
}
