package deploy_test

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/dinie/dinie-auth-proxy/deploy/internal/manifests"
)

// Names fixed by the README and by the manifests; a test fails when one drifts.
const (
	sidecarName = "dinie-auth-proxy"
	// The Secret users create outside of git; nothing here may render it.
	credentialsSecret = "dinie-auth-proxy-credentials"
	sidecarImage      = "ghcr.io/dinie/dinie-auth-proxy:0.1.0"
	configKey         = "config.yaml"
	adminPortName     = "admin"
	dashboardLabel    = "grafana_dashboard"
)

// typedObject returns a new value of the Go type for a rendered object's kind.
// A kind missing here fails the render test: every object must decode
// strictly into the real API type.
func typedObject(apiVersion, kind string) (any, bool) {
	switch apiVersion + "/" + kind {
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}, true
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}, true
	case "v1/Secret":
		return &corev1.Secret{}, true
	case "monitoring.coreos.com/v1/PodMonitor":
		return &monitoringv1.PodMonitor{}, true
	case "monitoring.coreos.com/v1/PrometheusRule":
		return &monitoringv1.PrometheusRule{}, true
	}
	return nil, false
}

// rendered holds the typed objects of one kustomization.
type rendered struct {
	objs            []manifests.Object
	deployments     []*appsv1.Deployment
	configMaps      map[string]*corev1.ConfigMap
	secrets         map[string]*corev1.Secret
	podMonitors     []*monitoringv1.PodMonitor
	prometheusRules []*monitoringv1.PrometheusRule
}

// render builds the kustomization in dir (relative to deploy/) and decodes
// every object strictly into its API type.
func render(t *testing.T, dir string) *rendered {
	t.Helper()
	objs, err := manifests.Render(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) == 0 {
		t.Fatalf("%s renders no objects", dir)
	}
	r := &rendered{
		objs:       objs,
		configMaps: map[string]*corev1.ConfigMap{},
		secrets:    map[string]*corev1.Secret{},
	}
	for _, o := range objs {
		v, ok := typedObject(o.APIVersion, o.Kind)
		if !ok {
			t.Fatalf("%s: %s %s: no Go type known for %s %s; add it to typedObject", dir, o.Kind, o.Name, o.APIVersion, o.Kind)
		}
		if err := manifests.DecodeStrict(o.JSON, v); err != nil {
			t.Fatalf("%s: %s %s does not decode strictly into %T: %v", dir, o.Kind, o.Name, v, err)
		}
		switch v := v.(type) {
		case *appsv1.Deployment:
			r.deployments = append(r.deployments, v)
		case *corev1.ConfigMap:
			r.configMaps[v.Name] = v
		case *corev1.Secret:
			r.secrets[v.Name] = v
		case *monitoringv1.PodMonitor:
			r.podMonitors = append(r.podMonitors, v)
		case *monitoringv1.PrometheusRule:
			r.prometheusRules = append(r.prometheusRules, v)
		}
	}
	return r
}

// proxyConfig mirrors the keys of docs/configuration.md's table. Decoding is
// strict, as the proxy rejects unknown keys in its file.
type proxyConfig struct {
	Upstream struct {
		URL     string `json:"url"`
		Timeout string `json:"timeout"`
		CAFile  string `json:"ca_file"`
	} `json:"upstream"`
	Auth struct {
		TokenURL         string `json:"token_url"`
		ClientID         string `json:"client_id"`
		ClientIDFile     string `json:"client_id_file"`
		ClientSecret     string `json:"client_secret"`
		ClientSecretFile string `json:"client_secret_file"`
		RefreshBefore    string `json:"refresh_before"`
	} `json:"auth"`
	Listen struct {
		Proxy string `json:"proxy"`
		Admin string `json:"admin"`
	} `json:"listen"`
	Log struct {
		Level  string `json:"level"`
		Format string `json:"format"`
	} `json:"log"`
	Shutdown struct {
		Timeout string `json:"timeout"`
	} `json:"shutdown"`
}

func parseProxyConfig(t *testing.T, text string) proxyConfig {
	t.Helper()
	data, err := yaml.YAMLToJSON([]byte(text))
	if err != nil {
		t.Fatalf("config.yaml: %v", err)
	}
	var cfg proxyConfig
	if err := manifests.DecodeStrict(data, &cfg); err != nil {
		t.Fatalf("config.yaml has a key the proxy would reject: %v", err)
	}
	return cfg
}

// allowedMetrics reads metrics.txt, the names the proxy really exports (kept
// honest by a test of the main module), and adds extra.
func allowedMetrics(t *testing.T, extra ...string) map[string]bool {
	t.Helper()
	f, err := os.Open("metrics.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	allowed := map[string]bool{}
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name := strings.TrimSpace(sc.Text())
		if name == "" {
			continue
		}
		if !strings.HasPrefix(name, "dinie_proxy_") {
			t.Fatalf("metrics.txt: %q does not start with dinie_proxy_", name)
		}
		allowed[name] = true
		names = append(names, name)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(names) == 0 {
		t.Fatal("metrics.txt is empty")
	}
	if !slices.IsSorted(names) || len(slices.Compact(slices.Clone(names))) != len(names) {
		t.Fatal("metrics.txt must be sorted with one name a line")
	}
	for _, name := range extra {
		allowed[name] = true
	}
	return allowed
}

func readFile(t *testing.T, path ...string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(path...))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func only[T any](t *testing.T, what string, items []T) T {
	t.Helper()
	if len(items) != 1 {
		t.Fatalf("want exactly one %s, got %d", what, len(items))
	}
	return items[0]
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func describe(c corev1.Container) string { return fmt.Sprintf("container %q", c.Name) }
