package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// rawCONNECT sends a CONNECT for target to the running proxy.
func rawCONNECT(t *testing.T, r *running, target string) (*http.Response, net.Conn) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(r.proxy, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: "CONNECT"})
	if err != nil {
		t.Fatal(err)
	}
	return resp, conn
}

// interceptEnv is the fake Dinie's environment with interception on, the
// upstream named localhost (the CA signs for names only).
func interceptEnv(d *fakeDinie, caDir, keyDir string, extra ...string) map[string]string {
	env := d.env(
		"DINIE_PROXY_UPSTREAM_URL", "https://localhost"+strings.TrimPrefix(d.URL, "https://127.0.0.1")+"/api/v3",
		"DINIE_PROXY_AUTH_TOKEN_URL", d.URL+"/api/v3/auth/token",
		"DINIE_PROXY_INTERCEPT_ENABLED", "true",
		"DINIE_PROXY_INTERCEPT_CA_DIR", caDir,
		"DINIE_PROXY_INTERCEPT_KEY_DIR", keyDir)
	for i := 0; i+1 < len(extra); i += 2 {
		env[extra[i]] = extra[i+1]
	}
	return env
}

// The CA's files are written before the admin listener serves: the first
// moment /readyz can answer at all, the app finds ca.crt and the others.
func TestCAFilesExistBeforeTheAdminServerAnswers(t *testing.T) {
	d := newFakeDinie(t)
	caDir := t.TempDir()
	r := start(t, interceptEnv(d, caDir, t.TempDir()))
	for _, name := range []string{"ca.crt", "bundle.pem", "truststore.p12"} {
		if _, err := os.Stat(filepath.Join(caDir, name)); err != nil {
			t.Errorf("%s not written when the proxy listens: %v", name, err)
		}
	}
	waitReady(t, r)
	_, metrics := httpGet(t, r.admin+"/metrics")
	if !strings.Contains(metrics, "\ndinie_proxy_intercept_leaf_expiry_timestamp_seconds ") {
		t.Error("no leaf expiry gauge in /metrics")
	}
	// upstream.url's own port is the TLS port: intercepted.
	target := "localhost" + strings.TrimPrefix(d.URL, "https://127.0.0.1")
	if resp, _ := rawCONNECT(t, r, target); resp.StatusCode != 200 {
		t.Errorf("CONNECT %s with interception: %d", target, resp.StatusCode)
	}
}

// The proxy must never trust its own CA for the upstream: given bundle.pem
// as its own trust, it refuses to start.
func TestProxyRefusesToTrustItsOwnCA(t *testing.T) {
	d := newFakeDinie(t)
	caDir, keyDir := t.TempDir(), t.TempDir()
	first := start(t, interceptEnv(d, caDir, keyDir))
	first.stop()
	if err := <-first.done; err != nil {
		t.Fatal(err)
	}
	first.done <- nil // for the cleanup
	// The same CA again (key_dir), and its bundle as the proxy's trust.
	env := interceptEnv(d, caDir, keyDir, "DINIE_PROXY_UPSTREAM_CA_FILE", filepath.Join(caDir, "bundle.pem"))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	err := run(ctx, nil, environ(env), io.Discard, &stderr)
	if exitCode(err) != 2 || !strings.Contains(err.Error(), "upstream.ca_file") {
		t.Fatalf("run with bundle.pem as upstream.ca_file = %v, want exit 2 naming upstream.ca_file", err)
	}
}

func TestInterceptConfigErrors(t *testing.T) {
	dir := t.TempDir()
	base := map[string]string{
		"DINIE_PROXY_AUTH_CLIENT_ID": "fake-id", "DINIE_PROXY_AUTH_CLIENT_SECRET": testSecret,
		"DINIE_PROXY_LISTEN_PROXY": "127.0.0.1:0", "DINIE_PROXY_LISTEN_ADMIN": "127.0.0.1:0",
	}
	on := map[string]string{"DINIE_PROXY_INTERCEPT_ENABLED": "true", "DINIE_PROXY_INTERCEPT_CA_DIR": dir}
	for _, tt := range []struct {
		name    string
		env     map[string]string
		wantKey string
	}{
		{"not a boolean", map[string]string{"DINIE_PROXY_INTERCEPT_ENABLED": "yes please"}, "intercept.enabled"},
		{"no ca_dir", map[string]string{"DINIE_PROXY_INTERCEPT_ENABLED": "true"}, "intercept.ca_dir"},
		{"ip upstream", maps(on, map[string]string{"DINIE_PROXY_UPSTREAM_URL": "https://10.0.0.1/api/v3"}), "upstream.url"},
		{"cert without key", maps(on, map[string]string{"DINIE_PROXY_INTERCEPT_CA_CERT_FILE": filepath.Join(dir, "x.crt")}), "intercept.ca_key_file"},
		{"key_dir is ca_dir", maps(on, map[string]string{"DINIE_PROXY_INTERCEPT_KEY_DIR": dir}), "intercept.key_dir"},
		{"unreadable supplied CA", maps(on, map[string]string{
			"DINIE_PROXY_INTERCEPT_CA_CERT_FILE": "/nonexistent/ca.crt", "DINIE_PROXY_INTERCEPT_CA_KEY_FILE": "/nonexistent/ca.key"}), "intercept.ca_cert_file"},
		{"bad passthrough", map[string]string{"DINIE_PROXY_INTERCEPT_PASSTHROUGH": "api.stripe.com, bad host:1"}, "intercept.passthrough"},
		{"bad passthrough port", map[string]string{"DINIE_PROXY_INTERCEPT_PASSTHROUGH": "db.internal:99999"}, "intercept.passthrough"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env := maps(base, tt.env)
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			err := run(ctx, nil, environ(env), io.Discard, io.Discard)
			if exitCode(err) != 2 {
				t.Fatalf("run = %v, want a configuration error (exit 2)", err)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, tt.wantKey+": ") || strings.Contains(msg, "\n") {
				t.Errorf("message %q does not name %s on one line", msg, tt.wantKey)
			}
		})
	}
}
