//! `dad-trace completions` and `dad-trace man`: shell completions and manual pages made from
//! the same clap definitions as the parser, so they cannot drift from it. The image installs
//! both (`cargo xtask image`).
use std::path::PathBuf;

use anyhow::Context as _;
use clap::CommandFactory as _;

use super::Cli;

/// Print the shell completion script for bash, zsh, fish, elvish or powershell.
#[derive(clap::Args)]
#[command(after_help = "EXAMPLES:\n    \
    dad-trace completions bash > /etc/bash_completion.d/dad-trace\n    \
    dad-trace completions zsh > \"${fpath[1]}/_dad-trace\"\n    \
    dad-trace completions fish > ~/.config/fish/completions/dad-trace.fish\n    \
    source <(dad-trace completions bash)          # this shell only")]
pub struct Completions {
    /// The shell the script is for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

impl Completions {
    pub fn run(self) -> anyhow::Result<()> {
        let mut command = Cli::command();
        let mut script = Vec::new();
        clap_complete::generate(self.shell, &mut command, "dad-trace", &mut script);
        let mut script = String::from_utf8_lossy(&script).into_owned();
        if self.shell == clap_complete::Shell::Bash {
            // clap_complete spells a hyphenated binary's state two ways: the dispatch loop
            // says `dad__trace__subcmd__doctor`, the case arms `dad__subcmd__trace__subcmd__doctor`,
            // so no subcommand's options ever complete (clap-rs/clap#6421, open). One spelling.
            script = script.replace("dad__subcmd__trace", "dad__trace");
        }
        super::out(&script)
    }
}

/// Write the manual pages (roff): dad-trace(1) and one per subcommand, dad-trace-SUB(1).
#[derive(clap::Args)]
#[command(after_help = "EXAMPLES:\n    \
    dad-trace man -o /usr/local/share/man/man1   # every page\n    \
    dad-trace man | man -l -                     # read dad-trace(1) now")]
pub struct Man {
    /// Write every page into this directory; without it, print dad-trace(1).
    #[arg(short, long, value_name = "DIR")]
    output: Option<PathBuf>,
}

impl Man {
    pub fn run(self) -> anyhow::Result<()> {
        let command = Cli::command();
        let Some(dir) = self.output else {
            let mut out = Vec::new();
            clap_mangen::Man::new(command).render(&mut out)?;
            return super::out(&String::from_utf8_lossy(&out));
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        // dad-trace.1 plus dad-trace-SUB.1 for every visible subcommand.
        clap_mangen::generate_to(command, &dir).with_context(|| format!("write pages to {}", dir.display()))?;
        Ok(())
    }
}
