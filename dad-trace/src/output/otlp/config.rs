//! Where spans go and what they say of their source: `--otlp-endpoint` and the standard
//! OpenTelemetry variables, read as the OTLP exporter specification says. A setting dad-trace
//! cannot honour is refused with what to do, never ignored.
//!
//! Pure: mutation-tested (cargo xtask mutants).
use std::{path::PathBuf, time::Duration};

use hyper::Uri;

/// The path OTLP/HTTP receivers take traces on.
pub const TRACES_PATH: &str = "/v1/traces";
/// How long one export may take when `OTEL_EXPORTER_OTLP_TIMEOUT` does not say (the spec's).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Headers and resource attributes kept from the environment, each.
const PAIRS_MAX: usize = 64;

/// A complete exporter configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpConfig {
    /// Where the spans are posted (`…/v1/traces`).
    pub url: Uri,
    pub headers: Vec<(String, String)>,
    /// The resource's attributes: `service.name` first, then `OTEL_RESOURCE_ATTRIBUTES`.
    pub resource: Vec<(String, String)>,
    pub timeout: Duration,
    /// Certificates to trust besides the system's (a private collector's CA).
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{name}: {value:?} is not an http:// or https:// URL")]
    Url { name: &'static str, value: String },
    #[error("{name}={value:?}: dad-trace exports OTLP over http/protobuf only; unset it or set http/protobuf")]
    Protocol { name: &'static str, value: String },
    #[error("{name}: {value:?} is not a list of key=value pairs separated by commas")]
    Pairs { name: &'static str, value: String },
    #[error("{name}: {value:?} is not a timeout in milliseconds")]
    Timeout { name: &'static str, value: String },
}

/// What the command line says; the environment fills the rest.
#[derive(Clone, Debug, Default)]
pub struct OtlpFlags {
    pub endpoint: Option<String>,
    pub ca_file: Option<PathBuf>,
}

/// The configuration, or `None` when no endpoint is set anywhere (or `OTEL_SDK_DISABLED`).
/// `env` reads a variable (the process's environment in use, a table in tests).
pub fn resolve(flags: &OtlpFlags, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<OtlpConfig>, ConfigError> {
    let var = |name: &str| env(name).filter(|value| !value.trim().is_empty());
    if flags.endpoint.is_none() && var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    let url = if let Some(endpoint) = &flags.endpoint {
        base_url("--otlp-endpoint", endpoint)?
    } else if let Some(endpoint) = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &endpoint)?
    } else if let Some(endpoint) = var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        base_url("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)?
    } else {
        return Ok(None);
    };
    for name in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
        if let Some(value) = var(name).filter(|value| value.trim() != "http/protobuf") {
            return Err(ConfigError::Protocol { name, value });
        }
    }
    let mut headers = pairs("OTEL_EXPORTER_OTLP_HEADERS", var("OTEL_EXPORTER_OTLP_HEADERS"))?;
    // The traces' own headers win over the general ones of the same name.
    for (key, value) in pairs(
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        var("OTEL_EXPORTER_OTLP_TRACES_HEADERS"),
    )? {
        headers.retain(|(kept, _)| !kept.eq_ignore_ascii_case(&key));
        headers.push((key, value));
    }
    let mut resource = pairs("OTEL_RESOURCE_ATTRIBUTES", var("OTEL_RESOURCE_ATTRIBUTES"))?;
    let service = var("OTEL_SERVICE_NAME")
        .or_else(|| take(&mut resource, "service.name"))
        .unwrap_or_else(|| "dad-trace".into());
    resource.insert(0, ("service.name".into(), service));
    let timeout = ["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"]
        .into_iter()
        .find_map(|name| var(name).map(|value| milliseconds(name, &value)))
        .transpose()?
        .unwrap_or(DEFAULT_TIMEOUT);
    let ca_file = flags.ca_file.clone().or_else(|| {
        var("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE")
            .or_else(|| var("OTEL_EXPORTER_OTLP_CERTIFICATE"))
            .map(PathBuf::from)
    });
    Ok(Some(OtlpConfig {
        url,
        headers,
        resource,
        timeout,
        ca_file,
    }))
}

/// An endpoint used as it is (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).
fn url(name: &'static str, value: &str) -> Result<Uri, ConfigError> {
    let bad = || ConfigError::Url {
        name,
        value: value.into(),
    };
    let uri: Uri = value.trim().parse().map_err(|_| bad())?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => Ok(uri),
        _ => Err(bad()),
    }
}

/// A base endpoint: the traces path is added to its path, unless it already ends with it.
fn base_url(name: &'static str, value: &str) -> Result<Uri, ConfigError> {
    let uri = url(name, value)?;
    let path = uri.path().trim_end_matches('/').to_owned();
    if path.ends_with(TRACES_PATH) {
        return Ok(uri);
    }
    let mut parts = uri.into_parts();
    let query = parts
        .path_and_query
        .as_ref()
        .and_then(|pq| pq.query())
        .map(|query| format!("?{query}"))
        .unwrap_or_default();
    let joined = format!("{path}{TRACES_PATH}{query}");
    parts.path_and_query = Some(joined.parse().map_err(|_| ConfigError::Url {
        name,
        value: value.into(),
    })?);
    Uri::from_parts(parts).map_err(|_| ConfigError::Url {
        name,
        value: value.into(),
    })
}

/// `k1=v1,k2=v2` with percent-encoded values, as the spec writes headers and resource
/// attributes; at most [`PAIRS_MAX`] pairs.
fn pairs(name: &'static str, value: Option<String>) -> Result<Vec<(String, String)>, ConfigError> {
    let Some(value) = value else { return Ok(Vec::new()) };
    let bad = || ConfigError::Pairs {
        name,
        value: value.clone(),
    };
    let mut pairs = Vec::new();
    for pair in value.split(',').filter(|pair| !pair.trim().is_empty()) {
        let (key, val) = pair.split_once('=').ok_or_else(bad)?;
        let key = key.trim();
        if key.is_empty() || pairs.len() == PAIRS_MAX {
            return Err(bad());
        }
        pairs.push((key.to_owned(), percent_decoded(val.trim()).ok_or_else(bad)?));
    }
    Ok(pairs)
}

/// `%XX` escapes decoded; `None` when one is broken or the result is not UTF-8.
fn percent_decoded(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = text.get(at + 1..at + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn milliseconds(name: &'static str, value: &str) -> Result<Duration, ConfigError> {
    match value.trim().parse::<u64>() {
        Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
        _ => Err(ConfigError::Timeout {
            name,
            value: value.into(),
        }),
    }
}

fn take(pairs: &mut Vec<(String, String)>, key: &str) -> Option<String> {
    let at = pairs.iter().position(|(k, _)| k == key)?;
    Some(pairs.remove(at).1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(flag: Option<&str>, vars: &[(&str, &str)]) -> Result<Option<OtlpConfig>, ConfigError> {
        let flags = OtlpFlags {
            endpoint: flag.map(Into::into),
            ca_file: None,
        };
        resolve(&flags, &|name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        })
    }

    fn url_of(flag: Option<&str>, vars: &[(&str, &str)]) -> String {
        resolved(flag, vars).expect("valid").expect("set").url.to_string()
    }

    #[test]
    fn no_endpoint_means_no_export() {
        assert_eq!(resolved(None, &[]), Ok(None));
        assert_eq!(resolved(None, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "  ")]), Ok(None));
        let disabled = [
            ("OTEL_SDK_DISABLED", "TRUE"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
        ];
        assert_eq!(resolved(None, &disabled), Ok(None));
        // The command line is explicit: it wins over the switch.
        assert!(resolved(Some("http://c:4318"), &disabled).expect("valid").is_some());
        let enabled = [
            ("OTEL_SDK_DISABLED", "false"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
        ];
        assert!(resolved(None, &enabled).expect("valid").is_some());
    }

    #[test]
    fn base_endpoints_get_the_traces_path_and_signal_endpoints_do_not() {
        assert_eq!(
            url_of(Some("http://127.0.0.1:4318"), &[]),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(url_of(Some("http://c:4318/"), &[]), "http://c:4318/v1/traces");
        assert_eq!(url_of(Some("https://c/otlp?x=1"), &[]), "https://c/otlp/v1/traces?x=1");
        assert_eq!(url_of(Some("http://c:4318/v1/traces"), &[]), "http://c:4318/v1/traces");
        assert_eq!(
            url_of(None, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]),
            "http://c:4318/v1/traces"
        );
        let signal = [
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1/custom"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
        ];
        assert_eq!(url_of(None, &signal), "http://t:1/custom");
        assert_eq!(url_of(Some("http://flag:2"), &signal), "http://flag:2/v1/traces");
    }

    #[test]
    fn endpoints_that_are_not_http_urls_are_refused() {
        for bad in [
            "c:4318",
            "ftp://c/",
            "http://",
            "/v1/traces",
            "http://a b/",
            "unix:///run/otel.sock",
        ] {
            let error = resolved(Some(bad), &[]).expect_err(bad);
            assert!(
                matches!(
                    error,
                    ConfigError::Url {
                        name: "--otlp-endpoint",
                        ..
                    }
                ),
                "{bad}: {error}"
            );
        }
        let error = resolved(None, &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "grpc://c")]).expect_err("refused");
        assert!(
            error.to_string().starts_with("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "),
            "{error}"
        );
        let error = resolved(None, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "nope")]).expect_err("refused");
        assert!(
            error.to_string().starts_with("OTEL_EXPORTER_OTLP_ENDPOINT: "),
            "{error}"
        );
    }

    #[test]
    fn another_protocol_is_refused_not_ignored() {
        let flag = Some("http://c:4318");
        assert!(resolved(flag, &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]).is_ok());
        for name in ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] {
            let error = resolved(flag, &[(name, "grpc")]).expect_err("refused");
            assert_eq!(
                error,
                ConfigError::Protocol {
                    name,
                    value: "grpc".into()
                }
            );
            assert!(error.to_string().contains("http/protobuf only"));
        }
    }

    #[test]
    fn headers_are_decoded_and_the_traces_own_win() {
        let config = resolved(
            Some("http://c"),
            &[
                ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%20b, Tenant = one ,,x=%3D"),
                ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "tenant=two"),
            ],
        )
        .expect("valid")
        .expect("set");
        let expected = [("api-key", "a b"), ("x", "="), ("tenant", "two")].map(|(k, v)| (k.to_owned(), v.to_owned()));
        assert_eq!(config.headers, expected);
        for bad in ["novalue", "=v", "k=%zz", "k=%4", "k=%ff"] {
            let error = resolved(Some("http://c"), &[("OTEL_EXPORTER_OTLP_HEADERS", bad)]).expect_err(bad);
            assert!(matches!(error, ConfigError::Pairs { .. }), "{bad}");
        }
        let many = (0..=PAIRS_MAX).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(",");
        assert!(resolved(Some("http://c"), &[("OTEL_EXPORTER_OTLP_HEADERS", &many)]).is_err());
        let most = (0..PAIRS_MAX).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(",");
        assert!(resolved(Some("http://c"), &[("OTEL_EXPORTER_OTLP_HEADERS", &most)]).is_ok());
    }

    #[test]
    fn the_service_name_comes_first_from_its_variable_then_the_attributes() {
        let resource = |vars: &[(&str, &str)]| resolved(Some("http://c"), vars).expect("valid").expect("set").resource;
        assert_eq!(resource(&[]), [("service.name".to_owned(), "dad-trace".to_owned())]);
        let attributes = (
            "OTEL_RESOURCE_ATTRIBUTES",
            "service.name=from-attrs,deployment.environment=prod",
        );
        assert_eq!(
            resource(&[attributes]),
            [("service.name", "from-attrs"), ("deployment.environment", "prod")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert_eq!(resource(&[attributes, ("OTEL_SERVICE_NAME", "agent")])[0].1, "agent");
    }

    #[test]
    fn timeouts_and_certificates_come_from_the_most_specific_setting() {
        let config = |flags: OtlpFlags, vars: &[(&str, &str)]| {
            resolve(&flags, &|name| {
                vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
            })
            .expect("valid")
            .expect("set")
        };
        let flags = OtlpFlags {
            endpoint: Some("https://c".into()),
            ca_file: None,
        };
        let plain = config(flags.clone(), &[]);
        assert_eq!((plain.timeout, plain.ca_file), (DEFAULT_TIMEOUT, None));
        let vars = [
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "700"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/general.pem"),
            ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/traces.pem"),
        ];
        let specific = config(flags.clone(), &vars);
        assert_eq!(specific.timeout, Duration::from_millis(700));
        assert_eq!(specific.ca_file, Some(PathBuf::from("/traces.pem")));
        let general = config(flags.clone(), &[vars[0], vars[2]]);
        assert_eq!(
            (general.timeout, general.ca_file),
            (Duration::from_millis(2500), Some("/general.pem".into()))
        );
        let flagged = config(
            OtlpFlags {
                ca_file: Some("/flag.pem".into()),
                ..flags.clone()
            },
            &vars,
        );
        assert_eq!(flagged.ca_file, Some(PathBuf::from("/flag.pem")));
        for bad in ["0", "-1", "1.5", "soon"] {
            let error = resolve(&flags, &|name| {
                (name == "OTEL_EXPORTER_OTLP_TIMEOUT").then(|| bad.to_owned())
            })
            .expect_err(bad);
            assert!(matches!(error, ConfigError::Timeout { .. }), "{bad}");
        }
    }
}
