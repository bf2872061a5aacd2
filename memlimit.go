package main

import (
	"errors"
	"math"
	"runtime/debug"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"go.uber.org/zap"
)

// memoryLimitRatio is the share of the container's memory limit given to
// Go's collector as its limit: the rest is for what Go does not count
// (thread stacks, the binary, kernel buffers charged to the cgroup).
const memoryLimitRatio = 0.9

// setMemoryLimit sets Go's memory limit to 90% of the container's, unless
// GOMEMLIMIT is set (docs/operations.md, "Memory"), so that a burst makes the collector
// work harder instead of the kernel killing the pod. containerLimit reads
// the cgroup's limit (memlimit.FromCgroup): it is read once, at start-up.
func setMemoryLimit(getenv func(string) string, containerLimit func() (uint64, error), log *zap.Logger) {
	if v := getenv("GOMEMLIMIT"); v != "" {
		// The runtime has parsed it already; what it made of it is the truth.
		log.Info("memory limit from GOMEMLIMIT",
			zap.String("GOMEMLIMIT", v), zap.Int64("go_limit_bytes", debug.SetMemoryLimit(-1)))
		return
	}
	limit, err := containerLimit()
	switch {
	case errors.Is(err, memlimit.ErrNoLimit) || err == nil && limit >= math.MaxInt64:
		log.Info("no container memory limit: Go's memory limit left unset")
	case errors.Is(err, memlimit.ErrCgroupsNotSupported) || errors.Is(err, memlimit.ErrNoCgroup):
		log.Info("not in a cgroup: Go's memory limit left unset")
	case err != nil:
		log.Warn("cannot read the container's memory limit: Go's memory limit left unset", zap.Error(err))
	default:
		goLimit := int64(float64(limit) * memoryLimitRatio)
		debug.SetMemoryLimit(goLimit)
		log.Info("memory limit set to 90% of the container's",
			zap.Uint64("container_limit_bytes", limit), zap.Int64("go_limit_bytes", goLimit))
	}
}
