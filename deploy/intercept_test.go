package deploy_test

import (
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestInterceptComponent checks examples/intercept (an app with
// components/sidecar and components/intercept): interception on through the sidecar's
// environment, the CA's directory shared with the app read-only, the key's
// directory in the sidecar alone and in memory, and the app's variables
// pointing at the files the proxy writes there.
func TestInterceptComponent(t *testing.T) {
	p := loadSidecarPodFrom(t, "examples/intercept")
	env := func(c corev1.Container) map[string]string {
		m := map[string]string{}
		for _, e := range c.Env {
			m[e.Name] = e.Value
		}
		return m
	}
	proxyEnv := env(p.sidecar)
	known := map[string]bool{
		"DINIE_PROXY_INTERCEPT_ENABLED": true, "DINIE_PROXY_INTERCEPT_CA_DIR": true,
		"DINIE_PROXY_INTERCEPT_KEY_DIR": true, "DINIE_PROXY_INTERCEPT_PASSTHROUGH": true,
	}
	for k := range proxyEnv {
		if !known[k] {
			t.Errorf("sidecar env %s is not an intercept.* key's variable", k)
		}
	}
	if proxyEnv["DINIE_PROXY_INTERCEPT_ENABLED"] != "true" {
		t.Fatal("interception is not enabled in the sidecar's environment")
	}
	caDir, keyDir := proxyEnv["DINIE_PROXY_INTERCEPT_CA_DIR"], proxyEnv["DINIE_PROXY_INTERCEPT_KEY_DIR"]
	mountOf := func(c corev1.Container, dir string) (corev1.VolumeMount, bool) {
		for _, m := range c.VolumeMounts {
			if path.Clean(m.MountPath) == path.Clean(dir) {
				return m, true
			}
		}
		return corev1.VolumeMount{}, false
	}
	caMount, ok := mountOf(p.sidecar, caDir)
	if !ok || caMount.ReadOnly {
		t.Fatalf("intercept.ca_dir %s is not a writable mount of the sidecar", caDir)
	}
	keyMount, ok := mountOf(p.sidecar, keyDir)
	if !ok || keyMount.ReadOnly || keyMount.Name == caMount.Name {
		t.Fatalf("intercept.key_dir %s is not a writable mount of its own in the sidecar", keyDir)
	}
	if v := volume(t, p.spec, caMount.Name); v.EmptyDir == nil {
		t.Errorf("volume %s of ca_dir is not an emptyDir", v.Name)
	}
	if v := volume(t, p.spec, keyMount.Name); v.EmptyDir == nil || v.EmptyDir.Medium != corev1.StorageMediumMemory {
		t.Errorf("volume %s of key_dir is not an in-memory emptyDir", v.Name)
	}

	proxyURL := "http://" + p.config.Listen.Proxy
	_, proxyPort := splitHostPort(t, "listen.proxy", p.config.Listen.Proxy)
	upstream, err := url.Parse(p.config.Upstream.URL)
	if err != nil {
		t.Fatal(err)
	}
	// components/intercept patches the pod's first container, the app's.
	for _, c := range p.app[:1] {
		for _, m := range c.VolumeMounts {
			if m.Name == keyMount.Name {
				t.Errorf("%s mounts the key's volume %s", describe(c), m.Name)
			}
		}
		appCA, ok := func() (corev1.VolumeMount, bool) {
			for _, m := range c.VolumeMounts {
				if m.Name == caMount.Name {
					return m, true
				}
			}
			return corev1.VolumeMount{}, false
		}()
		if !ok || !appCA.ReadOnly {
			t.Fatalf("%s does not mount the CA's volume %s read-only", describe(c), caMount.Name)
		}
		file := func(name string) string { return path.Join(appCA.MountPath, name) }
		e := env(c)
		want := map[string]string{
			"HTTPS_PROXY": proxyURL, "https_proxy": proxyURL,
			"SSL_CERT_FILE": file("bundle.pem"), "REQUESTS_CA_BUNDLE": file("bundle.pem"), "CURL_CA_BUNDLE": file("bundle.pem"),
			"NODE_EXTRA_CA_CERTS": file("ca.crt"), "NODE_USE_ENV_PROXY": "1",
		}
		for k, v := range want {
			if e[k] != v {
				t.Errorf("%s: %s=%q, want %q", describe(c), k, e[k], v)
			}
		}
		for _, k := range []string{"NO_PROXY", "no_proxy"} {
			if !strings.Contains(e[k], "127.0.0.1") || strings.Contains(e[k], upstream.Hostname()) {
				t.Errorf("%s: %s=%q must hold 127.0.0.1 and not %s", describe(c), k, e[k], upstream.Hostname())
			}
		}
		java := strings.Fields(e["JAVA_TOOL_OPTIONS"])
		for _, opt := range []string{
			"-Djavax.net.ssl.trustStore=" + file("truststore.p12"), "-Djavax.net.ssl.trustStoreType=PKCS12",
			"-Dhttps.proxyHost=127.0.0.1", "-Dhttps.proxyPort=" + strconv.Itoa(int(proxyPort)),
		} {
			if !slices.Contains(java, opt) {
				t.Errorf("%s: JAVA_TOOL_OPTIONS lacks %s", describe(c), opt)
			}
		}
		if u, err := url.Parse(e["DINIE_API_URL"]); err != nil || u.Scheme != "https" || u.Host != upstream.Host {
			t.Errorf("%s: DINIE_API_URL %q, want Dinie's https URL unchanged", describe(c), e["DINIE_API_URL"])
		}
	}
}
