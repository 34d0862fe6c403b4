//! The release files `cargo xtask dist` writes (`cargo xtask test` does, twice, before the
//! integration tests, and fails when the two differ): what a user downloads must verify, hold
//! what the docs say, and run. No root needed.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use test_support::skip;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn dist_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dist");
    if dir.join("SHA256SUMS").exists() {
        Some(dir)
    } else {
        skip(format_args!(
            "no release files in {} (cargo xtask dist writes them; cargo xtask test does first)",
            dir.display()
        ));
        None
    }
}

fn output(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The ELF machine (`e_machine`) of a 64-bit little-endian executable, and whether it asks
/// for a program interpreter (a dynamic loader: a static binary does not).
fn elf_machine_and_interpreter(binary: &[u8]) -> (u16, bool) {
    const PT_INTERP: u32 = 3;
    assert_eq!(&binary[..4], b"\x7fELF", "an ELF file");
    let u16_at = |at: usize| u16::from_le_bytes([binary[at], binary[at + 1]]);
    let u64_at = |at: usize| u64::from_le_bytes(binary[at..at + 8].try_into().expect("8 bytes"));
    let program_headers = usize::try_from(u64_at(0x20)).expect("offset");
    let (size, count) = (usize::from(u16_at(0x36)), usize::from(u16_at(0x38)));
    let interpreter = (0..count).any(|index| {
        let at = program_headers + index * size;
        u32::from_le_bytes(binary[at..at + 4].try_into().expect("4 bytes")) == PT_INTERP
    });
    (u16_at(0x12), interpreter)
}

#[test]
fn checksums_verify() {
    let Some(dist) = dist_dir() else {
        return;
    };
    let checked = output(Command::new("sha256sum").args(["-c", "SHA256SUMS"]).current_dir(&dist));
    let files: Vec<&str> = checked.lines().filter_map(|line| line.strip_suffix(": OK")).collect();
    assert_eq!(
        files,
        [
            format!("dad-trace-{VERSION}-x86_64-linux.tar.gz"),
            format!("dad-trace-{VERSION}-aarch64-linux.tar.gz"),
            format!("dad-trace-{VERSION}-oci.tar"),
        ],
        "{checked}"
    );
}

/// Each tarball unpacks into one directory, as the install line in the README says
/// (`tar -xzf … -C /usr/local --strip-components=1`), with a static binary of its
/// architecture, the manual pages, the completions and the licences.
#[test]
fn tarballs_hold_a_static_binary_its_pages_and_licences() {
    let Some(dist) = dist_dir() else {
        return;
    };
    for (arch, machine) in [("x86_64", 0x3e), ("aarch64", 0xb7)] {
        let name = format!("dad-trace-{VERSION}-{arch}-linux");
        let tarball = dist.join(format!("{name}.tar.gz"));
        let listing = output(Command::new("tar").arg("-tvzf").arg(&tarball));
        for line in listing.lines() {
            assert!(line.contains(" 0/0 "), "owned by root, by number: {line}");
            let path = line.split_whitespace().last().expect("path");
            assert!(path.starts_with(&format!("{name}/")), "{path} outside {name}/");
        }
        for wanted in [
            "bin/dad-trace",
            "share/man/man1/dad-trace.1",
            "share/man/man1/dad-trace-record.1",
            "share/bash-completion/completions/dad-trace",
            "share/zsh/vendor-completions/_dad-trace",
            "share/fish/vendor_completions.d/dad-trace.fish",
            "share/doc/dad-trace/README.md",
            "share/doc/dad-trace/LICENSE-MIT",
            "share/doc/dad-trace/LICENSE-APACHE",
        ] {
            assert!(
                listing.lines().any(|line| line.ends_with(&format!("{name}/{wanted}"))),
                "{wanted} missing from {}:\n{listing}",
                tarball.display()
            );
        }
        let unpacked = tempfile::tempdir().expect("tempdir");
        output(
            Command::new("tar")
                .arg("-xzf")
                .arg(&tarball)
                .arg("-C")
                .arg(unpacked.path())
                .arg("--strip-components=1"),
        );
        let binary = unpacked.path().join("bin/dad-trace");
        let bytes = std::fs::read(&binary).expect("binary");
        assert_eq!(elf_machine_and_interpreter(&bytes), (machine, false), "{arch}: static");
        if std::env::consts::ARCH == arch {
            let version = output(Command::new(&binary).arg("--version"));
            assert_eq!(version.trim(), format!("dad-trace {VERSION}"));
        }
    }
}

/// The OCI archive is the image for both platforms, named `dad-trace:VERSION`, as the docs'
/// `skopeo copy --all oci-archive:…` and `ctr images import` expect.
#[test]
fn the_oci_archive_names_the_version_and_both_platforms() {
    let Some(dist) = dist_dir() else {
        return;
    };
    let archive = dist.join(format!("dad-trace-{VERSION}-oci.tar"));
    let read = |member: &str| output(Command::new("tar").arg("-xOf").arg(&archive).arg(member));
    let layout: serde_json::Value = serde_json::from_str(&read("index.json")).expect("index.json");
    let image = &layout["manifests"][0];
    assert_eq!(
        image["annotations"]["io.containerd.image.name"].as_str(),
        Some(format!("docker.io/library/dad-trace:{VERSION}").as_str())
    );
    assert_eq!(
        image["annotations"]["org.opencontainers.image.ref.name"].as_str(),
        Some(VERSION)
    );
    let digest = image["digest"].as_str().expect("digest").replace(':', "/");
    let index: serde_json::Value = serde_json::from_str(&read(&format!("blobs/{digest}"))).expect("image index");
    let platforms: Vec<&str> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .filter_map(|manifest| manifest["platform"]["architecture"].as_str())
        .collect();
    assert_eq!(platforms, ["amd64", "arm64"]);
}
