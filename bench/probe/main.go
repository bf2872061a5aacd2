// Command probe times a fixed piece of work, hashing and a random walk
// over a buffer larger than the caches, and prints the wall time in
// microseconds. bench/run.sh runs it on the proxy's core before every
// measurement: a machine whose speed moves between runs (a neighbour on
// the same physical core, a frequency change) shows it here even when no
// other process is seen on the core.
package main

import (
	"crypto/sha256"
	"fmt"
	"time"
)

func main() {
	buf := make([]byte, 8<<20)
	// A random cycle through the buffer's 8-byte words, so that the walk
	// cannot be prefetched.
	next := make([]uint32, len(buf)/8)
	x := uint32(1)
	for i := range next {
		x = x*1664525 + 1013904223
		next[i] = x % uint32(len(next))
		buf[i*8] = byte(x)
	}
	start := time.Now()
	var sum [32]byte
	for range 4 {
		sum = sha256.Sum256(buf)
	}
	j := uint32(0)
	for range 1 << 20 {
		j = next[j] ^ uint32(sum[j%32])
		j %= uint32(len(next))
	}
	fmt.Println(time.Since(start).Microseconds(), j%2)
}
