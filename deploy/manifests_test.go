package deploy_test

import (
	"bytes"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/dinie/dinie-auth-proxy/deploy/internal/manifests"
)

// TestEveryKustomizationRenders renders every directory with a
// kustomization.yaml and decodes each object strictly into its API type.
func TestEveryKustomizationRenders(t *testing.T) {
	dirs, err := manifests.KustomizationDirs(".")
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) < 2 {
		t.Fatalf("want at least the example and monitoring kustomizations, found %v", dirs)
	}
	for _, dir := range dirs {
		t.Run(dir, func(t *testing.T) {
			if strings.Contains(string(readFile(t, dir, "kustomization.yaml")), "\nkind: Component\n") {
				t.Skip("a component renders through the kustomizations that use it")
			}
			r := render(t, dir)
			seen := map[string]bool{}
			for _, o := range r.objs {
				id := o.Kind + "/" + o.Name
				if seen[id] {
					t.Errorf("%s rendered twice", id)
				}
				seen[id] = true
			}
			// kubectl apply -k would overwrite the real Secret of that name.
			if _, ok := r.secrets[credentialsSecret]; ok {
				t.Errorf("renders a Secret named %s: applying it would overwrite the real credentials", credentialsSecret)
			}
			// Only an example may bring a (fake) Secret; the components
			// render through testdata/foreign, which has none of its own.
			if !strings.HasPrefix(dir, "examples"+string(filepath.Separator)) && len(r.secrets) > 0 {
				t.Errorf("renders the Secrets %v: outside examples/ nothing may create a Secret", sortedKeys(r.secrets))
			}
		})
	}
}

// TestNoFileCitesTheSpec keeps the manifests' comments pointing at what
// users have: the README and docs/, not the project's internal contract.
func TestNoFileCitesTheSpec(t *testing.T) {
	spec := "SPEC" + ".md"
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(data, []byte(spec)) {
			t.Errorf("%s cites %s: cite the README or docs/ instead", path, spec)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// sidecarPod is an example's Deployment taken apart: what the other tests
// check.
type sidecarPod struct {
	deploy  *appsv1.Deployment
	spec    corev1.PodSpec
	sidecar corev1.Container
	app     []corev1.Container
	config  proxyConfig
	base    *rendered
}

// loadSidecarPod renders the base-URL example: an app's Deployment with
// components/sidecar.
func loadSidecarPod(t *testing.T) sidecarPod { return loadSidecarPodFrom(t, "examples/app") }

// loadSidecarPodFrom is loadSidecarPod for another example.
func loadSidecarPodFrom(t *testing.T, dir string) sidecarPod {
	t.Helper()
	base := render(t, dir)
	d := only(t, "Deployment in "+dir, base.deployments)
	p := sidecarPod{deploy: d, spec: d.Spec.Template.Spec, app: d.Spec.Template.Spec.Containers, base: base}
	var found bool
	for _, c := range p.spec.InitContainers {
		if c.Name == sidecarName {
			p.sidecar, found = c, true
		}
	}
	if !found {
		t.Fatalf("no init container %q: the proxy must be a native sidecar", sidecarName)
	}
	for _, c := range p.app {
		if c.Name == sidecarName {
			t.Fatalf("%q is also a regular container", sidecarName)
		}
	}

	// The config file: --config names a file of a ConfigMap volume.
	configPath := flagValue(t, p.sidecar, "--config")
	mount := mountFor(t, p.sidecar, configPath)
	vol := volume(t, p.spec, mount.Name)
	if vol.ConfigMap == nil {
		t.Fatalf("--config %s is on volume %q, which is not a ConfigMap", configPath, vol.Name)
	}
	cm, ok := base.configMaps[vol.ConfigMap.Name]
	if !ok {
		t.Fatalf("volume %q names ConfigMap %q, which is not rendered", vol.Name, vol.ConfigMap.Name)
	}
	key := strings.TrimPrefix(configPath, mount.MountPath+"/")
	if key != configKey {
		t.Fatalf("--config %s: want the key %s of the ConfigMap", configPath, configKey)
	}
	text, ok := cm.Data[key]
	if !ok {
		t.Fatalf("ConfigMap %s has no key %s", cm.Name, key)
	}
	p.config = parseProxyConfig(t, text)
	return p
}

// flagValue returns the value of a --name VALUE or --name=VALUE argument.
func flagValue(t *testing.T, c corev1.Container, name string) string {
	t.Helper()
	args := append(append([]string{}, c.Command...), c.Args...)
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	t.Fatalf("%s has no %s argument", describe(c), name)
	return ""
}

// mountFor returns the volume mount that holds file. A subPath mount fails the
// test: the kubelet never updates those, so neither config nor credential
// changes would reach the proxy.
func mountFor(t *testing.T, c corev1.Container, file string) corev1.VolumeMount {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if path.Clean(m.MountPath) == path.Clean(file) {
			t.Fatalf("%s mounts the file %s itself (subPath?): mount its directory so updates reach it", describe(c), file)
		}
		if path.Dir(file) == path.Clean(m.MountPath) {
			if m.SubPath != "" || m.SubPathExpr != "" {
				t.Fatalf("%s mounts %s with subPath: updates never reach it", describe(c), m.MountPath)
			}
			if !m.ReadOnly {
				t.Errorf("%s mounts %s read-write", describe(c), m.MountPath)
			}
			return m
		}
	}
	t.Fatalf("%s has no volume mount for %s", describe(c), file)
	return corev1.VolumeMount{}
}

func volume(t *testing.T, spec corev1.PodSpec, name string) corev1.Volume {
	t.Helper()
	for _, v := range spec.Volumes {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("no volume %q", name)
	return corev1.Volume{}
}

// containerPort resolves a probe's or PodMonitor's port (number or name)
// against the container's declared ports.
func containerPort(t *testing.T, c corev1.Container, port intstr.IntOrString) int32 {
	t.Helper()
	if port.Type == intstr.Int {
		return port.IntVal
	}
	for _, p := range c.Ports {
		if p.Name == port.StrVal {
			return p.ContainerPort
		}
	}
	t.Fatalf("%s declares no port named %q", describe(c), port.StrVal)
	return 0
}

func splitHostPort(t *testing.T, key, addr string) (string, int32) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s %q: %v", key, addr, err)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		t.Fatalf("%s %q: port: %v", key, addr, err)
	}
	return host, int32(n)
}

func TestSidecarIsNative(t *testing.T) {
	p := loadSidecarPod(t)
	if p.sidecar.RestartPolicy == nil || *p.sidecar.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("init container %q needs restartPolicy: Always to be a native sidecar", sidecarName)
	}
	if p.sidecar.Image != sidecarImage {
		t.Errorf("sidecar image %q, want %q", p.sidecar.Image, sidecarImage)
	}
	if len(p.app) == 0 {
		t.Fatal("no app container")
	}
}

func TestProbesAndPortsMatchAdminListener(t *testing.T) {
	p := loadSidecarPod(t)
	host, adminPort := splitHostPort(t, "listen.admin", p.config.Listen.Admin)
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		t.Errorf("listen.admin %q: the kubelet and Prometheus reach the pod IP, so it must bind 0.0.0.0", p.config.Listen.Admin)
	}
	proxyHost, _ := splitHostPort(t, "listen.proxy", p.config.Listen.Proxy)
	if ip := net.ParseIP(proxyHost); ip == nil || !ip.IsLoopback() {
		t.Errorf("listen.proxy %q must stay on loopback: only the app in the pod may use it", p.config.Listen.Proxy)
	}

	if got := containerPort(t, p.sidecar, intstr.FromString(adminPortName)); got != adminPort {
		t.Errorf("port %q is %d, listen.admin is on %d", adminPortName, got, adminPort)
	}
	for _, probe := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		// The app starts once the first token is held.
		{"startupProbe", p.sidecar.StartupProbe, "/readyz"},
		// Never /readyz: a Dinie outage must not take the pod out of its
		// Service; the proxy answers 503 token_unavailable itself.
		{"readinessProbe", p.sidecar.ReadinessProbe, "/healthz"},
		{"livenessProbe", p.sidecar.LivenessProbe, "/healthz"},
	} {
		t.Run(probe.name, func(t *testing.T) {
			if probe.probe == nil || probe.probe.HTTPGet == nil {
				t.Fatalf("%s: want an httpGet probe on %s", probe.name, probe.path)
			}
			get := probe.probe.HTTPGet
			if get.Path != probe.path {
				t.Errorf("%s path %q, want %q", probe.name, get.Path, probe.path)
			}
			if got := containerPort(t, p.sidecar, get.Port); got != adminPort {
				t.Errorf("%s port %d, listen.admin is on %d", probe.name, got, adminPort)
			}
			if get.Scheme != "" && get.Scheme != corev1.URISchemeHTTP {
				t.Errorf("%s scheme %q: the admin listener speaks plain HTTP", probe.name, get.Scheme)
			}
		})
	}

	ann := p.deploy.Spec.Template.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/path"] != "/metrics" ||
		ann["prometheus.io/port"] != strconv.Itoa(int(adminPort)) {
		t.Errorf("prometheus.io annotations %v: want scrape true, path /metrics, port %d", ann, adminPort)
	}
}

func TestAppUsesSidecar(t *testing.T) {
	p := loadSidecarPod(t)
	want := "http://" + p.config.Listen.Proxy
	for _, c := range p.app {
		for _, e := range c.Env {
			if e.Name == "DINIE_API_URL" {
				if e.Value != want {
					t.Errorf("%s: DINIE_API_URL %q, want %q (listen.proxy)", describe(c), e.Value, want)
				}
				return
			}
		}
	}
	t.Errorf("no app container sets DINIE_API_URL=%s", want)
}

func TestCredentialFilesComeFromSecretVolume(t *testing.T) {
	p := loadSidecarPod(t)
	if p.config.Auth.ClientID != "" || p.config.Auth.ClientSecret != "" {
		t.Error("config.yaml holds an inline client_id or client_secret: use the *_file keys")
	}
	for _, f := range []struct{ key, file string }{
		{"auth.client_id_file", p.config.Auth.ClientIDFile},
		{"auth.client_secret_file", p.config.Auth.ClientSecretFile},
	} {
		t.Run(f.key, func(t *testing.T) {
			if f.file == "" {
				t.Fatalf("%s is not set", f.key)
			}
			m := mountFor(t, p.sidecar, f.file)
			v := volume(t, p.spec, m.Name)
			if v.Secret == nil {
				t.Fatalf("%s %s is on volume %q, which is not a Secret", f.key, f.file, v.Name)
			}
			if len(v.Secret.Items) != 0 {
				t.Errorf("volume %q remaps keys with items; keep key = file name", v.Name)
			}
			// Its files are world-readable (no pod-wide fsGroup), so no
			// container but the proxy's may mount it.
			for _, c := range append(slices.Clone(p.spec.InitContainers), p.app...) {
				for _, cm := range c.VolumeMounts {
					if cm.Name == v.Name && c.Name != sidecarName {
						t.Errorf("%s mounts the credentials volume %s: only the sidecar may", describe(c), v.Name)
					}
				}
			}
			key := path.Base(f.file)
			s, ok := p.base.secrets[v.Secret.SecretName]
			if !ok {
				t.Fatalf("volume %q names Secret %q, which the example does not render", v.Name, v.Secret.SecretName)
			}
			value, ok := s.Data[key]
			if !ok {
				value, ok = []byte(s.StringData[key]), s.StringData[key] != ""
			}
			if !ok {
				t.Fatalf("Secret %s has no key %q for %s %s", s.Name, key, f.key, f.file)
			}
			// The shipped Secret is an example; a real value must never land in git.
			if !strings.HasPrefix(string(value), "example-") {
				t.Errorf("Secret %s key %s: %q does not look like an example value", s.Name, key, value)
			}
		})
	}
}

func TestSecurityContext(t *testing.T) {
	p := loadSidecarPod(t)
	pod := p.spec.SecurityContext
	if pod == nil {
		t.Fatal("no pod securityContext")
	}
	if p.spec.AutomountServiceAccountToken == nil || *p.spec.AutomountServiceAccountToken {
		t.Error("automountServiceAccountToken should be false: neither container calls the Kubernetes API")
	}
	for _, c := range append([]corev1.Container{p.sidecar}, p.app...) {
		t.Run(c.Name, func(t *testing.T) {
			// The component adds the sidecar to pods whose settings are the
			// app's: the sidecar must be hardened on its own.
			podSC := pod
			if c.Name == sidecarName {
				podSC = &corev1.PodSecurityContext{}
			}
			sc := c.SecurityContext
			if sc == nil {
				t.Fatal("no securityContext")
			}
			if !isTrue(sc.RunAsNonRoot) && !isTrue(podSC.RunAsNonRoot) {
				t.Error("runAsNonRoot is not set")
			}
			if !isTrue(sc.ReadOnlyRootFilesystem) {
				t.Error("readOnlyRootFilesystem is not true")
			}
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Error("allowPrivilegeEscalation is not false")
			}
			if isTrue(sc.Privileged) {
				t.Error("privileged")
			}
			if sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" ||
				len(sc.Capabilities.Add) != 0 {
				t.Errorf("capabilities %+v: want drop [ALL] and nothing added", sc.Capabilities)
			}
			seccomp := sc.SeccompProfile
			if seccomp == nil {
				seccomp = podSC.SeccompProfile
			}
			if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("seccompProfile %+v: want RuntimeDefault", seccomp)
			}
			for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				if _, ok := c.Resources.Requests[res]; !ok {
					t.Errorf("no %s request", res)
				}
				if _, ok := c.Resources.Limits[res]; !ok {
					t.Errorf("no %s limit", res)
				}
			}
		})
	}
	if sc := p.sidecar.SecurityContext; sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != 65532 {
		t.Error("sidecar runAsUser: want 65532, the image's user (distroless nonroot), set on the container")
	}
}

func TestShutdownFitsGracePeriod(t *testing.T) {
	p := loadSidecarPod(t)
	timeout, err := time.ParseDuration(p.config.Shutdown.Timeout)
	if err != nil {
		t.Fatalf("shutdown.timeout: %v", err)
	}
	grace := 30 * time.Second // the Kubernetes default
	if s := p.spec.TerminationGracePeriodSeconds; s != nil {
		grace = time.Duration(*s) * time.Second
	}
	if timeout >= grace {
		t.Errorf("shutdown.timeout %s must be below terminationGracePeriodSeconds (%s), or in-flight requests are killed", timeout, grace)
	}
}

func TestPodMonitorScrapesAdminPort(t *testing.T) {
	p := loadSidecarPod(t)
	_, adminPort := splitHostPort(t, "listen.admin", p.config.Listen.Admin)
	mon := render(t, "monitoring")
	pm := only(t, "PodMonitor in monitoring", mon.podMonitors)

	sel, err := metav1.LabelSelectorAsSelector(&pm.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	if sel.Empty() || !sel.Matches(labels.Set(p.deploy.Spec.Template.Labels)) {
		t.Errorf("PodMonitor selector %q does not select the pods of %s (labels %v)", sel, p.deploy.Name, p.deploy.Spec.Template.Labels)
	}
	ep := only(t, "podMetricsEndpoint", pm.Spec.PodMetricsEndpoints)
	var port intstr.IntOrString
	switch {
	case ep.Port != nil:
		port = intstr.FromString(*ep.Port)
	case ep.PortNumber != nil:
		port = intstr.FromInt32(*ep.PortNumber)
	default:
		t.Fatal("podMetricsEndpoint names no port")
	}
	if got := containerPort(t, p.sidecar, port); got != adminPort {
		t.Errorf("PodMonitor scrapes port %s (%d), listen.admin is on %d", port.String(), got, adminPort)
	}
	if ep.Path != "" && ep.Path != "/metrics" {
		t.Errorf("PodMonitor path %q, want /metrics", ep.Path)
	}
}

func isTrue(b *bool) bool { return b != nil && *b }
