package main

import (
	"errors"
	"math"
	"runtime/debug"
	"testing"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestMemoryLimitFromTheContainer(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name      string
		gomemlim  string
		container func() (uint64, error)
		want      int64 // Go's limit afterwards
		wantLog   string
	}{
		{"90% of the cgroup's", "", func() (uint64, error) { return 100 * mib, nil }, 90 * mib, "memory limit set to 90% of the container's"},
		{"GOMEMLIMIT decides", "50MiB", func() (uint64, error) { return 100 * mib, nil }, math.MaxInt64, "memory limit from GOMEMLIMIT"},
		{"no limit", "", func() (uint64, error) { return 0, memlimit.ErrNoLimit }, math.MaxInt64, "no container memory limit: Go's memory limit left unset"},
		{"no cgroups", "", func() (uint64, error) { return 0, memlimit.ErrCgroupsNotSupported }, math.MaxInt64, "not in a cgroup: Go's memory limit left unset"},
		{"unreadable", "", func() (uint64, error) { return 0, errors.New("fake: permission denied") }, math.MaxInt64, "cannot read the container's memory limit: Go's memory limit left unset"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The test process's own limit: none, and restored afterwards.
			prev := debug.SetMemoryLimit(math.MaxInt64)
			t.Cleanup(func() { debug.SetMemoryLimit(prev) })
			core, logs := observer.New(zap.InfoLevel)
			env := map[string]string{"GOMEMLIMIT": tt.gomemlim}
			setMemoryLimit(func(k string) string { return env[k] }, tt.container, zap.New(core))
			if got := debug.SetMemoryLimit(-1); got != tt.want {
				t.Errorf("Go's memory limit = %d, want %d", got, tt.want)
			}
			if logs.FilterMessage(tt.wantLog).Len() != 1 {
				t.Errorf("start-up log %v, want one %q", logs.All(), tt.wantLog)
			}
		})
	}
}
