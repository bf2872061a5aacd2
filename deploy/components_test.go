package deploy_test

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/dinie/dinie-auth-proxy/deploy/internal/manifests"
)

const (
	authProxyLabel = "dinie.com.br/auth-proxy"
	configMapName  = "dinie-auth-proxy-config"
	// What components/intercept sets in the app's container.
	proxyURL  = "http://127.0.0.1:8080"
	bundlePEM = "/etc/dinie-auth-proxy/ca/bundle.pem"
	caCRT     = "/etc/dinie-auth-proxy/ca/ca.crt"
	noProxy   = "127.0.0.1,localhost,.svc,.cluster.local"
	javaOpts  = "-Djavax.net.ssl.trustStore=/etc/dinie-auth-proxy/ca/truststore.p12" +
		" -Djavax.net.ssl.trustStoreType=PKCS12 -Dhttps.proxyHost=127.0.0.1 -Dhttps.proxyPort=8080" +
		" -Dhttp.nonProxyHosts=localhost|127.*|*.svc|*.cluster.local"
)

// TestComponentsOnForeignDeployments renders components/sidecar, alone and
// with components/intercept, onto Deployments that are not the project's
// (testdata/foreign) and checks exactly what changed: each addition is
// compared with what it must be and taken out again, after which each
// Deployment must be byte-equal (as canonical JSON) to the one rendered
// without the components.
func TestComponentsOnForeignDeployments(t *testing.T) {
	before := genericObjects(t, "testdata/foreign/base")
	for _, tc := range []struct {
		dir       string
		intercept bool
		// The env of each labelled Deployment's first container after
		// components/intercept.
		env map[string][]corev1.EnvVar
	}{
		{dir: "testdata/foreign/sidecar"},
		{
			dir:       "testdata/foreign/intercept",
			intercept: true,
			env: map[string][]corev1.EnvVar{
				// Its own entries stay where they were: NO_PROXY and
				// JAVA_TOOL_OPTIONS extended, SSL_CERT_FILE's valueFrom
				// replaced, UPSTREAM_HTTPS_PROXY_URL (whose name contains
				// HTTPS_PROXY) untouched; the missing ones follow.
				"ledger": {
					{Name: "PORT", Value: "8000"},
					{Name: "NO_PROXY", Value: "ledger-db.payments," + noProxy},
					{Name: "JAVA_TOOL_OPTIONS", Value: "-Xmx256m " + javaOpts},
					{Name: "UPSTREAM_HTTPS_PROXY_URL", Value: "http://egress.example:3128"},
					{Name: "SSL_CERT_FILE", Value: bundlePEM},
					{Name: "HTTPS_PROXY", Value: proxyURL},
					{Name: "https_proxy", Value: proxyURL},
					{Name: "REQUESTS_CA_BUNDLE", Value: bundlePEM},
					{Name: "CURL_CA_BUNDLE", Value: bundlePEM},
					{Name: "NODE_EXTRA_CA_CERTS", Value: caCRT},
					{Name: "NODE_USE_ENV_PROXY", Value: "1"},
					{Name: "no_proxy", Value: "," + noProxy},
				},
				// No env at all before: every entry added. A list the app
				// did not have starts with its separator, which every
				// client tried skips (deploy/README.md).
				"billing": {
					{Name: "HTTPS_PROXY", Value: proxyURL},
					{Name: "https_proxy", Value: proxyURL},
					{Name: "SSL_CERT_FILE", Value: bundlePEM},
					{Name: "REQUESTS_CA_BUNDLE", Value: bundlePEM},
					{Name: "CURL_CA_BUNDLE", Value: bundlePEM},
					{Name: "NODE_EXTRA_CA_CERTS", Value: caCRT},
					{Name: "NODE_USE_ENV_PROXY", Value: "1"},
					{Name: "NO_PROXY", Value: "," + noProxy},
					{Name: "no_proxy", Value: "," + noProxy},
					{Name: "JAVA_TOOL_OPTIONS", Value: " " + javaOpts},
				},
			},
		},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			after := genericObjects(t, tc.dir)
			cm := addedConfigMap(t, before, after)
			want := expectedSidecar(t, tc.intercept)
			var labelled int
			for id, b := range before {
				a, ok := after[id]
				if !ok {
					t.Errorf("%s is gone", id)
					continue
				}
				if labels, _ := dig(b, "metadata", "labels").(map[string]any); labels[authProxyLabel] == "true" {
					labelled++
					name := dig(b, "metadata", "name").(string)
					undoSidecar(t, id, a, want, cm)
					if tc.intercept {
						undoIntercept(t, id, a, b, tc.env[name])
					}
				}
				if got, want := canonical(t, a), canonical(t, b); got != want {
					t.Errorf("%s: the components changed more than they add:\nwith them, less their additions:\n%s\nwithout them:\n%s", id, got, want)
				}
			}
			if labelled != 2 {
				t.Fatalf("testdata has %d labelled Deployments, want 2", labelled)
			}
		})
	}
}

// genericObjects renders dir and returns its objects as plain JSON values,
// by kind and name.
func genericObjects(t *testing.T, dir string) map[string]map[string]any {
	t.Helper()
	objs, err := manifests.Render(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]map[string]any{}
	for _, o := range objs {
		var v map[string]any
		if err := json.Unmarshal(o.JSON, &v); err != nil {
			t.Fatalf("%s: %s %s: %v", dir, o.Kind, o.Name, err)
		}
		m[o.Kind+"/"+o.Name] = v
	}
	return m
}

// addedConfigMap checks that the components add exactly one object, the
// proxy's ConfigMap with components/sidecar/config.yaml, and no Secret, and
// returns the ConfigMap's generated name.
func addedConfigMap(t *testing.T, before, after map[string]map[string]any) string {
	t.Helper()
	var added []string
	for id := range after {
		if _, ok := before[id]; !ok {
			added = append(added, id)
		}
	}
	slices.Sort(added)
	if len(added) != 1 || !strings.HasPrefix(added[0], "ConfigMap/"+configMapName+"-") {
		t.Fatalf("the components add %v, want only the ConfigMap %s-<hash> (no Secret, nothing else)", added, configMapName)
	}
	data, _ := dig(after[added[0]], "data").(map[string]any)
	if data[configKey] != string(readFile(t, "components", "sidecar", configKey)) || len(data) != 1 {
		t.Errorf("%s does not hold exactly components/sidecar/%s", added[0], configKey)
	}
	return strings.TrimPrefix(added[0], "ConfigMap/")
}

// patchPod decodes the pod spec of a strategic merge patch strictly.
func patchPod(t *testing.T, path ...string) corev1.PodSpec {
	t.Helper()
	data, err := yaml.YAMLToJSON(readFile(t, path...))
	if err != nil {
		t.Fatal(err)
	}
	var d appsv1.Deployment
	if err := manifests.DecodeStrict(data, &d); err != nil {
		t.Fatalf("%v: %v", path, err)
	}
	return d.Spec.Template.Spec
}

// sidecarWant is what the components must add to a labelled pod.
type sidecarWant struct {
	container corev1.Container
	volumes   []corev1.Volume
}

// expectedSidecar is the sidecar and volumes of components/sidecar's patch,
// with those of components/intercept's when intercept is set: nothing of the
// Deployment may be merged into them.
func expectedSidecar(t *testing.T, intercept bool) sidecarWant {
	t.Helper()
	pod := patchPod(t, "components", "sidecar", "sidecar.yaml")
	w := sidecarWant{container: only(t, "init container in components/sidecar", pod.InitContainers), volumes: pod.Volumes}
	if intercept {
		ipod := patchPod(t, "components", "intercept", "sidecar.yaml")
		ic := only(t, "init container in components/intercept", ipod.InitContainers)
		if ic.Name != w.container.Name {
			t.Fatalf("components/intercept patches init container %q, components/sidecar adds %q", ic.Name, w.container.Name)
		}
		w.container.Env = append(w.container.Env, ic.Env...)
		w.container.VolumeMounts = append(w.container.VolumeMounts, ic.VolumeMounts...)
		w.volumes = append(w.volumes, ipod.Volumes...)
	}
	return w
}

// undoSidecar checks what components/sidecar adds to the Deployment d and
// takes it out again: the pod label, the sidecar as the first init
// container, and its volumes (the ConfigMap's under its generated name).
func undoSidecar(t *testing.T, id string, d map[string]any, want sidecarWant, configMap string) {
	t.Helper()
	tmpl := dig(d, "spec", "template").(map[string]any)
	labels, _ := dig(tmpl, "metadata", "labels").(map[string]any)
	if labels[authProxyLabel] != "true" {
		t.Errorf("%s: pod template lacks the label %s (the PodMonitor selects it)", id, authProxyLabel)
	}
	delete(labels, authProxyLabel)

	pod := dig(tmpl, "spec").(map[string]any)
	inits, _ := pod["initContainers"].([]any)
	if len(inits) == 0 {
		t.Fatalf("%s: no init containers", id)
	}
	var got corev1.Container
	fromGeneric(t, inits[0], &got)
	if !reflect.DeepEqual(byName(got), byName(want.container)) {
		t.Errorf("%s: the first init container is not exactly the sidecar of the patches:\n got %s\nwant %s", id, canonical(t, got), canonical(t, want.container))
	}
	setOrDelete(pod, "initContainers", inits[1:])

	vols, _ := pod["volumes"].([]any)
	for _, w := range want.volumes {
		if w.ConfigMap != nil {
			w.ConfigMap.Name = configMap
		}
		i := slices.IndexFunc(vols, func(v any) bool { return v.(map[string]any)["name"] == w.Name })
		if i < 0 {
			t.Errorf("%s: no volume %s", id, w.Name)
			continue
		}
		var got corev1.Volume
		fromGeneric(t, vols[i], &got)
		if !reflect.DeepEqual(got, w) {
			t.Errorf("%s: volume %s:\n got %s\nwant %s", id, w.Name, canonical(t, got), canonical(t, w))
		}
		vols = slices.Delete(vols, i, i+1)
	}
	setOrDelete(pod, "volumes", vols)
}

// undoIntercept checks what components/intercept adds to the first container
// of d (env as wantEnv, the CA's volume read-only) and puts that container's
// env and mounts back as they were in b.
func undoIntercept(t *testing.T, id string, d, b map[string]any, wantEnv []corev1.EnvVar) {
	t.Helper()
	first := dig(d, "spec", "template", "spec", "containers").([]any)[0].(map[string]any)
	orig := dig(b, "spec", "template", "spec", "containers").([]any)[0].(map[string]any)

	var got []corev1.EnvVar
	fromGeneric(t, first["env"], &got)
	if !reflect.DeepEqual(got, wantEnv) {
		t.Errorf("%s: env of container %s:\n got %s\nwant %s", id, first["name"], canonical(t, got), canonical(t, wantEnv))
	}
	setOrDelete(first, "env", orig["env"])

	mounts, _ := first["volumeMounts"].([]any)
	wantMount := corev1.VolumeMount{Name: "dinie-auth-proxy-ca", MountPath: "/etc/dinie-auth-proxy/ca", ReadOnly: true}
	i := slices.IndexFunc(mounts, func(m any) bool { return m.(map[string]any)["name"] == wantMount.Name })
	if i < 0 {
		t.Errorf("%s: container %s does not mount %s", id, first["name"], wantMount.Name)
		return
	}
	var gotMount corev1.VolumeMount
	fromGeneric(t, mounts[i], &gotMount)
	if !reflect.DeepEqual(gotMount, wantMount) {
		t.Errorf("%s: mount %+v, want %+v", id, gotMount, wantMount)
	}
	setOrDelete(first, "volumeMounts", slices.Delete(mounts, i, i+1))
}

// byName sorts a container's env and mounts by name: strategic merge puts
// the entries of two patches in either order, which changes nothing.
func byName(c corev1.Container) corev1.Container {
	c.Env = slices.SortedFunc(slices.Values(c.Env), func(a, b corev1.EnvVar) int { return strings.Compare(a.Name, b.Name) })
	c.VolumeMounts = slices.SortedFunc(slices.Values(c.VolumeMounts), func(a, b corev1.VolumeMount) int { return strings.Compare(a.Name, b.Name) })
	return c
}

// dig returns the value at the path of keys, or nil.
func dig(v any, path ...string) any {
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// setOrDelete sets m[key] to list, or deletes the key when list is empty,
// as it was before a component added the first element.
func setOrDelete(m map[string]any, key string, list any) {
	if l, ok := list.([]any); list == nil || ok && len(l) == 0 {
		delete(m, key)
		return
	}
	m[key] = list
}

// fromGeneric decodes a plain JSON value strictly into a typed one.
func fromGeneric(t *testing.T, v any, into any) {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := manifests.DecodeStrict(data, into); err != nil {
		t.Fatalf("%T: %v", into, err)
	}
}

// canonical is v as JSON with sorted keys, which compares byte for byte.
func canonical(t *testing.T, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var generic any
	if err := json.Unmarshal(data, &generic); err != nil {
		t.Fatal(err)
	}
	out, err := json.MarshalIndent(generic, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}
