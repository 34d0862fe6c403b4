//! Debian packages for other releases and architectures (bullseye kernels, arm64 kernels,
//! arm64 busybox, CNI plugins and Rust standard library; sid's containerd) through
//! project-local apt sources lists and lists directories in the cache. The machine's apt
//! configuration and dpkg architectures are left alone: these packages are only downloaded
//! and unpacked.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, bail};

use crate::run;

/// bookworm (the machine's release) and bullseye (the 5.10 kernels), both architectures.
const SOURCES: &str = "\
deb [arch=amd64,arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [arch=amd64,arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-updates main
deb [arch=amd64,arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
deb [arch=amd64,arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main
deb [arch=amd64,arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bullseye-security main
";

/// Lists older than this are refreshed: kernels are picked as the newest the lists name,
/// and the mirror drops superseded ones.
const LISTS_MAX_AGE: Duration = Duration::from_hours(24);

/// Downloads are kept here: `DAD_TRACE_CACHE`, else /var/cache/dad-trace for root (shared by
/// checkouts), else the user's cache.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DAD_TRACE_CACHE") {
        return dir.into();
    }
    if crate::is_root() {
        return "/var/cache/dad-trace".into();
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    std::env::var_os("XDG_CACHE_HOME")
        .map_or_else(|| home.join(".cache"), PathBuf::from)
        .join("dad-trace")
}

/// The project-local apt state.
pub struct Apt {
    dir: PathBuf,
}

impl Apt {
    /// bookworm and bullseye ([`SOURCES`]).
    pub fn local() -> anyhow::Result<Self> {
        Self::with_sources("apt", SOURCES)
    }

    /// The apt state in `name` under the cache, for `sources` alone: writes the sources list
    /// and refreshes the lists when missing or stale.
    pub fn with_sources(name: &str, sources: &str) -> anyhow::Result<Self> {
        let apt = Self {
            dir: cache_dir().join(name),
        };
        fs::create_dir_all(apt.dir.join("lists/partial"))?;
        fs::create_dir_all(apt.dir.join("archives/partial"))?;
        let list = apt.dir.join("sources.list");
        let changed = fs::read_to_string(&list).ok().as_deref() != Some(sources);
        if changed {
            fs::write(&list, sources)?;
        }
        let stamp = apt.dir.join("lists/updated");
        let fresh = fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .is_ok_and(|t| SystemTime::now().duration_since(t).unwrap_or_default() < LISTS_MAX_AGE);
        if changed || !fresh {
            run(apt.command("apt-get").args(["update", "-q"]))?;
            fs::write(&stamp, b"")?;
        }
        Ok(apt)
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        let option = |name: &str, value: &Path| format!("{name}={}", value.display());
        for arg in [
            option("Dir::Etc::SourceList", &self.dir.join("sources.list")),
            option("Dir::Etc::SourceParts", &self.dir.join("sources.list.d")),
            option("Dir::State::Lists", &self.dir.join("lists")),
            option("Dir::Cache", &self.dir),
            option("Dir::Cache::Archives", &self.dir.join("archives")),
            // Downloads land in the cache, which the _apt sandbox user cannot write.
            "APT::Sandbox::User=root".into(),
            "APT::Architectures::=amd64".into(),
            "APT::Architectures::=arm64".into(),
            // Only package lists are needed: no translations, no AppStream metadata.
            "Acquire::Languages=none".into(),
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled=false".into(),
        ] {
            command.arg("-o").arg(arg);
        }
        command
    }

    /// Package names that start with `prefix`, as the lists know them.
    pub fn names(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        let output = self
            .command("apt-cache")
            .args(["pkgnames", prefix])
            .output()
            .context("apt-cache pkgnames")?;
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// The version apt would pick of `name` (`Candidate:` of `apt-cache policy`).
    pub fn candidate(&self, name: &str) -> anyhow::Result<String> {
        let output = self
            .command("apt-cache")
            .args(["policy", name])
            .output()
            .context("apt-cache policy")?;
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .find_map(|line| line.trim().strip_prefix("Candidate:"))
            .map(|version| version.trim().to_string())
            .filter(|version| version != "(none)")
            .with_context(|| format!("the lists in {} have no {name}", self.dir.display()))
    }

    /// Whether the lists name this exact version (`apt-cache show` exits 0 either way: its
    /// record says).
    pub fn knows(&self, name: &str, version: &str) -> bool {
        self.command("apt-cache")
            .args(["show", &format!("{name}={version}")])
            .output()
            .is_ok_and(|output| {
                String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .any(|line| line.strip_prefix("Version: ") == Some(version))
            })
    }

    /// Downloads a package once and unpacks it into the cache; returns the unpacked root.
    pub fn unpacked(&self, deb: &Deb) -> anyhow::Result<PathBuf> {
        self.unpacked_checked(deb, None)
    }

    /// As [`Self::unpacked`], the download checked against `sha256` (lower-case hex) when
    /// given: a file that differs is deleted, and nothing is unpacked.
    pub fn unpacked_checked(&self, deb: &Deb, sha256: Option<&str>) -> anyhow::Result<PathBuf> {
        let dir = cache_dir().join("debs");
        let root = deb.root();
        if deb.is_unpacked() {
            return Ok(root);
        }
        fs::create_dir_all(&dir)?;
        let find = || {
            fs::read_dir(&dir)
                .ok()
                .and_then(|entries| entries.flatten().map(|e| e.path()).find(|p| deb.is_file(p)))
        };
        if find().is_none() {
            let spec = match deb.version {
                Some(version) => format!("{}:{}={version}", deb.name, deb.arch),
                None => format!("{}:{}", deb.name, deb.arch),
            };
            run(self
                .command("apt-get")
                .args(["download", "-q", &spec])
                .current_dir(&dir))?;
        }
        let Some(file) = find() else {
            bail!("apt-get download {} left no .deb in {}", deb.name, dir.display());
        };
        if let Some(wanted) = sha256 {
            let found = sha256_of(&file)?;
            if found != wanted {
                fs::remove_file(&file)?;
                bail!("{}: sha256 {found}, expected {wanted} (deleted)", file.display());
            }
        }
        if root.exists() {
            fs::remove_dir_all(&root)?;
        }
        fs::create_dir_all(&root)?;
        run(Command::new("dpkg-deb").arg("-x").arg(&file).arg(&root))?;
        fs::write(root.join(".complete"), b"")?;
        Ok(root)
    }
}

/// One package of one architecture, of a given version or the newest the lists name.
pub struct Deb<'a> {
    pub name: &'a str,
    pub arch: &'a str,
    pub version: Option<&'a str>,
}

impl Deb<'_> {
    /// Where the package is unpacked in the cache.
    pub fn root(&self) -> PathBuf {
        cache_dir().join("unpacked").join(format!(
            "{}_{}_{}",
            self.name,
            self.version.unwrap_or("newest"),
            self.arch
        ))
    }

    /// Whether it has been unpacked there, completely.
    pub fn is_unpacked(&self) -> bool {
        self.root().join(".complete").exists()
    }

    /// Whether `path` is this package's file (`name_version_arch.deb`, `:` encoded as `%3a`).
    fn is_file(&self, path: &Path) -> bool {
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(rest) = file.strip_prefix(&format!("{}_", self.name)) else {
            return false;
        };
        let Some(version) = rest.strip_suffix(&format!("_{}.deb", self.arch)) else {
            return false;
        };
        self.version.is_none_or(|wanted| version == wanted.replace(':', "%3a"))
    }
}

/// The installed version of a machine package (to fetch the same version for arm64).
pub fn installed_version(package: &str) -> anyhow::Result<String> {
    let output = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", package])
        .output()
        .context("dpkg-query")?;
    let version = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if !output.status.success() || version.is_empty() {
        bail!("{package} is not installed");
    }
    Ok(version)
}

/// The sha256 of a file, in lower-case hex (`sha256sum`).
fn sha256_of(file: &Path) -> anyhow::Result<String> {
    let output = Command::new("sha256sum").arg(file).output().context("sha256sum")?;
    if !output.status.success() {
        bail!(
            "sha256sum {}: {}",
            file.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text.split_whitespace().next().unwrap_or_default().to_string())
}
