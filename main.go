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
	"syscall"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "dinie-auth-proxy:", err)
		os.Exit(exitCode(err))
	}
}

// exitCode is 2 for invalid configuration and 1 for any other failure
// (README, "Configuration").
func exitCode(err error) int {
	if _, ok := errors.AsType[*configError](err); ok {
		return 2
	}
	return 1
}

// run is the whole program; it returns when ctx ends and every request in
// flight has finished or been cut off after shutdown.timeout.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, opts, err := loadConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	if opts.help {
		return nil
	}
	if opts.version {
		fmt.Fprintln(stdout, "dinie-auth-proxy", version)
		return nil
	}
	// The live heap is small next to what requests allocate, so the default
	// GOGC collects too often under load; 200 is the measured best trade of
	// CPU for memory (bench/README.md). A GOGC in the environment decides.
	if getenv("GOGC") == "" {
		debug.SetGCPercent(200)
	}
	log, stopLog, err := newLogger(cfg, stderr)
	if err != nil {
		return err
	}
	defer stopLog()
	setMemoryLimit(getenv, memlimit.FromCgroup, log)
	a, err := newApp(cfg, opts, log, stdout)
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
func newLogger(cfg config, w io.Writer) (log *zap.Logger, stop func(), err error) {
	level, err := zapcore.ParseLevel(cfg.logLevel)
	if err != nil {
		return nil, nil, invalid("log.level", "%q is not a level", cfg.logLevel)
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if cfg.logFormat == "console" {
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		encCfg.EncodeDuration = zapcore.StringDurationEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	} else {
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	ws := &zapcore.BufferedWriteSyncer{WS: zapcore.AddSync(w), FlushInterval: time.Second}
	return zap.New(zapcore.NewCore(enc, ws, level)), func() { ws.Stop() }, nil
}
