// Package monitoring holds kmirror's monitoring as code: a Grafana
// dashboard (kmirror-dashboard.json) and Prometheus alerting rules
// (kmirror-alerts.yaml, unit-tested by kmirror-alerts_test.yaml with
// promtool). Its Go tests check that both name only metrics kmirror
// exports.
package monitoring
