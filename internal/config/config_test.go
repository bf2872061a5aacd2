package config

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/viper"
)

const testSecret = "fake-config-secret"

// credentials is an environment with the two required keys.
var credentials = []string{"DINIE_PROXY_AUTH_CLIENT_ID=fake-id", "DINIE_PROXY_AUTH_CLIENT_SECRET=" + testSecret}

func load(t *testing.T, args []string, environ ...string) *Settings {
	t.Helper()
	cmd, err := Load(args, append(environ, credentials...), nil)
	if err != nil {
		t.Fatal(err)
	}
	return cmd.Settings
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPrecedence(t *testing.T) {
	file := writeFile(t, `
upstream:
  timeout: 11s
listen:
  proxy: 127.0.0.1:1111
  admin: 127.0.0.1:2222
log:
  level: warn
  format: ""
auth:
  client_id: from-file
  client_secret: fake-file-secret
`)
	cmd, err := Load([]string{"--listen.admin", "127.0.0.1:5555"}, []string{
		"DINIE_PROXY_CONFIG=" + file,
		"DINIE_PROXY_LISTEN_PROXY=127.0.0.1:3333",
		"DINIE_PROXY_LISTEN_ADMIN=127.0.0.1:4444",
		"DINIE_PROXY_LOG_LEVEL=", // empty counts as unset
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := cmd.Settings
	for _, c := range []struct{ key, got, want, source string }{
		{"upstream.timeout", s.UpstreamTimeout.String(), "11s", "file " + file},
		{"listen.proxy", s.ListenProxy, "127.0.0.1:3333", "environment DINIE_PROXY_LISTEN_PROXY"},
		{"listen.admin", s.ListenAdmin, "127.0.0.1:5555", "flag --listen.admin"},
		{"log.level", s.LogLevel.String(), "warn", "file " + file},
		{"log.format", s.LogFormat.String(), "json", "default"},
		{"upstream.url", s.UpstreamURL.String(), "https://api.dinie.com.br/api/v3", "default"},
		{"auth.token_url", s.TokenURL, "https://api.dinie.com.br/api/v3/auth/token", "default"},
		{"auth.refresh_before", s.RefreshBefore.String(), "5m0s", "default"},
		{"shutdown.timeout", s.ShutdownTimeout.String(), "25s", "default"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.key, c.got, c.want)
		}
		if src := s.Source(c.key).String(); src != c.source {
			t.Errorf("%s comes from %q, want %q", c.key, src, c.source)
		}
	}
}

// TestDefaults checks the keys whose consumers other packages implement:
// they are read with the documented defaults.
func TestDefaults(t *testing.T) {
	s := load(t, nil)
	if s.PassBearer != PassSession || s.SessionTokensMax != 10000 || s.MaxTunnels != 1024 || s.AllowRemote ||
		s.MaxInFlight != 1024 || s.Transport != HTTP1 || s.ProxyServer != HTTP1 || s.Intercept.Enabled {
		t.Errorf("defaults: %+v", s)
	}
	s = load(t, []string{"--auth.pass_bearer", "any", "--auth.session_tokens_max", "7", "--limits.max_tunnels", "9",
		"--upstream.transport", "standard", "--listen.proxy_server", "standard"})
	if s.PassBearer != PassAny || s.SessionTokensMax != 7 || s.MaxTunnels != 9 || s.Transport != Standard || s.ProxyServer != Standard {
		t.Errorf("set: %+v", s)
	}
}

// TestRetryKeys reads the retry keys, whose zero and "off" (which YAML
// may take for false) mean "never".
func TestRetryKeys(t *testing.T) {
	s := load(t, nil)
	if s.Retries != 2 || s.RetryMaxWait != 10*time.Second || s.IdempotencyKeys {
		t.Errorf("defaults: retries %d, max wait %v, auto keys %v; want 2, 10s, false", s.Retries, s.RetryMaxWait, s.IdempotencyKeys)
	}
	for _, tt := range []struct {
		yaml    string
		retries int
		wait    time.Duration
		auto    bool
	}{
		{"upstream:\n  retries: 0\n  retry_max_wait: 3s\n  idempotency_keys: auto\n", 0, 3 * time.Second, true},
		{"upstream:\n  retries: 5\n  idempotency_keys: off\n", 5, 10 * time.Second, false},
	} {
		s := load(t, []string{"--config", writeFile(t, tt.yaml)})
		if s.Retries != tt.retries || s.RetryMaxWait != tt.wait || s.IdempotencyKeys != tt.auto {
			t.Errorf("%q: retries %d, max wait %v, auto keys %v; want %d, %v, %v", tt.yaml, s.Retries, s.RetryMaxWait, s.IdempotencyKeys, tt.retries, tt.wait, tt.auto)
		}
	}
}

func TestPassthroughFromAYAMLList(t *testing.T) {
	f := writeFile(t, "intercept:\n  passthrough:\n    - api.stripe.com\n    - \"*.amazonaws.com\"\n")
	if got := strings.Join(load(t, []string{"--config", f}).Intercept.Passthrough, ","); got != "api.stripe.com,*.amazonaws.com" {
		t.Errorf("passthrough = %q", got)
	}
	s := load(t, nil, "DINIE_PROXY_INTERCEPT_PASSTHROUGH= a.example , ,*.b.example:8443")
	if got := strings.Join(s.Intercept.Passthrough, ","); got != "a.example,*.b.example:8443" {
		t.Errorf("passthrough from the environment = %q", got)
	}
}

// TestExampleIsCompleteAndValid keeps config.yaml.example in step with
// the keys the program knows.
func TestExampleIsCompleteAndValid(t *testing.T) {
	b, err := os.ReadFile("../../config.yaml.example")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		section, leaf, _ := strings.Cut(k.name, ".")
		if !strings.Contains(string(b), "\n"+section+":\n") || !strings.Contains(string(b), "\n  "+leaf+":") {
			t.Errorf("config.yaml.example does not show %s", k.name)
		}
	}
	cmd, err := Load([]string{"--config", "../../config.yaml.example"}, credentials, nil)
	if err != nil {
		t.Fatalf("config.yaml.example does not load: %v", err)
	}
	for _, k := range keys {
		if src := cmd.Settings.Source(k.name); k.def != "" && (cmd.values[k.name] != k.def || src.Kind != File) {
			t.Errorf("config.yaml.example shows %s as %q, not its default %q", k.name, cmd.values[k.name], k.def)
		}
	}
}

// Every boolean key is a switch: bare, with =value, or followed by true or
// false.
func TestBooleanFlags(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want bool
	}{
		{[]string{"--intercept.enabled"}, true},
		{[]string{"-intercept.enabled"}, true},
		{[]string{"--intercept.enabled=false"}, false},
		{[]string{"--intercept.enabled", "true"}, true},
		{[]string{"--intercept.enabled", "false"}, false},
		{[]string{"--intercept.enabled", "--log.level", "debug"}, true},
		{nil, false},
	} {
		if got := load(t, tt.args).Intercept.Enabled; got != tt.want {
			t.Errorf("%q: intercept.enabled = %v, want %v", tt.args, got, tt.want)
		}
	}
	if !load(t, []string{"--listen.allow_remote", "--listen.proxy", "0.0.0.0:8080"}).AllowRemote {
		t.Error("--listen.allow_remote as a switch did not set it")
	}
	for _, k := range keys {
		if def := k.def; (def == "true" || def == "false") != k.boolean {
			t.Errorf("%s: a boolean default, but not a switch (or the other way round)", k.name)
		}
	}
}

func TestActions(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want Action
		demo bool
	}{
		{nil, Serve, false},
		{[]string{"--check"}, Check, false},
		{[]string{"--print-config"}, PrintConfig, false},
		{[]string{"--print-config", "--demo"}, PrintConfig, true},
		{[]string{"--version"}, Version, false},
		{[]string{"--help", "--check"}, Help, false},
		{[]string{"-h"}, Help, false},
		{[]string{"--demo"}, Serve, true},
	} {
		cmd, err := Load(tt.args, credentials, map[string]string{})
		if err != nil {
			t.Fatalf("%q: %v", tt.args, err)
		}
		if cmd.Action != tt.want || cmd.Demo != tt.demo {
			t.Errorf("%q: action %d demo %v, want %d %v", tt.args, cmd.Action, cmd.Demo, tt.want, tt.demo)
		}
	}
	for _, args := range [][]string{{"--check", "--version"}, {"--check", "--demo"}, {"--check=maybe"}, {"stray"}, {"--config"}} {
		if _, err := Load(args, credentials, nil); !isConfigError(err) {
			t.Errorf("%q: %v, want a configuration error", args, err)
		}
	}
}

func isConfigError(err error) bool {
	_, ok := errors.AsType[*Error](err)
	return ok
}

// A typo names what was probably meant.
func TestDidYouMean(t *testing.T) {
	for _, tt := range []struct {
		name    string
		args    []string
		environ []string
		want    string
	}{
		{"variable", nil, []string{"DINIE_PROXY_UPSTREAM_URI=https://sandbox.example"},
			"DINIE_PROXY_UPSTREAM_URI: no such setting; did you mean DINIE_PROXY_UPSTREAM_URL (upstream.url)?"},
		{"secret variable", nil, []string{"DINIE_PROXY_AUTH_CLIENT_SECRETT=" + testSecret},
			"DINIE_PROXY_AUTH_CLIENT_SECRETT: no such setting; did you mean DINIE_PROXY_AUTH_CLIENT_SECRET (auth.client_secret)?"},
		{"flag", []string{"--upstream.uri", "x"}, nil, "--upstream.uri: no such flag; did you mean --upstream.url?"},
		{"switch", []string{"--print-confg"}, nil, "--print-confg: no such flag; did you mean --print-config?"},
		{"file key", []string{"--config", writeFile(t, "upstream:\n  ur1: https://typo.example\n")}, nil, "upstream.ur1: unknown key in "},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(tt.args, append(tt.environ, credentials...), nil)
			if !isConfigError(err) || !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
			if strings.Contains(err.Error(), testSecret) {
				t.Error("the message echoes the secret")
			}
		})
	}
	if _, err := Load(nil, append([]string{"DINIE_PROXY_CONFG=x"}, credentials...), nil); err == nil ||
		err.Error() != "DINIE_PROXY_CONFG: no such setting; did you mean DINIE_PROXY_CONFIG (the configuration file)?" {
		t.Errorf("a variable close to DINIE_PROXY_CONFIG: %v", err)
	}
	if _, err := Load(nil, append([]string{"DINIE_PROXY_CONFIG=", "OTHER_DINIE_PROXY_X=1"}, credentials...), nil); err != nil {
		t.Errorf("DINIE_PROXY_CONFIG and other programs' variables: %v", err)
	}
	if _, err := Load([]string{"--config", writeFile(t, "upstream:\n  ur1: x\n")}, credentials, nil); err == nil ||
		!strings.HasSuffix(err.Error(), "did you mean upstream.url?") {
		t.Errorf("unknown key in the file: %v", err)
	}
}

func TestListenProxyIsLoopbackUnlessAllowed(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:8080", "127.0.0.2:1", "[::1]:8080", "localhost:0", "LOCALHOST:1"} {
		if _, err := Load([]string{"--listen.proxy", addr}, credentials, nil); err != nil {
			t.Errorf("%s: %v", addr, err)
		}
	}
	for _, addr := range []string{":8080", "0.0.0.0:8080", "[::]:8080", "10.0.0.1:8080", "192.168.1.2:80", "proxy.internal:8080", "[::ffff:10.0.0.1]:1"} {
		_, err := Load([]string{"--listen.proxy", addr}, credentials, nil)
		if !isConfigError(err) || !strings.HasPrefix(err.Error(), "listen.proxy: ") || !strings.Contains(err.Error(), "listen.allow_remote") {
			t.Errorf("%s: %v, want a refusal naming listen.proxy and listen.allow_remote", addr, err)
		}
		if _, err := Load([]string{"--listen.proxy", addr}, append([]string{"DINIE_PROXY_LISTEN_ALLOW_REMOTE=true"}, credentials...), nil); err != nil {
			t.Errorf("%s with listen.allow_remote: %v", addr, err)
		}
	}
	// listen.admin is for the kubelet and Prometheus: any address.
	if _, err := Load([]string{"--listen.admin", "0.0.0.0:9090"}, credentials, nil); err != nil {
		t.Errorf("listen.admin on every interface: %v", err)
	}
}

func TestDemoRefusesWhatItSetsItself(t *testing.T) {
	demo := map[string]string{"upstream.url": "https://demo.example/api/v3", "auth.client_id": "demo-id", "auth.client_secret": "demo-secret"}
	cmd, err := Load([]string{"--demo"}, nil, demo)
	if err != nil {
		t.Fatal(err)
	}
	if s := cmd.Settings; s.UpstreamURL.String() != demo["upstream.url"] || s.TokenURL != "https://demo.example/api/v3/auth/token" ||
		s.ClientID != "demo-id" || s.Source("upstream.url").Kind != Demo {
		t.Errorf("demo settings not applied: %+v", s)
	}
	for _, tt := range []struct {
		args    []string
		environ []string
		want    string
	}{
		{[]string{"--demo", "--upstream.url", "https://sandbox.api.dinie.com.br/api/v3"}, nil, "upstream.url: --demo runs against its own mock"},
		{[]string{"--demo"}, []string{"DINIE_PROXY_AUTH_CLIENT_SECRET=" + testSecret}, "auth.client_secret: --demo runs against its own mock"},
		{[]string{"--demo", "--config", writeFile(t, "auth:\n  client_id: x\n")}, nil, "auth.client_id: --demo"},
	} {
		_, err := Load(tt.args, tt.environ, demo)
		if !isConfigError(err) || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("%q %q: %v, want %q", tt.args, tt.environ, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), testSecret) {
			t.Error("the message echoes the secret")
		}
	}
	// Without --demo, the demo's values are not used.
	if _, err := Load(nil, nil, demo); !isConfigError(err) || !strings.HasPrefix(err.Error(), "auth.client_id: required") {
		t.Errorf("without --demo: %v, want the credentials required", err)
	}
}

func TestUpstreamWithoutPathWarns(t *testing.T) {
	if w := load(t, []string{"--upstream.url", "https://sandbox.api.dinie.com.br"}).Warnings; len(w) != 1 || !strings.Contains(w[0], "/api/v3") {
		t.Errorf("warnings %q, want one about /api/v3", w)
	}
	if w := load(t, []string{"--upstream.url", "https://sandbox.api.dinie.com.br/api/v3"}).Warnings; len(w) != 0 {
		t.Errorf("warnings %q for a URL with its path", w)
	}
}

// PrintConfig's output is YAML that reads back as the same configuration,
// with each value's source beside it and the secret redacted.
func TestPrintConfig(t *testing.T) {
	file := writeFile(t, "upstream:\n  timeout: 7s\nintercept:\n  passthrough: [a.example, b.example]\n")
	cmd, err := Load([]string{"--config", file, "--print-config", "--intercept.enabled", "--intercept.ca_dir", "/tmp/ca"},
		append([]string{"DINIE_PROXY_UPSTREAM_IDEMPOTENCY_KEYS=off"}, credentials...), nil)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := cmd.PrintConfig(&out); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	if strings.Contains(text, testSecret) {
		t.Fatal("--print-config prints the secret")
	}
	for _, line := range []string{
		`  timeout: "7s"  # file ` + file,
		`  enabled: "true"  # flag --intercept.enabled`,
		`  idempotency_keys: "off"  # environment DINIE_PROXY_UPSTREAM_IDEMPOTENCY_KEYS`,
		`  client_secret: "<redacted>"  # environment DINIE_PROXY_AUTH_CLIENT_SECRET`,
		`  client_id: "fake-id"  # environment DINIE_PROXY_AUTH_CLIENT_ID`,
		`  url: "https://api.dinie.com.br/api/v3"  # default`,
		`  passthrough: "a.example,b.example"  # file ` + file,
		`  client_secret_file: ""  # default`,
	} {
		if !strings.Contains(text, "\n"+line+"\n") {
			t.Errorf("no line %q in\n%s", line, text)
		}
	}
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(strings.NewReader(text)); err != nil {
		t.Fatalf("not YAML: %v", err)
	}
	for _, k := range keys {
		want := cmd.values[k.name]
		if k.secret {
			want = redacted
		}
		if got := v.GetString(k.name); got != want {
			t.Errorf("%s reads back as %q, want %q", k.name, got, want)
		}
	}
}

func TestUsageListsEveryKeyWithItsDefault(t *testing.T) {
	var out bytes.Buffer
	if err := Usage(&out); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		def := k.def
		if def == "" {
			def = "none"
		}
		if want := "--" + k.name + " (default " + def + "; env " + envName(k.name) + ")"; !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q", want)
		}
	}
	for _, s := range switches {
		if !strings.Contains(out.String(), "--"+s.name) {
			t.Errorf("--help lacks --%s", s.name)
		}
	}
}

// The configuration layer stays one: only main imports it, only it imports
// viper, and it depends on none of the packages it configures.
func TestImportBoundaries(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "../../...").Output()
	if err != nil {
		t.Fatal(err)
	}
	const module = "github.com/dinie/dinie-auth-proxy"
	for line := range strings.Lines(string(out)) {
		pkg, imports, _ := strings.Cut(strings.TrimSpace(line), " ")
		for _, imp := range strings.Fields(imports) {
			switch {
			case imp == module+"/internal/config" && pkg != module:
				t.Errorf("%s imports internal/config; only main may", pkg)
			case imp == "github.com/spf13/viper" && pkg != module+"/internal/config":
				t.Errorf("%s imports viper; only internal/config may", pkg)
			case pkg == module+"/internal/config" && strings.HasPrefix(imp, module+"/"):
				t.Errorf("internal/config imports %s; it must depend on none of the parts it configures", imp)
			}
		}
	}
}
