package deploy_test

import (
	"encoding/json"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"

	"github.com/dinie/dinie-auth-proxy/deploy/internal/manifests"
)

// Metric names that expressions may use besides those in metrics.txt.
var (
	// up is made by Prometheus for every target.
	ruleExtraMetrics = []string{"up"}
	// Standard collectors of the proxy's registry, used by the dashboard.
	dashboardExtraMetrics = []string{"process_resident_memory_bytes", "process_cpu_seconds_total"}
)

// The alerts a person on call needs; each must exist and be unit tested.
var wantAlerts = []string{
	"DinieProxyDown",
	"DinieProxyHighErrorRate",
	"DinieProxyInterceptLeafExpiringSoon",
	"DinieProxyNotReady",
	"DinieProxyOverloaded",
	"DinieProxyRateLimitLow",
	"DinieProxyRetryBudgetExhausted",
	"DinieProxyTokenExpiringSoon",
	"DinieProxyTokenFetchFailing",
	"DinieProxyTunnelHandshakesFailing",
	"DinieProxyUpstream401RetriesHigh",
	"DinieProxyUpstreamRetriesHigh",
}

// The dashboard must show these.
var wantDashboardMetrics = []string{
	"dinie_proxy_requests_total",
	"dinie_proxy_request_duration_seconds_bucket",
	"dinie_proxy_requests_in_flight",
	"dinie_proxy_overloaded_total",
	"dinie_proxy_token_expiry_timestamp_seconds",
	"dinie_proxy_token_fetches_total",
	"dinie_proxy_tunnels_total",
	"dinie_proxy_intercept_leaf_expiry_timestamp_seconds",
	"dinie_proxy_upstream_retries_total",
	"dinie_proxy_retry_budget_exhausted_total",
	"dinie_proxy_session_tokens",
	"dinie_proxy_tunnels_open",
	"dinie_proxy_build_info",
}

var promqlParser = parser.NewParser(parser.Options{})

// metricNames parses a PromQL expression and returns the metric names it
// selects. A selector whose name cannot be known (a regular expression on
// __name__) is an error: it could match anything.
func metricNames(expr string) ([]string, error) {
	ast, err := promqlParser.ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	var names []string
	var walkErr error
	parser.Inspect(ast, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name != labels.MetricName {
				continue
			}
			if m.Type != labels.MatchEqual {
				walkErr = &unknownNameError{vs.String()}
				return walkErr
			}
			name = m.Value
		}
		if name == "" {
			walkErr = &unknownNameError{vs.String()}
			return walkErr
		}
		names = append(names, name)
		return nil
	})
	return names, walkErr
}

type unknownNameError struct{ selector string }

func (e *unknownNameError) Error() string {
	return "selector " + e.selector + " names no single metric"
}

func checkNames(t *testing.T, where, expr string, allowed map[string]bool) []string {
	t.Helper()
	names, err := metricNames(expr)
	if err != nil {
		t.Errorf("%s: %v\n%s", where, err, expr)
		return nil
	}
	for _, n := range names {
		if !allowed[n] {
			t.Errorf("%s: metric %q is not exported by the proxy (see metrics.txt)", where, n)
		}
	}
	return names
}

// loadRules renders the monitoring kustomization, which holds the rules.
func loadRules(t *testing.T) *rendered {
	t.Helper()
	mon := render(t, "monitoring")
	if len(mon.prometheusRules) == 0 {
		t.Fatal("monitoring renders no PrometheusRule")
	}
	return mon
}

func TestAlertRules(t *testing.T) {
	allowed := allowedMetrics(t, ruleExtraMetrics...)
	mon := loadRules(t)
	var alerts []string
	for _, pr := range mon.prometheusRules {
		for _, g := range pr.Spec.Groups {
			for _, r := range g.Rules {
				where := "rule " + r.Alert + r.Record
				checkNames(t, where, r.Expr.String(), allowed)
				if r.Alert == "" {
					continue
				}
				alerts = append(alerts, r.Alert)
				if sev := r.Labels["severity"]; sev != "critical" && sev != "warning" {
					t.Errorf("%s: severity %q, want critical or warning", where, sev)
				}
				for _, a := range []string{"summary", "description"} {
					if strings.TrimSpace(r.Annotations[a]) == "" {
						t.Errorf("%s: no %s annotation", where, a)
					}
				}
			}
		}
	}
	slices.Sort(alerts)
	if !slices.Equal(alerts, wantAlerts) {
		t.Errorf("alerts %v, want %v", alerts, wantAlerts)
	}
}

// TestRulesFileIsValid checks the rules file that deploy/ci.sh hands to
// promtool, with the same parser that Prometheus uses to load it.
func TestRulesFileIsValid(t *testing.T) {
	mon := loadRules(t)
	out, err := manifests.RulesFile(mon.objs)
	if err != nil {
		t.Fatal(err)
	}
	groups, errs := rulefmt.Parse(out, false, model.UTF8Validation, promqlParser, slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Error(err)
	}
	if groups == nil || len(groups.Groups) == 0 {
		t.Fatal("the rules file holds no group")
	}
}

// ruleTestFile is the part of promtool's rule test format that this test
// reads; promtool itself validates the rest.
type ruleTestFile struct {
	RuleFiles []string `json:"rule_files"`
	Tests     []struct {
		Name        string `json:"name"`
		InputSeries []struct {
			Series string `json:"series"`
		} `json:"input_series"`
		AlertRuleTest []struct {
			Alertname string            `json:"alertname"`
			EvalTime  string            `json:"eval_time"`
			ExpAlerts []json.RawMessage `json:"exp_alerts"`
		} `json:"alert_rule_test"`
	} `json:"tests"`
}

// TestAlertUnitTestsCoverEveryAlert makes sure that the promtool tests run by
// deploy/ci.sh both fire and do not fire every alert, and feed only series
// that the proxy exports.
func TestAlertUnitTestsCoverEveryAlert(t *testing.T) {
	allowed := allowedMetrics(t, ruleExtraMetrics...)
	var f ruleTestFile
	if err := yaml.Unmarshal(readFile(t, "monitoring", "tests", "alerts_test.yaml"), &f); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(f.RuleFiles, []string{"rules.yaml"}) {
		t.Errorf("rule_files %v: deploy/ci.sh writes the extracted rules to rules.yaml beside the test file", f.RuleFiles)
	}
	fires, quiet := map[string]int{}, map[string]int{}
	for _, tg := range f.Tests {
		for _, s := range tg.InputSeries {
			lbls, err := promqlParser.ParseMetric(s.Series)
			if err != nil {
				t.Errorf("test %q: series %q: %v", tg.Name, s.Series, err)
				continue
			}
			if name := lbls.Get(labels.MetricName); !allowed[name] {
				t.Errorf("test %q: input series %q is not exported by the proxy", tg.Name, name)
			}
		}
		for _, at := range tg.AlertRuleTest {
			if len(at.ExpAlerts) > 0 {
				fires[at.Alertname]++
			} else {
				quiet[at.Alertname]++
			}
			if !slices.Contains(wantAlerts, at.Alertname) {
				t.Errorf("test %q: unknown alert %q", tg.Name, at.Alertname)
			}
		}
	}
	for _, a := range wantAlerts {
		if fires[a] == 0 {
			t.Errorf("no promtool test fires %s", a)
		}
		if quiet[a] == 0 {
			t.Errorf("no promtool test shows %s not firing", a)
		}
	}
}

// grafanaVar matches Grafana's template variables: $name, ${name}, ${name:fmt}
// and [[name]].
var grafanaVar = regexp.MustCompile(`\$\{[^}]+\}|\$\w+|\[\[\w+\]\]`)

// withoutGrafanaVars replaces Grafana's variables so that PromQL can parse the
// query: interval variables by a duration, the others by a plain word (they
// only appear inside label matcher strings here).
func withoutGrafanaVars(q string) string {
	return grafanaVar.ReplaceAllStringFunc(q, func(v string) string {
		switch strings.Trim(v, "${}[]") {
		case "__rate_interval", "__interval", "__range":
			return "5m"
		}
		return "grafana_var"
	})
}

// labelValues matches Grafana's label_values(selector, label) variable query.
var labelValues = regexp.MustCompile(`^label_values\((.+),\s*\w+\)$`)

func TestDashboard(t *testing.T) {
	allowed := allowedMetrics(t, dashboardExtraMetrics...)
	mon := render(t, "monitoring")
	var dashboards []string
	for name, cm := range mon.configMaps {
		if cm.Labels[dashboardLabel] == "1" {
			dashboards = append(dashboards, name)
		}
	}
	name := only(t, "ConfigMap labelled "+dashboardLabel+`: "1"`, dashboards)
	cm := mon.configMaps[name]
	key := only(t, "dashboard file in "+name, sortedKeys(cm.Data))
	if !strings.HasSuffix(key, ".json") {
		t.Errorf("dashboard key %q: Grafana's sidecar loads *.json", key)
	}

	var dash struct {
		UID        string         `json:"uid"`
		Title      string         `json:"title"`
		Panels     []grafanaPanel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal([]byte(cm.Data[key]), &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	if dash.UID == "" || dash.Title == "" {
		t.Error("dashboard needs a uid and a title")
	}

	used := map[string]bool{}
	ids := map[int]bool{}
	var queries int
	var walk func(panels []grafanaPanel)
	walk = func(panels []grafanaPanel) {
		for _, p := range panels {
			if ids[p.ID] {
				t.Errorf("panel id %d used twice", p.ID)
			}
			ids[p.ID] = true
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				queries++
				for _, n := range checkNames(t, "panel "+p.Title, withoutGrafanaVars(tg.Expr), allowed) {
					used[n] = true
				}
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	if queries == 0 {
		t.Fatal("dashboard has no queries")
	}
	for _, m := range wantDashboardMetrics {
		if !used[m] {
			t.Errorf("dashboard shows nothing from %s", m)
		}
	}

	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			// Older dashboards keep the query as a plain string.
			if err := json.Unmarshal(v.Query, &q.Query); err != nil {
				t.Errorf("variable %s: query: %v", v.Name, err)
				continue
			}
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(selector, label)", v.Name, q.Query)
			continue
		}
		checkNames(t, "variable "+v.Name, withoutGrafanaVars(m[1]), allowed)
	}
}

type grafanaPanel struct {
	ID      int            `json:"id"`
	Type    string         `json:"type"`
	Title   string         `json:"title"`
	Panels  []grafanaPanel `json:"panels"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}
