//go:build unix

package policy_test

import (
	"syscall"
	"testing"
	"time"

	"berth.dev/berth/policy"
)

// BenchmarkEvaluate10k evaluates 10,000 workloads (Deployments with their
// pod templates: the objects that cost the most), all compliant, and with
// half of them breaking most rules.
func BenchmarkEvaluate10k(b *testing.B) {
	for _, bc := range []struct {
		name  string
		loose bool
	}{{"compliant", false}, {"half-loose", true}} {
		b.Run(bc.name, func(b *testing.B) {
			d := load(b, fleet(10000, bc.loose))
			if n := len(d.Objects); n < 10000 {
				b.Fatalf("loaded %d objects", n)
			}
			var n int
			cpu0 := cpuTime()
			for b.Loop() {
				n = len(policy.Evaluate(d))
			}
			// CPU time (all threads, the garbage collector's too) says
			// how much work an evaluation is even when other processes
			// compete for the machine and make ns/op noisy.
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
			b.ReportMetric(float64(n), "violations")
		})
	}
}

// cpuTime returns the user and system CPU time of the process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
