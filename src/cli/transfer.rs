//! What pull, push and login share: the transport flags, and showing
//! transfers as docker does — progress bars per layer and in total on a
//! terminal, one line per layer otherwise, nothing with `--quiet`.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use layerfs::oci::Digest;
use layerfs::registry::{BlobKind, BlobOutcome, ClientOptions, Event, Progress, RegistryConfig};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Mutex;

#[derive(clap::Args, Clone, Debug)]
pub struct TransportArgs {
    /// Allow plain HTTP and do not verify TLS certificates
    #[arg(long)]
    pub insecure: bool,
    /// Trust this CA certificate (PEM) for the registry, besides the system's
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

impl TransportArgs {
    pub fn client_options(&self) -> ClientOptions {
        let mut o = ClientOptions::new(RegistryConfig::from_env());
        o.insecure = self.insecure;
        o.ca_cert = self.ca_cert.clone();
        o
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Pull,
    Push,
}

enum Mode {
    Quiet,
    Lines,
    Bars {
        multi: MultiProgress,
        total: ProgressBar,
        /// Per blob: its bar and the bytes already counted in the total.
        bars: Mutex<HashMap<Digest, (ProgressBar, u64)>>,
    },
}

pub struct Display {
    verb: Verb,
    mode: Mode,
}

impl Display {
    pub fn new(verb: Verb, quiet: bool) -> Display {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            let multi = MultiProgress::new();
            let total = multi.add(ProgressBar::new(0));
            total.set_style(style(
                "{prefix:>12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}",
            ));
            total.set_prefix("total");
            Mode::Bars {
                multi,
                total,
                bars: Mutex::new(HashMap::new()),
            }
        } else {
            Mode::Lines
        };
        Display { verb, mode }
    }

    /// Removes the bars before the closing lines are printed.
    pub fn finish(&self) {
        if let Mode::Bars { multi, total, .. } = &self.mode {
            total.finish_and_clear();
            let _ = multi.clear();
        }
    }

    fn line(&self, s: &str) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Lines => eprintln!("{s}"),
            Mode::Bars { multi, .. } => {
                let _ = multi.println(s);
            }
        }
    }

    fn outcome_words(&self, o: BlobOutcome, from: Option<&str>) -> String {
        match (self.verb, o) {
            (Verb::Pull, BlobOutcome::Exists) => "Already exists".into(),
            (Verb::Push, BlobOutcome::Exists) => "Layer already exists".into(),
            (_, BlobOutcome::Downloaded) => "Pull complete".into(),
            (_, BlobOutcome::Pushed) => "Pushed".into(),
            (_, BlobOutcome::Mounted) => format!("Mounted from {}", from.unwrap_or("?")),
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Progress for Display {
    fn event(&self, e: Event<'_>) {
        match e {
            Event::Status(s) => self.line(s),
            Event::Start { digest, kind, size } => {
                if let Mode::Bars {
                    multi, total, bars, ..
                } = &self.mode
                {
                    total.inc_length(size);
                    if kind == BlobKind::Layer {
                        let bar = multi.insert_before(total, ProgressBar::new(size));
                        bar.set_style(style(
                            "{prefix:>12}: {msg:<12} [{bar:30}] {bytes}/{total_bytes}",
                        ));
                        bar.set_prefix(digest.short());
                        bar.set_message(match self.verb {
                            Verb::Pull => "Downloading",
                            Verb::Push => "Pushing",
                        });
                        if let Ok(mut m) = bars.lock() {
                            m.insert(*digest, (bar, 0));
                        }
                    } else if let Ok(mut m) = bars.lock() {
                        m.insert(*digest, (ProgressBar::hidden(), 0));
                    }
                }
            }
            Event::Bytes { digest, done } => {
                if let Mode::Bars { total, bars, .. } = &self.mode
                    && let Ok(mut m) = bars.lock()
                    && let Some((bar, counted)) = m.get_mut(digest)
                {
                    bar.set_position(done);
                    total.inc(done.saturating_sub(*counted));
                    *counted = done.max(*counted);
                }
            }
            Event::Retry { digest, why } => {
                self.line(&format!("{}: Retrying: {why}", digest.short()));
            }
            Event::Done {
                digest,
                kind,
                size,
                outcome,
                from,
            } => {
                let words = self.outcome_words(outcome, from);
                match &self.mode {
                    Mode::Quiet => {}
                    Mode::Lines => {
                        if kind == BlobKind::Layer {
                            eprintln!("{}: {words}", digest.short());
                        }
                    }
                    Mode::Bars { multi, total, bars } => {
                        let entry = bars.lock().ok().and_then(|mut m| m.remove(digest));
                        if let Some((bar, counted)) = entry {
                            total.inc(size.saturating_sub(counted));
                            bar.finish_and_clear();
                            multi.remove(&bar);
                        }
                        if kind == BlobKind::Layer {
                            let _ = multi.println(format!("{}: {words}", digest.short()));
                        }
                    }
                }
            }
        }
    }
}
