//! `layerfs ps [-a] [-q] [--no-trunc] [--format table|json|TEMPLATE]`:
//! containers, their ID, image, whether they run (or their exit code), the
//! size of their changes, and where they are mounted. Every container is
//! listed (a container is kept changes as much as a process); `-a` is
//! accepted as Docker users type it.

use super::Ctx;
use super::format::{OutputFormat, go_time, header_for, human_size, print_table};
use anyhow::Result;
use layerfs::container::Container;
use layerfs::oci::time::human_age;
use layerfs::run::state::{self, State};

#[derive(clap::Args)]
pub struct Args {
    /// Show all containers (the default here; accepted for Docker's habit)
    #[arg(short, long)]
    all: bool,
    /// Only show container IDs
    #[arg(short, long)]
    quiet: bool,
    /// Show full container IDs
    #[arg(long)]
    no_trunc: bool,
    /// table, json, or a Go template ({{.ID}}, {{.Names}}, {{json .}}, table {{.ID}}\t{{.Status}})
    #[arg(long)]
    format: Option<String>,
}

/// A container as the listing commands see it: its run state and where it
/// is mounted (shared by ps, inspect, system df and the prune commands).
pub(super) struct Row {
    pub c: Container,
    pub state: Option<State>,
    pub size: u64,
    pub mounted_at: Option<String>,
}

impl Row {
    /// `with_size` walks the container's changes for their disk use.
    pub fn load(store: &layerfs::store::Store, c: Container, with_size: bool) -> Result<Row> {
        let mounted_at = match layerfs::mount::records::find_container(store, &c.name)? {
            Some((r, true)) => Some(r.mountpoint.display().to_string()),
            _ => None,
        };
        Ok(Row {
            state: state::load(&c),
            size: if with_size { c.size() } else { 0 },
            c,
            mounted_at,
        })
    }

    pub fn running(&self) -> bool {
        self.state.as_ref().is_some_and(State::running)
    }

    /// Running, or mounted: in use, as Docker's "active".
    pub fn active(&self) -> bool {
        self.running() || self.mounted_at.is_some()
    }

    /// `running`, `exited`, `created`, or `mounted` for a container that
    /// a writable mount serves but no process runs in.
    pub fn state_word(&self) -> &'static str {
        match &self.state {
            _ if self.running() => "running",
            Some(s) if s.exit_code.is_some() || s.finished.is_some() => "exited",
            _ if self.mounted_at.is_some() => "mounted",
            Some(s) if s.status != state::Status::Created => "exited",
            _ => "created",
        }
    }

    /// As `ps` shows it: `running`, `exited (N)`, `created`.
    fn status(&self) -> String {
        self.state
            .as_ref()
            .map_or_else(|| "created".to_string(), State::describe)
    }

    /// Docker's STATUS: `Up 5 minutes`, `Exited (3) 2 minutes ago`, `Created`.
    fn docker_status(&self) -> String {
        let since = |t: Option<&str>| human_age(t).trim_end_matches(" ago").to_string();
        match (&self.state, self.state_word()) {
            (Some(s), "running") => format!("Up {}", since(Some(&s.started))),
            (Some(s), "exited") => {
                let code = s.exit_code.map_or(String::new(), |c| format!(" ({c})"));
                format!("Exited{code} {}", human_age(s.finished.as_deref()))
            }
            (_, "mounted") => "Mounted".into(),
            _ => "Created".into(),
        }
    }

    fn id(&self, no_trunc: bool) -> String {
        if no_trunc {
            self.c.id.clone()
        } else {
            self.c.short_id().to_string()
        }
    }
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let format = OutputFormat::parse(a.format.as_deref())?;
    let store = ctx.store()?;
    let mut rows = Vec::new();
    for c in layerfs::container::list(&store)? {
        rows.push(Row::load(&store, c, !a.quiet)?);
    }
    // Newest first, as Docker lists them.
    rows.reverse();
    if a.quiet {
        for r in &rows {
            println!("{}", r.id(a.no_trunc));
        }
        return Ok(());
    }
    match format {
        OutputFormat::Json => {
            let v: Vec<_> = rows
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "Id": r.c.id,
                        "Names": [&r.c.name],
                        "Image": r.c.image,
                        "ImageDigest": r.c.manifest,
                        "Created": r.c.created,
                        "Size": r.size,
                        "MountedAt": r.mounted_at,
                        "State": r.state_word(),
                        "Status": r.status(),
                        "ExitCode": r.state.as_ref().and_then(|s| s.exit_code),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        OutputFormat::Template(t) => {
            let v: Vec<_> = rows
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "ID": r.id(a.no_trunc),
                        "Names": r.c.name,
                        "Image": r.c.image,
                        "Command": "",
                        "CreatedAt": go_time(Some(&r.c.created)),
                        "RunningFor": human_age(Some(&r.c.created)),
                        "State": r.state_word(),
                        "Status": r.docker_status(),
                        "Size": human_size(r.size),
                        "Mounts": r.mounted_at.clone().unwrap_or_default(),
                        "Ports": "",
                        "Labels": "",
                        "Networks": "",
                    })
                })
                .collect();
            const HEADERS: &[(&str, &str)] = &[("ID", "CONTAINER ID"), ("RunningFor", "CREATED")];
            super::format::print_template(&t, &v, header_for(HEADERS))?;
        }
        OutputFormat::Table => {
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.c.name.clone(),
                        r.id(a.no_trunc),
                        r.c.image.clone(),
                        human_age(Some(&r.c.created)),
                        r.status(),
                        human_size(r.size),
                        r.mounted_at.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            print_table(
                &[
                    "NAME",
                    "CONTAINER ID",
                    "IMAGE",
                    "CREATED",
                    "STATUS",
                    "SIZE",
                    "MOUNTED AT",
                ],
                &table,
            );
        }
    }
    Ok(())
}
