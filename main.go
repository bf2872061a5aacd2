// Command dinie-auth-proxy is a sidecar that lets any application call the
// Dinie API without auth code: it exchanges the client credentials for an
// access token, keeps it fresh, and injects it into every request it
// forwards. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/dinie/dinie-auth-proxy/internal/config"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "dinie-auth-proxy:", err)
		os.Exit(exitCode(err))
	}
}

// exitCode is 2 for invalid configuration and 1 for any other failure
// (docs/configuration.md).
func exitCode(err error) int {
	if _, ok := errors.AsType[*config.Error](err); ok {
		return 2
	}
	return 1
}

// run is the whole program; environ is the environment as os.Environ
// gives it. Serving, it returns when ctx ends and every request in flight
// has finished or been cut off after shutdown.timeout.
func run(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	cmd, err := config.Load(args, environ, demoSettings)
	if err != nil {
		return err
	}
	switch cmd.Action {
	case config.Help:
		return config.Usage(stdout)
	case config.Version:
		_, err := fmt.Fprintln(stdout, readBuild())
		return err
	case config.PrintConfig:
		return cmd.PrintConfig(stdout)
	}
	cfg := cmd.Settings
	getenv := func(name string) string {
		for _, kv := range environ {
			if k, v, _ := strings.Cut(kv, "="); k == name {
				return v
			}
		}
		return ""
	}
	log, stopLog := newLogger(cfg, stderr)
	defer stopLog()
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	if cmd.Action == config.Check {
		return check(ctx, cfg, log, stdout)
	}
	// The live heap is small next to what requests allocate, so the default
	// GOGC collects too often under load; 200 is the measured best trade of
	// CPU for memory (bench/README.md). A GOGC in the environment decides.
	if getenv("GOGC") == "" {
		debug.SetGCPercent(200)
	}
	setMemoryLimit(getenv, memlimit.FromCgroup, log)
	a, err := newApp(cfg, cmd.Demo, log, stdout)
	if err != nil {
		return err
	}
	defer a.close()
	if err := a.serve(ctx); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// newLogger writes through a buffer flushed every second: one write(2) per
// access line was a visible share of the proxy's CPU under load. stop
// flushes and ends the flushing goroutine.
func newLogger(cfg *config.Settings, w io.Writer) (log *zap.Logger, stop func()) {
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if cfg.LogFormat == config.Console {
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		encCfg.EncodeDuration = zapcore.StringDurationEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	} else {
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	ws := &zapcore.BufferedWriteSyncer{WS: zapcore.AddSync(w), FlushInterval: time.Second}
	return zap.New(zapcore.NewCore(enc, ws, cfg.LogLevel)), func() { ws.Stop() }
}
