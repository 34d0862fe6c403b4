//! `dad-trace completions`: shell completion scripts made from the same clap definitions as
//! the parser, so they cannot drift from it. The image and the release tarballs carry them.
//!
//! Pure, not mutation-tested: it hands the parser to `clap_complete` and mends one spelling,
//! which `tests/completions.rs` checks by completing with bash itself.
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
