// Package testkit holds what the tests of several packages share: waiting
// for a condition that another goroutine brings about, and reading a metric.
package testkit

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Eventually polls cond until it holds. It synchronises with goroutines a
// test cannot join; it is not a timing assertion, and its generous limit
// only turns a deadlock into a failure.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// Value reads a counter or gauge from g: the series of family name whose
// labels include the given name/value pairs (none for an unlabelled one).
// A missing series fails the test.
func Value(t testing.TB, g prometheus.Gatherer, name string, labelPairs ...string) float64 {
	t.Helper()
	v, ok := Lookup(t, g, name, labelPairs...)
	if !ok {
		t.Fatalf("no series %s%v", name, labelPairs)
	}
	return v
}

// Lookup is Value for a series that may not exist yet.
func Lookup(t testing.TB, g prometheus.Gatherer, name string, labelPairs ...string) (float64, bool) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labelPairs); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					found = found || (l.GetName() == labelPairs[i] && l.GetValue() == labelPairs[i+1])
				}
				if !found {
					continue series
				}
			}
			return m.GetGauge().GetValue() + m.GetCounter().GetValue(), true
		}
	}
	return 0, false
}

// SyncBuffer collects a process's output while a test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// Bytes returns a copy of what was written so far.
func (s *SyncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

// String returns what was written so far.
func (s *SyncBuffer) String() string { return string(s.Bytes()) }
