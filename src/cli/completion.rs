//! `layerfs completion bash|zsh|fish`: the shell's completion script, made
//! from the clap definition itself, so it never lags behind the commands.
//! `scripts/install.sh` writes it where each shell looks; by hand:
//! `source <(layerfs completion bash)`.

use anyhow::Result;
use clap::CommandFactory;
use clap_complete::Shell;

#[derive(clap::Args)]
pub struct Args {
    /// The shell to complete for
    #[arg(value_parser = ["bash", "zsh", "fish"])]
    shell: String,
}

pub fn run(a: Args) -> Result<()> {
    let shell = match a.shell.as_str() {
        "bash" => Shell::Bash,
        "zsh" => Shell::Zsh,
        _ => Shell::Fish,
    };
    let mut cmd = super::Cli::command();
    clap_complete::generate(shell, &mut cmd, "layerfs", &mut std::io::stdout().lock());
    Ok(())
}
