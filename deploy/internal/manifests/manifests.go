// Package manifests renders the kustomizations under deploy/ with the
// kustomize API (the code behind `kubectl kustomize`), so that tests and tools
// look at exactly what a cluster would receive, without network or kubectl.
package manifests

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// Object is one rendered Kubernetes object.
type Object struct {
	APIVersion string
	Kind       string
	Name       string
	// JSON is the whole object as JSON, ready for a strict decode into its
	// Go type.
	JSON []byte
}

// Render builds the kustomization in dir, as `kubectl kustomize dir` would.
func Render(dir string) ([]Object, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resMap, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("manifests: kustomize %s: %w", dir, err)
	}
	var objs []Object
	for _, r := range resMap.Resources() {
		data, err := r.MarshalJSON()
		if err != nil {
			return nil, fmt.Errorf("manifests: %s: %s %s: %w", dir, r.GetKind(), r.GetName(), err)
		}
		objs = append(objs, Object{
			APIVersion: r.GetApiVersion(),
			Kind:       r.GetKind(),
			Name:       r.GetName(),
			JSON:       data,
		})
	}
	return objs, nil
}

// KustomizationDirs returns every directory under root that holds a
// kustomization.yaml, sorted.
func KustomizationDirs(root string) ([]string, error) {
	var dirs []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && d.Name() == "kustomization.yaml" {
			dirs = append(dirs, filepath.Dir(path))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("manifests: find kustomizations: %w", err)
	}
	slices.Sort(dirs)
	return dirs, nil
}

// DecodeStrict decodes JSON into v and fails on unknown fields, duplicate
// fields and fields whose case differs from the Go type's JSON name, the way
// the API server's strict field validation does.
func DecodeStrict(data []byte, v any) error {
	strictErrs, err := kjson.UnmarshalStrict(data, v, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	return errors.Join(strictErrs...)
}

// RulesFile turns the PrometheusRule objects among objs into one Prometheus
// rules file (the `groups:` format that promtool and Prometheus read). The
// PrometheusRule manifest stays the only copy of the rules: promtool checks
// and tests what this function extracts from the rendered manifest.
func RulesFile(objs []Object) ([]byte, error) {
	var file struct {
		Groups []monitoringv1.RuleGroup `json:"groups"`
	}
	for _, o := range objs {
		if o.Kind != monitoringv1.PrometheusRuleKind {
			continue
		}
		var pr monitoringv1.PrometheusRule
		if err := DecodeStrict(o.JSON, &pr); err != nil {
			return nil, fmt.Errorf("manifests: PrometheusRule %s: %w", o.Name, err)
		}
		file.Groups = append(file.Groups, pr.Spec.Groups...)
	}
	if len(file.Groups) == 0 {
		return nil, errors.New("manifests: no PrometheusRule with rule groups")
	}
	out, err := yaml.Marshal(file)
	if err != nil {
		return nil, fmt.Errorf("manifests: marshal rules: %w", err)
	}
	return out, nil
}
