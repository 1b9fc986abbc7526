//! `layerfs login REGISTRY -u USER [--password-stdin | -p PASSWORD] [--ca-cert FILE]`:
//! checks the credentials against the registry, then saves them (in the
//! credential helper Docker's config names, else mode 0600 in our auth.json;
//! see `registry::RegistryConfig`). The password is read from stdin, typed
//! without echo, or (with Docker's warning) given as `-p`; it is never
//! printed or logged.

use super::Ctx;
use super::transfer::TransportArgs;
use anyhow::{Context, Result, bail};
use layerfs::registry::{Credentials, login};
use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};

#[derive(clap::Args)]
pub struct Args {
    /// Registry host[:port]
    registry: String,
    /// User name (asked for on a terminal when missing)
    #[arg(short, long)]
    username: Option<String>,
    /// Read the password from standard input
    #[arg(long)]
    password_stdin: bool,
    /// The password (insecure: other users see it in the process list; use --password-stdin)
    #[arg(short, long, conflicts_with = "password_stdin")]
    password: Option<String>,
    #[command(flatten)]
    transport: TransportArgs,
}

/// `https://host:port/v2/` and `host:port` name the same registry.
pub fn registry_host(s: &str) -> String {
    let s = s.trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    s.split('/').next().unwrap_or(s).to_string()
}

pub fn run(_ctx: &Ctx, a: Args) -> Result<()> {
    let registry = registry_host(&a.registry);
    if registry.is_empty() {
        bail!("login: no registry given");
    }
    let username = match a.username {
        Some(u) => u,
        None => prompt("Username: ", true)?,
    };
    if username.is_empty() {
        bail!("login {registry}: the user name is empty");
    }
    let password = if let Some(p) = a.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p
    } else if a.password_stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the password from stdin")?;
        s.trim_end_matches(['\n', '\r']).to_string()
    } else {
        prompt("Password: ", false)?
    };
    if password.is_empty() {
        bail!("login {registry}: the password is empty");
    }
    let creds = Credentials { username, password };
    let opts = a.transport.client_options();
    let saved = login(&registry, &creds, &opts).with_context(|| format!("login {registry}"))?;
    log::info!("credentials for {registry} saved in {saved}");
    println!("Login Succeeded");
    Ok(())
}

/// Asks on the terminal; without echo for a password.
fn prompt(label: &str, echo: bool) -> Result<String> {
    if !std::io::stdin().is_terminal() && !std::io::stderr().is_terminal() {
        bail!("no terminal to ask on: give -u USER and --password-stdin");
    }
    let mut tty = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .context("cannot open the terminal; give -u USER and --password-stdin")?;
    tty.write_all(label.as_bytes())?;
    tty.flush()?;
    let line = if echo {
        read_line(&tty)?
    } else {
        let line = {
            let _quiet = NoEcho::new(&tty)?;
            read_line(&tty)?
        };
        tty.write_all(b"\n")?;
        line
    };
    Ok(line)
}

fn read_line(tty: &File) -> Result<String> {
    let mut line = String::new();
    BufReader::new(tty).read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Echo off while alive; restored on drop, also on error.
struct NoEcho<'a> {
    tty: &'a File,
    saved: nix::sys::termios::Termios,
}

impl<'a> NoEcho<'a> {
    fn new(tty: &'a File) -> Result<Self> {
        let saved = tcgetattr(tty).context("reading the terminal mode")?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        tcsetattr(tty, SetArg::TCSANOW, &quiet).context("turning off echo")?;
        Ok(NoEcho { tty, saved })
    }
}

impl Drop for NoEcho<'_> {
    fn drop(&mut self) {
        let _ = tcsetattr(self.tty, SetArg::TCSANOW, &self.saved);
    }
}
