//! The alerts and the dashboard in deploy/, checked without a cluster: `promtool check rules`
//! and `promtool test rules` (alerts.test.yaml: each alert fires on the series that should
//! fire it and stays quiet otherwise), the Operator's `PrometheusRule` holding the same rules,
//! and every dashboard query parsed by promtool. The runtime test evaluates the queries
//! against a real Prometheus scraping `serve`. No root needed.
use integration_tests::{
    manifests::{deploy_dir, documents},
    monitoring::{dashboard, dashboard_queries, promtool, run_promtool},
};

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    if let Err(why) = promtool() {
        test_support::skip(why);
        return;
    }
    let dir = deploy_dir();
    let checked = run_promtool(&dir, &["check", "rules", "alerts.rules.yaml"]).expect("promtool check rules");
    assert!(checked.contains("SUCCESS: 4 rules found"), "{checked}");
    let tested = run_promtool(&dir, &["test", "rules", "alerts.test.yaml"]).expect("promtool test rules");
    println!("{tested}");
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// The unit tests do catch a wrong rule: with the p99 threshold raised above every pod's
/// wait, the expected alert is missing and promtool fails.
#[test]
fn promtool_unit_tests_fail_on_a_wrong_rule() {
    if let Err(why) = promtool() {
        test_support::skip(why);
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = std::fs::read_to_string(deploy_dir().join("alerts.rules.yaml")).expect("rules");
    let broken = rules.replace("[10m]))) > 1", "[10m]))) > 2");
    assert_ne!(rules, broken, "the threshold to break is where the test expects it");
    std::fs::write(dir.path().join("alerts.rules.yaml"), broken).expect("write");
    std::fs::copy(
        deploy_dir().join("alerts.test.yaml"),
        dir.path().join("alerts.test.yaml"),
    )
    .expect("copy");
    let result = run_promtool(dir.path(), &["test", "rules", "alerts.test.yaml"]);
    assert!(result.is_err_and(|e| e.to_string().contains("DadTracePodWaitHigh")));
}

#[test]
fn the_prometheus_rule_holds_the_same_alerts() {
    let rules = documents(&deploy_dir().join("alerts.rules.yaml")).expect("rules");
    let crd = documents(&deploy_dir().join("prometheusrule.yaml")).expect("PrometheusRule");
    assert_eq!(crd.len(), 1);
    assert_eq!(crd[0]["kind"].as_str(), Some("PrometheusRule"));
    assert_eq!(crd[0]["apiVersion"].as_str(), Some("monitoring.coreos.com/v1"));
    assert_eq!(crd[0]["spec"], rules[0]);
}

/// Every panel query is valid `PromQL` (promtool parses it through a rule file), and the
/// dashboard covers what the issue asks for.
#[test]
fn dashboard_queries_are_valid_promql() {
    let queries = dashboard_queries().expect("dashboard");
    let titles: Vec<&str> = queries.iter().map(|q| q.panel.as_str()).collect();
    for wanted in [
        "Pod DAD wait p50 per namespace",
        "Pod DAD wait p99 per namespace",
        "Pod DAD wait p50 / p99 per node",
        "DAD failures (duplicate addresses)",
        "Lost kernel events",
        "Tuned nodes",
    ] {
        assert!(titles.contains(&wanted), "{wanted} missing from {titles:?}");
    }
    let board = dashboard().expect("dashboard");
    assert_eq!(board["uid"], "dad-trace");
    if let Err(why) = promtool() {
        test_support::skip(format_args!("the promtool half: {why}"));
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let rules: Vec<serde_json::Value> = queries
        .iter()
        .enumerate()
        .map(|(index, query)| serde_json::json!({"record": format!("dashboard:query_{index}"), "expr": query.expr}))
        .collect();
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    // JSON is YAML: promtool reads it as a rule file.
    std::fs::write(dir.path().join("dashboard.rules.yaml"), file.to_string()).expect("write");
    let checked =
        run_promtool(dir.path(), &["check", "rules", "dashboard.rules.yaml"]).expect("promtool parses every query");
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{checked}"
    );
}
