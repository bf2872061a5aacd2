// Command promrules renders a kustomization and prints the rules of its
// PrometheusRule objects as a plain Prometheus rules file, for promtool:
//
//	go run ./cmd/promrules monitoring > rules.yaml
//	promtool check rules rules.yaml
//
// It lets the PrometheusRule manifest be the only copy of the alert rules.
package main

import (
	"fmt"
	"os"

	"github.com/dinie/dinie-auth-proxy/deploy/internal/manifests"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: promrules KUSTOMIZATION_DIR > rules.yaml")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "promrules:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	objs, err := manifests.Render(dir)
	if err != nil {
		return err
	}
	out, err := manifests.RulesFile(objs)
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(out)
	return err
}
