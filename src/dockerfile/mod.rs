//! `build`: a Dockerfile run step by step over images in the store. FROM
//! starts from a stored image (or scratch); RUN runs in a container of the
//! current image (see `run`) and commits its changes as one layer; COPY,
//! ADD and a WORKDIR that creates its directory write one layer directly;
//! the other instructions change only the config. Every step makes an
//! image, recorded in the build cache under a key of its parent, its
//! instruction and what it reads, so an unchanged step is not run again and
//! a rebuild of an unchanged Dockerfile writes nothing. Config-only steps
//! store no image of their own: their changes ride with the next stored
//! one (a layer step's, a RUN's base, the result), so 2,000 ENV lines cost
//! one config blob, not 2,000 growing ones. History records every step.
//! Errors name the Dockerfile line.
//!
//! A multi-stage Dockerfile builds the stages its target needs (see
//! `stage`), in order; a stage starts FROM an image or an earlier stage's
//! result, and `COPY --from` reads an earlier stage's tree or an image's.
//! Every stage's steps are keyed as above, so each is cached on its own.
//! ONBUILD triggers of a base image run right after its FROM.

mod cache;
pub mod context;
mod copy;
pub mod ignore;
pub mod mounts;
pub mod parse;
mod prune;
pub mod secrets;
pub mod stage;
pub mod stdin;

use crate::commit::{CommitError, CommitOptions, commit};
use crate::container::{self, ContainerError};
use crate::image::{ImageError, layer_descriptor, name_image, new_config, push_layer, store_image};
use crate::layer::LayerError;
use crate::oci::{Descriptor, HistoryEntry, ImageConfig, Platform, Reference, time};
use crate::run::{self, RunError, RunSpec};
use crate::store::{Hold, Store, StoreError};
use crate::union::{UnionError, UpperDir};
use cache::{Cache, Entry};
use context::{Context, ContextError};
use copy::{CopySpec, LayerBuild, chown_ids};
use parse::{Args, Dockerfile, Instruction, Keyword};
pub use prune::{PruneReport, prune};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;

use crate::registry;

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("{0}")]
    Msg(String),
    #[error("the command exited with code {0}")]
    Exit(i32),
    #[error("image {0} is not in the store: pull or load it first")]
    NoImage(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Union(#[from] UnionError),
    #[error(transparent)]
    Container(#[from] ContainerError),
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{file}:{line}: {msg}")]
    Parse {
        file: String,
        line: usize,
        msg: String,
    },
    #[error("{file}:{line}: {text}: {source}")]
    Step {
        file: String,
        line: usize,
        text: String,
        source: Box<StepError>,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("build context {0}")]
    Context(#[from] ContextError),
    #[error("target stage {0:?} could not be found in {1}")]
    NoTarget(String, String),
    #[error(transparent)]
    Setup(#[from] StepError),
}

#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    pub context: PathBuf,
    /// Default: `Dockerfile` in the context.
    pub dockerfile: Option<PathBuf>,
    pub tag: Option<Reference>,
    pub build_args: Vec<(String, String)>,
    /// Run every step, using no cache (the results still fill it).
    pub no_cache: bool,
    /// More names for the result (`-t` given several times).
    pub more_tags: Vec<Reference>,
    /// `--label`: labels set on the result.
    pub labels: Vec<(String, String)>,
    /// `--pull`: pull FROM images even when the store has them.
    pub pull: bool,
    /// `--secret`: what `RUN --mount=type=secret` may mount.
    pub secrets: Vec<secrets::SecretSpec>,
    /// The stage to build (`--target`): by default the last.
    pub target: Option<String>,
    /// How FROM images are pulled and a lazy one's data fetched: plain HTTP
    /// or unverified TLS (`--insecure`), an extra CA (`--ca-cert`).
    pub insecure: bool,
    pub ca_cert: Option<PathBuf>,
}

impl BuildOptions {
    fn client(&self) -> registry::ClientOptions {
        let mut o = registry::ClientOptions::new(registry::RegistryConfig::from_env());
        o.insecure = self.insecure;
        o.ca_cert = self.ca_cert.clone();
        o
    }
}

#[derive(Clone, Debug)]
pub struct Built {
    /// The image ID (config digest).
    pub id: crate::oci::Digest,
    pub manifest: Descriptor,
    pub steps: usize,
    /// Steps served from the cache.
    pub cached: usize,
    /// Layers this build wrote.
    pub new_layers: usize,
}

/// A finished stage: the image it made.
#[derive(Clone)]
struct StageImage {
    config: ImageConfig,
    layers: Vec<Descriptor>,
    image: Entry,
}

/// The image a build is at, between steps.
struct State {
    config: ImageConfig,
    layers: Vec<Descriptor>,
    image: Entry,
    /// Cmd came from the base image (an ENTRYPOINT then clears it, as Docker does).
    cmd_from_base: bool,
    shell: Vec<String>,
    /// ARGs declared in this stage, with their values.
    args: BTreeMap<String, Option<String>>,
    /// Cache keys of the config-only steps applied to `config` since `image`
    /// was stored, oldest first; the last keys the image they make.
    pending: Vec<String>,
}

impl State {
    /// What a step's cache key names as its parent: the last stored image,
    /// or the chain of config-only steps applied to it since.
    fn parent_key(&self) -> String {
        match self.pending.last() {
            Some(k) => k.clone(),
            None => self.image.manifest.to_string(),
        }
    }

    fn lookup(&self, k: &str) -> Option<String> {
        let env = self.config.config.as_ref().and_then(|c| c.env.as_ref());
        if let Some(v) = env.and_then(|e| {
            e.iter()
                .find_map(|kv| kv.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
        }) {
            return Some(v.to_string());
        }
        self.args.get(k).cloned().flatten()
    }

    fn workdir(&self) -> String {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.working_dir.clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into())
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn history(text: &str, empty: bool) -> HistoryEntry {
    HistoryEntry {
        created: Some(time::now_rfc3339()),
        created_by: Some(text.to_string()),
        comment: Some("layerfs build".into()),
        empty_layer: empty,
        ..Default::default()
    }
}

fn msg(s: impl Into<String>) -> StepError {
    StepError::Msg(s.into())
}

/// Holds the images a build starts from against gc; removes its hold
/// when the build ends, however it ends.
struct BuildHold<'a> {
    store: &'a Store,
    id: String,
    manifests: Vec<crate::oci::Digest>,
}

impl BuildHold<'_> {
    fn add(&mut self, manifest: crate::oci::Digest) -> Result<(), StepError> {
        if self.manifests.contains(&manifest) {
            return Ok(());
        }
        self.manifests.push(manifest);
        self.store.add_hold(&Hold {
            id: self.id.clone(),
            manifests: self.manifests.clone(),
            what: "a running build".into(),
            pid: Some(std::process::id()),
        })?;
        Ok(())
    }
}

impl Drop for BuildHold<'_> {
    fn drop(&mut self) {
        let _ = self.store.remove_hold(&self.id);
    }
}

impl Builder<'_> {
    /// Pulls a FROM image the store lacks, as `docker build` does.
    fn pull(&mut self, name: &str) -> Result<(), StepError> {
        let _ = writeln!(self.out, " ---> pulling {name}");
        registry::pull_missing_with(self.store, name, self.opts.client()).map_err(|e| {
            StepError::Msg(format!(
                "image {name} is not in the store and pulling it failed: {e}"
            ))
        })?;
        Ok(())
    }
}

/// Builds `opts.dockerfile` in `opts.context`; progress goes to `out`, the
/// output of RUN commands to our own stdout and stderr.
pub fn build(store: &Store, opts: &BuildOptions, out: &mut dyn Write) -> Result<Built, BuildError> {
    let file = opts
        .dockerfile
        .clone()
        .unwrap_or_else(|| opts.context.join("Dockerfile"));
    let file_name = file.display().to_string();
    let text = std::fs::read_to_string(&file).map_err(|e| BuildError::Io {
        path: file_name.clone(),
        source: e,
    })?;
    let df = parse::parse(&text).map_err(|e| BuildError::Parse {
        file: file_name.clone(),
        line: e.line,
        msg: e.msg,
    })?;
    let ctx = Context::open(&opts.context)?;
    prune_step_containers(store);
    let cache = Cache::open(store)?;
    let parse_err = |e: parse::ParseError| BuildError::Parse {
        file: file_name.clone(),
        line: e.line,
        msg: e.msg,
    };
    let mut b = Builder {
        store,
        known: cache.known_keys(),
        cache,
        ctx,
        df: &df,
        opts,
        out,
        state: None,
        stages: Vec::new(),
        current: 0,
        done: Vec::new(),
        meta_args: platform_args(),
        used_args: BTreeSet::new(),
        cached: 0,
        new_layers: 0,
        hold: BuildHold {
            store,
            id: format!("build-{}", std::process::id()),
            manifests: Vec::new(),
        },
    };
    // The ARGs before the first FROM, then the stages the target needs.
    let first_from = df
        .instructions
        .iter()
        .position(|i| i.keyword == Keyword::From)
        .unwrap_or(df.instructions.len());
    let step_err = |ins: &Instruction, source: StepError| BuildError::Step {
        file: file_name.clone(),
        line: ins.line,
        text: short(&ins.text),
        source: Box::new(source),
    };
    // Their values name the stages' images, and so which stages run; they
    // are shown with the steps once the count is known.
    for (n, ins) in df.instructions.iter().enumerate().take(first_from) {
        b.step(n, ins).map_err(|e| step_err(ins, e))?;
    }
    let mut total = first_from;
    let mut plan = Vec::new();
    let stages = {
        let meta = &b.meta_args;
        stage::stages(&df, &|k| meta.get(k).cloned().flatten()).map_err(parse_err)?
    };
    let target = stage::target(&stages, opts.target.as_deref()).ok_or_else(|| {
        BuildError::NoTarget(opts.target.clone().unwrap_or_default(), file_name.clone())
    })?;
    let need = stage::needed(&df, &stages, target).map_err(parse_err)?;
    for (i, st) in stages.iter().enumerate() {
        if need[i] {
            total += st.end - st.from;
            plan.push(i);
        }
    }
    b.done = vec![None; stages.len()];
    b.stages = stages;
    for (k, ins) in df.instructions.iter().enumerate().take(first_from) {
        let _ = writeln!(b.out, "STEP {}/{total}: {}", k + 1, ins.text);
        let _ = writeln!(b.out, "--> (build argument)");
    }
    let mut k = first_from;
    for i in plan {
        b.current = i;
        let (from, end) = (b.stages[i].from, b.stages[i].end);
        for (n, ins) in df.instructions.iter().enumerate().take(end).skip(from) {
            k += 1;
            let _ = writeln!(b.out, "STEP {k}/{total}: {}", ins.text);
            let _ = b.out.flush();
            b.step(n, ins).map_err(|e| step_err(ins, e))?;
            if ins.keyword == Keyword::Arg {
                let _ = writeln!(b.out, "--> (build argument)");
            }
        }
        if i == target && !opts.labels.is_empty() {
            b.add_labels(&opts.labels)?;
        }
        b.materialize()?;
        let st = b.state.take().ok_or_else(|| msg("no FROM"))?;
        b.done[i] = Some(StageImage {
            config: st.config,
            layers: st.layers,
            image: st.image,
        });
    }
    let state = b.done[target].take().ok_or_else(|| BuildError::Parse {
        file: file_name.clone(),
        line: 1,
        msg: "no FROM instruction".into(),
    })?;
    let unused: Vec<&String> = opts
        .build_args
        .iter()
        .map(|(k, _)| k)
        .filter(|k| !b.used_args.contains(*k) && !PROXY_ARGS.contains(&k.as_str()))
        .collect();
    if !unused.is_empty() {
        let _ = writeln!(
            b.out,
            "[Warning] build args that no ARG declares were not used: {unused:?}"
        );
    }
    let desc = state.image.descriptor();
    name_image(store, &desc, opts.tag.as_ref()).map_err(StepError::from)?;
    for t in &opts.more_tags {
        name_image(store, &desc, Some(t)).map_err(StepError::from)?;
    }
    b.cache.refresh_hold(store)?;
    let _ = writeln!(b.out, "Successfully built {}", state.image.id.short());
    for t in opts.tag.iter().chain(&opts.more_tags) {
        let _ = writeln!(b.out, "Successfully tagged {}", t.canonical());
    }
    Ok(Built {
        id: state.image.id,
        manifest: desc,
        steps: total,
        cached: b.cached,
        new_layers: b.new_layers,
    })
}

impl Builder<'_> {
    /// The manifest and layers of each stage or image a RUN's mounts bind
    /// from, by the name they give.
    fn mount_sources(
        &mut self,
        run_mounts: &[mounts::RunMount],
    ) -> Result<BTreeMap<String, (crate::oci::Digest, Vec<crate::oci::Digest>)>, StepError> {
        let mut out = BTreeMap::new();
        for f in mounts::from_names(run_mounts) {
            let (manifest, layers) =
                match stage::source(&self.stages, self.current, &f).map_err(StepError::Msg)? {
                    stage::Source::Stage(j) => {
                        let s = self.stage_image(j)?;
                        (s.image.manifest, s.layers)
                    }
                    stage::Source::Image(name) => {
                        let (_, layers, image) = self.base_image(&name)?;
                        self.hold.add(image.manifest)?;
                        (image.manifest, layers)
                    }
                };
            out.insert(f, (manifest, layers.iter().map(|l| l.digest).collect()));
        }
        Ok(out)
    }

    /// `build --label`: on the result's config, without a history entry,
    /// as Docker sets them.
    fn add_labels(&mut self, labels: &[(String, String)]) -> Result<(), StepError> {
        let st = self.state()?;
        let mut text = String::from("build --label");
        for (k, v) in labels {
            st.config.add_label(k, v);
            text.push_str(&format!(" {k}={v}"));
        }
        let key = cache::key(&[&st.parent_key(), &text]);
        st.pending.push(key);
        Ok(())
    }
}

/// BuildKit's automatic ARGs in the global scope: BUILDPLATFORM,
/// TARGETPLATFORM and their OS, ARCH and VARIANT parts, all this machine's.
fn platform_args() -> BTreeMap<String, Option<String>> {
    let host = Platform::host();
    let mut args = BTreeMap::new();
    for side in ["BUILD", "TARGET"] {
        let mut set = |k: &str, v: String| args.insert(format!("{side}{k}"), Some(v));
        set("PLATFORM", host.to_string());
        set("OS", host.os.clone());
        set("ARCH", host.architecture.clone());
        set("VARIANT", host.variant.clone().unwrap_or_default());
    }
    args
}

/// Removes the RUN containers of builds that died (their build process
/// gone, not mounted): a killed build cannot clean up.
fn prune_step_containers(store: &Store) {
    let Ok(all) = container::list(store) else {
        return;
    };
    for c in all {
        if c.build_pid.is_some_and(|p| !crate::store::process_alive(p))
            && let Ok(None | Some((_, false))) =
                crate::mount::records::find_container(store, &c.name)
        {
            // What the runtime kept of it too (its state, its cgroups).
            run::control::forget(&c);
            let _ = container::remove(store, &c);
        }
    }
}

/// An instruction shortened for an error line.
fn short(text: &str) -> String {
    let one: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() <= 60 {
        return one;
    }
    format!("{}…", one.chars().take(59).collect::<String>())
}

struct Builder<'a> {
    store: &'a Store,
    cache: Cache,
    /// The cache's keys as the build began, for config-only steps.
    known: std::collections::HashSet<String>,
    ctx: Context,
    df: &'a Dockerfile,
    opts: &'a BuildOptions,
    out: &'a mut dyn Write,
    state: Option<State>,
    stages: Vec<stage::Stage>,
    /// The stage being built.
    current: usize,
    /// The images of the stages built so far.
    done: Vec<Option<StageImage>>,
    /// ARGs before the first FROM (usable in FROM).
    meta_args: BTreeMap<String, Option<String>>,
    used_args: BTreeSet<String>,
    cached: usize,
    new_layers: usize,
    hold: BuildHold<'a>,
}

impl<'a> Builder<'a> {
    fn build_arg(&mut self, name: &str) -> Option<String> {
        let v = self
            .opts
            .build_args
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone());
        if v.is_some() {
            self.used_args.insert(name.to_string());
        }
        v
    }

    fn state(&mut self) -> Result<&mut State, StepError> {
        self.state
            .as_mut()
            .ok_or_else(|| msg("no FROM before this instruction"))
    }

    fn step(&mut self, n: usize, ins: &Instruction) -> Result<(), StepError> {
        let esc = self.df.escape;
        match ins.keyword {
            Keyword::From => self.from(n, ins),
            Keyword::Arg => {
                let raw = shell_text(ins)?;
                let words = {
                    let st = self.state.as_ref();
                    let meta = &self.meta_args;
                    let vars = |k: &str| match st {
                        Some(s) => s.lookup(k),
                        None => meta.get(k).cloned().flatten(),
                    };
                    parse::words(&raw, esc, &vars).map_err(StepError::Msg)?
                };
                for w in words {
                    let (name, default) = match w.split_once('=') {
                        Some((k, v)) => (k.to_string(), Some(v.to_string())),
                        None => (w.clone(), None),
                    };
                    if name.is_empty() {
                        return Err(msg("ARG needs a name"));
                    }
                    let given = self.build_arg(&name);
                    // Inside a stage, a bare ARG takes the global one's
                    // value; a global one keeps its own (the automatic
                    // platform ARGs).
                    let value = given
                        .or(default)
                        .or_else(|| self.meta_args.get(&name).cloned().flatten());
                    match self.state.as_mut() {
                        Some(s) => {
                            s.args.insert(name, value);
                        }
                        None => {
                            self.meta_args.insert(name, value);
                        }
                    }
                }
                Ok(())
            }
            Keyword::Run => self.run_step(n, ins),
            Keyword::Copy | Keyword::Add => self.copy_step(ins),
            Keyword::Workdir => self.workdir_step(ins),
            _ => self.config_step(ins),
        }
    }

    fn from(&mut self, n: usize, ins: &Instruction) -> Result<(), StepError> {
        if let Some(p) = ins.flag("platform") {
            // Only this machine's platform can be built: say so for any other.
            let meta = &self.meta_args;
            let p = parse::word(p, self.df.escape, &|k| meta.get(k).cloned().flatten())
                .map_err(StepError::Msg)?;
            let host = Platform::host();
            let bare = format!("{}/{}", host.os, host.architecture);
            if p != host.to_string() && p != bare {
                return Err(msg(format!(
                    "FROM --platform={p}: only this machine's platform ({host}) can be built"
                )));
            }
        }
        let src = stage::base(&self.stages, self.current)
            .ok_or_else(|| msg("FROM outside the stages planned"))?;
        let (config, layers, image) = match src {
            stage::Source::Stage(j) => {
                let s = self.stage_image(j)?;
                (s.config, s.layers, s.image)
            }
            stage::Source::Image(name) => self.base_image(&name)?,
        };
        self.hold.add(image.manifest)?;
        let _ = writeln!(self.out, "--> {}", image.id.short());
        let cc = config.config.as_ref();
        let cmd_from_base = cc.is_some_and(|c| c.cmd.is_some());
        let shell = cc
            .and_then(|c| c.shell.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
        let triggers = cc.and_then(|c| c.on_build.clone()).unwrap_or_default();
        let mut state = State {
            config,
            layers,
            image,
            cmd_from_base,
            shell,
            args: BTreeMap::new(),
            pending: Vec::new(),
        };
        if !triggers.is_empty() {
            // The triggers run here, and the child image has none of its own.
            let key = cache::key(&[&state.parent_key(), "ONBUILD triggers run"]);
            state.config.container_config().on_build = None;
            state.pending.push(key);
        }
        self.state = Some(state);
        for t in &triggers {
            let _ = writeln!(self.out, "--> running ONBUILD trigger: {t}");
            let trigger =
                parse::trigger(ins.line, t).map_err(|e| msg(format!("ONBUILD {t}: {}", e.msg)))?;
            self.step(n, &trigger)
                .map_err(|e| msg(format!("ONBUILD {t}: {e}")))?;
        }
        Ok(())
    }

    /// The image an earlier stage made.
    fn stage_image(&self, j: usize) -> Result<StageImage, StepError> {
        self.done
            .get(j)
            .cloned()
            .flatten()
            .ok_or_else(|| msg(format!("stage {j} was not built")))
    }

    /// A stored image (pulled if missing), or scratch.
    fn base_image(
        &mut self,
        name: &str,
    ) -> Result<(ImageConfig, Vec<Descriptor>, Entry), StepError> {
        if name.eq_ignore_ascii_case("scratch") {
            let key = cache::key(&["FROM scratch", &Platform::host().to_string()]);
            let (config, image) = match self.cache.get(self.store, &key) {
                Some((e, m)) => (self.store.read_config(&m.config.digest)?, e),
                None => {
                    let _lock = self.store.lock_shared()?;
                    let config = new_config();
                    let e = Entry::from(&store_image(self.store, &config.to_json(), &[])?);
                    self.cache.put(self.store, &key, e.clone())?;
                    (config, e)
                }
            };
            return Ok((config, Vec::new(), image));
        }
        if self.opts.pull {
            let _ = writeln!(self.out, " ---> pulling {name} (--pull)");
            registry::pull_missing_with(self.store, name, self.opts.client())
                .map_err(|e| msg(format!("--pull: pulling {name} failed: {e}")))?;
        }
        let r = match self.store.resolve(name) {
            Err(StoreError::ImageNotFound(_)) => {
                self.pull(name)?;
                self.store.resolve(name)?
            }
            r => r?,
        };
        // Its size, for a build that tags it unchanged.
        let size = match r.top.digest == r.manifest_digest {
            true => r.top.size,
            false => self.store.blob_size(&r.manifest_digest)?,
        };
        let image = Entry {
            manifest: r.manifest_digest,
            size,
            id: r.config_digest,
        };
        let layers = r
            .manifest
            .layers
            .iter()
            .map(crate::image::oci_layer_descriptor)
            .collect();
        Ok((r.config, layers, image))
    }

    /// Makes a step's image the one the next step builds on.
    fn set_current(
        &mut self,
        image: Entry,
        config: ImageConfig,
        layers: Vec<Descriptor>,
    ) -> Result<(), StepError> {
        let st = self.state()?;
        st.config = config;
        st.layers = layers;
        st.image = image;
        st.pending.clear();
        Ok(())
    }

    /// Serves a step from the cache when it can; says so.
    fn cached(&mut self, key: &str) -> Result<bool, StepError> {
        if self.opts.no_cache {
            return Ok(false);
        }
        let Some((e, m)) = self.cache.get(self.store, key) else {
            return Ok(false);
        };
        let config = self.store.read_config(&m.config.digest)?;
        let _ = writeln!(self.out, "--> Using cache {}", e.id.short());
        self.set_current(e, config, m.layers)?;
        self.cached += 1;
        Ok(true)
    }

    /// Stores a step's image, records it in the cache, makes it current.
    /// The config-only steps before it are in `config` already: they are
    /// marked known, not stored on their own.
    fn record(
        &mut self,
        key: &str,
        config: ImageConfig,
        layers: Vec<Descriptor>,
    ) -> Result<(), StepError> {
        let chain = std::mem::take(&mut self.state()?.pending);
        let e = self.store_step(key, &config, &layers, &chain)?;
        let _ = writeln!(self.out, "--> {}", e.id.short());
        self.set_current(e, config, layers)
    }

    /// Stores an image and records it in the cache under `key` (and the
    /// config-only steps of `chain` that led to it as known).
    fn store_step(
        &mut self,
        key: &str,
        config: &ImageConfig,
        layers: &[Descriptor],
        chain: &[String],
    ) -> Result<Entry, StepError> {
        let _lock = self.store.lock_shared()?;
        let e = Entry::from(&store_image(self.store, &config.to_json(), layers)?);
        self.cache.put_chain(self.store, key, e.clone(), chain)?;
        Ok(e)
    }

    /// Stores the image the pending config-only steps made (or takes it
    /// from the cache), so that it has a manifest.
    fn materialize(&mut self) -> Result<(), StepError> {
        let st = self.state()?;
        let chain = std::mem::take(&mut st.pending);
        let Some((key, before)) = chain.split_last() else {
            return Ok(());
        };
        if !self.opts.no_cache
            && let Some((e, m)) = self.cache.get(self.store, key)
        {
            let config = self.store.read_config(&m.config.digest)?;
            return self.set_current(e, config, m.layers);
        }
        let st = self.state()?;
        let (config, layers) = (st.config.clone(), st.layers.clone());
        let e = self.store_step(key, &config, &layers, before)?;
        self.state()?.image = e;
        Ok(())
    }

    fn parent(&mut self) -> Result<String, StepError> {
        Ok(self.state()?.parent_key())
    }

    /// A metadata-only step: the config changes, an empty-layer history entry.
    fn config_step(&mut self, ins: &Instruction) -> Result<(), StepError> {
        let esc = self.df.escape;
        let st = self.state.as_ref().ok_or_else(|| msg("no FROM"))?;
        let vars = |k: &str| st.lookup(k);
        let mut config = st.config.clone();
        let mut cmd_from_base = st.cmd_from_base;
        let mut shell = st.shell.clone();
        let command = |args: &Args| match args {
            Args::Exec(v) => v.clone(),
            Args::Shell(s) => {
                let mut v = st.shell.clone();
                v.push(s.clone());
                v
            }
        };
        // What the key and history record: the instruction after expansion.
        let canonical: String;
        match ins.keyword {
            Keyword::Env | Keyword::Label => {
                let raw = shell_text(ins)?;
                let pairs = key_values(&raw, esc, &vars)?;
                for (k, v) in &pairs {
                    if ins.keyword == Keyword::Env {
                        config.set_env(k, v);
                    } else {
                        config.add_label(k, v);
                    }
                }
                let kv: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                canonical = format!("{} {}", ins.keyword, kv.join(" "));
            }
            Keyword::User => {
                let u = parse::word(&shell_text(ins)?, esc, &vars).map_err(StepError::Msg)?;
                config.container_config().user = Some(u.clone());
                canonical = format!("USER {u}");
            }
            Keyword::Cmd => {
                let c = command(&ins.args);
                config.container_config().cmd = Some(c.clone());
                cmd_from_base = false;
                canonical = format!("CMD {}", serde_json::to_string(&c).unwrap_or_default());
            }
            Keyword::Entrypoint => {
                let c = command(&ins.args);
                let cc = config.container_config();
                cc.entrypoint = (!c.is_empty()).then(|| c.clone());
                if cmd_from_base {
                    cc.cmd = None;
                    cmd_from_base = false;
                }
                canonical = format!(
                    "ENTRYPOINT {}",
                    serde_json::to_string(&c).unwrap_or_default()
                );
            }
            Keyword::Expose => {
                let ports = parse::words(&shell_text(ins)?, esc, &vars).map_err(StepError::Msg)?;
                for p in &ports {
                    config.expose(p);
                }
                canonical = format!("EXPOSE {}", ports.join(" "));
            }
            Keyword::Volume => {
                let vols = match &ins.args {
                    Args::Exec(v) => v.clone(),
                    Args::Shell(s) => parse::words(s, esc, &vars).map_err(StepError::Msg)?,
                };
                for v in &vols {
                    config.add_volume(v);
                }
                canonical = format!(
                    "VOLUME {}",
                    serde_json::to_string(&vols).unwrap_or_default()
                );
            }
            Keyword::StopSignal => {
                let s = parse::word(&shell_text(ins)?, esc, &vars).map_err(StepError::Msg)?;
                config.container_config().stop_signal = Some(s.clone());
                canonical = format!("STOPSIGNAL {s}");
            }
            Keyword::Maintainer => {
                let a = parse::word(&shell_text(ins)?, esc, &vars).map_err(StepError::Msg)?;
                config.author = Some(a.clone());
                canonical = format!("MAINTAINER {a}");
            }
            Keyword::Shell => {
                let Args::Exec(v) = &ins.args else {
                    return Err(msg("SHELL needs a JSON array"));
                };
                if v.is_empty() {
                    return Err(msg("SHELL needs at least the shell"));
                }
                shell = v.clone();
                config.container_config().shell = Some(v.clone());
                canonical = format!("SHELL {}", serde_json::to_string(v).unwrap_or_default());
            }
            Keyword::Healthcheck => {
                let h = parse::healthcheck(ins).map_err(StepError::Msg)?;
                let hc = crate::oci::Healthcheck {
                    test: h.test,
                    interval: h.interval,
                    timeout: h.timeout,
                    start_period: h.start_period,
                    start_interval: h.start_interval,
                    retries: h.retries,
                };
                canonical = format!(
                    "HEALTHCHECK {}",
                    serde_json::to_string(&hc).unwrap_or_default()
                );
                config.container_config().healthcheck = Some(hc);
            }
            Keyword::Onbuild => {
                let trigger = shell_text(ins)?;
                config
                    .container_config()
                    .on_build
                    .get_or_insert_with(Vec::new)
                    .push(trigger.clone());
                canonical = format!("ONBUILD {trigger}");
            }
            _ => return Err(msg(format!("{} is not a config instruction", ins.keyword))),
        }
        // Keyed as a chain from the last stored image; stored later, once.
        let key = cache::key(&[&st.parent_key(), &canonical]);
        config.created = Some(time::now_rfc3339());
        config.history.push(history(&canonical, true));
        let st = self.state()?;
        st.cmd_from_base = cmd_from_base;
        st.shell = shell;
        st.config = config;
        st.pending.push(key.clone());
        let known = self.known.contains(&key) || self.known.contains(&cache::chain_marker(&key));
        if known && !self.opts.no_cache {
            let _ = writeln!(self.out, "--> Using cache (config)");
            self.cached += 1;
        } else {
            let _ = writeln!(self.out, "--> (config)");
        }
        Ok(())
    }

    fn run_step(&mut self, n: usize, ins: &Instruction) -> Result<(), StepError> {
        if let Some((f, _)) = ins.flags.iter().find(|(f, _)| f != "mount") {
            return Err(msg(format!("RUN --{f} is not supported")));
        }
        let run_mounts = mounts::of_flags(&ins.flags)?;
        let from_images = self.mount_sources(&run_mounts)?;
        let st = self.state.as_ref().ok_or_else(|| msg("no FROM"))?;
        let argv = run_argv(&st.shell, ins);
        // Build args reach RUN as environment (Env wins over them), and
        // their values are part of the key.
        let env_keys: BTreeSet<String> = st
            .config
            .config
            .as_ref()
            .and_then(|c| c.env.as_ref())
            .map(|e| {
                e.iter()
                    .map(|kv| kv.split('=').next().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default();
        let arg_env: Vec<String> = st
            .args
            .iter()
            .filter(|(k, v)| v.is_some() && !env_keys.contains(*k))
            .map(|(k, v)| format!("{k}={}", v.clone().unwrap_or_default()))
            .collect();
        // The proxy args need no ARG, and stay out of the key and history.
        let proxy_env = proxy_env(&self.opts.build_args, &st.args, &env_keys);
        let workdir = st.workdir();
        let created_by = match &ins.args {
            Args::Exec(v) => format!("RUN {}", serde_json::to_string(v).unwrap_or_default()),
            Args::Shell(s) if !ins.heredocs.is_empty() => {
                format!("RUN {}", with_heredocs(s, &ins.heredocs))
            }
            Args::Shell(s) => format!("RUN {}", s),
        };
        let mount_key = mounts::key_text(&run_mounts, &self.ctx, &workdir, &from_images)?;
        let parent = self.parent()?;
        let argv_json = serde_json::to_string(&argv).unwrap_or_default();
        let env_text = arg_env.join("\n");
        let mut parts: Vec<&str> = vec![&parent, "RUN", &argv_json, &env_text];
        if !mount_key.is_empty() {
            parts.push(&mount_key);
        }
        let key = cache::key(&parts);
        if self.cached(&key)? {
            return Ok(());
        }
        // The command runs in a container of a stored image.
        self.materialize()?;
        let _ = self.out.flush();
        let st = self.state()?;
        let image = st.image.manifest;
        let layers: Vec<_> = st.layers.iter().map(|l| l.digest).collect();
        let config = st.config.config.clone().unwrap_or_default();
        let name = format!("build-{}-{}-{}", std::process::id(), now_secs(), n + 1);
        let mut bound = Vec::new();
        let store = self.store;
        let prepared = mounts::prepare(
            &run_mounts,
            mounts::Inputs {
                store: self.store,
                ctx: &self.ctx,
                secrets: &self.opts.secrets,
                workdir: &workdir,
                step: format!("{}-{}", std::process::id(), n + 1),
                tree_of: &mut |f: &str| {
                    let (manifest, layers) = from_images
                        .get(f)
                        .ok_or_else(|| msg(format!("--mount from={f}: not resolved")))?;
                    let m = mounts::ImageMount::start(
                        store,
                        &format!("{name}-from{}", bound.len()),
                        &format!("build step {} --mount from={f}", n + 1),
                        *manifest,
                        layers,
                    )?;
                    let path = m.path.clone();
                    bound.push(m);
                    Ok(path)
                },
            },
        )?;
        let c = run::create_container(
            self.store,
            Some(&name),
            &format!("build step {}", n + 1),
            image,
            &layers,
            Some(std::process::id()),
        )?;
        let mut env = arg_env;
        env.extend(proxy_env);
        env.extend(prepared.env.iter().cloned());
        // As `buildah bud --isolation oci`: the same runtime as `run`; the
        // host's network, as RUN steps have always had it.
        let spec = RunSpec {
            command: run::Command::Exact(argv),
            env,
            volumes: prepared.volumes.clone(),
            stdin_null: true,
            network: run::Network::Host,
            ..RunSpec::default()
        };
        let ran = run::run(self.store, &c, &config, &spec);
        // The mounts' host side goes before the commit: nothing of it is
        // in the container's changes.
        drop(prepared);
        drop(bound);
        let result = match ran {
            Ok(0) => self.commit_run(&key, &c, &created_by),
            Ok(code) => Err(StepError::Exit(code)),
            Err(e) => Err(e.into()),
        };
        let removed = container::remove(self.store, &c);
        result?;
        removed?;
        Ok(())
    }

    /// A RUN step's changes as a layer (no layer when it changed nothing).
    fn commit_run(
        &mut self,
        key: &str,
        c: &container::Container,
        created_by: &str,
    ) -> Result<(), StepError> {
        let upper = UpperDir::open_existing(&c.upper(), &c.work()).map_err(|e| StepError::Io {
            path: c.upper().display().to_string(),
            source: e,
        })?;
        let changed = !upper
            .read_dir(b"")
            .map_err(|e| StepError::Io {
                path: c.upper().display().to_string(),
                source: e,
            })?
            .is_empty();
        if !changed {
            let st = self.state()?;
            let mut config = st.config.clone();
            let layers = st.layers.clone();
            config.created = Some(time::now_rfc3339());
            config.history.push(history(created_by, true));
            return self.record(key, config, layers);
        }
        let (e, made) = {
            let _lock = self.store.lock_shared()?;
            let made = commit(
                self.store,
                c,
                &CommitOptions {
                    created_by: Some(created_by.to_string()),
                    message: Some("layerfs build".into()),
                    ..Default::default()
                },
            )?;
            let e = Entry::from(&made.image);
            // Held by the cache from here, as other step images.
            self.cache.put(self.store, key, e.clone())?;
            (e, made)
        };
        let _ = writeln!(self.out, "--> {}", e.id.short());
        self.set_current(e, made.config, made.layers)?;
        self.new_layers += 1;
        Ok(())
    }

    /// Writes one layer with `f`, then records it with its history entry.
    /// `tree` is the current image's tree, if the step already opened it.
    fn layer_step(
        &mut self,
        key: &str,
        created_by: &str,
        tree: Option<copy::ImageTree>,
        f: impl FnOnce(&mut LayerBuild, &Context) -> Result<(), StepError>,
    ) -> Result<(), StepError> {
        let st = self.state.as_ref().ok_or_else(|| msg("no FROM"))?;
        let mut config = st.config.clone();
        let mut layers = st.layers.clone();
        let info = {
            let _lock = self.store.lock_shared()?;
            let tree = match tree {
                Some(t) => t,
                None => {
                    let digests: Vec<_> = layers.iter().map(|l| l.digest).collect();
                    copy::ImageTree::open(self.store, &digests)?
                }
            };
            let mut lb = LayerBuild::new(self.store, tree, now_secs())?;
            f(&mut lb, &self.ctx)?;
            lb.finish()?
        };
        config.created = Some(time::now_rfc3339());
        push_layer(&mut config, info.diff_id, history(created_by, false));
        layers.push(layer_descriptor(&info));
        self.new_layers += 1;
        self.record(key, config, layers)
    }

    fn copy_step(&mut self, ins: &Instruction) -> Result<(), StepError> {
        let esc = self.df.escape;
        let st = self.state.as_ref().ok_or_else(|| msg("no FROM"))?;
        let vars = |k: &str| st.lookup(k);
        let mut words = match &ins.args {
            Args::Exec(v) => v
                .iter()
                .map(|w| parse::word(w, esc, &vars))
                .collect::<Result<Vec<_>, _>>()
                .map_err(StepError::Msg)?,
            Args::Shell(s) => parse::words(s, esc, &vars).map_err(StepError::Msg)?,
        };
        if words.len() < 2 {
            return Err(msg(format!(
                "{} needs a source and a destination",
                ins.keyword
            )));
        }
        let dest_word = words.pop().unwrap_or_default();
        let add = ins.keyword == Keyword::Add;
        if add
            && let Some(u) = words
                .iter()
                .find(|w| w.starts_with("http://") || w.starts_with("https://"))
        {
            return Err(msg(format!(
                "ADD {u}: URLs are not supported; download the file into the build context"
            )));
        }
        // Heredoc sources (`COPY <<EOF /f`) are files of their own.
        let mut inline: Vec<(String, Vec<u8>)> = Vec::new();
        let mut paths: Vec<String> = Vec::new();
        for w in &words {
            let doc = ins.heredocs.iter().find(|h| {
                w.strip_prefix("<<")
                    .map(|r| r.strip_prefix('-').unwrap_or(r))
                    .is_some_and(|n| n == h.name)
            });
            match doc {
                Some(h) => {
                    let text = match h.expand {
                        true => {
                            parse::expand_vars(&h.content(), esc, &vars).map_err(StepError::Msg)?
                        }
                        false => h.content(),
                    };
                    inline.push((h.name.clone(), text.into_bytes()));
                }
                None => paths.push(w.clone()),
            }
        }
        let dest = if dest_word.starts_with('/') {
            dest_word.clone()
        } else {
            let wd = st.workdir();
            let mut d = format!("{}/{dest_word}", wd.trim_end_matches('/'));
            if (dest_word == "." || dest_word.ends_with('/')) && !d.ends_with('/') {
                d.push('/');
            }
            d
        };
        let chown = ins.flag("chown").map(str::to_string);
        let chmod = match ins.flag("chmod") {
            Some(m) => Some(
                u32::from_str_radix(m, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| msg(format!("--chmod={m}: expected an octal mode")))?,
            ),
            None => None,
        };
        if words.len() > 1 && !dest.ends_with('/') {
            return Err(msg(format!(
                "with several sources the destination must be a directory ending in /: {dest_word}"
            )));
        }
        let parents = ins.flag("parents").is_some_and(|v| v != "false");
        // What the files come from: the context, or another stage or image.
        let mut from = match ins.flag("from") {
            Some(f) => {
                let meta = &self.meta_args;
                let f = parse::word(f, esc, &|k| meta.get(k).cloned().flatten())
                    .map_err(StepError::Msg)?;
                if f.is_empty() {
                    return Err(msg("--from needs a stage or an image"));
                }
                if parents {
                    return Err(msg("COPY --parents with --from is not supported"));
                }
                if !inline.is_empty() {
                    return Err(msg("COPY --from does not take heredocs"));
                }
                let layers =
                    match stage::source(&self.stages, self.current, &f).map_err(StepError::Msg)? {
                        stage::Source::Stage(j) => self.stage_image(j)?.layers,
                        stage::Source::Image(name) => {
                            let (_, layers, image) = self.base_image(&name)?;
                            self.hold.add(image.manifest)?;
                            layers
                        }
                    };
                let digests: Vec<_> = layers.iter().map(|l| l.digest).collect();
                let mut tree = copy::ImageTree::open(self.store, &digests)?;
                let found = tree.sources(&paths)?;
                Some((f, tree, found))
            }
            None => None,
        };
        let sources = match from {
            None => self.ctx.sources(&paths)?,
            Some(_) => Vec::new(),
        };
        // What a COPY --from reads is keyed by content, as BuildKit keys
        // it: a change elsewhere in its stage leaves the step cached.
        let mut content = match &mut from {
            None => self.ctx.digest(&sources)?,
            Some((_, tree, found)) => format!("from {}", tree.digest(found)?),
        };
        for (name, data) in &inline {
            content.push_str(&cache::key(&[name, &String::from_utf8_lossy(data)]));
        }
        let st = self.state.as_ref().ok_or_else(|| msg("no FROM"))?;
        let flags: String = [
            from.as_ref().map(|(f, _, _)| format!(" --from={f}")),
            chown.as_ref().map(|c| format!(" --chown={c}")),
            chmod.map(|m| format!(" --chmod={m:o}")),
            ins.flag("link").map(|_| " --link".to_string()),
            parents.then(|| " --parents".to_string()),
        ]
        .into_iter()
        .flatten()
        .collect();
        let created_by = format!("{}{flags} {} {}", ins.keyword, words.join(" "), dest_word);
        let parent = st.parent_key();
        let key = cache::key(&[
            &parent,
            &created_by,
            &dest,
            &content,
            &format!(
                "{:?}",
                sources.iter().map(|s| s.rel.clone()).collect::<Vec<_>>()
            ),
        ]);
        if self.cached(&key)? {
            return Ok(());
        }
        self.layer_step(&key, &created_by, None, |lb, ctx| {
            let owner = match &chown {
                Some(spec) => {
                    let passwd = lb.tree.read_file("/etc/passwd")?.unwrap_or_default();
                    let group = lb.tree.read_file("/etc/group")?.unwrap_or_default();
                    Some(chown_ids(
                        spec,
                        &String::from_utf8_lossy(&passwd),
                        &String::from_utf8_lossy(&group),
                    )?)
                }
                None => None,
            };
            let spec = CopySpec {
                dest: dest.clone(),
                owner,
                chmod,
                unpack: add,
            };
            if let Some((_, mut tree, found)) = from {
                return lb.copy_image(&mut tree, &found, &spec);
            }
            if !parents {
                return lb.copy(ctx, &sources, &inline, &spec);
            }
            // --parents: each source keeps its directories below the destination.
            for src in &sources {
                let keep = match src.kind {
                    context::Kind::Dir => src.rel.as_str(),
                    _ => src.rel.rsplit_once('/').map_or("", |(d, _)| d),
                };
                let spec = CopySpec {
                    dest: format!("{}/{keep}/", dest.trim_end_matches('/')),
                    ..spec
                };
                lb.copy(ctx, std::slice::from_ref(src), &[], &spec)?;
            }
            match inline.is_empty() {
                true => Ok(()),
                false => lb.copy(ctx, &[], &inline, &spec),
            }
        })
    }

    fn workdir_step(&mut self, ins: &Instruction) -> Result<(), StepError> {
        let esc = self.df.escape;
        let st = self.state.as_ref().ok_or_else(|| msg("no FROM"))?;
        let vars = |k: &str| st.lookup(k);
        let w = parse::word(&shell_text(ins)?, esc, &vars).map_err(StepError::Msg)?;
        let joined = if w.starts_with('/') {
            w.clone()
        } else {
            format!("{}/{w}", st.workdir())
        };
        let path = format!("/{}", ignore::clean(&joined));
        let mut config = st.config.clone();
        config.container_config().working_dir = Some(path.clone());
        let created_by = format!("WORKDIR {path}");
        let parent = self.parent()?;
        let key = cache::key(&[&parent, &created_by]);
        if self.cached(&key)? {
            return Ok(());
        }
        // The directory is created (owned by root, 0755) when the image lacks it.
        let digests: Vec<_> = self.state()?.layers.iter().map(|l| l.digest).collect();
        let mut tree = copy::ImageTree::open(self.store, &digests)?;
        match tree.resolve(path.as_bytes(), true)?.node {
            Some(run::inroot::Node::Dir) => {
                config.created = Some(time::now_rfc3339());
                config.history.push(history(&created_by, true));
                let layers = self.state()?.layers.clone();
                self.record(&key, config, layers)
            }
            Some(_) => Err(msg(format!(
                "{path} exists in the image and is not a directory"
            ))),
            None => {
                self.state()?.config = config;
                self.layer_step(&key, &created_by, Some(tree), |lb, _| {
                    lb.ensure_dir(path.as_bytes(), None).map(drop)
                })
            }
        }
    }
}

/// The build args Docker predefines (proxies): they reach RUN without an
/// ARG, and stay out of its cache key and history unless an ARG declares
/// them.
pub const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// `KEY=VALUE` of the proxy args given and not declared (nor set by ENV).
fn proxy_env(
    given: &[(String, String)],
    declared: &BTreeMap<String, Option<String>>,
    env_keys: &BTreeSet<String>,
) -> Vec<String> {
    let mut out: BTreeMap<&str, &str> = BTreeMap::new();
    for (k, v) in given {
        if PROXY_ARGS.contains(&k.as_str()) && !declared.contains_key(k) && !env_keys.contains(k) {
            out.insert(k, v);
        }
    }
    out.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The command a RUN runs. A heredoc that is the whole command is the
/// script (run by the interpreter its `#!` line names, else the shell);
/// otherwise the shell gets the command line with its heredocs, as
/// written, and reads them itself.
fn run_argv(shell: &[String], ins: &Instruction) -> Vec<String> {
    let s = match &ins.args {
        Args::Exec(v) => return v.clone(),
        Args::Shell(s) => s,
    };
    let mut argv = shell.to_vec();
    match ins.heredocs.as_slice() {
        [] => argv.push(s.clone()),
        [h] if s.trim() == h.word => {
            let script = h.content();
            match script.strip_prefix("#!") {
                Some(rest) => {
                    let (interp, _) = rest.split_once('\n').unwrap_or((rest, ""));
                    // A delimiter the script does not hold.
                    let mut end = String::from("LAYERFS_SCRIPT");
                    while script.lines().any(|l| l == end) {
                        end.push('_');
                    }
                    argv.push(format!(
                        "exec {} /dev/stdin <<'{end}'\n{script}{end}\n",
                        interp.trim()
                    ));
                }
                None => argv.push(script),
            }
        }
        docs => argv.push(with_heredocs(s, docs)),
    }
    argv
}

/// A command line and its heredocs as written: what a shell reads.
fn with_heredocs(line: &str, docs: &[parse::Heredoc]) -> String {
    let mut text = format!("{line}\n");
    for h in docs {
        text.push_str(&h.body);
        text.push_str(&h.name);
        text.push('\n');
    }
    text
}

fn shell_text(ins: &Instruction) -> Result<String, StepError> {
    match &ins.args {
        Args::Shell(s) => Ok(s.clone()),
        Args::Exec(v) => Ok(v.join(" ")),
    }
}

/// `K=V K2="v 2"`, or the legacy `K V...` form.
fn key_values(
    raw: &str,
    esc: char,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, StepError> {
    let words = parse::words(raw, esc, vars).map_err(StepError::Msg)?;
    let Some(first) = words.first() else {
        return Err(msg("expected KEY=VALUE"));
    };
    if !first.contains('=') {
        let (k, v) = raw
            .trim()
            .split_once(char::is_whitespace)
            .ok_or_else(|| msg("expected KEY=VALUE or KEY VALUE"))?;
        let k = parse::word(k, esc, vars).map_err(StepError::Msg)?;
        let v = parse::word(v.trim(), esc, vars).map_err(StepError::Msg)?;
        return Ok(vec![(k, v)]);
    }
    words
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(msg(format!("{w:?}: expected KEY=VALUE"))),
        })
        .collect()
}

#[cfg(test)]
mod stage_tests;
#[cfg(test)]
mod tests;
