package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// version and revision are set at build time, -ldflags "-X
// main.version=v1.2.3 -X main.revision=<commit>", where the build cannot
// see them itself: the image's build context has no .git.
var (
	version  = "dev"
	revision = ""
)

// build is what --version prints and dinie_proxy_build_info carries.
type build struct {
	version, revision, goVersion string
	modified                     bool // built from a tree with uncommitted changes
}

// readBuild prefers what the linker was told, then what Go recorded: the
// module version of a go install, and the VCS revision of a build in a
// git checkout.
func readBuild() build {
	info, _ := debug.ReadBuildInfo()
	return buildFrom(version, revision, info)
}

// buildFrom is readBuild's logic; info is nil when the binary carries no
// build information.
func buildFrom(version, revision string, info *debug.BuildInfo) build {
	b := build{version: version, revision: revision, goVersion: runtime.Version()}
	if info != nil {
		if b.version == "dev" && info.Main.Version != "" && info.Main.Version != "(devel)" {
			b.version = info.Main.Version
		}
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				if b.revision == "" {
					b.revision = s.Value
				}
			case "vcs.modified":
				b.modified = s.Value == "true"
			}
		}
	}
	if b.revision == "" {
		b.revision = "unknown"
	}
	return b
}

func (b build) String() string {
	rev := b.revision
	if b.modified {
		rev += " (modified)"
	}
	return fmt.Sprintf("dinie-auth-proxy %s\nrevision %s\n%s", b.version, rev, b.goVersion)
}

// gauge is dinie_proxy_build_info: always 1, its labels say which build
// runs, so that a dashboard can tell a fleet's versions apart.
func (b build) gauge() prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "dinie_proxy_build_info",
		Help: "Always 1; the labels say which build of the proxy runs.",
		ConstLabels: prometheus.Labels{
			"version": b.version, "revision": b.revision, "go_version": b.goVersion,
		},
	})
	g.Set(1)
	return g
}
