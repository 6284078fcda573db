package bench_test

import (
	"context"
	"os"
	"testing"
	"time"

	"berth.dev/berth/internal/testenv"
	"berth.dev/berth/nodes/agent/bench"
	"berth.dev/berth/nodes/logs"
)

// TestMain lets the test binary stand in for the berth binary as the
// containers' log driver.
func TestMain(m *testing.M) {
	logs.RunIfDriver()
	os.Exit(m.Run())
}

// TestBenchAgent is `berth bench agent --pods 3 --runs 1 --peer none`.
func TestBenchAgent(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.Require(t, "containerd", "containerd-shim-runc-v2", "runc", "docker-registry")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := bench.Bench(ctx, bench.Options{
		Pods: 3, Runs: 1, Peer: bench.PeerNone, BasePort: 28080,
		Progress: t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Berth.Runs) != 1 || res.Berth.MedianReady <= 0 || res.Berth.MedianRunning > res.Berth.MedianReady {
		t.Fatalf("result: %+v", res.Berth)
	}
	if res.Podman != nil || res.Ratio != 0 {
		t.Fatalf("peer none measured podman: %+v", res)
	}
	t.Logf("3 pods: running %v, ready %v, teardown %v", res.Berth.MedianRunning, res.Berth.MedianReady, res.Berth.MedianTeardown)
}
