//! The completions and manual pages the binary writes, used by the real programs: bash loads
//! the completion script and completes subcommands and flag values with it; man formats
//! the pages. No root needed.
use std::process::Command;

use test_support::skip;

const BIN: &str = env!("CARGO_BIN_EXE_dad-trace");

fn dad_trace(args: &[&str]) -> String {
    let output = Command::new(BIN).args(args).output().expect("run dad-trace");
    assert!(
        output.status.success(),
        "dad-trace {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

/// What bash's completion offers for `line` (the cursor at its end), with the script loaded.
fn complete_in_bash(script: &std::path::Path, line: &str) -> Vec<String> {
    let program = format!(
        r#"source {script}
complete -p dad-trace >/dev/null || {{ echo "no completion registered" >&2; exit 3; }}
COMP_LINE={line:?}
COMP_POINT=${{#COMP_LINE}}
read -ra COMP_WORDS <<< "$COMP_LINE"
[[ "$COMP_LINE" == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
fn=$(complete -p dad-trace | sed -E 's/.*-F ([^ ]+).*/\1/')
"$fn" dad-trace "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}"
"#,
        script = script.display()
    );
    let output = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program])
        .output()
        .expect("run bash");
    assert!(
        output.status.success(),
        "bash: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .filter(|word| !word.is_empty())
        .collect()
}

#[test]
fn bash_loads_the_completion_and_completes_subcommands_and_values() {
    if Command::new("bash").arg("--version").output().is_err() {
        skip("no bash");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("dad-trace.bash");
    std::fs::write(&script, dad_trace(&["completions", "bash"])).expect("write script");
    assert_eq!(complete_in_bash(&script, "dad-trace doc"), ["doctor"]);
    let words = complete_in_bash(&script, "dad-trace ");
    for sub in ["record", "serve", "doctor", "report", "completions", "man"] {
        assert!(words.contains(&sub.to_string()), "{sub} not offered: {words:?}");
    }
    assert_eq!(complete_in_bash(&script, "dad-trace doctor --format m"), ["markdown"]);
    // The gate refuses html, and its completion does not offer it.
    let formats = complete_in_bash(&script, "dad-trace gate a.json b.json --format ");
    assert!(
        formats.contains(&"json".to_string()) && !formats.contains(&"html".to_string()),
        "{formats:?}"
    );
}

#[test]
fn zsh_and_fish_scripts_name_every_subcommand() {
    for shell in ["zsh", "fish"] {
        let script = dad_trace(&["completions", shell]);
        for sub in ["record", "serve", "doctor", "tune", "gate", "report", "scenario"] {
            assert!(script.contains(sub), "{shell} script lacks {sub}");
        }
    }
}

#[test]
fn man_pages_for_the_command_and_each_subcommand() {
    let dir = tempfile::tempdir().expect("tempdir");
    dad_trace(&["man", "-o", dir.path().to_str().expect("UTF-8 path")]);
    for page in [
        "dad-trace.1",
        "dad-trace-record.1",
        "dad-trace-doctor.1",
        "dad-trace-serve.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{page} is not roff");
    }
    let doctor = std::fs::read_to_string(dir.path().join("dad-trace-doctor.1")).expect("page");
    assert!(doctor.contains("markdown") && doctor.contains("EXAMPLES"), "{doctor}");
    // man itself formats it, when installed.
    if let Ok(output) = Command::new("man")
        .args(["-l", dir.path().join("dad-trace.1").to_str().expect("UTF-8 path")])
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80")
        .output()
        && output.status.success()
    {
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("dad-trace") && text.contains("doctor"), "{text}");
    } else {
        println!("NOTE man is not installed here: the pages were checked as roff text only");
    }
}
