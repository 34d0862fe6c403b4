//! `dad-trace record`.
use std::path::PathBuf;

use clap::error::ErrorKind;

use super::{TraceArgs, seconds};
use crate::{
    hist::Unit,
    output::{LiveView, live::LiveFormat},
    report,
    tracer::{self, RecordOptions},
};

/// Trace DAD on this node (root); print each address as it settles and histograms at the end.
///
/// With an interval (`--interval 5`, or bcc's bare `record 5`) it prints the histograms of
/// each interval instead, with the pods done in it; `--count N` then stops after N
/// intervals, as in bcc's tools. Without an interval `--count N` stops after N addresses.
#[derive(clap::Args)]
#[allow(clippy::struct_excessive_bools, reason = "independent switches of one command line")]
#[command(after_help = "EXAMPLES:\n    \
    sudo dad-trace record                           # until Ctrl-C\n    \
    sudo dad-trace record --duration 300 --per-pod  # five minutes, then every pod's delay\n    \
    sudo dad-trace record -o before.json --quiet    # save the session for `report`\n    \
    sudo dad-trace record --synthetic-pods 20       # make 20 pods (netns + veth) and trace them\n    \
    sudo dad-trace record --interval 10 -m          # histograms every 10 s, in milliseconds\n    \
    sudo dad-trace record 5 3                       # bcc style: every 5 s, three times\n    \
    sudo dad-trace record --format jsonl | jq -c 'select(.type == \"pod\")'   # a JSON object per pod")]
pub struct Record {
    #[command(flatten)]
    trace: TraceArgs,
    /// bcc style: the interval in seconds (as --interval).
    #[arg(value_name = "INTERVAL", conflicts_with = "interval", value_parser = parse_interval)]
    interval_arg: Option<f64>,
    /// bcc style: how many intervals (as --count with an interval).
    #[arg(value_name = "COUNT", conflicts_with = "count", value_parser = parse_count)]
    count_arg: Option<usize>,
    /// Print the histograms of every interval of this many seconds, and the pods done in it
    /// (instead of a line per address and the histograms at the end).
    #[arg(long, value_name = "SECONDS", value_parser = parse_interval)]
    interval: Option<f64>,
    /// Stop after this many seconds.
    #[arg(short = 'd', long, value_name = "SECONDS", value_parser = parse_interval)]
    pub duration: Option<f64>,
    /// Stop after N intervals with an interval (as bcc's tools); without one, after N
    /// addresses finished.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    count: Option<usize>,
    /// Histograms in milliseconds (as bcc's -m); without it the unit fits the delays.
    #[arg(short = 'm', long)]
    milliseconds: bool,
    /// text: lines and histograms; jsonl: one JSON object per line on standard output, for
    /// each finished address (`"type": "address"`, the session file's fields), each pod once
    /// its addresses are done (`"pod"`) and each interval (`"interval"`).
    #[arg(long, value_enum, default_value_t = RecordFormat::Text)]
    format: RecordFormat,
    /// JSON lines (as --format jsonl).
    #[arg(short = 'j', conflicts_with = "format")]
    jsonl: bool,
    /// Save the session as JSON (atomically; also on Ctrl-C).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Also print a table of every pod's delay.
    #[arg(short = 'P', long, conflicts_with_all = ["interval", "interval_arg"])]
    per_pod: bool,
    /// Create N synthetic pods (netns + veth + IPv6 address) while tracing, stop when they
    /// settled, and remove them.
    #[arg(long, value_name = "N")]
    synthetic_pods: Option<usize>,
    /// Name prefix of synthetic pod namespaces.
    #[arg(long, default_value = "dt-pod-", value_name = "PREFIX")]
    synthetic_prefix: String,
    /// Do not print a line per address.
    #[arg(short, long, conflicts_with_all = ["interval", "interval_arg"])]
    quiet: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum RecordFormat {
    Text,
    Jsonl,
}

/// An interval or a duration must be a positive number of seconds (a zero period would
/// spin, a zero duration would record nothing).
fn parse_interval(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds >= 0.001 => Ok(seconds),
        Ok(_) => Err("at least 0.001 seconds".into()),
        Err(e) => Err(format!("{text:?} is not a number of seconds: {e}")),
    }
}

/// A count of addresses or intervals: at least one (zero would stop before anything).
fn parse_count(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("at least 1".into()),
        Ok(count) => Ok(count),
        Err(e) => Err(format!("{text:?} is not a count: {e}")),
    }
}

impl Record {
    fn format(&self) -> RecordFormat {
        if self.jsonl { RecordFormat::Jsonl } else { self.format }
    }

    fn interval(&self) -> Option<f64> {
        self.interval.or(self.interval_arg)
    }

    /// Flags the parser accepts alone but that do nothing together: refused (exit code 2)
    /// rather than ignored.
    pub fn check(&self) -> Result<(), (ErrorKind, String)> {
        if self.format() == RecordFormat::Jsonl {
            for (set, flag, why) in [
                (self.per_pod, "--per-pod", "every pod is an object of its own"),
                (self.quiet, "--quiet", "the JSON lines are the output"),
                (self.milliseconds, "-m", "JSON carries nanoseconds"),
            ] {
                if set {
                    return Err((
                        ErrorKind::ArgumentConflict,
                        format!("{flag} does nothing with --format jsonl: {why}"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// What is shown while recording, and what `--count` counts: bcc's count is of
    /// intervals; without an interval it keeps its meaning here, addresses. Returns the
    /// addresses to stop after, whether to print a line per address, and the live view.
    fn plan(&self) -> anyhow::Result<(Option<usize>, bool, LiveView)> {
        let interval = self.interval().map(|s| seconds(s, "--interval")).transpose()?;
        let count = self.count.or(self.count_arg);
        let (addresses, intervals) = if interval.is_some() {
            (None, count)
        } else {
            (count, None)
        };
        let format = match self.format() {
            RecordFormat::Text => LiveFormat::Text,
            RecordFormat::Jsonl => LiveFormat::Jsonl,
        };
        let lines = !self.quiet && interval.is_none() && format == LiveFormat::Text;
        let live = LiveView {
            format,
            interval,
            intervals,
            unit: self.milliseconds.then_some(Unit::Msecs),
        };
        Ok((addresses, lines, live))
    }

    /// The tracing options alone (tests).
    #[cfg(test)]
    pub(crate) fn trace_options(&self) -> anyhow::Result<RecordOptions> {
        self.trace.options(false)
    }

    pub async fn run(self, verbose: bool) -> anyhow::Result<()> {
        if let Some(path) = &self.output {
            super::warn_if_format_name(path);
        }
        let (addresses, lines, live) = self.plan()?;
        let opts = RecordOptions {
            duration: self.duration.map(|d| seconds(d, "--duration")).transpose()?,
            count: addresses,
            output: self.output,
            synthetic_pods: self.synthetic_pods,
            synthetic_prefix: self.synthetic_prefix,
            lines,
            live,
            ..self.trace.options(verbose)?
        };
        let session = tracer::record(opts).await?;
        if live.format == LiveFormat::Jsonl || live.interval.is_some() {
            // The intervals or the JSON lines were the output; the session has the rest.
            return Ok(());
        }
        // Saved already: a closed terminal now loses nothing. A blank line after the lines.
        let report = report::render_text_in(&session.fold(), self.per_pod, live.unit);
        super::out(&if lines { format!("\n{report}") } else { report })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(["dad-trace", "record"].iter().chain(args))
    }

    fn plan(args: &[&str]) -> (Option<usize>, bool, LiveView) {
        match parse(args).expect("parses").command {
            Command::Record(record) => record.plan().expect("a plan"),
            _ => unreachable!("a record command"),
        }
    }

    #[test]
    fn count_is_of_intervals_with_an_interval_and_of_addresses_without() {
        let (addresses, lines, live) = plan(&["--count", "6"]);
        assert_eq!(
            (addresses, lines, live.interval, live.intervals),
            (Some(6), true, None, None)
        );
        let (addresses, lines, live) = plan(&["--interval", "2.5", "--count", "4"]);
        assert_eq!(
            (addresses, lines, live.interval, live.intervals),
            (None, false, Some(Duration::from_millis(2500)), Some(4)),
            "bcc's count; the histograms replace the lines"
        );
        // bcc's bare numbers: interval, then count.
        let (addresses, _, live) = plan(&["5", "3"]);
        assert_eq!(
            (addresses, live.interval, live.intervals),
            (None, Some(Duration::from_secs(5)), Some(3))
        );
        let (_, _, live) = plan(&["5", "--count", "2", "-m"]);
        assert_eq!((live.intervals, live.unit), (Some(2), Some(Unit::Msecs)));
        let (_, _, live) = plan(&["1"]);
        assert_eq!(
            (live.interval, live.intervals),
            (Some(Duration::from_secs(1)), None),
            "until stopped"
        );
        let (_, lines, live) = plan(&["--format", "jsonl"]);
        assert_eq!((lines, live.format, live.unit), (false, LiveFormat::Jsonl, None));
        assert!(!plan(&["--quiet"]).1);
    }

    #[test]
    fn flags_that_would_do_nothing_are_refused() {
        use clap::error::ErrorKind::{ArgumentConflict, ValueValidation};
        let refused = |args: &[&str]| {
            parse(args)
                .err()
                .map(|e| e.kind())
                .or_else(|| parse(args).expect("parses").check().err().map(|e| e.kind()))
        };
        assert_eq!(refused(&["5", "--interval", "5"]), Some(ArgumentConflict));
        assert_eq!(refused(&["5", "3", "--count", "3"]), Some(ArgumentConflict));
        assert_eq!(refused(&["--interval", "0"]), Some(ValueValidation));
        assert_eq!(refused(&["0.0001"]), Some(ValueValidation));
        assert_eq!(refused(&["nan"]), Some(ValueValidation));
        assert_eq!(refused(&["--interval", "1", "--per-pod"]), Some(ArgumentConflict));
        assert_eq!(refused(&["1", "--quiet"]), Some(ArgumentConflict));
        for flag in ["--per-pod", "--quiet", "-m"] {
            assert_eq!(refused(&["--format", "jsonl", flag]), Some(ArgumentConflict), "{flag}");
        }
        let usage = parse(&["--format", "jsonl", "-m"])
            .expect("parses")
            .check()
            .expect_err("refused");
        assert_eq!(usage.exit_code(), i32::from(crate::error::EXIT_USAGE));
        assert!(
            usage.to_string().contains("-m does nothing with --format jsonl"),
            "{usage}"
        );
        for fine in [
            &["--interval", "1", "-m"][..],
            &["--format", "jsonl", "--interval", "2"],
            &["--per-pod", "-m"],
        ] {
            assert_eq!(refused(fine), None, "{fine:?}");
        }
    }
}
