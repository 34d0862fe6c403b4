//! The doctor's report as text, Markdown (a ticket, a pull request) or one HTML page. It is
//! built once as blocks and written in each style; names read off the node (namespace and
//! interface names, which tenants choose) are escaped for the style they are written in.
use std::fmt::Write as _;

use super::{Applications, Audit, Diagnosis, Verdict, Wait};
use crate::{
    node::tune::RECOMMENDED,
    text::{html, markdown, terminal},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Text,
    Markdown,
    Html,
}

enum Block {
    Heading(String),
    Table(Vec<&'static str>, Vec<Vec<String>>),
    Bullets(Vec<String>),
    Paragraph(String),
    /// Our own text (the fix), never names from the node.
    Code(String),
}

fn plain(text: &str) -> String {
    terminal(text).into_owned()
}

fn wait_cell(wait: Wait) -> String {
    wait.to_string()
}

fn blocks(audit: &Audit, diagnosis: &Diagnosis) -> Vec<Block> {
    let mut out = vec![Block::Heading("Host namespace".into())];
    out.push(Block::Table(
        vec!["setting", "value"],
        audit.host.iter().map(|(k, v)| vec![k.clone(), v.clone()]).collect(),
    ));
    out.push(Block::Heading("A new pod".into()));
    let pod = &diagnosis.new_pod;
    out.push(Block::Table(
        vec!["address", "tentative wait"],
        vec![
            vec!["kernel link-local (eth0)".into(), wait_cell(pod.link_local)],
            vec!["address added by the CNI plugin".into(), wait_cell(pod.added_address)],
            vec!["per pod (the slowest)".into(), wait_cell(pod.per_pod)],
            vec!["host-side veth link-local".into(), wait_cell(diagnosis.host_veth)],
        ],
    ));
    out.push(Block::Heading(format!("Pod namespaces ({})", audit.namespaces.len())));
    if let Some((_, why)) = audit.unreadable.first() {
        // Not seeing them is not finding none: say so, and why.
        out.push(Block::Paragraph(format!(
            "Could not look into {} pod namespace{} ({}): run the doctor as root to see their \
             settings and addresses.",
            audit.unreadable.len(),
            if audit.unreadable.len() == 1 { "" } else { "s" },
            plain(why)
        )));
    }
    let mut rows = Vec::new();
    for (settings, estimate) in audit.namespaces.iter().zip(&diagnosis.namespaces) {
        for (interface, est) in settings.interfaces.iter().zip(&estimate.interfaces) {
            let live: Vec<_> = settings
                .addresses
                .iter()
                .filter(|a| a.ifname == interface.ifname)
                .collect();
            // A few addresses one by one; a namespace with hundreds (churn) in a line.
            let addresses = if live.len() <= 3 {
                est.addresses
                    .iter()
                    .map(|(addr, wait)| {
                        let nodad = live.iter().any(|a| a.addr == *addr && a.nodad());
                        format!("{addr}{} ({wait})", if nodad { " nodad" } else { "" })
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            } else {
                let tentative = live
                    .iter()
                    .filter(|a| a.flags & dad_trace_common::IFA_F_TENTATIVE != 0)
                    .count();
                let nodad = live.iter().filter(|a| a.nodad()).count();
                format!("{} addresses, {tentative} tentative now, {nodad} nodad", live.len())
            };
            rows.push(vec![
                settings.name.clone(),
                interface.ifname.clone(),
                format!("{}/{}", settings.all.accept_dad, interface.accept_dad),
                interface.dad_transmits.to_string(),
                format!("{}/{}", settings.all.optimistic_dad, interface.optimistic_dad),
                wait_cell(est.new_address),
                addresses,
            ]);
        }
    }
    if rows.is_empty() {
        out.push(Block::Paragraph("No pod namespaces under /run/netns.".into()));
    } else {
        out.push(Block::Table(
            vec![
                "namespace",
                "interface",
                "accept_dad all/if",
                "dad_transmits",
                "optimistic all/if",
                "new address",
                "live addresses",
            ],
            rows,
        ));
    }
    out.push(Block::Heading(format!("Diagnosis: {}", diagnosis.verdict)));
    out.push(Block::Bullets(diagnosis.findings.clone()));
    out.push(Block::Paragraph(format!(
        "Estimated wait per new pod: {}",
        diagnosis.new_pod.per_pod
    )));
    if diagnosis.verdict != Verdict::Tuned {
        out.extend(fix_blocks());
    }
    if let Some(applications) = diagnosis.applications.as_ref().filter(|apps| apps.failures > 0) {
        out.extend(application_blocks(applications));
    }
    out
}

/// The fixes on the application's side, next to the node's, each with what it trades away.
fn application_blocks(applications: &Applications) -> Vec<Block> {
    vec![
        Block::Heading("Applications".into()),
        Block::Paragraph(format!(
            "The session {} saw applications fail while their pod's address was tentative: {}. Besides the \
             node fix above, the application or the pod can stop paying for the wait:",
            plain(&applications.session),
            plain(&applications.during_dad)
        )),
        Block::Bullets(vec![
            "IPV6_FREEBIND on the socket (or net.ipv6.ip_nonlocal_bind=1 in the pod): bind() succeeds before the \
             address is usable. Trades away: the socket still cannot send from the address until DAD ends, and a \
             mistyped address binds without an error."
                .into(),
            "optimistic_dad=1 and use_optimistic=1 on the pod interface (the plugin must add the address as \
             optimistic): the address is usable at once while DAD still runs (RFC 4429). Trades away: until DAD \
             ends, traffic may reach a duplicate holder; the kernel's link-local address is optimistic only when \
             forwarding is off."
                .into(),
            "Retry on EADDRNOTAVAIL for a few seconds at start-up: no setting changes. Trades away: the start still \
             waits for DAD, it only stops failing."
                .into(),
        ]),
    ]
}

fn fix_blocks() -> Vec<Block> {
    let (mut toml, mut sysctl_d) = (String::new(), String::new());
    for (name, value) in RECOMMENDED {
        let _ = writeln!(toml, "\"{name}\" = \"{value}\"");
        let _ = writeln!(sysctl_d, "{name} = {value}");
    }
    let args: Vec<String> = RECOMMENDED
        .iter()
        .map(|(name, value)| format!("-w {name}={value}"))
        .collect();
    vec![
        Block::Heading("Fix".into()),
        Block::Paragraph("Bottlerocket settings, e.g. in user data:".into()),
        Block::Code(format!("[settings.kernel.sysctl]\n{toml}")),
        Block::Paragraph("Any node: /etc/sysctl.d/90-ipv6-no-dad.conf, then `sysctl --system`:".into()),
        Block::Code(sysctl_d),
        // devconf_inherit_init_net exists only in the initial namespace, and new namespaces
        // copy that namespace's settings: a kind node (a container) can set neither for its pods.
        Block::Paragraph(
            "kind: the nodes are containers on one kernel, and new pod namespaces copy the initial namespace, so \
             set it on the machine running kind:"
                .into(),
        ),
        Block::Code(format!("sudo sysctl {}\n", args.join(" "))),
        Block::Paragraph(
            "Caveats: only in networks you control — DAD is what protects against duplicate addresses. Pods \
             created before the change keep DAD until recreated. For application start, rely on readiness \
             probes rather than network readiness."
                .into(),
        ),
    ]
}

fn write_table(out: &mut String, style: Style, headers: &[&str], rows: &[Vec<String>]) {
    match style {
        Style::Text => {
            let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|row| row.iter().map(|cell| plain(cell)).collect())
                .collect();
            for row in &cells {
                for (width, cell) in widths.iter_mut().zip(row) {
                    *width = (*width).max(cell.chars().count());
                }
            }
            let line = |cells: &[String]| -> String {
                let padded: Vec<String> = cells
                    .iter()
                    .zip(&widths)
                    .map(|(cell, width)| format!("{cell:width$}"))
                    .collect();
                format!("  {}", padded.join("  ").trim_end())
            };
            let _ = writeln!(
                out,
                "{}",
                line(&headers.iter().map(|h| (*h).to_string()).collect::<Vec<_>>())
            );
            for row in &cells {
                let _ = writeln!(out, "{}", line(row));
            }
        }
        Style::Markdown => {
            let _ = writeln!(out, "| {} |", headers.join(" | "));
            let _ = writeln!(out, "|{}", " --- |".repeat(headers.len()));
            for row in rows {
                let cells: Vec<String> = row.iter().map(|cell| markdown(cell)).collect();
                let _ = writeln!(out, "| {} |", cells.join(" | "));
            }
        }
        Style::Html => {
            out.push_str("<table>\n<tr>");
            for header in headers {
                let _ = write!(out, "<th>{}</th>", html(header));
            }
            out.push_str("</tr>\n");
            for row in rows {
                out.push_str("<tr>");
                for cell in row {
                    let _ = write!(out, "<td>{}</td>", html(cell));
                }
                out.push_str("</tr>\n");
            }
            out.push_str("</table>\n");
        }
    }
    out.push('\n');
}

/// The report in `style`.
#[must_use]
pub fn render_as(audit: &Audit, diagnosis: &Diagnosis, style: Style) -> String {
    let title = format!("dad-trace doctor: kernel {}", audit.kernel_release);
    let mut out = match style {
        Style::Text => format!("{}\n\n", plain(&title)),
        Style::Markdown => format!("# {}\n\n", markdown(&title)),
        Style::Html => format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{0}</title>\n<style>body{{font-family:\
             sans-serif;max-width:70em;margin:auto}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;\
             padding:2px 6px;text-align:left}}pre{{background:#f4f4f4;padding:6px}}</style></head><body>\n\
             <h1>{0}</h1>\n",
            html(&title)
        ),
    };
    for block in blocks(audit, diagnosis) {
        match block {
            Block::Heading(text) => match style {
                Style::Text => {
                    let _ = writeln!(out, "{}:", plain(&text));
                }
                Style::Markdown => {
                    let _ = writeln!(out, "## {}\n", markdown(&text));
                }
                Style::Html => {
                    let _ = writeln!(out, "<h2>{}</h2>", html(&text));
                }
            },
            Block::Table(headers, rows) => write_table(&mut out, style, &headers, &rows),
            Block::Bullets(items) => {
                if style == Style::Html {
                    out.push_str("<ul>\n");
                }
                for item in items {
                    let _ = match style {
                        Style::Text => writeln!(out, "  - {}", plain(&item)),
                        Style::Markdown => writeln!(out, "- {}", markdown(&item)),
                        Style::Html => writeln!(out, "<li>{}</li>", html(&item)),
                    };
                }
                out.push_str(if style == Style::Html { "</ul>\n" } else { "\n" });
            }
            Block::Paragraph(text) => {
                let _ = match style {
                    Style::Text => writeln!(out, "{}\n", plain(&text)),
                    Style::Markdown => writeln!(out, "{}\n", markdown(&text)),
                    Style::Html => writeln!(out, "<p>{}</p>", html(&text)),
                };
            }
            Block::Code(code) => {
                let _ = match style {
                    Style::Text => writeln!(out, "{code}"),
                    Style::Markdown => writeln!(out, "```\n{code}```\n"),
                    Style::Html => writeln!(out, "<pre>{}</pre>", html(&code)),
                };
            }
        }
    }
    if style == Style::Html {
        out.push_str("</body></html>\n");
    }
    out
}

/// The report as text.
#[must_use]
pub fn render(audit: &Audit, diagnosis: &Diagnosis) -> String {
    render_as(audit, diagnosis, Style::Text)
}

/// The fix in the forms a platform team applies it, with the caveats (text).
#[must_use]
pub fn render_fix() -> String {
    let mut out = String::new();
    for block in fix_blocks() {
        match block {
            Block::Paragraph(text) => {
                let _ = writeln!(out, "{text}\n");
            }
            Block::Code(code) => {
                let _ = writeln!(out, "{code}");
            }
            Block::Heading(_) | Block::Table(..) | Block::Bullets(_) => {}
        }
    }
    out
}
